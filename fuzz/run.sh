#!/usr/bin/env bash
# Builds and runs the fuzz harnesses one after another, then prints the executions per target.
#
#   fuzz/run.sh [RUNS] [TARGET...]      RUNS defaults to 100000; no TARGET means all of them.
#
# Environment: FUZZ_TARGET_DIR (default fuzz/target; keep it apart from the normal target dir,
# fuzz builds use other RUSTFLAGS), SANITIZER (default none; `address` if it builds),
# MAX_TIME (seconds per target, 0 = no limit), NICE (default 10), MAX_FILE_MB (default 1024).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); a stable toolchain works through
# RUSTC_BOOTSTRAP=1. One fuzzer at a time, one process: the machine's cores are shared.
# Crashes land in fuzz/artifacts/TARGET/, logs in fuzz/logs/TARGET.log; the corpus grows in
# fuzz/corpus/TARGET/ (seeded by gen_seeds.py from fixtures/). Nothing here touches the network.
set -euo pipefail

FUZZ="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$FUZZ")"
RUNS="${1:-100000}"
shift || true
ALL=(route reference index manifest auth docker_archive oci_archive)
TARGETS=("${@:-${ALL[@]}}")
TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ/target}"
SANITIZER="${SANITIZER:-none}"
MAX_TIME="${MAX_TIME:-0}"
NICE="${NICE:-10}"
export RUSTC_BOOTSTRAP=1
# The archive readers decompress to temporary files: keep them in memory, and bound every file
# a harness writes (a decompression bomb then stops as "file size exceeded", a finding).
[ -d /dev/shm ] && export TMPDIR=/dev/shm
MAX_FILE_MB="${MAX_FILE_MB:-1024}"

# Same dependency versions as the project itself.
cp "$ROOT/Cargo.lock" "$FUZZ/Cargo.lock"
python3 "$FUZZ/gen_seeds.py"
mkdir -p "$FUZZ/logs"
cd "$ROOT"

nice -n "$NICE" cargo fuzz build -s "$SANITIZER" -a --target-dir "$TARGET_DIR"

declare -A DICT=([route]=route [reference]=reference [index]=json [manifest]=json [auth]=auth
                 [docker_archive]=json [oci_archive]=json)
status=0
summary=()
for t in "${TARGETS[@]}"; do
    case "$t" in
        docker_archive|oci_archive) max_len=65536 ;;
        *) max_len=4096 ;;
    esac
    log="$FUZZ/logs/$t.log"
    echo "== $t: $RUNS runs (log: $log)"
    start=$(date +%s.%N)
    if ! (ulimit -f $((MAX_FILE_MB * 1024)) && exec nice -n "$NICE" cargo fuzz run -s "$SANITIZER" -a --target-dir "$TARGET_DIR" "$t" \
        "$FUZZ/corpus/$t" -- -runs="$RUNS" -max_total_time="$MAX_TIME" -max_len="$max_len" \
        -dict="$FUZZ/dict/${DICT[$t]}.dict" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1) >"$log" 2>&1; then
        status=1
        echo "!! $t failed; see $log and fuzz/artifacts/$t/"
        grep -m5 -E "panicked|ERROR|SUMMARY|Test unit written" "$log" || true
    fi
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" | tail -1 || true)
    rate=$(echo "${execs:-0} / $secs" | bc)
    cov=$(grep -oP '#\d+\s+\w+\s+cov: \K\d+' "$log" | tail -1 || true)
    summary+=("$(printf '%-16s %12s %8.0f s %8s/s  cov %s' "$t" "${execs:-?}" "$secs" "$rate" "${cov:-?}")")
done
echo
echo "target             executions     wall    execs/s  coverage"
printf '%s\n' "${summary[@]}"
exit "$status"
