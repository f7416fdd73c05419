# syntax=docker/dockerfile:1
#
# The `static-registry` endpoint (and publisher) as a small container image.
#
#   docker build -t static-registry .
#   docker run --rm -p 5000:5000 \
#       -v /etc/static-registry:/etc/static-registry:ro \
#       -v /srv/static-registry/store:/srv/static-registry/store:ro \
#       static-registry
#
# It runs `serve --config /etc/static-registry/config.toml` (see config/*.toml); give other
# arguments to run something else, e.g. `static-registry verify --store s3://bucket/prefix`.
#
# The runtime image is distroless (glibc, libgcc, CA certificates, no shell, no package manager)
# and runs as an unprivileged user. See docs/operations.md ("Container image").

# ---- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin static-registry \
 && cp target/release/static-registry /static-registry \
 && strip /static-registry

# ---- runtime -----------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /static-registry /usr/local/bin/static-registry

# Container defaults: listen on every interface, JSON logs. Environment variables override the
# config file (so `listen` in the config is ignored here); override them with `-e` if needed.
ENV STATIC_REGISTRY_LISTEN=0.0.0.0:5000 \
    STATIC_REGISTRY_LOG_FORMAT=json
EXPOSE 5000
USER nonroot:nonroot
# SIGTERM stops accepting and drains in-flight requests for up to `shutdown_timeout` (30 s):
# give the orchestrator's stop timeout (docker stop -t, terminationGracePeriodSeconds) more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/static-registry"]
CMD ["serve", "--config", "/etc/static-registry/config.toml"]
