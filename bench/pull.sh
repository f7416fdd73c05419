#!/usr/bin/env bash
# The pull benchmark (issue #8): `skopeo copy` of one multi-layer image through `serve` + S3
# (a 307 to a presigned s3s-fs URL per blob) versus straight from distribution 2.8 over the same
# s3s-fs bucket (S3 storage, redirects on: the same bytes from the same server), and the ratio.
#
#   bench/pull.sh
#
# Knobs: LAYERS=20 LAYER_MB=10 (a ~200 MB image of random, incompressible data) RUNS=5
# SR_BIN=path KEEP=1. Uses hyperfine when installed (apt-get install hyperfine), else times RUNS
# runs itself.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYERS=${LAYERS:-20}
LAYER_MB=${LAYER_MB:-10}
RUNS=${RUNS:-5}

ensure_tools docker-registry:docker-registry skopeo:skopeo curl:curl python3:python3
build_release
bench_init

log "generating one image: $LAYERS layers x $LAYER_MB MiB of random data"
python3 "$BENCH_DIR/gen_images.py" "$WORK/image" --images 1 --layers "$LAYERS" \
    --layer-size $((LAYER_MB * 1024 * 1024))
echo "img0 bench/big:v1" >"$WORK/plan.txt"
size_mb=$(du -sm "$WORK/image/blobs" | cut -f1)

start_s3s
write_sr_config
log "publishing into s3://$BUCKET/$SR_PREFIX"
sr publish --quiet "oci:$WORK/image:img0" --tag bench/big:v1 >/dev/null
log "pushing into a filesystem distribution, then copying its tree into the bucket"
port=$(free_port)
start_distribution dist-fs "$port" filesystem "$WORK/distfs"
push_distribution "$WORK/image" "$WORK/plan.txt" "$port"
stop_pid "$DIST_PID"
copy_distribution_tree "$WORK/distfs"

serve_port=$(free_port)
start_serve "$serve_port"
dist_port=$(free_port)
start_distribution distribution "$dist_port" s3 none

pull() { # pull PORT DEST
    rm -rf "$2"
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/bench/big:v1" "dir:$2" >/dev/null
}
# Both must deliver the same image.
pull "$serve_port" "$WORK/pull-serve"
pull "$dist_port" "$WORK/pull-dist"
cmp -s "$WORK/pull-serve/manifest.json" "$WORK/pull-dist/manifest.json" ||
    die "serve and distribution returned different manifests"
rm -rf "$WORK/pull-serve" "$WORK/pull-dist"

declare -A MEAN SD
if command -v hyperfine >/dev/null 2>&1; then
    export -f pull
    hyperfine --shell bash --runs "$RUNS" --warmup 1 --style basic --export-json "$WORK/pull.json" \
        -n serve "pull $serve_port $WORK/p" \
        -n distribution "pull $dist_port $WORK/p" >"$WORK/hyperfine.txt" 2>&1 ||
        die "hyperfine failed: $(cat "$WORK/hyperfine.txt")"
    while read -r name mean sd; do
        MEAN[$name]=$mean
        SD[$name]=$sd
    done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["command"], r["mean"], r["stddev"] or 0)' "$WORK/pull.json")
else
    for name in serve distribution; do
        p=$serve_port
        [ "$name" = distribution ] && p=$dist_port
        pull "$p" "$WORK/p"
        times=()
        for _ in $(seq "$RUNS"); do
            t0=$(date +%s.%N)
            pull "$p" "$WORK/p"
            times+=("$(echo "$(date +%s.%N) - $t0" | bc)")
        done
        read -r MEAN[$name] SD[$name] < <(python3 -c '
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0)' "${times[@]}")
    done
fi
rm -rf "$WORK/p"

echo
echo "static-registry pull benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(loadavg)"
echo "skopeo copy docker://… dir:… of one image: $LAYERS layers, $size_mb MiB; $RUNS runs each"
echo
printf '%-28s %9s %9s %10s\n' target "mean s" "± s" "MiB/s"
for name in serve distribution; do
    label=$name
    [ "$name" = serve ] && label="serve (307 -> s3s-fs)"
    [ "$name" = distribution ] && label="distribution (307 -> s3s-fs)"
    awk -v l="$label" -v m="${MEAN[$name]}" -v s="${SD[$name]}" -v z="$size_mb" \
        'BEGIN { printf "%-28s %9.2f %9.2f %10.0f\n", l, m, s, z / m }'
done
awk -v a="${MEAN[serve]}" -v b="${MEAN[distribution]}" \
    'BEGIN { printf "\npull time serve/distribution: %.2fx\n", a / b }'
