#!/usr/bin/env bash
# The publish benchmark (issues #8 and #18), in up to two parts, in one invocation:
#
# s3           the first `static-registry publish` of a multi-layer image of random data (its
#              layers already gzipped) to S3 (s3s-fs on loopback) versus `aws s3 cp --recursive`
#              of the same bytes (the image's blobs directory) to the same server; then a
#              re-publish, which must upload nothing.
# docker-save  one realistic `docker save` tarball (uncompressed layer tars), published into a
#              fresh local directory with
#                  static-registry publish docker-archive:app.tar --store DIR --tag bench/app:1
#              versus
#                  skopeo copy docker-archive:app.tar oci:DIR:app
#              which gzips every layer as a push does. Both run on all cores, then pinned to one
#              (`taskset -c $ONE_CPU`) to show how each scales; wall time and CPU time (user +
#              system, /usr/bin/time) of each, medians, ratios, and the size of what each wrote.
#              Then a re-publish into the same store, whose summary must say it wrote nothing.
#
#   bench/publish.sh
#   PARTS=docker-save CACHE_DIR=/var/tmp/sr-bench SR_BIN=new SR_BIN_BASE=old bench/publish.sh
#
# The docker-save image is built once per run (or once per CACHE_DIR) without a Docker daemon:
# `debootstrap --variant=minbase $SUITE` from $MIRROR, without apt's lists, its .debs, /dev, and
# what differs between two runs (logs, ldconfig's aux-cache), as `docker import` of that rootfs
# would give (layer 1, ~115 MiB); then one layer per directory of EXTRA copied from this host, as
# a Dockerfile's COPY would (by default the Python standard library, /usr/share/perl and
# /usr/share/zoneinfo: ~70 MiB); every mtime set to $SOURCE_DATE_EPOCH. umoci builds the OCI
# layout (`umoci insert` per layer), `skopeo copy oci:… docker-archive:…` writes the tarball,
# and bench/docker_save.py lays it out exactly as `docker save` (20.10–24) does: per layer
# `<id>/VERSION`, `<id>/json` and the uncompressed `<id>/layer.tar`, then the config,
# `manifest.json` and `repositories`. No daemon and no network namespace is involved, and the only
# download is debootstrap's from $MIRROR (debootstrap mounts /proc in its target for a while: on
# exit, whatever is still mounted under the work directory is unmounted).
#
# Knobs (environment):
#   PARTS="s3 docker-save"  which parts to run
#   ROUNDS=3                rounds per part (medians; the order of the tools rotates each round)
#   SR_BIN=path             the binary to measure (skips the release build)
#   SR_BIN_BASE=path        also measure this build, as static-registry-base (before/after)
#   KEEP=1                  keep the work directory
#   s3:          LAYERS=20 LAYER_MB=10 (~200 MB of random data); needs the AWS CLI (`aws`;
#                Debian: apt-get install awscli)
#   docker-save: CACHE_DIR=dir (keep the tarball there and re-use it in later runs)
#                SUITE=bookworm MIRROR=http://deb.debian.org/debian
#                EXTRA="/usr/lib/python3.X /usr/share/perl /usr/share/zoneinfo" (missing ones are
#                skipped) SOURCE_DATE_EPOCH=1767225600 ONE_CPU=0 (the core of the one-core runs)
#
# Everything is written under the work directory (and CACHE_DIR). Every process that runs for long
# (debootstrap, skopeo, the timed runs, the servers) is a recorded child (lib.sh's run_child,
# start): when the script exits, however it exits, lib.sh stops each one and its descendants.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PARTS=${PARTS:-s3 docker-save}
ROUNDS=${ROUNDS:-3}
LAYERS=${LAYERS:-20}
LAYER_MB=${LAYER_MB:-10}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
ONE_CPU=${ONE_CPU:-0}
CACHE_DIR=${CACHE_DIR:-}
if [ -z "${EXTRA+set}" ]; then
    EXTRA="$(find /usr/lib -maxdepth 1 -name 'python3.[0-9]*' -type d | sort -V | tail -1) /usr/share/perl /usr/share/zoneinfo"
fi

has_part() { [[ " $PARTS " == *" $1 "* ]]; }
for p in $PARTS; do
    case "$p" in s3 | docker-save) ;; *) die "unknown part $p in PARTS (s3, docker-save)" ;; esac
done

tools=(python3:python3)
NEED_S3S=0
if has_part s3; then
    tools+=(aws:awscli curl:curl)
    NEED_S3S=1
fi
if has_part docker-save; then
    [ "$(id -u)" -eq 0 ] || die "the docker-save part needs root (debootstrap, files owned by root)"
    tools+=(debootstrap:debootstrap umoci:umoci skopeo:skopeo taskset:util-linux /usr/bin/time:time pgrep:procps)
fi
ensure_tools "${tools[@]}"
build_release
if [ -n "${SR_BIN_BASE:-}" ]; then
    [ -x "$SR_BIN_BASE" ] || die "no binary at SR_BIN_BASE=$SR_BIN_BASE"
fi
bench_init

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# ratio A B: A / B, "-" when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }

# ---------------------------------------------------------------------------------------------
# Part s3: first publish to S3 vs aws s3 cp --recursive, and a re-publish.

part_s3() {
    log "s3: generating one image: $LAYERS layers x $LAYER_MB MiB of random data"
    python3 "$BENCH_DIR/gen_images.py" "$WORK/image" --images 1 --layers "$LAYERS" \
        --layer-size $((LAYER_MB * 1024 * 1024))
    local size_mb files
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
    # s3_publish BIN PREFIX OUT: one publish of the image into s3://BUCKET/PREFIX.
    s3_publish() {
        SR_BIN=$1 sr publish --quiet --store "s3://$BUCKET/$2" "oci:$WORK/image:img0" \
            --tag bench/big:v1 >"$3"
    }

    local round what t order
    local first=() base=() aws_t=() again=()
    for round in $(seq "$ROUNDS"); do
        # Alternate the order, so neither always runs on a warmer page cache.
        order="publish ${SR_BIN_BASE:+base }aws"
        [ $((round % 2)) = 1 ] || order="aws ${SR_BIN_BASE:+base }publish"
        for what in $order; do
            t=$(now)
            case "$what" in
            aws)
                awscp "awscp$round"
                aws_t+=("$(elapsed "$t")")
                ;;
            publish)
                s3_publish "$SR_BIN" "sr$round" "$WORK/publish-$round.txt"
                first+=("$(elapsed "$t")")
                ;;
            base)
                s3_publish "$SR_BIN_BASE" "base$round" "$WORK/publish-base-$round.txt"
                base+=("$(elapsed "$t")")
                ;;
            esac
        done
        t=$(now)
        s3_publish "$SR_BIN" "sr$round" "$WORK/republish-$round.txt"
        again+=("$(elapsed "$t")")
        check_nothing_written "$WORK/republish-$round.txt" "s3 re-publish, round $round"
        log "s3 round $round: publish ${first[-1]}s${SR_BIN_BASE:+, base ${base[-1]}s}, aws s3 cp ${aws_t[-1]}s, re-publish ${again[-1]}s"
    done

    local m_first m_aws m_again m_base=""
    m_first=$(median "${first[@]}")
    m_aws=$(median "${aws_t[@]}")
    m_again=$(median "${again[@]}")
    [ -z "${SR_BIN_BASE:-}" ] || m_base=$(median "${base[@]}")

    echo
    echo "static-registry publish benchmark, part s3: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(loadavg)"
    echo "one image, $LAYERS layers, $size_mb MiB in $files blobs, to s3s-fs on loopback; medians of $ROUNDS rounds"
    echo
    printf '%-40s %9s %9s\n' "" "seconds" "MiB/s"
    awk -v t="$m_first" -v z="$size_mb" 'BEGIN { printf "%-40s %9.2f %9.0f\n", "static-registry publish (first)", t, z / t }'
    [ -z "$m_base" ] || awk -v t="$m_base" -v z="$size_mb" 'BEGIN { printf "%-40s %9.2f %9.0f\n", "static-registry-base publish (first)", t, z / t }'
    awk -v t="$m_aws" -v z="$size_mb" 'BEGIN { printf "%-40s %9.2f %9.0f\n", "aws s3 cp --recursive (same bytes)", t, z / t }'
    awk -v t="$m_again" 'BEGIN { printf "%-40s %9.2f %9s\n", "static-registry publish (again)", t, "-" }'
    echo
    echo "first publish / aws s3 cp: $(ratio "$m_first" "$m_aws")"
    [ -z "$m_base" ] || echo "first publish / static-registry-base: $(ratio "$m_first" "$m_base")"
    echo
    echo "first publish summary (round 1):"
    sed 's/^/  /' "$WORK/publish-1.txt"
    echo "re-publish summary (round 1):"
    sed 's/^/  /' "$WORK/republish-1.txt"
}

# check_nothing_written SUMMARY WHAT: the publish summary must say no blob and no manifest was
# written ("blobs: wrote 0 (0 B), ...; manifests: wrote 0").
check_nothing_written() {
    local first
    first=$(head -1 "$1")
    [[ "$first" =~ ^blobs:\ wrote\ 0\ \(0\ B\),\ skipped\ [1-9][0-9]*\ .*\;\ manifests:\ wrote\ 0$ ]] ||
        die "$2 wrote something (or skipped nothing): '$first' (summary in $1)"
}

# ---------------------------------------------------------------------------------------------
# Part docker-save: the image.

# On exit: a debootstrap stopped half-way can leave /proc or /sys mounted in its target; unmount
# whatever is mounted under $WORK (deepest first) before lib.sh removes it.
bench_on_exit() {
    [ -n "${WORK:-}" ] || return 0
    awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# The recipe of the image; its hash names the cached tarball, so changing a knob builds anew.
image_recipe() {
    printf 'v3 debootstrap --variant=minbase %s %s; rm apt lists, .debs, /dev/*, logs, aux-cache; EXTRA %s; mtime %s\n' \
        "$SUITE" "$MIRROR" "$EXTRA" "$SOURCE_DATE_EPOCH"
}

# build_image: sets APP_TAR to the docker-save tarball, built here or found in CACHE_DIR.
build_image() {
    local key dir
    key=$(image_recipe | sha256sum | cut -c1-12)
    dir=${CACHE_DIR:-$WORK}
    mkdir -p "$dir"
    APP_TAR=$dir/docker-save-$SUITE-$key.tar
    if [ -s "$APP_TAR" ]; then
        log "docker-save: re-using $APP_TAR"
        return
    fi
    local b=$WORK/build created
    created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    mkdir -p "$b"
    log "docker-save: debootstrap --variant=minbase $SUITE from $MIRROR (log: $b/debootstrap.log)"
    local t
    t=$(now)
    run_child debootstrap --variant=minbase "$SUITE" "$b/rootfs" "$MIRROR" >"$b/debootstrap.log" 2>&1 ||
        die "debootstrap failed: $(tail -3 "$b/debootstrap.log")"
    log "docker-save: debootstrap took $(elapsed "$t")s"
    # What an image build cleans up (the debian images have no apt lists), /dev, which the
    # runtime provides, and what differs between two debootstraps of the same packages (logs with
    # times, ldconfig's cache of inode numbers), as debuerreotype does for the debian images.
    rm -rf "$b/rootfs/var/lib/apt/lists/"* "$b/rootfs/var/cache/apt/"*.bin \
        "$b/rootfs/var/cache/apt/archives/"*.deb "$b/rootfs/dev/"* \
        "$b/rootfs/var/cache/ldconfig/aux-cache" "$b/rootfs/var/log/"*.log
    find "$b/rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

    local oci=$b/oci
    umoci init --layout "$oci"
    umoci new --image "$oci:app"
    run_child umoci insert --image "$oci:app" --history.created "$created" \
        --history.created_by "debootstrap --variant=minbase $SUITE (docker import)" "$b/rootfs" /
    rm -rf "$b/rootfs"
    local src n=0
    for src in $EXTRA; do
        if [ ! -d "$src" ]; then
            log "docker-save: no $src on this host, skipped"
            continue
        fi
        n=$((n + 1))
        mkdir -p "$b/extra$n"
        cp -a "$src" "$b/extra$n/"
        find "$b/extra$n" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
        run_child umoci insert --image "$oci:app" --history.created "$created" \
            --history.created_by "COPY $src $src" "$b/extra$n/$(basename "$src")" "$src"
        rm -rf "$b/extra$n"
    done
    umoci config --image "$oci:app" --created "$created" --author static-registry-bench \
        --config.cmd /bin/bash --history.created "$created" --history.created_by 'CMD ["/bin/bash"]'
    run_child skopeo copy -q "oci:$oci:app" "docker-archive:$b/skopeo.tar:bench/app:1" ||
        die "skopeo could not write the docker-archive"
    rm -rf "$oci"
    # skopeo's layers are <digest>.tar with <id>/layer.tar symlinks: rewrite as docker save does.
    # Into place in one step, so a cache shared by runs never holds half a tarball.
    python3 "$BENCH_DIR/docker_save.py" "$b/skopeo.tar" "$APP_TAR.tmp.$$" "$SOURCE_DATE_EPOCH"
    mv "$APP_TAR.tmp.$$" "$APP_TAR"
    rm -f "$b/skopeo.tar"
    log "docker-save: wrote $APP_TAR ($(du -m "$APP_TAR" | cut -f1) MiB)"
}

# image_layers TAR: "N layers, A + B + ... MiB": each layer's uncompressed size, in image order.
image_layers() {
    python3 - "$1" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    m = json.load(t.extractfile("manifest.json"))[0]
    sizes = [t.getmember(name).size / 2**20 for name in m["Layers"]]
print(f"{len(sizes)} layers, {' + '.join(f'{s:.1f}' for s in sizes)} = {sum(sizes):.1f} MiB uncompressed")
PY
}

# ---------------------------------------------------------------------------------------------
# Part docker-save: the measurement.

# The CPU time this machine spent busy (all cores, seconds), from /proc/stat. Less the CPU time
# of the timed runs, it is what everything else used during the measurement: other users of the
# machine, and this script's own checks between runs (hashing the store, verify: ~1 s a round).
machine_busy() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

declare -A WALL CPU USR SYS SIZE
OURS_CPU=0

# timed KEY CORES OUT CMD...: runs CMD (stdout to OUT), pinned to ONE_CPU when CORES is 1, and
# appends its wall, user + system, user and system seconds to the arrays under KEY. CPU times
# come from /usr/bin/time (the process and its children); wall time from the clock around it (to
# the millisecond: a re-publish takes a few).
timed() {
    local key=$1 cores=$2 out=$3 tf=$WORK/time.txt wall usr sys t
    shift 3
    local pin=()
    [ "$cores" = all ] || pin=(taskset -c "$ONE_CPU")
    t=$(now)
    if ! run_child "${pin[@]}" /usr/bin/time -f '%U %S' -o "$tf" "$@" >"$out" 2>"$out.err"; then
        die "$key failed: $(tail -3 "$out.err") ($*)"
    fi
    wall=$(elapsed "$t")
    read -r usr sys <"$tf"
    WALL[$key]+=" $wall"
    USR[$key]+=" $usr"
    SYS[$key]+=" $sys"
    CPU[$key]+=" $(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')"
    OURS_CPU=$(awk -v a="$OURS_CPU" -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", a + u + s }')
    log "  $key: wall ${wall}s, CPU $(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')s"
}

# The size of a directory's files (apparent bytes), in MiB.
dir_mib() { du -sb "$1" | awk '{ printf "%.1f", $1 / 1048576 }'; }

# run_tool TOOL CORES ROUND: one fresh copy of the image into $WORK/out/TOOL-CORES-ROUND.
run_tool() {
    local tool=$1 cores=$2 round=$3 dest=$WORK/out/$1-$2-$3
    local key="$tool $cores"
    case "$tool" in
    static-registry | static-registry-base)
        local bin=$SR_BIN
        [ "$tool" = static-registry ] || bin=$SR_BIN_BASE
        timed "$key" "$cores" "$dest.txt" env -u STATIC_REGISTRY_STORE RUST_LOG="${SR_LOG:-warn}" \
            "$bin" publish --quiet --store "$dest" "docker-archive:$APP_TAR" --tag bench/app:1
        grep -q '^blobs: wrote [1-9]' "$dest.txt" || die "$key wrote no blobs: $(head -1 "$dest.txt")"
        ;;
    skopeo)
        mkdir -p "$WORK/tmp"
        timed "$key" "$cores" "$dest.txt" env TMPDIR="$WORK/tmp" \
            skopeo copy -q "docker-archive:$APP_TAR" "oci:$dest:app"
        ;;
    esac
    SIZE[$key]+=" $(dir_mib "$dest")"
}

# republish TOOL ROUND: publishes again into the store of that round's all-cores run, which
# already holds everything: the summary must say nothing was written, and no blob, manifest or
# index may change. Files rewritten with the same bytes are listed in $WORK/rewritten-TOOL.txt.
republish() {
    local tool=$1 round=$2 dest=$WORK/out/$1-all-$2 bin=$SR_BIN
    [ "$tool" = static-registry ] || bin=$SR_BIN_BASE
    store_state "$dest" >"$dest-before.txt"
    timed "$tool again" all "$dest-again.txt" env -u STATIC_REGISTRY_STORE RUST_LOG="${SR_LOG:-warn}" \
        "$bin" publish --quiet --store "$dest" "docker-archive:$APP_TAR" --tag bench/app:1
    check_nothing_written "$dest-again.txt" "$tool re-publish (round $round)"
    store_state "$dest" >"$dest-after.txt"
    # Same paths, sizes and contents: anything else is a write.
    diff <(cut -d' ' -f1,2,3 "$dest-before.txt") <(cut -d' ' -f1,2,3 "$dest-after.txt") >/dev/null ||
        die "$tool re-publish (round $round) changed the store: $(diff "$dest-before.txt" "$dest-after.txt" | head -5)"
    # Same contents, new mtime: rewritten.
    diff "$dest-before.txt" "$dest-after.txt" | awk '/^>/ { print $2, $3 }' >"$WORK/rewritten-$tool.txt" || true
}

# store_state DIR: "path size sha256-prefix mtime" for every file under DIR, sorted.
store_state() {
    (cd "$1" && find . -type f -printf '%P %s %T@\n' | sort | while read -r f size mtime; do
        printf '%s %s %s %s\n' "$f" "$size" "$(sha256sum <"$f" | cut -c1-16)" "$mtime"
    done)
}

# The layers of an output (compressed): "N blobs > 1 MiB: sizes".
layer_sizes() {
    find "$1/blobs" -type f -size +1M -printf '%s\n' | sort -rn |
        awk '{ s = s sprintf("%s%.1f", (NR > 1 ? " + " : ""), $1 / 1048576) } END { print s " MiB" }'
}

part_docker_save() {
    build_image
    local layers tools=(static-registry) cores round i n tool
    layers=$(image_layers "$APP_TAR")
    log "docker-save: $layers"
    [ -z "${SR_BIN_BASE:-}" ] || tools+=(static-registry-base)
    tools+=(skopeo)
    n=${#tools[@]}
    mkdir -p "$WORK/out"

    local load_before busy_before t0
    load_before=$(loadavg)
    busy_before=$(machine_busy)
    t0=$(now)
    for round in $(seq "$ROUNDS"); do
        log "docker-save round $round"
        for cores in all 1; do
            # Rotate the order each round, so no tool always runs first (or after the same one).
            for i in $(seq 0 $((n - 1))); do
                tool=${tools[$(((i + round - 1) % n))]}
                run_tool "$tool" "$cores" "$round"
            done
        done
        republish static-registry "$round"
        [ -z "${SR_BIN_BASE:-}" ] || republish static-registry-base "$round"
        if [ "$round" = 1 ]; then
            for tool in "${tools[@]}"; do
                layer_sizes "$WORK/out/$tool-all-1" >"$WORK/layers-$tool.txt"
            done
            cp "$WORK/out/static-registry-all-1.txt" "$WORK/ds-publish-1.txt"
            cp "$WORK/out/static-registry-all-1-again.txt" "$WORK/ds-republish-1.txt"
            # Sound, not just fast: the store passes verify (not timed).
            "$SR_BIN" verify --store "$WORK/out/static-registry-all-1" >"$WORK/verify.txt" 2>&1 ||
                die "verify of the published store failed: $(tail -3 "$WORK/verify.txt")"
        fi
        [ -n "${KEEP:-}" ] || rm -rf "$WORK/out"/*-"$round" "$WORK/tmp"
    done
    local span busy others load_after
    span=$(elapsed "$t0")
    busy=$(awk -v a="$busy_before" -v b="$(machine_busy)" 'BEGIN { printf "%.2f", b - a }')
    others=$(awk -v b="$busy" -v o="$OURS_CPU" 'BEGIN { x = b - o; printf "%.1f", x < 0 ? 0 : x }')
    load_after=$(loadavg)

    local -A M_WALL M_CPU M_USR M_SYS M_SIZE
    local key
    for key in "${!WALL[@]}"; do
        # shellcheck disable=SC2086 # the arrays hold space-separated samples
        {
            M_WALL[$key]=$(median ${WALL[$key]})
            M_CPU[$key]=$(median ${CPU[$key]})
            M_USR[$key]=$(median ${USR[$key]})
            M_SYS[$key]=$(median ${SYS[$key]})
            [ -z "${SIZE[$key]:-}" ] || M_SIZE[$key]=$(median ${SIZE[$key]})
        }
    done

    echo
    echo "static-registry publish benchmark, part docker-save: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    echo "$(basename "$APP_TAR") ($(du -m "$APP_TAR" | cut -f1) MiB): $layers"
    echo "into a fresh local directory each run; medians of $ROUNDS rounds; one core = taskset -c $ONE_CPU"
    echo "machine: load average $load_before before, $load_after after; everything but the timed runs used" \
        "$others CPU-s of the $(awk -v s="$span" -v c="$(nproc)" 'BEGIN { printf "%.0f", s * c }') available in the ${span%.*} s" \
        "($(awk -v o="$others" -v s="$span" -v c="$(nproc)" 'BEGIN { printf "%.0f", 100 * o / (s * c) }')% of the cores)"
    echo
    printf '%-38s %5s %8s %8s %8s %8s %9s\n' "" cores "wall s" "CPU s" "user s" "sys s" "out MiB"
    for cores in all 1; do
        for tool in "${tools[@]}"; do
            key="$tool $cores"
            local label="$tool publish"
            [ "$tool" != skopeo ] || label="skopeo copy (oci: layout)"
            printf '%-38s %5s %8.2f %8.2f %8.2f %8.2f %9s\n' "$label" \
                "$([ "$cores" = all ] && nproc || echo 1)" "${M_WALL[$key]}" "${M_CPU[$key]}" \
                "${M_USR[$key]}" "${M_SYS[$key]}" "${M_SIZE[$key]}"
        done
    done
    for tool in static-registry ${SR_BIN_BASE:+static-registry-base}; do
        key="$tool again"
        printf '%-38s %5s %8.3f %8.2f %8.2f %8.2f %9s\n' "$tool publish (again)" "$(nproc)" \
            "${M_WALL[$key]}" "${M_CPU[$key]}" "${M_USR[$key]}" "${M_SYS[$key]}" "+0"
    done

    echo
    for cores in all 1; do
        local c
        c=$([ "$cores" = all ] && echo "$(nproc) cores" || echo "1 core")
        echo "static-registry / skopeo, $c: wall $(ratio "${M_WALL[static-registry $cores]}" "${M_WALL[skopeo $cores]}")," \
            "CPU $(ratio "${M_CPU[static-registry $cores]}" "${M_CPU[skopeo $cores]}")"
        if [ -n "${SR_BIN_BASE:-}" ]; then
            echo "static-registry-base / skopeo, $c: wall $(ratio "${M_WALL[static-registry-base $cores]}" "${M_WALL[skopeo $cores]}")," \
                "CPU $(ratio "${M_CPU[static-registry-base $cores]}" "${M_CPU[skopeo $cores]}")"
            echo "static-registry / static-registry-base, $c: wall $(ratio "${M_WALL[static-registry $cores]}" "${M_WALL[static-registry-base $cores]}")," \
                "CPU $(ratio "${M_CPU[static-registry $cores]}" "${M_CPU[static-registry-base $cores]}")"
        fi
    done
    printf 'speed-up from 1 to %s cores (wall):' "$(nproc)"
    for tool in "${tools[@]}"; do
        printf ' %s %s' "$tool" "$(ratio "${M_WALL[$tool 1]}" "${M_WALL[$tool all]}")"
    done
    echo
    # The per-round ratios show how much the machine moved between runs seconds apart.
    for cores in all 1; do
        printf 'static-registry / skopeo wall per round, %s:' "$([ "$cores" = all ] && echo "$(nproc) cores" || echo "1 core")"
        local a b
        read -ra a <<<"${WALL[static-registry $cores]}"
        read -ra b <<<"${WALL[skopeo $cores]}"
        for i in "${!a[@]}"; do printf ' %s' "$(ratio "${a[$i]}" "${b[$i]}")"; done
        echo
    done
    echo
    echo "compressed layers (round 1, $(nproc) cores):"
    for tool in "${tools[@]}"; do
        printf '  %-22s %s\n' "$tool" "$(cat "$WORK/layers-$tool.txt")"
    done
    echo "first publish summary (round 1, $(nproc) cores):"
    sed 's/^/  /' "$WORK/ds-publish-1.txt"
    echo "re-publish summary (round 1):"
    sed 's/^/  /' "$WORK/ds-republish-1.txt"
    for tool in static-registry ${SR_BIN_BASE:+static-registry-base}; do
        if [ -s "$WORK/rewritten-$tool.txt" ]; then
            echo "$tool re-publish rewrote, with the same bytes (new mtime; last round):" \
                "$(awk '{ printf "%s%s (%s B)", (NR > 1 ? ", " : ""), $1, $2 }' "$WORK/rewritten-$tool.txt")"
        fi
    done
}

log "load average $(loadavg); $(nproc) cores; parts: $PARTS"
if has_part s3; then part_s3; fi
if has_part docker-save; then part_docker_save; fi
