#!/usr/bin/env bash
# Runs `pgfork bench` on each copy-on-write driver: one loop-mounted pool
# image per filesystem (XFS with reflink, then btrfs), made, measured and
# torn down in turn, so the disk only ever holds one image.
#
#   scripts/bench.sh                     # the benchmark: --scales 10,500 (about 7 GB at 500)
#   scripts/bench.sh --scales 1 --branches 5 --max-live 10 --skip-dump --tps-seconds 3   # quick
#
# Arguments are passed to `pgfork bench` (see `pgfork bench --help`);
# --scales defaults to 10,500. Reports go to target/bench/<fs>-<time>.txt
# and .json. Needs root (pool images are loop-mounted).
#
# Environment:
#   PGFORK_BENCH_DIR    where the homes and images go [/var/tmp/pgfork-bench]
#   PGFORK_BENCH_FS     filesystems to run on, in order ["xfs btrfs"]
#   PGFORK_BENCH_IMAGE  pool image size (e.g. 40G) [from the largest scale]
#   PGFORK_BENCH_PORTS  TCP ports for the bench servers [26000-26999]
#   PGFORK_BENCH_BASELINE  an older pgfork binary to measure first, on the same
#                       home and the same loaded data (--keep-sources), so that a
#                       change is compared with what came before in one run; its
#                       report is saved as <fs>-<time>-baseline.txt
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${PGFORK_BENCH_DIR:-/var/tmp/pgfork-bench}
filesystems=${PGFORK_BENCH_FS:-xfs btrfs}
ports=${PGFORK_BENCH_PORTS:-26000-26999}

die() { echo "bench.sh: $*" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root: pool images are loop-mounted (sudo scripts/bench.sh ...)"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"

args=("$@")
scales=""
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --scales) scales=${args[i + 1]:-} ;;
        --scales=*) scales=${args[i]#--scales=} ;;
    esac
done
if [ -z "$scales" ]; then
    scales=10,500
    args=(--scales "$scales" "${args[@]}")
fi
max_scale=$(tr ',' '\n' <<<"$scales" | sort -n | tail -1)
[[ $max_scale =~ ^[0-9]+$ ]] || die "--scales '$scales' is not a list of numbers"

# pgbench takes about 15 MiB per scale unit (scale 500: about 7.5 GiB with
# indexes). At its peak the pool holds the source of every scale plus one
# full baseline copy of the largest (cp --reflink=never, or a template or
# restored database) and the WAL that copy writes: four times the data
# plus 3 GiB of room covers it.
data_mib=$(( max_scale * 16 ))
if [ -n "${PGFORK_BENCH_IMAGE:-}" ]; then
    image=$PGFORK_BENCH_IMAGE
else
    image=$(( (data_mib * 4 + 3072 + 1023) / 1024 ))G
fi
image_bytes=$(numfmt --from=iec "${image%B}")

for fs in $filesystems; do
    case $fs in
        xfs) command -v mkfs.xfs >/dev/null || die "mkfs.xfs not found: apt-get install xfsprogs" ;;
        btrfs) command -v mkfs.btrfs >/dev/null || die "mkfs.btrfs not found: apt-get install btrfs-progs" ;;
        *) die "PGFORK_BENCH_FS: unknown filesystem '$fs' (xfs, btrfs)" ;;
    esac
done

mkdir -p "$dir"
chmod 711 "$dir"
# The images are sparse, but a run writes up to their full size into them.
avail=$(df --output=avail -B1 "$dir" | tail -1)
if (( avail < image_bytes )); then
    die "not enough free disk in $dir: a run at scale $max_scale needs a pool image of $image \
($(numfmt --to=iec "$image_bytes")), $(numfmt --to=iec "$avail") is free. Free space, point \
PGFORK_BENCH_DIR at a bigger disk, or set PGFORK_BENCH_IMAGE to a smaller size at your own risk"
fi

say "building pgfork (release)"
cargo build --release --quiet --bin pgfork
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/pgfork
out=$PWD/target/bench
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)

home=""
# Removes the current home: its servers, the mounted pool, the image.
teardown() {
    [ -n "$home" ] || return 0
    set +e
    if [ -f "$home/meta.db" ] && mountpoint -q "$home/pool"; then
        # The bench removes what it makes; this catches an interrupted run.
        for src in $("$bin" --home "$home" source list 2>/dev/null | awk 'NR > 1 { print $1 }'); do
            "$bin" --home "$home" source delete "$src" --force >/dev/null 2>&1
        done
        for pidfile in "$home"/pool/*/*/postmaster.pid "$home"/pool/pgfork-bench-tmp/*/postmaster.pid; do
            [ -f "$pidfile" ] || continue
            pid=$(head -1 "$pidfile")
            # Only a postgres still serving that very directory (pids get reused).
            [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(dirname "$pidfile")" ] && kill -QUIT "$pid"
        done
        sleep 1
    fi
    if mountpoint -q "$home/pool"; then
        umount "$home/pool" || umount -l "$home/pool"
    fi
    rm -rf "$home"
    home=""
    set -e
}
trap teardown EXIT
trap 'exit 130' INT TERM

for fs in $filesystems; do
    home=$dir/$fs
    teardown  # a home left by an earlier, killed run
    home=$dir/$fs
    say "$fs: pgfork init --pool-image $image --fs $fs (home $home)"
    # The baseline, if any, makes the home: it would refuse a newer meta.db.
    "${PGFORK_BENCH_BASELINE:-$bin}" --home "$home" init --pool-image "$image" --fs "$fs" --ports "$ports" >&2
    report=$out/$fs-$stamp
    if [ -n "${PGFORK_BENCH_BASELINE:-}" ]; then
        # The baseline goes first: a newer pgfork migrates meta.db, which an
        # older one then refuses. It loads the data, the newer one reuses it.
        say "$fs: baseline $PGFORK_BENCH_BASELINE bench ${args[*]} --keep-sources"
        "$PGFORK_BENCH_BASELINE" --home "$home" bench "${args[@]}" --keep-sources \
            --json-out "$report-baseline.json" | tee "$report-baseline.txt"
    fi
    say "$fs: pgfork bench ${args[*]}"
    "$bin" --home "$home" bench "${args[@]}" --json-out "$report.json" | tee "$report.txt"
    echo "saved $report.txt and $report.json" >&2
    teardown
done
