#!/usr/bin/env bash
# The main job on the embedded default, end to end: build pgfork, make a
# home (as root: on a loop-mounted XFS pool image, so clones are
# copy-on-write), create a local source with sample data, snapshot it,
# branch it, write on the branch, show the source unchanged, diff the
# branch, preview a promote, reset the branch, clean up.
#
#   scripts/demo.sh            # or: PGFORK_DEMO_FS=btrfs scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fs=${PGFORK_DEMO_FS:-xfs}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) and retry" >&2
    exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        say "installing PostgreSQL"
        apt-get install -y -qq postgresql postgresql-contrib >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq postgresql postgresql-contrib >/dev/null; }
    else
        echo "PostgreSQL server binaries not found: apt-get install postgresql postgresql-contrib" >&2
        exit 1
    fi
fi
if [ "$(id -u)" = 0 ] && ! command -v "mkfs.$fs" >/dev/null; then
    pkg=xfsprogs; [ "$fs" = btrfs ] && pkg=btrfs-progs
    apt-get install -y -qq "$pkg" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
fi

if [ "$(id -u)" = 0 ] && ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    # The proxy's SQL parser (libpg_query, via bindgen) needs libclang to build.
    apt-get install -y -qq libclang-dev >/dev/null || { apt-get update -qq && apt-get install -y -qq libclang-dev >/dev/null; }
fi
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/protoc ]; then
    # ...and protoc for its protobuf bindings (.cargo/config.toml points at it).
    apt-get install -y -qq protobuf-compiler >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; }
fi
say "building pgfork"
cargo build --release --quiet --bin pgfork
pgfork() { target/release/pgfork "$@"; }

home=$(mktemp -d "${TMPDIR:-/var/tmp}/pgfork-demo.XXXXXX")
chmod 711 "$home"
export PGFORK_HOME=$home
cleanup() {
    set +e
    say "cleaning up"
    pgfork source delete shop --force >/dev/null 2>&1
    if mountpoint -q "$home/pool" 2>/dev/null; then umount "$home/pool"; fi
    rm -rf "$home"
    echo "removed $home"
}
trap cleanup EXIT

say "pgfork init (home $home)"
if [ "$(id -u)" = 0 ]; then
    pgfork init --pool-image 2G --fs "$fs"
else
    pgfork init   # uses the filesystem it finds; says which driver that gives
fi

say "pgfork source create shop, then load sample data as its application role"
pgfork source create shop >/dev/null
psql "$(pgfork source dsn shop)" -q -v ON_ERROR_STOP=1 -f examples/shop.sql
psql "$(pgfork source dsn shop)" -Atc \
    "SELECT format('source: %s customers, %s orders, %s MB', (SELECT count(*) FROM customers),
            (SELECT count(*) FROM orders), pg_database_size(current_database()) / 1048576)"

say "pgfork snapshot create shop"
pgfork snapshot create shop

say "pgfork branch create fix-42 --from shop --ttl 2h --label agent=demo"
start=$(date +%s%N)
dsn=$(pgfork branch create fix-42 --from shop --ttl 2h --label agent=demo)
psql "$dsn" -Atc "SELECT 1" >/dev/null
echo "branch ready and answering in $(( ($(date +%s%N) - start) / 1000000 )) ms: ${dsn%%:*}://...@${dsn##*@}"

say "an agent's migration and data fix, on the branch only"
psql "$dsn" -q -v ON_ERROR_STOP=1 <<'SQL'
ALTER TABLE orders ADD COLUMN discount numeric(5, 2) NOT NULL DEFAULT 0;
UPDATE orders SET discount = 10 WHERE status = 'new';
DELETE FROM orders WHERE status = 'delivered';
DROP TABLE products CASCADE;
SQL
query="SELECT format('%s orders, discount column: %s, products table: %s', (SELECT count(*) FROM orders),
        EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'discount'),
        to_regclass('products') IS NOT NULL)"
echo "branch: $(psql "$dsn" -Atc "$query")"
echo "source: $(psql "$(pgfork source dsn shop)" -Atc "$query")   <- unchanged"

say "pgfork branch list"
pgfork branch list

say "pgfork diff fix-42 (schema and rows changed, reading only the blocks the branch no longer shares)"
pgfork diff fix-42 --limit 3

say "pgfork promote fix-42 --dry-run (what would be applied to the source, and conflicts)"
pgfork promote fix-42 --dry-run | head -n 12 || true

say "pgfork branch reset fix-42 (back to the snapshot)"
pgfork branch reset fix-42
echo "branch: $(psql "$dsn" -Atc "$query")"
