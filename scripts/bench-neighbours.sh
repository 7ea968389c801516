#!/usr/bin/env bash
# The noisy-neighbours benchmark (issue 12), as root:
#
#   scripts/bench-neighbours.sh [pgfork bench neighbours options]
#   scripts/bench-neighbours.sh --rounds 1 --seconds 5 --creates 3    # quick
#
# On a fresh XFS (reflink) pool image: `pgfork bench neighbours` (see
# `pgfork bench neighbours --help`): the source's pgbench TPS alone and
# beside a branch running CPU-bound queries, without cgroups, with cgroups
# and no limit, and with the branch at --cpu 0.25; then branch create p50
# without cgroups, with them, and with limits. The report is printed and
# saved as bench-results/neighbours-xfs-<time>.{txt,json}; everything else
# is torn down on exit.
#
# PGFORK_BIN=/path/to/pgfork benchmarks that binary instead of building
# target/release/pgfork. PGFORK_BENCH_WORK (default
# /var/tmp/pgfork-bench-neighbours) holds the home and its pool image.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${PGFORK_BENCH_WORK:-/var/tmp/pgfork-bench-neighbours}
PORTS=${PGFORK_BENCH_PORTS:-26100-26199}
IMAGE=${PGFORK_BENCH_IMAGE:-6G}
BENCH=bench-neighbours
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
[[ $EUID -eq 0 ]] || die "run as root (it loop-mounts a pool image, and measures without cgroups in a mount namespace)"
[[ -e $WORK ]] && die "$WORK exists: remove it (umount $WORK/home/pool first) or set PGFORK_BENCH_WORK"

cd "$ROOT"
pgfork_to_measure

home=$WORK/home
teardown() {
    set +e
    if [[ -f $home/meta.db ]]; then
        for src in $("$P" --home "$home" source list 2>/dev/null | awk 'NR > 1 { print $1 }'); do
            "$P" --home "$home" source delete "$src" --force >/dev/null 2>&1
        done
    fi
    mountpoint -q "$home/pool" && { umount "$home/pool" || umount -l "$home/pool"; }
    rm -rf "$WORK"
}
trap teardown EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK"
chmod 711 "$WORK"
"$P" --home "$home" init --pool-image "$IMAGE" --fs xfs --ports "$PORTS" >/dev/null
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$ROOT/bench-results/neighbours-xfs-$stamp
mkdir -p "$ROOT/bench-results"
"$P" --home "$home" bench neighbours "$@" --json-out "$out.json" | tee "$out.txt"
echo "saved $out.txt and $out.json" >&2
