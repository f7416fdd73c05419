#!/usr/bin/env bash
# The quickstart: publish a fixture image into ./demo-store and serve it on the embedded default
# (a local store behind the built-in signed origin). Anyone can then pull
#   127.0.0.1:5000/demo/hello:1.0
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/static-registry"
$bin publish oci:fixtures/oci-single:1.0 --store ./demo-store --tag demo/hello:1.0 --tag demo/hello:latest
$bin publish oci:fixtures/oci-multi:latest --store ./demo-store --tag demo/multi:latest
exec $bin serve --store ./demo-store --listen "${LISTEN:-127.0.0.1:5000}"
