#!/usr/bin/env bash
# The policy proxy benchmark (issue 6), as root:
#
#   scripts/bench-proxy.sh
#
# On a fresh XFS (reflink) pool image: a source with pgbench data (scale
# $SCALE), a branch agent, and `pgfork proxy`. Then, in one run:
#   1. pgbench -S -c 8 -j 2 against the agent's branch directly and through
#      the proxy, alternating, $ROUNDS rounds of $DURATION s each: TPS ratio
#      and p50 latency of each (from pgbench's per-transaction log);
#   2. wake from a stopped branch: `branch stop`, then time psql's
#      `SELECT 1` through the proxy, $WAKES times: p50 (and the same
#      connect+query on a running branch, for comparison);
#   3. $IDLE client connections held idle at once through the proxy, and a
#      query still answered while they are held; how many server sessions
#      they cost, and the proxy's memory.
# Prints a Markdown table; everything is torn down on exit.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${PGFORK_BENCH_WORK:-/var/tmp/pgfork-bench-proxy}
SCALE=${SCALE:-10}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
WAKES=${WAKES:-15}
IDLE=${IDLE:-500}
PORT=${PORT:-26019}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
die() { printf 'bench-proxy: %s\n' "$*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root (it loop-mounts a pool image)"
[[ -e $WORK ]] && die "$WORK exists: remove it (umount $WORK/pool first) or set PGFORK_BENCH_WORK"

cd "$ROOT"
cargo build --release --quiet --bin pgfork
P=$ROOT/target/release/pgfork
mkdir -p "$WORK/pool"
chmod 711 "$WORK" "$WORK/pool"
truncate -s 8G "$WORK/pool.img"
mkfs.xfs -q -m reflink=1 "$WORK/pool.img"
mount -o loop,noatime "$WORK/pool.img" "$WORK/pool"
chmod 711 "$WORK/pool"
export PGFORK_HOME=$WORK/pool/home
proxy_pid=
cleanup() {
    set +e
    [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    for p in "${idlers[@]:-}"; do [[ -n $p ]] && pkill -P "$p" sleep 2>/dev/null; done
    "$P" source delete bench --force >/dev/null 2>&1
    sleep 1
    umount "$WORK/pool" || umount -l "$WORK/pool"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$P" init --ports 26000-26018 >/dev/null 2>&1
"$P" source create bench >/dev/null
SRC=$("$P" --json source dsn bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["dsn"])')
"$PGBIN/pgbench" -i -q -s "$SCALE" "$SRC" >/dev/null 2>&1
"$P" snapshot create bench >/dev/null
SECRET=$("$P" --json agent create bencher --source bench --policy branch --idle-stop 0 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
"$P" proxy --listen "127.0.0.1:$PORT" 2>"$WORK/proxy.log" &
proxy_pid=$!
for _ in $(seq 50); do grep -q listening "$WORK/proxy.log" 2>/dev/null && break; sleep 0.1; done
VIA="postgres://bencher:$SECRET@127.0.0.1:$PORT/bench"
psql "$VIA" -XqAtc 'SELECT 1' >/dev/null # makes the agent's branch
DIRECT=$("$P" --json branch dsn agent-bencher | python3 -c 'import json,sys; print(json.load(sys.stdin)["dsn"])')

# p50 of the per-transaction latencies (microseconds, 3rd column) of a run.
median_us() { cat "$1".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run_pgbench() { # NAME URL -> tps, p50 (ms)
    local log=$WORK/log-$1
    (cd "$WORK" && "$PGBIN/pgbench" -n -S -c 8 -j 2 -T "$DURATION" -l --log-prefix="$log" "$2" 2>/dev/null) |
        awk '/^tps/ {print $3}' >"$log.tps"
    echo "$(cat "$log.tps") $(median_us "$log" | awk '{printf "%.3f", $1/1000}')"
    rm -f "$log".*
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
declare -a dt pt dp pp
for r in $(seq "$ROUNDS"); do
    read -r t p < <(run_pgbench "direct$r" "$DIRECT"); dt+=("$t"); dp+=("$p")
    read -r t p < <(run_pgbench "proxy$r" "$VIA"); pt+=("$t"); pp+=("$p")
    echo "round $r: direct ${dt[-1]} tps p50 ${dp[-1]} ms | proxy ${pt[-1]} tps p50 ${pp[-1]} ms" >&2
done
mean() { printf '%s\n' "${@:2}" | awk -v f="$1" '{s+=$1} END {printf f, s/NR}'; }
D_TPS=$(mean %.0f "${dt[@]}"); P_TPS=$(mean %.0f "${pt[@]}")
D_P50=$(mean %.3f "${dp[@]}"); P_P50=$(mean %.3f "${pp[@]}")
RATIO=$(awk -v a="$P_TPS" -v b="$D_TPS" 'BEGIN {printf "%.2f", a/b}')
ADDED=$(awk -v a="$P_P50" -v b="$D_P50" 'BEGIN {printf "%.3f", a-b}')

now_ms() { date +%s%3N; }
declare -a wake run
for _ in $(seq "$WAKES"); do
    t0=$(now_ms); psql "$VIA" -XqAtc 'SELECT 1' >/dev/null; t1=$(now_ms); run+=($((t1 - t0)))
    "$P" branch stop agent-bencher >/dev/null
    t0=$(now_ms); psql "$VIA" -XqAtc 'SELECT 1' >/dev/null; t1=$(now_ms); wake+=($((t1 - t0)))
done
p50() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
WAKE_P50=$(p50 "${wake[@]}"); WAKE_MAX=$(printf '%s\n' "${wake[@]}" | sort -n | tail -n 1)
RUN_P50=$(p50 "${run[@]}")

psql "$VIA" -XqAtc 'SELECT 1' >/dev/null
idlers=()
for _ in $(seq "$IDLE"); do
    (sleep 120 | psql "$VIA" -Xq >/dev/null 2>&1) 2>/dev/null &
    idlers+=($!)
done
held=0
for _ in $(seq 120); do
    held=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    ((held >= IDLE)) && break
    sleep 0.5
done
STILL=$(psql "$VIA" -XqAtc 'SELECT 42')
BACKENDS=$(psql "$DIRECT" -XqAtc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$proxy_pid/status")
for p in "${idlers[@]}"; do pkill -P "$p" sleep 2>/dev/null || true; done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

cat <<EOF
| measure | value |
| --- | --- |
| pgbench -S -c 8 -j 2, direct to the branch (mean of $ROUNDS x ${DURATION}s) | $D_TPS TPS, p50 $D_P50 ms |
| same, through the proxy | $P_TPS TPS, p50 $P_P50 ms |
| TPS ratio proxy / direct (target >= 0.9) | $RATIO |
| added p50 latency | $ADDED ms |
| wake: psql SELECT 1 through the proxy on a stopped branch, p50 of $WAKES (target <= 300 ms) | $WAKE_P50 ms (max $WAKE_MAX ms) |
| same on a running branch, p50 | $RUN_P50 ms |
| idle client connections held at once (asked: $IDLE) | $held |
| a query while they are held | $([[ $STILL == 42 ]] && echo answered || echo FAILED) |
| server sessions they cost on the branch | $BACKENDS |
| proxy resident memory with them | $((RSS_KB / 1024)) MiB |
EOF
