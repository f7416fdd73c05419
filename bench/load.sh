#!/usr/bin/env bash
# The load benchmark (issue #8): `static-registry serve` against the limit (nginx answering every
# request with `return 307`) and the incumbent (CNCF distribution 2.8 with S3 storage and
# redirects on), all over the same s3s-fs bucket, in one run on one machine.
#
#   bench/load.sh
#
# It generates REPOS x IMAGES_PER_REPO small images (LAYERS layers each, every blob distinct),
# publishes them with `static-registry publish` into s3://BUCKET/sr, pushes the same images into a
# filesystem distribution with skopeo and copies its tree into the bucket (s3s-fs lacks the
# ListMultipartUploads distribution's S3 push needs), then starts, side by side:
#   nginx        `return 307` to a URL as long as a presigned one (2 workers): the limit
#   serve        static-registry serve, S3 SigV4 signer, release build
#   distribution docker-registry serve, S3 storage, redirect on: stats S3 per blob GET
#   dist+cache   the same with `cache: blobdescriptor: inmemory` (Debian's default config)
# and runs the same load against each: blob GETs cycling over every digest of every repository
# (wrk; redirects not followed), then manifest HEADs (hey: wrk cannot do HEAD). It prints req/s, p50/p99 latency, server CPU per
# request, and the ratios; and serve's memory with IDLE keep-alive connections open.
#
# Knobs (environment): CONNS=64 DURATION=15 THREADS=2 WARMUP=3 ROUNDS=1 REPOS=20
# IMAGES_PER_REPO=3 LAYERS=3 IDLE=1000 TARGETS="nginx serve distribution dist+cache"
# SR_BIN=path (skip the release build) SR_BIN_BASE=path (also measure this build of serve, as
# target serve-base: before/after in one run) KEEP=1 (keep the work directory).
#
# Absolute numbers depend on what else runs on the machine (wrk shares the cores with the
# servers); compare ratios from one run. See docs/performance.md.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-64}
DURATION=${DURATION:-15}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
REPOS=${REPOS:-20}
IMAGES_PER_REPO=${IMAGES_PER_REPO:-3}
LAYERS=${LAYERS:-3}
IDLE=${IDLE:-1000}
TARGETS=${TARGETS:-nginx serve ${SR_BIN_BASE:+serve-base }distribution dist+cache}

ensure_tools wrk:wrk hey:hey nginx:nginx docker-registry:docker-registry skopeo:skopeo curl:curl python3:python3
build_release
bench_init

log "load average $(loadavg); $(nproc) cores"
images=$((REPOS * IMAGES_PER_REPO))
log "generating $images images x $LAYERS layers"
python3 "$BENCH_DIR/gen_images.py" "$WORK/images" --images "$images" --layers "$LAYERS" --layer-size 2048
python3 "$BENCH_DIR/plan.py" "$WORK/images" "$WORK" --repos "$REPOS"

start_s3s
write_sr_config

log "publishing into s3://$BUCKET/$SR_PREFIX (static-registry publish)"
while read -r img ref; do
    sr publish --quiet "oci:$WORK/images:$img" --tag "$ref" >/dev/null
done <"$WORK/plan.txt"

log "pushing into a filesystem distribution (skopeo), then copying its tree into the bucket"
port=$(free_port)
start_distribution dist-fs "$port" filesystem "$WORK/distfs"
push_distribution "$WORK/images" "$WORK/plan.txt" "$port"
stop_pid "$DIST_PID"
copy_distribution_tree "$WORK/distfs"
log "bucket: $(find "$S3_DIR/$BUCKET" -type f | wc -l) objects"

declare -A BASE PID
for t in $TARGETS; do
    port=$(free_port)
    BASE[$t]=http://127.0.0.1:$port
    case "$t" in
    nginx)
        start_nginx
        BASE[$t]=http://127.0.0.1:$NGINX_PORT
        PID[$t]=$NGINX_PID
        ;;
    serve)
        start_serve "$port"
        PID[$t]=$SERVE_PID
        ;;
    serve-base)
        SR_BIN=$SR_BIN_BASE start_serve "$port"
        PID[$t]=$SERVE_PID
        ;;
    distribution)
        start_distribution distribution "$port" s3 none
        PID[$t]=$DIST_PID
        ;;
    dist+cache)
        start_distribution dist-cache "$port" s3 inmemory
        PID[$t]=$DIST_PID
        ;;
    *) die "unknown target $t" ;;
    esac
done

log "checking every target redirects to the right bytes"
first_manifest=$(head -1 "$WORK/manifest-paths.txt")
for t in $TARGETS; do
    [ "$t" = nginx ] && continue
    while read -r path digest; do
        check_blob "${BASE[$t]}" "$path" "$digest"
    done <"$WORK/blob-check.txt"
    check_head "${BASE[$t]}" "$first_manifest"
done

# CPU seconds used so far by a process and its children (nginx's workers).
cpu_secs() {
    local pids
    pids=$(
        echo "$1"
        ps -o pid= --ppid "$1" || true
    )
    # shellcheck disable=SC2086
    for p in $pids; do cat "/proc/$p/stat" 2>/dev/null || true; done |
        awk -v hz="$(getconf CLK_TCK)" '{ s += $14 + $15 } END { printf "%.2f\n", s / hz }'
}

rss() { awk '/^(VmRSS|VmHWM|RssAnon|RssFile)/ { printf "%s %.1f MB  ", $1, $2 / 1024 }' "/proc/$1/status"; }

declare -A IDLE_LINE
for t in serve serve-base; do
    [[ " $TARGETS " == *" $t "* ]] || continue
    log "$t: $IDLE idle keep-alive connections"
    IDLE_LINE[$t]="$(rss "${PID[$t]}")-> $(python3 "$BENCH_DIR/idle_conns.py" \
        "${BASE[$t]#http://}" "${PID[$t]}" --connections "$IDLE")"
done

results=$WORK/results.tsv
: >"$results"
# run SCENARIO METHOD PATHS ROUND: the same load against every target, each after a warm-up.
# GETs use wrk over every path; HEADs use hey on the first path (wrk cannot read a response to
# HEAD that carries a Content-Length: it waits for a body that never comes).
run() {
    local scenario=$1 method=$2 paths=$3 round=$4 t out before after url
    for t in $TARGETS; do
        out=$WORK/$scenario-$t-$round.txt
        if [ "$method" = HEAD ]; then
            url=${BASE[$t]}$(head -1 "$paths")
            hey -z "${WARMUP}s" -c "$CONNS" -m HEAD -H "Accept: $MANIFEST_ACCEPT" -disable-redirects \
                "$url" >/dev/null
            before=$(cpu_secs "${PID[$t]}")
            hey -z "${DURATION}s" -c "$CONNS" -m HEAD -H "Accept: $MANIFEST_ACCEPT" -disable-redirects \
                -t 10 "$url" >"$out"
        else
            WRK_METHOD=$method WRK_PATHS=$paths wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" \
                --timeout 10s -s "$BENCH_DIR/paths.lua" "${BASE[$t]}" >/dev/null
            before=$(cpu_secs "${PID[$t]}")
            WRK_METHOD=$method WRK_PATHS=$paths wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" \
                --timeout 10s --latency -s "$BENCH_DIR/paths.lua" "${BASE[$t]}" >"$out"
        fi
        after=$(cpu_secs "${PID[$t]}")
        printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$t" "$round" "$out" \
            "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" >>"$results"
        log "$scenario $t: $(grep -m1 Requests/sec "$out")"
    done
}

for round in $(seq "$ROUNDS"); do
    log "round $round: blob GETs ($(wc -l <"$WORK/blob-paths.txt") paths), $CONNS connections, ${DURATION}s each"
    run blob-get GET "$WORK/blob-paths.txt" "$round"
    log "round $round: manifest HEADs (hey, one tag)"
    run manifest-head HEAD "$WORK/manifest-paths.txt" "$round"
done

echo
echo "static-registry load benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(loadavg)"
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s (+${WARMUP}s warm-up), $REPOS repositories, $images images," \
    "$(wc -l <"$WORK/blob-paths.txt") blob paths; rounds: $ROUNDS (medians)"
echo
python3 "$BENCH_DIR/report.py" "$results"
echo
for t in serve serve-base; do
    [ -n "${IDLE_LINE[$t]:-}" ] || continue
    echo "$t, $IDLE idle connections: ${IDLE_LINE[$t]}"
    echo "$t after the load: $(rss "${PID[$t]}")"
done
