# Shared by the bench/*.sh scripts (sourced, not run): tools, the servers, publishing, cleanup.
#
# Everything runs on loopback, in a fresh temporary directory ($WORK), and every process started
# here is recorded and killed when the calling script exits (trap EXIT), however it exits.
# KEEP=1 keeps $WORK (logs, configs, the bucket) for inspection.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"

# Test-only credentials: s3s-fs accepts exactly these, and nothing here leaves loopback.
ACCESS_KEY=AKIDSTATICREGISTRYBENCH
SECRET_KEY=benchOnly/Secret+NotUsedAnywhereElse
BUCKET=registry-bench
SR_PREFIX=sr
PIDS=()
# The Accept header of manifest requests (distribution answers an OCI manifest only when asked).
MANIFEST_ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

bench_init() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sr-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    log "work directory: $WORK"
}

bench_cleanup() {
    local rc=$?
    local pid
    for pid in "${PIDS[@]}"; do kill_tree "$pid"; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # A script's own last words (e.g. unmounting what a killed tool left mounted under $WORK).
    if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
    if [ -n "${KEEP:-}" ]; then
        log "kept $WORK"
    else
        # Never into another file system, should something still be mounted under $WORK.
        rm -rf --one-file-system "$WORK"
    fi
    exit "$rc"
}

# kill_tree PID: SIGTERM to PID and its descendants (deepest first, found by parent pid).
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

# Stops one process this script started (and forgets it).
stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# run_child CMD...: runs CMD in the foreground, but as a recorded child this script waits for:
# bash runs a trap only between commands, so a signal then interrupts the wait at once, and the
# cleanup stops CMD and whatever it started.
run_child() {
    "$@" &
    local pid=$! rc=0
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# ensure_tools CMD:DEBIAN_PACKAGE... installs the Debian packages of missing commands, and s3s-fs
# from crates.io unless the script set NEED_S3S=0.
ensure_tools() {
    local missing=() entry
    for entry in "$@"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        [ "$(id -u)" -eq 0 ] || die "need root to apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
    if [ "${NEED_S3S:-1}" != 0 ] && ! command -v s3s-fs >/dev/null 2>&1; then
        log "installing s3s-fs"
        cargo install s3s-fs --version 0.14.1 --locked --features binary
    fi
}

# The release binary: $SR_BIN, or `cargo build --release` (into $CARGO_TARGET_DIR if set).
build_release() {
    if [ -z "${SR_BIN:-}" ]; then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release --locked -q --bin static-registry)
        local target=${CARGO_TARGET_DIR:-target}
        case "$target" in /*) ;; *) target=$ROOT/$target ;; esac
        SR_BIN=$target/release/static-registry
    fi
    [ -x "$SR_BIN" ] || die "no binary at $SR_BIN"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL [SECONDS]: until anything answers HTTP there.
wait_http() {
    local url=$1 deadline=$((SECONDS + ${2:-30}))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" != 000 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "nothing answered at $url (logs in $WORK)"
        sleep 0.1
    done
}

# start NAME CMD...: runs CMD in the background, output to $WORK/NAME.log; sets LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# s3s-fs over $WORK/s3 with $BUCKET created; sets S3_PORT, S3_DIR, S3_PID.
start_s3s() {
    S3_DIR=$WORK/s3
    mkdir -p "$S3_DIR/$BUCKET"
    S3_PORT=$(free_port)
    start s3s-fs env RUST_LOG=error s3s-fs --host 127.0.0.1 --port "$S3_PORT" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$S3_DIR"
    S3_PID=$LAST_PID
    wait_http "http://127.0.0.1:$S3_PORT/"
}

# nginx answering every request with a 307 to a URL as long as a presigned one; sets NGINX_PORT.
start_nginx() {
    NGINX_PORT=$(free_port)
    local p=$WORK/nginx
    mkdir -p "$p/tmp"
    # A Location of the same length as serve's presigned blob URLs, so the responses match in size.
    local loc="http://127.0.0.1:$S3_PORT/$BUCKET/$SR_PREFIX/blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=$ACCESS_KEY%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&response-content-type=application%2Foctet-stream&X-Amz-Signature=0000000000000000000000000000000000000000000000000000000000000000"
    cat >"$p/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $p/nginx.pid;
error_log $p/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $p/tmp/client_body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            add_header Docker-Content-Digest "sha256:0000000000000000000000000000000000000000000000000000000000000000" always;
            return 307 "$loc";
        }
    }
}
EOF
    start nginx nginx -p "$p" -c "$p/nginx.conf"
    NGINX_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/"
}

# start_distribution NAME PORT filesystem DIR | s3 [inmemory|none]: distribution 2.8. Sets DIST_PID.
start_distribution() {
    local name=$1 port=$2 kind=$3 cfg=$WORK/$1.yml
    case "$kind" in
    filesystem)
        cat >"$cfg" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $4}
  redirect: {disable: true}
http: {addr: 127.0.0.1:$port}
EOF
        ;;
    s3)
        cat >"$cfg" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  s3:
    region: us-east-1
    regionendpoint: http://127.0.0.1:$S3_PORT
    bucket: $BUCKET
    accesskey: $ACCESS_KEY
    secretkey: $SECRET_KEY
    secure: false
    v4auth: true
  redirect: {disable: false}
EOF
        if [ "${4:-none}" = inmemory ]; then
            printf '  cache: {blobdescriptor: inmemory}\n' >>"$cfg"
        fi
        printf 'http: {addr: 127.0.0.1:%s}\n' "$port" >>"$cfg"
        ;;
    *) die "start_distribution: unknown storage $kind" ;;
    esac
    # Its Go AWS SDK panics on the AWS_CA_BUNDLE these machines set.
    start "$name" env -u AWS_CA_BUNDLE docker-registry serve "$cfg"
    DIST_PID=$LAST_PID
    wait_http "http://127.0.0.1:$port/v2/"
}

# The config file serve and publish share: the layout under s3://$BUCKET/$SR_PREFIX.
write_sr_config() {
    SR_CONFIG=$WORK/static-registry.toml
    cat >"$SR_CONFIG" <<EOF
store = "s3://$BUCKET/$SR_PREFIX"

[s3]
endpoint = "http://127.0.0.1:$S3_PORT"
path_style = true
region = "us-east-1"
EOF
}

# sr ARGS...: the release binary with the bucket's credentials and config.
sr() {
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY="$SECRET_KEY" RUST_LOG="${SR_LOG:-warn}" \
        "$SR_BIN" --config "$SR_CONFIG" "$@"
}

# start_serve PORT [ARGS...]: `static-registry serve` (S3 signer over the bucket). Sets SERVE_PID.
start_serve() {
    local port=$1
    shift
    start serve env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY="$SECRET_KEY" RUST_LOG="${SR_LOG:-warn}" \
        "$SR_BIN" --config "$SR_CONFIG" serve --listen "127.0.0.1:$port" "$@"
    SERVE_PID=$LAST_PID
    wait_http "http://127.0.0.1:$port/v2/"
}

# push_distribution LAYOUT PLAN PORT: copies every image of PLAN (`img<k> repo:tag` lines) from
# the OCI layout into the distribution at PORT with skopeo, 4 at a time.
push_distribution() {
    local layout=$1 plan=$2 port=$3
    # shellcheck disable=SC2016
    xargs -P 4 -L 1 sh -c 'skopeo copy -q --dest-tls-verify=false "oci:$0:$1" "docker://127.0.0.1:'"$port"'/$2" >/dev/null' "$layout" \
        < <(awk '{print $1, $2}' "$plan") || die "skopeo copy into distribution failed"
}

# copy_distribution_tree FSROOT: puts a filesystem distribution's tree into the bucket, where
# s3s-fs serves it as objects (it stores objects as plain files under DIR/BUCKET/KEY). It also
# records each copied object's ETag the way s3s-fs does on a PUT: without one, s3s-fs re-reads
# the whole file to hash it on every GET and HEAD, which would slow distribution's reads (and
# pulls) by an artefact of the test server, not of distribution.
copy_distribution_tree() {
    mkdir -p "$S3_DIR/$BUCKET"
    cp -a "$1/docker" "$S3_DIR/$BUCKET/"
    python3 - "$S3_DIR" "$BUCKET" <<'PY'
import base64, hashlib, json, os, sys
root, bucket = sys.argv[1], sys.argv[2]
b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")
top = os.path.join(root, bucket)
for d, _, files in os.walk(os.path.join(top, "docker")):
    for f in files:
        path = os.path.join(d, f)
        key = os.path.relpath(path, top)
        with open(path, "rb") as fh:
            md5 = hashlib.md5(fh.read()).hexdigest()
        info = os.path.join(root, f".bucket-{b64(bucket)}.object-{b64(key)}.internal.json")
        with open(info, "w") as fh:
            json.dump({"e_tag": md5}, fh)
PY
}

# check_blob BASE PATH DIGEST: GET BASE+PATH must be a 307 whose Location serves the bytes of
# DIGEST (so each target is checked to really redirect to the object, not just to answer 307).
check_blob() {
    local base=$1 path=$2 digest=$3 code loc got
    read -r code loc < <(curl -s -o /dev/null -w '%{http_code} %{redirect_url}\n' "$base$path")
    [ "$code" = 307 ] || die "GET $base$path answered $code, not 307"
    got=$(curl -sf "$loc" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$digest" ] || die "the redirect of $base$path did not serve $digest"
}

# check_head BASE PATH: HEAD must answer 200 with a Docker-Content-Digest.
check_head() {
    local base=$1 path=$2 out
    out=$(curl -s -I -H "Accept: $MANIFEST_ACCEPT" "$base$path")
    case "$out" in
    "HTTP/1.1 200"*) ;;
    *) die "HEAD $base$path: $(head -1 <<<"$out")" ;;
    esac
    grep -qi '^docker-content-digest: sha256:' <<<"$out" || die "HEAD $base$path: no Docker-Content-Digest"
}

# The load average over the last minute (the benchmarks share the machine with wrk and the
# servers; anything else running skews absolute numbers, though ratios measured together hold).
loadavg() { cut -d' ' -f1 /proc/loadavg; }
