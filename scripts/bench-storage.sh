#!/usr/bin/env bash
# The noisy-neighbour storage benchmark (issue 12), as root:
#
#   scripts/bench-storage.sh
#
# On a fresh $POOL btrfs pool image: a source with pgbench data (scale
# $SCALE). Then, in one run:
#   1. the source's pgbench TPS ($CLIENTS clients, $DURATION s) alone;
#   2. the same while one branch, held to --max-size $MAX_SIZE, runs a
#      statement that writes until the quota stops it, again and again:
#      the source's TPS and its failed transactions (the goal: none);
#   3. the same while a branch with no limit of its own fills the pool
#      (the branches' space set to 95% of it, so only the free space
#      stops it): what a source without limits goes through;
#   4. `branch create` p50 over $CREATES creates with --max-size and
#      without, interleaved (the cost of quotas on the issue-2 target).
# Prints Markdown tables; everything is torn down on exit.
#
# PGFORK_BIN=/path/to/pgfork benchmarks that binary instead of building
# target/release/pgfork.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${PGFORK_BENCH_WORK:-/var/tmp/pgfork-bench-storage}
POOL=${POOL:-3G}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
DURATION=${DURATION:-20}
MAX_SIZE=${MAX_SIZE:-256M}
CREATES=${CREATES:-15}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
BENCH=bench-storage
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
[[ $EUID -eq 0 ]] || die "run as root (it loop-mounts a pool image)"
[[ -e $WORK ]] && die "$WORK exists: remove it (umount $WORK/pool first) or set PGFORK_BENCH_WORK"

cd "$ROOT"
pgfork_to_measure
mkdir -p "$WORK/pool"
chmod 711 "$WORK" "$WORK/pool"
truncate -s "$POOL" "$WORK/pool.img"
mkfs.btrfs -q -f "$WORK/pool.img" >/dev/null
mount -o loop,noatime "$WORK/pool.img" "$WORK/pool"
chmod 711 "$WORK/pool"
export PGFORK_HOME=$WORK/pool/home
filler=
cleanup() {
    set +e
    [[ -n $filler ]] && kill "$filler" 2>/dev/null && wait "$filler" 2>/dev/null
    "$P" source delete bench --force >/dev/null 2>&1
    sleep 1
    umount "$WORK/pool" || umount -l "$WORK/pool"
    rm -rf "$WORK"
}
trap cleanup EXIT
dsn() { "$P" --json "$1" dsn "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dsn"])'; }

"$P" init --ports 26100-26199 >/dev/null 2>&1
"$P" source create bench >/dev/null
SRC=$(dsn source bench)
"$PGBIN/pgbench" -i -q -s "$SCALE" "$SRC" >/dev/null 2>&1
"$P" snapshot create bench >/dev/null

# pgbench on the source: "TPS FAILED" (failed = transactions that got an
# error, or all of them if the run broke off).
source_tps() {
    local out tps failed
    out=$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$DURATION" "$SRC" 2>&1 || true)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    if [[ -z $tps ]]; then
        tps=0
        failed="run broke off: $(grep -m1 -iE 'error|fatal|lost' <<<"$out" | tr -d '|' | cut -c1-80)"
    fi
    if grep -qiE 'client [0-9]+ aborted|error' <<<"$out" && [[ ${failed:-0} == 0 ]]; then
        failed="aborted: $(grep -m1 -iE 'aborted|error' <<<"$out" | tr -d '|' | cut -c1-80)"
    fi
    echo "$tps|${failed:-0}"
}

# Writes until refused, again and again, in branch $1.
fill_loop() {
    local d
    d=$(dsn branch "$1")
    while :; do
        psql "$d" -Xq -c "CREATE TABLE IF NOT EXISTS fill (g int, pad text)" \
            -c "INSERT INTO fill SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 3000000) g" \
            >/dev/null 2>&1 || true
        psql "$d" -Xq -c "TRUNCATE fill" >/dev/null 2>&1 || "$P" branch start "$1" >/dev/null 2>&1 || true
    done
}

echo "pgfork: $P ($("$P" --version)); pool: $POOL btrfs, pgbench scale $SCALE, $CLIENTS clients, $DURATION s" >&2
IFS='|' read -r solo solo_failed < <(source_tps)

"$P" branch create capped --from bench --max-size "$MAX_SIZE" >/dev/null
fill_loop capped &
filler=$!
sleep 2
IFS='|' read -r capped capped_failed < <(source_tps)
kill "$filler"; wait "$filler" 2>/dev/null || true; filler=
capped_state=$("$P" --json branch info capped | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["status"], b.get("unshared_bytes"))')
"$P" branch delete capped >/dev/null

"$P" init --branch-space 95% >/dev/null
"$P" branch create unlimited --from bench >/dev/null
fill_loop unlimited &
filler=$!
sleep 2
IFS='|' read -r open open_failed < <(source_tps)
kill "$filler"; wait "$filler" 2>/dev/null || true; filler=
"$P" branch delete unlimited >/dev/null 2>&1 || true
source_after=$("$P" --json source info bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
"$P" init --branch-space 60% >/dev/null

ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
cat <<EOF

| source's pgbench ($CLIENTS clients, ${DURATION} s) | TPS | vs alone | failed transactions |
| --- | ---: | ---: | --- |
| alone | $solo | 1.00 | $solo_failed |
| one branch writing into its $MAX_SIZE quota, over and over | $capped | $(ratio "$capped" "$solo") | $capped_failed |
| one branch with no limit filling the pool | $open | $(ratio "$open" "$solo") | $open_failed |

The capped branch afterwards: $capped_state. The source after the unlimited fill: $source_after.
EOF

# branch create p50, with and without --max-size, interleaved.
with=()
without=()
for i in $(seq "$CREATES"); do
    with+=("$("$P" --json branch create "q$i" --from bench --max-size "$MAX_SIZE" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["total_ms"])')")
    without+=("$("$P" --json branch create "n$i" --from bench |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["total_ms"])')")
    "$P" branch delete "q$i" >/dev/null
    "$P" branch delete "n$i" >/dev/null
done
p50() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cat <<EOF

| branch create ($CREATES each, interleaved) | p50 ms |
| --- | ---: |
| without --max-size | $(p50 "${without[@]}") |
| with --max-size $MAX_SIZE (qgroup limit) | $(p50 "${with[@]}") |
EOF
