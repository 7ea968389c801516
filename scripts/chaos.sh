#!/usr/bin/env bash
# The chaos run (issue 12) for as long as you like:
#
#   scripts/chaos.sh                 75 s, as in the test suite, with a new seed
#   scripts/chaos.sh 600             ten minutes
#   scripts/chaos.sh 600 123456789   ten minutes, replaying seed 123456789's operations
#   PGFORK_CHAOS_FS=btrfs scripts/chaos.sh 300    on a btrfs pool image (default: xfs)
#
# Random branch creates, writes, resets, deletes, snapshots and promotes
# through the CLI and the HTTP API, while pgfork commands, `pgfork serve`
# and postmasters are killed with SIGKILL and the pool is filled to the
# brim for a while; then the invariants are checked (the source holds every
# acknowledged commit, meta.db and the pool agree, nothing is orphaned,
# pg_amcheck and `audit --verify` pass, every branch starts). The seed is
# printed first, and again with the command that replays it if an
# invariant breaks (operations replay; their timing does not).
#
# There is one implementation: this runs crates/pgfork/tests/chaos.rs
# through scripts/test.sh (as root: it installs what is missing, runs fmt
# and clippy, loop-mounts its pools under $PGFORK_TEST_WORK, and removes
# them afterwards), with PGFORK_CHAOS_SECS and PGFORK_CHAOS_SEED set and
# the suite's time limit raised to fit. Its own work directory
# (/var/tmp/pgfork-chaos) keeps it apart from a scripts/test.sh running at
# the same time.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { printf 'chaos.sh: %s\n' "$*" >&2; exit 1; }

SECS=${1:-${PGFORK_CHAOS_SECS:-75}}
SEED=${2:-${PGFORK_CHAOS_SEED:-}}
[[ $SECS =~ ^[0-9]+$ ]] && ((SECS >= 10)) || die "SECONDS must be a whole number, at least 10 (got '$SECS')"
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || die "SEED must be a number (got '$SEED')"
((EUID == 0)) || die "the chaos run needs root (loop-mounted pools, servers run as their own users): sudo $0 $*"

export PGFORK_CHAOS_SECS=$SECS
if [[ -n $SEED ]]; then
    export PGFORK_CHAOS_SEED=$SEED
fi
export PGFORK_TEST_WORK=${PGFORK_TEST_WORK:-/var/tmp/pgfork-chaos}
# The chaos phase, then setting up and checking (a few minutes at most),
# on top of building.
export PGFORK_TEST_TIMEOUT=${PGFORK_TEST_TIMEOUT:-$((SECS + 1200))s}
exec "$ROOT/scripts/test.sh" -p pgfork --test chaos chaos_run -- --nocapture
