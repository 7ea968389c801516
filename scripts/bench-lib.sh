# Shared by the benchmark scripts (sourced, not run). The script sets
# BENCH (its name, for messages) and ROOT before sourcing this file.

die() { printf '%s: %s\n' "$BENCH" "$*" >&2; exit 1; }

# Sets P to the pgfork to measure: $PGFORK_BIN if set, else a fresh
# release build of this checkout.
pgfork_to_measure() {
    if [[ -n ${PGFORK_BIN:-} ]]; then
        [[ -x $PGFORK_BIN ]] || die "PGFORK_BIN=$PGFORK_BIN is not an executable"
        P=$(realpath "$PGFORK_BIN")
    else
        (cd "$ROOT" && cargo build --release --quiet --bin pgfork)
        P=$ROOT/target/release/pgfork
    fi
}
