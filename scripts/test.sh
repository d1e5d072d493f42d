#!/usr/bin/env bash
# Runs every test in the workspace against real Postgres, NATS JetStream and
# Redis. Starts whichever of them is not already running (and stops it
# afterwards); every database and stream a test makes carries this run's id
# and is removed at the end, even after a crash.
#
# Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/infra.sh

ensure_cargo_nextest
ensure_infra

export QAPMAP_TEST_RUN_ID="r$(date +%s)$RANDOM"
export QAPMAP_TEST_POSTGRES_URL="$QAPMAP_PG_ADMIN_URL"
export QAPMAP_TEST_NATS_URL="$QAPMAP_NATS_URL_BASE"
export QAPMAP_TEST_REDIS_URL="$QAPMAP_REDIS_URL_BASE"
# The private servers tests start need the PostgreSQL binaries on PATH.
if bin=$(pg_bin_dir); then export PATH="$PATH:$bin"; fi

sweep() {
  cargo run --quiet -p qapmap-testkit --bin qapmap-test-sweep -- "$QAPMAP_TEST_RUN_ID" || true
  infra_cleanup
}
trap sweep EXIT

cargo nextest run --workspace --no-fail-fast "$@"
