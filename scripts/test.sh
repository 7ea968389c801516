#!/usr/bin/env bash
# The test command: formatting, lints, unit tests, and the integration
# tests on real PostgreSQL servers on real copy-on-write pools.
#
#   scripts/test.sh                      everything (as root)
#   scripts/test.sh -p pgfork --test crash -- --nocapture
#                                        only some tests (args go to cargo test)
#
# As root it installs what is missing (apt-get), loop-mounts three sparse
# 8G pool images under $PGFORK_TEST_WORK (default /var/tmp/pgfork-test):
# XFS with reflink=1, btrfs, and ext4 (no copy-on-write), runs the tests
# on them (then the Python client, MCP and dashboard tests with pytest, in
# a venv under $PGFORK_TEST_WORK, the dashboard in a headless chromium),
# and always unmounts and removes them again, leaving no server or control
# group behind. Not as root, only formatting, lints and unit tests run, and
# the script says so: the pools need loop mounts, which need root.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${PGFORK_TEST_WORK:-/var/tmp/pgfork-test}
IMAGE_SIZE=${PGFORK_TEST_IMAGE_SIZE:-8G}
MARKER=.made-by-pgfork-test-sh
# The tests spend most of their time waiting on servers and fsync, so more
# threads than cores pay off; each test has its own home and ports.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# A hung test must not hang CI: the whole cargo test gets this long.
TEST_TIMEOUT=${PGFORK_TEST_TIMEOUT:-15m}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cd "$ROOT"

step() { printf '\n==> %s  (%ds)\n' "$*" "$SECONDS" >&2; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------

pg_bin_dir() {
    # The newest PostgreSQL server installed the Debian way.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir && -x $dir/postgres ]] && echo "$dir"
}

missing_packages() {
    local pkgs=() bin
    command -v mkfs.xfs >/dev/null || [[ -x /sbin/mkfs.xfs ]] || pkgs+=(xfsprogs)
    command -v mkfs.btrfs >/dev/null || [[ -x /sbin/mkfs.btrfs ]] || pkgs+=(btrfs-progs)
    command -v mkfs.ext4 >/dev/null || [[ -x /sbin/mkfs.ext4 ]] || pkgs+=(e2fsprogs)
    command -v losetup >/dev/null || [[ -x /sbin/losetup ]] || pkgs+=(mount)
    # The proxy's SQL parser (libpg_query, via bindgen) needs libclang to build.
    ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || pkgs+=(libclang-dev)
    # ...and protoc for its protobuf bindings (.cargo/config.toml points at it).
    [[ -x /usr/bin/protoc ]] || pkgs+=(protobuf-compiler)
    # The dashboard's tests drive Debian's chromium, headless, with Playwright.
    [[ -x /usr/bin/chromium ]] || pkgs+=(chromium)
    bin=$(pg_bin_dir || true)
    if [[ -z $bin || ! -x $bin/pgbench || ! -x $bin/pg_amcheck || ! -x /usr/bin/psql ]]; then
        pkgs+=(postgresql postgresql-contrib)
    elif [[ ! -f /usr/share/postgresql/$(basename "$(dirname "$bin")")/extension/file_fdw.control ]]; then
        pkgs+=(postgresql-contrib)
    fi
    echo "${pkgs[@]}"
}

install_packages() {
    local pkgs=("$@") policy=/usr/sbin/policy-rc.d made_policy=
    command -v apt-get >/dev/null ||
        die "missing: ${pkgs[*]}; install them (this script knows only apt-get)"
    # Installing postgresql must not start Debian's own cluster: the tests
    # run their servers themselves and must leave none behind. policy-rc.d
    # exiting 101 is Debian's way to forbid service starts.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}")
    if ! "${apt[@]}"; then
        # Only refresh the package lists when they are too old to install from.
        env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${apt[@]}" || { [[ -n $made_policy ]] && rm -f "$policy"; die "apt-get install ${pkgs[*]} failed"; }
    fi
    [[ -n $made_policy ]] && rm -f "$policy"
    return 0
}

ensure_rust_components() {
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || die "cargo fmt and cargo clippy are needed (rustup component add rustfmt clippy)"
        rustup component add rustfmt clippy
    fi
}

# --- pools ------------------------------------------------------------------

# Mount points under $WORK, deepest first (pool images that tests made in
# their homes sit inside the ext4 pool).
mounts_under_work() {
    awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo |
        awk '{ print length($0), $0 }' | sort -rn | cut -d' ' -f2-
}

# Kills, by pid, every process working under $WORK: servers of a test that
# was killed before its cleanup ran.
kill_leftovers() {
    local pids=() p cwd
    for p in /proc/[0-9]*; do
        cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
        [[ $cwd == "$WORK" || $cwd == "$WORK"/* ]] && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    echo "killing leftover processes under $WORK: ${pids[*]}" >&2
    kill -9 "${pids[@]}" 2>/dev/null || true
    sleep 1
}

# Removes the control groups of the homes under $WORK (issue 12): a test
# killed before its cleanup leaves its servers' groups, empty once
# kill_leftovers has run. A home's groups are named pgfork-HOMEID-*, HOMEID
# the first 8 hex digits of the SHA-256 of its canonical path; rmdir only,
# so a group that still holds a process stays.
remove_cgroups() {
    local db home hid dir
    while read -r db; do
        home=$(realpath "$(dirname "$db")")
        hid=$(printf %s "$home" | sha256sum | cut -c1-8)
        while read -r dir; do
            [[ -n $dir ]] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
        done < <(find /sys/fs/cgroup -maxdepth 6 -type d -name "pgfork-$hid-*" 2>/dev/null)
    done < <(find "$WORK" -maxdepth 5 -name meta.db 2>/dev/null)
    return 0
}

# Kills leftovers, unmounts everything under $WORK and removes it. Refuses
# a $WORK this script did not make (no marker file), so that a mistyped
# PGFORK_TEST_WORK cannot cost anyone their files.
teardown() {
    local mp
    [[ -e $WORK ]] || return 0
    [[ -e $WORK/$MARKER ]] || die "$WORK exists but was not made by test.sh (no $MARKER): remove it or set PGFORK_TEST_WORK"
    kill_leftovers
    remove_cgroups
    while read -r mp; do
        [[ -n $mp ]] || continue
        umount "$mp" 2>/dev/null || { sleep 1; umount "$mp" 2>/dev/null; } ||
            { echo "umount $mp failed; detaching it lazily" >&2; umount -l "$mp" || true; }
    done < <(mounts_under_work)
    if [[ -n $(mounts_under_work) ]]; then
        echo "test.sh: could not unmount: $(mounts_under_work | tr '\n' ' ')" >&2
        return 1
    fi
    rm -rf "$WORK"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    step "cleaning up $WORK"
    teardown || status=1
    printf '\n==> %s after %ds\n' "$([[ $status == 0 ]] && echo PASSED || echo "FAILED (exit $status)")" "$SECONDS" >&2
    exit "$status"
}

make_pool() {
    local fs=$1 dir=$WORK/$1 image=$WORK/$1.img
    truncate -s "$IMAGE_SIZE" "$image"
    case $fs in
        xfs) mkfs.xfs -q -f -m reflink=1 "$image" ;;
        btrfs) mkfs.btrfs -q -f "$image" >/dev/null ;;
        plain) mkfs.ext4 -q -F "$image" ;;
    esac
    mkdir -p "$dir"
    mount -o loop,noatime "$image" "$dir" ||
        die "cannot loop-mount $image (no loop devices in this container? it needs --privileged)"
    # The servers run as the postgres user, which must walk down to its data.
    chmod 711 "$dir"
}

# --- main -------------------------------------------------------------------

if [[ $EUID -ne 0 ]]; then
    cat >&2 <<MSG
test.sh: not running as root.
  The integration tests need loop-mounted XFS and btrfs pool images, and
  servers run as the postgres user: both need root. Running formatting,
  lints and unit tests only.

  INTEGRATION TESTS SKIPPED: run \`sudo scripts/test.sh\` for the full suite.
MSG
    step "cargo fmt --check"
    cargo fmt --all -- --check
    step "cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings
    step "unit tests"
    cargo test --workspace --lib --bins
    printf '\n==> unit tests PASSED; integration tests SKIPPED (not root) after %ds\n' "$SECONDS" >&2
    exit 0
fi

read -r -a need <<<"$(missing_packages)"
if ((${#need[@]})); then
    step "installing ${need[*]}"
    install_packages "${need[@]}"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
ensure_rust_components

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "building the tests"
cargo test --workspace --no-run

# A run that was killed may have left its pools behind.
if [[ -e $WORK ]]; then
    step "removing what an earlier run left in $WORK"
    teardown
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
step "making pools in $WORK"
mkdir -p "$WORK"
chmod 711 "$WORK"
touch "$WORK/$MARKER"
for fs in xfs btrfs plain; do make_pool "$fs"; done
export PGFORK_TEST_XFS=$WORK/xfs PGFORK_TEST_BTRFS=$WORK/btrfs PGFORK_TEST_PLAIN=$WORK/plain
PGFORK_TEST_PG_BIN=$(pg_bin_dir) || die "no PostgreSQL server binaries after installing them"
export PGFORK_TEST_PG_BIN
df -h "$PGFORK_TEST_XFS" "$PGFORK_TEST_BTRFS" "$PGFORK_TEST_PLAIN" >&2

# One venv for the Python tools the tests use: migra (an independent schema
# diff the diff tests compare against) and, further down, the Python
# client, pytest, psycopg, the MCP client and Playwright.
step "Python venv (migra; client, MCP and dashboard test tools)"
command -v python3 >/dev/null || die "python3 is needed (the schema diff is checked against migra, the client with pytest)"
python3 -m venv "$WORK/venv" || die "python3 -m venv failed (install python3-venv)"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check migra psycopg2-binary \
    || die "pip install migra psycopg2-binary failed (PyPI must be reachable)"
export PGFORK_TEST_MIGRA=$WORK/venv/bin/migra

step "cargo test (on $RUST_TEST_THREADS threads, at most $TEST_TIMEOUT)"
if (($#)); then
    timeout -k 30s "$TEST_TIMEOUT" cargo test --no-fail-fast "$@"
else
    timeout -k 30s "$TEST_TIMEOUT" cargo test --workspace --no-fail-fast
fi

# The Python client, the MCP server through the official `mcp` package, and
# the dashboard in a real browser (Debian's chromium, headless, driven by
# Playwright; no `playwright install`: it runs the system's chromium),
# against a real `pgfork serve` on the XFS pool. The dashboard tests save a
# screenshot of each page under target/dashboard-screenshots. Skipped when
# only some Rust tests were asked for, unless PGFORK_TEST_PYTHON=1.
if ((!$#)) || [[ ${PGFORK_TEST_PYTHON:-} == 1 ]]; then
    step "Python client, MCP and dashboard tests (pytest, chromium, at most $TEST_TIMEOUT)"
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check ./clients/python pytest 'psycopg[binary]' mcp playwright
    export PGFORK_TEST_CHROMIUM=/usr/bin/chromium PGFORK_TEST_SCREENSHOTS=$ROOT/target/dashboard-screenshots
    PGFORK_BIN=$ROOT/target/debug/pgfork timeout -k 30s "$TEST_TIMEOUT" \
        "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
    # pip builds the client in place; leave the tree as it was.
    rm -rf clients/python/build clients/python/src/pgfork.egg-info
fi
