#!/usr/bin/env bash
# The publish benchmark (issue #8): the first `static-registry publish` of a multi-layer image to
# S3 (s3s-fs) versus `aws s3 cp --recursive` of the same bytes (the image's blobs directory) to
# the same server, and a re-publish, which must upload nothing.
#
#   bench/publish.sh
#
# Knobs: LAYERS=20 LAYER_MB=10 (~200 MB of random data) ROUNDS=3 (medians; each round writes
# under fresh prefixes) SR_BIN=path KEEP=1. Needs the AWS CLI (`aws`; Debian: apt-get install
# awscli).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYERS=${LAYERS:-20}
LAYER_MB=${LAYER_MB:-10}
ROUNDS=${ROUNDS:-3}

ensure_tools aws:awscli python3:python3 curl:curl
build_release
bench_init

log "generating one image: $LAYERS layers x $LAYER_MB MiB of random data"
python3 "$BENCH_DIR/gen_images.py" "$WORK/image" --images 1 --layers "$LAYERS" \
    --layer-size $((LAYER_MB * 1024 * 1024))
size_mb=$(du -sm "$WORK/image/blobs" | cut -f1)
files=$(find "$WORK/image/blobs" -type f | wc -l)

start_s3s
write_sr_config

awscp() { # awscp PREFIX
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        aws --endpoint-url "http://127.0.0.1:$S3_PORT" s3 cp --recursive --only-show-errors \
        "$WORK/image/blobs" "s3://$BUCKET/$1"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

first=() aws_t=() again=()
for round in $(seq "$ROUNDS"); do
    # Alternate the order, so neither always runs on a warmer page cache.
    for what in $([ $((round % 2)) = 1 ] && echo "publish aws" || echo "aws publish"); do
        if [ "$what" = aws ]; then
            t=$(now)
            awscp "awscp$round"
            aws_t+=("$(elapsed "$t")")
        else
            t=$(now)
            sr publish --quiet --store "s3://$BUCKET/sr$round" "oci:$WORK/image:img0" \
                --tag bench/big:v1 >"$WORK/publish-$round.txt"
            first+=("$(elapsed "$t")")
        fi
    done
    t=$(now)
    sr publish --quiet --store "s3://$BUCKET/sr$round" "oci:$WORK/image:img0" \
        --tag bench/big:v1 >"$WORK/republish-$round.txt"
    again+=("$(elapsed "$t")")
    log "round $round: publish ${first[-1]}s, aws s3 cp ${aws_t[-1]}s, re-publish ${again[-1]}s"
done

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
m_first=$(median "${first[@]}")
m_aws=$(median "${aws_t[@]}")
m_again=$(median "${again[@]}")

echo
echo "static-registry publish benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(loadavg)"
echo "one image, $LAYERS layers, $size_mb MiB in $files blobs, to s3s-fs on loopback; medians of $ROUNDS rounds"
echo
printf '%-40s %9s %9s\n' "" "seconds" "MiB/s"
awk -v t="$m_first" -v z="$size_mb" 'BEGIN { printf "%-40s %9.2f %9.0f\n", "static-registry publish (first)", t, z / t }'
awk -v t="$m_aws" -v z="$size_mb" 'BEGIN { printf "%-40s %9.2f %9.0f\n", "aws s3 cp --recursive (same bytes)", t, z / t }'
awk -v t="$m_again" 'BEGIN { printf "%-40s %9.2f %9s\n", "static-registry publish (again)", t, "-" }'
awk -v a="$m_first" -v b="$m_aws" 'BEGIN { printf "\nfirst publish / aws s3 cp: %.2fx\n", a / b }'
echo
echo "first publish summary (round 1):"
sed 's/^/  /' "$WORK/publish-1.txt"
echo "re-publish summary (round 1):"
sed 's/^/  /' "$WORK/republish-1.txt"
