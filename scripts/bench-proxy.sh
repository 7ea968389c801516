#!/usr/bin/env bash
# The policy proxy benchmark (issue 6), as root:
#
#   scripts/bench-proxy.sh
#
# On a fresh XFS (reflink) pool image: a source with pgbench data (scale
# $SCALE), a branch agent, and `pgfork proxy`. Then, in one run:
#   1. pgbench -S -c 8 -j 2 against the agent's branch directly, through a
#      pgbouncer of the script's own (Debian's package, transaction pooling,
#      8 server connections, in front of the same branch: the peer baseline)
#      and through the proxy, interleaved, $ROUNDS rounds of $DURATION s each
#      (the order rotates each round): TPS of each round, mean, ratio to
#      direct (mean and per-round range) and p50 latency (from pgbench's
#      per-transaction log); the target is a pgfork ratio at least
#      pgbouncer's;
#   2. wake from a stopped branch: `branch stop`, then time psql's
#      `SELECT 1` through the proxy, $WAKES times: p50 (and the same
#      connect+query on a running branch, for comparison);
#   3. $IDLE client connections held idle at once through the proxy, and a
#      query still answered while they are held; how many server sessions
#      they cost, and the proxy's memory.
# Prints Markdown tables; everything is torn down on exit.
#
# PGFORK_BIN=/path/to/pgfork benchmarks that binary instead of building
# target/release/pgfork (e.g. an older release's). pgbouncer is installed
# with apt-get if missing (its Debian service is left stopped and disabled);
# the script runs its own instance on $BOUNCER_PORT (default $PORT + 1).
# BENCH_LOGS=DIR keeps the proxy's and pgbouncer's logs there.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${PGFORK_BENCH_WORK:-/var/tmp/pgfork-bench-proxy}
SCALE=${SCALE:-10}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
WAKES=${WAKES:-15}
IDLE=${IDLE:-500}
PORT=${PORT:-26019}
BOUNCER_PORT=${BOUNCER_PORT:-$((PORT + 1))}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
BENCH=bench-proxy
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
[[ $EUID -eq 0 ]] || die "run as root (it loop-mounts a pool image)"
[[ -e $WORK ]] && die "$WORK exists: remove it (umount $WORK/pool first) or set PGFORK_BENCH_WORK"

cd "$ROOT"
pgfork_to_measure
BOUNCER=$(command -v pgbouncer || true)
[[ -z $BOUNCER && -x /usr/sbin/pgbouncer ]] && BOUNCER=/usr/sbin/pgbouncer
if [[ -z $BOUNCER ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null ||
        die "could not install pgbouncer (apt-get update first?)"
    # Only the script's own instance runs: not the package's service.
    service pgbouncer stop >/dev/null 2>&1 || true
    systemctl disable pgbouncer >/dev/null 2>&1 || update-rc.d pgbouncer disable >/dev/null 2>&1 || true
    BOUNCER=/usr/sbin/pgbouncer
fi
[[ -z $(ss -Htln "( sport = :$PORT or sport = :$BOUNCER_PORT )") ]] ||
    die "port $PORT or $BOUNCER_PORT is in use: set PORT (or BOUNCER_PORT)"
echo "pgfork: $P ($("$P" --version)); $("$BOUNCER" --version | head -n 1)" >&2
mkdir -p "$WORK/pool"
chmod 711 "$WORK" "$WORK/pool"
truncate -s 8G "$WORK/pool.img"
mkfs.xfs -q -m reflink=1 "$WORK/pool.img"
mount -o loop,noatime "$WORK/pool.img" "$WORK/pool"
chmod 711 "$WORK/pool"
export PGFORK_HOME=$WORK/pool/home
proxy_pid=
bouncer_pid=
stop_bouncer() {
    [[ -n $bouncer_pid ]] || return 0
    kill "$bouncer_pid" 2>/dev/null || true
    wait "$bouncer_pid" 2>/dev/null || true
    bouncer_pid=
}
cleanup() {
    set +e
    stop_bouncer
    [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    for p in "${idlers[@]:-}"; do [[ -n $p ]] && pkill -P "$p" sleep 2>/dev/null; done
    "$P" source delete bench --force >/dev/null 2>&1
    sleep 1
    [[ -n ${BENCH_LOGS:-} ]] && mkdir -p "$BENCH_LOGS" && cp "$WORK"/*.log "$BENCH_LOGS"/
    umount "$WORK/pool" || umount -l "$WORK/pool"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$P" init --ports 26000-26018 >/dev/null 2>&1
"$P" source create bench >/dev/null
SRC=$("$P" --json source dsn bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["dsn"])')
"$PGBIN/pgbench" -i -q -s "$SCALE" "$SRC" >/dev/null 2>&1
"$P" snapshot create bench >/dev/null
# Releases with a per-agent session limit (agent create --max-connections,
# default 10) need it raised for the idle clients; older ones have none.
LIMIT=()
if [[ $("$P" agent create --help) == *--max-connections* ]]; then
    ((IDLE + 10 <= 1000)) || die "IDLE=$IDLE: at most 990 (an agent holds at most 1000 proxy sessions)"
    LIMIT=(--max-connections $((IDLE + 10)))
fi
SECRET=$("$P" --json agent create bencher --source bench --policy branch --idle-stop 0 "${LIMIT[@]}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
"$P" proxy --listen "127.0.0.1:$PORT" 2>"$WORK/proxy.log" &
proxy_pid=$!
for _ in $(seq 50); do grep -q listening "$WORK/proxy.log" 2>/dev/null && break; sleep 0.1; done
VIA="postgres://bencher:$SECRET@127.0.0.1:$PORT/bench"
psql "$VIA" -XqAtc 'SELECT 1' >/dev/null # makes the agent's branch
DIRECT=$("$P" --json branch dsn agent-bencher | python3 -c 'import json,sys; print(json.load(sys.stdin)["dsn"])')

# pgbouncer in front of the branch: transaction pooling, as many server
# connections as pgbench has clients. It refuses to run as root: it runs as
# the owner of the branch's socket directory (closed to others) when the
# branch is reached over a unix socket, else as nobody. Its log is in $WORK.
mkdir "$WORK/bouncer"
read -r BRANCH_HOST BOUNCED < <(python3 - "$DIRECT" "$WORK/bouncer" "$BOUNCER_PORT" <<'PY'
import sys, urllib.parse as u
url, dir, port = sys.argv[1:]
d = u.urlsplit(url)
q = {k: v[-1] for k, v in u.parse_qs(d.query).items()}
host = q.get("host") or d.hostname or "127.0.0.1"
user, password = u.unquote(d.username), u.unquote(d.password or "")
db = q.get("dbname") or u.unquote(d.path.lstrip("/")) or user
quote = lambda v: "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"
with open(f"{dir}/userlist.txt", "w") as f:
    f.write('"%s" "%s"\n' % (user.replace('"', '""'), password.replace('"', '""')))
with open(f"{dir}/pgbouncer.ini", "w") as f:
    f.write(f"""[databases]
{db} = host={quote(host)} port={q.get("port") or d.port or 5432} dbname={quote(db)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {dir}/userlist.txt
pool_mode = transaction
default_pool_size = 8
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
""")
print(host, f"postgres://{d.username}:{d.password or ''}@127.0.0.1:{port}/{u.quote(db, safe='')}")
PY
)
if [[ $BRANCH_HOST == /* ]]; then
    read -r B_UID B_GID < <(stat -c '%u %g' "$BRANCH_HOST")
else
    B_UID=$(id -u nobody); B_GID=$(id -g nobody)
fi
chown -R "$B_UID:$B_GID" "$WORK/bouncer"
chmod -R go= "$WORK/bouncer"
setpriv --reuid="$B_UID" --regid="$B_GID" --clear-groups \
    "$BOUNCER" "$WORK/bouncer/pgbouncer.ini" >"$WORK/pgbouncer.log" 2>&1 &
bouncer_pid=$!
for _ in $(seq 50); do grep -q 'listening on' "$WORK/pgbouncer.log" 2>/dev/null && break; sleep 0.1; done
psql "$BOUNCED" -XqAtc 'SELECT 1' >/dev/null ||
    die "no query through pgbouncer; its log: $(tail -n 5 "$WORK/pgbouncer.log")"

# p50 of the per-transaction latencies (microseconds, 3rd column) of a run.
median_us() { cat "$1".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run_pgbench() { # NAME URL -> RUN_TPS, RUN_P50 (ms)
    local log=$WORK/log-$1 out
    out=$(cd "$WORK" && "$PGBIN/pgbench" -n -S -c 8 -j 2 -T "$DURATION" -l --log-prefix="$log" "$2" 2>"$WORK/$1.err") ||
        die "pgbench $1 failed: $(tail -n 3 "$WORK/$1.err")"
    RUN_TPS=$(awk '/^tps/ {print $3}' <<<"$out")
    [[ -n $RUN_TPS ]] || die "pgbench $1 printed no tps"
    RUN_P50=$(median_us "$log" | awk '{printf "%.3f", $1/1000}')
    rm -f "$log".* "$WORK/$1.err"
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The three targets interleaved; round r starts with target (r - 1) mod 3.
names=(direct pgbouncer pgfork)
urls=("$DIRECT" "$BOUNCED" "$VIA")
declare -a tpsl p50l # per target, its rounds' TPS and p50, space-separated
for r in $(seq "$ROUNDS"); do
    line="round $r:"
    for k in 0 1 2; do
        i=$(((r - 1 + k) % 3))
        run_pgbench "${names[i]}$r" "${urls[i]}"
        tpsl[i]+="$RUN_TPS "; p50l[i]+="$RUN_P50 "
        line+=" ${names[i]} $RUN_TPS tps p50 $RUN_P50 ms |"
    done
    echo "${line% |}" >&2
done
stop_bouncer # the other measurements are the proxy's alone
mean() { printf '%s\n' $2 | awk -v f="$1" '{s+=$1} END {printf f, s/NR}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
ratio_range() { # A B: the lowest and highest per-round TPS ratio of target A to B
    local -a a b
    local r
    read -ra a <<<"${tpsl[$1]}"; read -ra b <<<"${tpsl[$2]}"
    for r in "${!a[@]}"; do echo "${a[r]} ${b[r]}"; done |
        awk '{x=$1/$2; if (NR==1 || x<lo) lo=x; if (NR==1 || x>hi) hi=x} END {printf "%.2f-%.2f", lo, hi}'
}
declare -a T_TPS T_P50 T_ROUNDS T_RATIO T_RANGE T_ADDED
for i in 0 1 2; do
    T_TPS[i]=$(mean %.0f "${tpsl[i]}")
    T_P50[i]=$(mean %.3f "${p50l[i]}")
    T_ROUNDS[i]=$(printf '%.0f, ' ${tpsl[i]}); T_ROUNDS[i]=${T_ROUNDS[i]%, }
    T_RATIO[i]=$(ratio "${T_TPS[i]}" "${T_TPS[0]}")
    T_RANGE[i]=$(ratio_range "$i" 0)
    T_ADDED[i]=$(awk -v a="${T_P50[i]}" -v b="${T_P50[0]}" 'BEGIN {printf "%+.3f", a-b}')
done
VS=$(ratio "${T_TPS[2]}" "${T_TPS[1]}") # = pgfork's mean ratio / pgbouncer's
VS_RANGE=$(ratio_range 2 1)
VS_MET=$(awk -v a="${T_RATIO[2]}" -v b="${T_RATIO[1]}" 'BEGIN {print (a >= b) ? "met" : "NOT met"}')

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
| pgbench -S -c 8 -j 2, $ROUNDS x ${DURATION}s, interleaved | TPS per round | mean TPS | ratio to direct (mean, per-round range) | p50 latency |
| --- | --- | --- | --- | --- |
| direct to the branch | ${T_ROUNDS[0]} | ${T_TPS[0]} | 1.00 | ${T_P50[0]} ms |
| pgbouncer, transaction pooling, 8 server connections | ${T_ROUNDS[1]} | ${T_TPS[1]} | ${T_RATIO[1]} (${T_RANGE[1]}) | ${T_P50[1]} ms (${T_ADDED[1]}) |
| pgfork proxy (target >= 0.9) | ${T_ROUNDS[2]} | ${T_TPS[2]} | ${T_RATIO[2]} (${T_RANGE[2]}) | ${T_P50[2]} ms (${T_ADDED[2]}) |

pgfork's ratio to direct against pgbouncer's (target: at least as high): ${T_RATIO[2]} vs ${T_RATIO[1]}, $VS_MET (pgfork / pgbouncer TPS: $VS, per round $VS_RANGE).

| measure | value |
| --- | --- |
| wake: psql SELECT 1 through the proxy on a stopped branch, p50 of $WAKES (target <= 300 ms) | $WAKE_P50 ms (max $WAKE_MAX ms) |
| same on a running branch, p50 | $RUN_P50 ms |
| idle client connections held at once (asked: $IDLE) | $held |
| a query while they are held | $([[ $STILL == 42 ]] && echo answered || echo FAILED) |
| server sessions they cost on the branch | $BACKENDS |
| proxy resident memory with them | $((RSS_KB / 1024)) MiB |
EOF
