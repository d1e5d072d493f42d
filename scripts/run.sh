#!/usr/bin/env bash
# Runs the whole system on this machine: Postgres, NATS (JetStream) and Redis
# (started only if not already running), one database per service, a
# throwaway token-signing key, the four processes, then the demo. The system stays up for you to explore (see
# README.md) until Ctrl-C, which stops everything this script started and
# nothing else.
#
#   --exit-after-demo   stop everything once the demo has run (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/infra.sh

exit_after_demo=""
[ "${1:-}" = "--exit-after-demo" ] && exit_after_demo=1

SERVICE_PIDS=()
stop_all() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVICE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  infra_cleanup
}
trap stop_all EXIT
trap 'exit 130' INT TERM

ensure_infra
command -v cargo >/dev/null || { infra_log "the Rust toolchain (cargo) is required"; exit 1; }

echo "== building =="
cargo build --bins

# One database per service, created if missing (kept between runs).
create_database() {
  local name=$1
  cargo run --quiet -p qapmap-testkit --bin qapmap-create-database -- "$QAPMAP_PG_ADMIN_URL" "$name"
}

# Every gRPC call needs a bearer JWT (docs/security.md). This run's own
# Ed25519 key: the services verify with its JWKS, the demo signs with the
# private key; both live in the state directory and go with it.
KEY_DIR="$QAPMAP_STATE_DIR/jwt"
target/debug/qapmap-demo keys "$KEY_DIR"
export QAPMAP_JWT_ISSUER=qapmap-local QAPMAP_JWT_AUDIENCE=qapmap
export QAPMAP_DEMO_KEY_DIR="$KEY_DIR"

LOG_DIR="$QAPMAP_STATE_DIR/logs"
mkdir -p "$LOG_DIR"
start_service() {
  local service=$1 port=$2 database="qapmap_$1"
  create_database "$database"
  QAPMAP_DATABASE_URL="${QAPMAP_PG_ADMIN_URL%/*}/$database" \
  QAPMAP_NATS_URL="$QAPMAP_NATS_URL_BASE" \
  QAPMAP_REDIS_URL="$QAPMAP_REDIS_URL_BASE" \
  QAPMAP_JWT_JWKS_FILE="$KEY_DIR/jwks.json" \
  QAPMAP_GRPC_HOST=127.0.0.1 \
  QAPMAP_GRPC_PORT="$port" \
  QAPMAP_METRICS_PORT=$((port + 1000)) \
    "target/debug/qapmap-$service" >"$LOG_DIR/$service.log" 2>&1 &
  SERVICE_PIDS+=($!)
  echo "started $service on 127.0.0.1:$port (log: $LOG_DIR/$service.log)"
}

for port in 50051 50052 50053 50054; do
  if port_open "$port"; then
    infra_log "port $port is already in use (another QapMap still running?); stop it first"
    exit 1
  fi
done

# Waits until the process listens on its port; shows its log if it died.
wait_service() {
  local pid=$1 port=$2 service=$3 tries=600
  while ((tries-- > 0)); do
    port_open "$port" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      infra_log "$service exited during start-up; its errors and the end of its log:"
      # A Rust error ends in a backtrace: show the lines that say what went wrong first.
      grep -m 10 -E 'panicked|"level":"ERROR"|^Error:|^Caused by|^    [0-9]+: [^ ]' "$LOG_DIR/$service.log" \
        | grep -v -E '^ +[0-9]+: (std|core|tokio|<|__)' | cut -c1-400 >&2 || true
      tail -n 5 "$LOG_DIR/$service.log" | cut -c1-400 >&2
      exit 1
    fi
    sleep 0.2
  done
  infra_log "$service did not open port $port within 2 minutes; see $LOG_DIR/$service.log"
  exit 1
}

echo "== starting the four processes =="
start_service equity 50051
start_service shareholder 50052
start_service ledger 50053
start_service orchestrator 50054
services=(equity shareholder ledger orchestrator)
for index in 0 1 2 3; do
  wait_service "${SERVICE_PIDS[$index]}" $((50051 + index)) "${services[$index]}"
done

echo "== demo =="
target/debug/qapmap-demo

if [ -n "$exit_after_demo" ]; then exit 0; fi
echo
echo "The system is running. Every call but health and reflection needs a bearer token:"
echo "  TOKEN=\$(QAPMAP_DEMO_KEY_DIR=$KEY_DIR QAPMAP_JWT_ISSUER=$QAPMAP_JWT_ISSUER QAPMAP_JWT_AUDIENCE=$QAPMAP_JWT_AUDIENCE target/debug/qapmap-demo token)"
echo "  grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\" -d '{\"company_id\":\"<the demo's company>\"}' \\"
echo "    127.0.0.1:50053 qapmap.ledger.v1.LedgerService/GetCapTable"
echo "Metrics: curl -s 127.0.0.1:51054/metrics (ports 51051-51054)"
echo "Logs: $LOG_DIR. Press Ctrl-C to stop everything this script started."
while true; do sleep 3600 & wait $!; done
