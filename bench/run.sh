#!/usr/bin/env bash
# QapMap's benchmarks (issue 10). One command:
#
#   bench/run.sh          the full size (a few minutes after the build)
#   bench/run.sh --tiny   a seconds-long smoke size (CI); exits non-zero when a
#                         saga fails or a call errs
#
# Builds the release binaries, makes Postgres, NATS and Redis available
# (scripts/lib/infra.sh: servers already on their default ports are used as
# they are), creates fresh databases qapmap_bench_<service>_<random> and a
# fresh NATS namespace and a throwaway token-signing key, starts the four
# release processes on free loopback ports with small pools and rate limits
# off (see bench/README.md), runs target/release/qapmap-bench against them and
# prints the figures, the machine, and the issue's floors. On exit it stops
# the processes it started, drops its databases and deletes its streams.
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/infra.sh

size=full
case "${1:-}" in
  "") ;;
  --tiny) size=tiny ;;
  *) echo "usage: bench/run.sh [--tiny]" >&2; exit 2 ;;
esac

# Small pools: the issue found a total of 8-16 Postgres connections best
# here. Per process (equity shareholder ledger orchestrator): the ledger
# answers past-date cap-table reads from Postgres, the others' pools serve
# only gRPC commands and their relay (consumers run on their lock sessions);
# QAPMAP_BENCH_POOL=N gives every process N.
if [ -n "${QAPMAP_BENCH_POOL:-}" ]; then
  POOLS=("$QAPMAP_BENCH_POOL" "$QAPMAP_BENCH_POOL" "$QAPMAP_BENCH_POOL" "$QAPMAP_BENCH_POOL")
else
  POOLS=(2 2 3 2)
fi
SUFFIX="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
NAMESPACE="qbench${SUFFIX}"
SERVICES=(equity shareholder ledger orchestrator)
DATABASES=()
for service in "${SERVICES[@]}"; do DATABASES+=("qapmap_bench_${service}_${SUFFIX}"); done
SCRATCH_DB="qapmap_bench_scratch_${SUFFIX}"

SERVICE_PIDS=()
DATABASES_CREATED=""
STREAMS_USED=""
BENCH=""
KEY_DIR=""
stop_all() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVICE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$STREAMS_USED" ]; then
    "$BENCH" delete-streams "$QAPMAP_NATS_URL_BASE" "$NAMESPACE" || true
  fi
  if [ -n "$DATABASES_CREATED" ]; then
    "$BENCH" drop-databases "$QAPMAP_PG_ADMIN_URL" "${DATABASES[@]}" "$SCRATCH_DB" || true
  fi
  if [ -n "$KEY_DIR" ]; then rm -rf "$KEY_DIR"; fi
  infra_cleanup
}
trap stop_all EXIT
trap 'exit 130' INT TERM

command -v cargo >/dev/null || { infra_log "the Rust toolchain (cargo) is required"; exit 1; }
# QAPMAP_BENCH_PROFILE=debug only checks the harness itself quickly: its
# figures say nothing about performance.
PROFILE="${QAPMAP_BENCH_PROFILE:-release}"
if [ -n "${QAPMAP_BENCH_BIN_DIR:-}" ]; then
  # A/B runs: binaries built (and copied aside) earlier, used without a build.
  BIN="$QAPMAP_BENCH_BIN_DIR"
  echo "== binaries from $BIN (no build) =="
else
  echo "== building ($PROFILE) =="
  if [ "$PROFILE" = release ]; then cargo build --release --bins; else cargo build --bins; fi
  TARGET_DIR="$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  BIN="${TARGET_DIR:-target}/$PROFILE"
fi
BENCH="$BIN/qapmap-bench"

ensure_infra

"$BENCH" create-databases "$QAPMAP_PG_ADMIN_URL" "${DATABASES[@]}" "$SCRATCH_DB"
DATABASES_CREATED=1
STREAMS_USED=1

LOG_DIR="$QAPMAP_STATE_DIR/bench-logs"
mkdir -p "$LOG_DIR"
# Every call needs a bearer JWT: the processes verify with this run's JWKS,
# the bench signs its token with the private key next to it.
KEY_DIR="$QAPMAP_STATE_DIR/bench-jwt-$SUFFIX"
"$BENCH" keys "$KEY_DIR"
PORTS=()
# Each process picks a free port (QAPMAP_GRPC_PORT=0) and logs it; the
# metrics endpoint is on, on a port of its own choosing.
listening_port() {
  grep -m 1 '"message":"grpc server listening"' "$1" 2>/dev/null |
    sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'
}
# QAPMAP_BENCH_DATABASE_URL_QUERY=...: appended to the services' database
# URLs after "?", for experiments with connection settings (e.g.
# options=-c%20plan_cache_mode%3Dforce_generic_plan).
# QAPMAP_BENCH_SERVICE_THREADS=N: each service process runs N tokio worker
# threads (default: one per core); the harness itself keeps the default.
if [ -n "${QAPMAP_BENCH_SERVICE_THREADS:-}" ]; then
  export TOKIO_WORKER_THREADS="$QAPMAP_BENCH_SERVICE_THREADS"
fi
for index in 0 1 2 3; do
  service=${SERVICES[$index]}
  # Emptied here, not only by the background process's redirect: that one
  # may run after the wait below has read the previous run's listening line
  # (its port long closed), as it did twice under load.
  : >"$LOG_DIR/$service.log"
  QAPMAP_DATABASE_URL="${QAPMAP_PG_ADMIN_URL%/*}/${DATABASES[$index]}${QAPMAP_BENCH_DATABASE_URL_QUERY:+?$QAPMAP_BENCH_DATABASE_URL_QUERY}" \
  QAPMAP_DATABASE_MAX_CONNECTIONS="${POOLS[$index]}" \
  QAPMAP_NATS_URL="$QAPMAP_NATS_URL_BASE" \
  QAPMAP_NATS_NAMESPACE="$NAMESPACE" \
  QAPMAP_REDIS_URL="$QAPMAP_REDIS_URL_BASE" \
  QAPMAP_JWT_JWKS_FILE="$KEY_DIR/jwks.json" \
  QAPMAP_RATE_LIMIT_SUBJECT_PER_SECOND=0 \
  QAPMAP_RATE_LIMIT_SUBJECT_BURST=0 \
  QAPMAP_RATE_LIMIT_COMPANY_PER_SECOND=0 \
  QAPMAP_RATE_LIMIT_COMPANY_BURST=0 \
  QAPMAP_GRPC_HOST=127.0.0.1 \
  QAPMAP_GRPC_PORT=0 \
  QAPMAP_METRICS_PORT=0 \
    "$BIN/qapmap-$service" >"$LOG_DIR/$service.log" 2>&1 &
  SERVICE_PIDS+=($!)
  # One at a time, as scripts/run.sh does. Wait for the listening line (at most 2 minutes).
  tries=600
  port=""
  until port=$(listening_port "$LOG_DIR/$service.log") && [ -n "$port" ]; do
    if ! kill -0 "${SERVICE_PIDS[$index]}" 2>/dev/null; then
      infra_log "$service exited during start-up; the end of its log:"
      grep -m 5 -E "panicked|rror" "$LOG_DIR/$service.log" | cut -c1-400 >&2 || true
      tail -n 5 "$LOG_DIR/$service.log" | cut -c1-400 >&2
      exit 1
    fi
    if ((tries-- <= 0)); then
      infra_log "$service did not report a listening port within 2 minutes; see $LOG_DIR/$service.log"
      exit 1
    fi
    sleep 0.2
  done
  PORTS+=("$port")
  echo "started $service (pid ${SERVICE_PIDS[$index]}) on 127.0.0.1:$port, pool ${POOLS[$index]}${QAPMAP_BENCH_SERVICE_THREADS:+, $QAPMAP_BENCH_SERVICE_THREADS tokio worker thread(s)}"
done

if [ -n "${QAPMAP_BENCH_SERVICE_THREADS:-}" ]; then unset TOKIO_WORKER_THREADS; fi

echo
echo "== versions =="
echo "commit:          $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "rustc:           $(rustc --version)"
echo "command:         bench/run.sh ${1:-} (binaries: $PROFILE)"
echo

status=0
QAPMAP_BENCH_SIZE="$size" \
QAPMAP_BENCH_ONLY="${QAPMAP_BENCH_ONLY:-}" \
QAPMAP_BENCH_KEY_DIR="$KEY_DIR" \
QAPMAP_BENCH_NAMESPACE="$NAMESPACE" \
QAPMAP_BENCH_POOLS="${POOLS[*]}" \
QAPMAP_BENCH_SCRATCH_URL="${QAPMAP_PG_ADMIN_URL%/*}/$SCRATCH_DB" \
QAPMAP_BENCH_EQUITY_PID="${SERVICE_PIDS[0]}" QAPMAP_BENCH_EQUITY_PORT="${PORTS[0]}" \
QAPMAP_BENCH_EQUITY_DATABASE="${DATABASES[0]}" \
QAPMAP_BENCH_SHAREHOLDER_PID="${SERVICE_PIDS[1]}" QAPMAP_BENCH_SHAREHOLDER_PORT="${PORTS[1]}" \
QAPMAP_BENCH_SHAREHOLDER_DATABASE="${DATABASES[1]}" \
QAPMAP_BENCH_LEDGER_PID="${SERVICE_PIDS[2]}" QAPMAP_BENCH_LEDGER_PORT="${PORTS[2]}" \
QAPMAP_BENCH_LEDGER_DATABASE="${DATABASES[2]}" \
QAPMAP_BENCH_ORCHESTRATOR_PID="${SERVICE_PIDS[3]}" QAPMAP_BENCH_ORCHESTRATOR_PORT="${PORTS[3]}" \
QAPMAP_BENCH_ORCHESTRATOR_DATABASE="${DATABASES[3]}" \
  "$BENCH" run || status=$?

# Pulls the NATS server never ended, which the consumers ended themselves
# (`consumer::PULL_GRACE`); before that fix each stood a consumer still for
# 5 s. Warnings in the services' logs, so nothing here needs their metrics.
cut=""
for index in 0 1 2 3; do
  cut+=" ${SERVICES[$index]} $(grep -c 'the server never ended a pull' "$LOG_DIR/${SERVICES[$index]}.log" || true)"
done
echo "pulls the server never ended, ended by the consumer:$cut"

# Where each process's relay marks went (`local_relay`): commits the relay
# made for marks alone, and rows marked inside consumer batches at no
# commit of their own. Read from each process's /metrics with bash's
# /dev/tcp, so no HTTP client is needed.
metric_value() { # <port> <metric name>
  local response
  response=$(
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    timeout 5 cat <&3
  ) || true
  printf '%s\n' "$response" | sed -n "s/^$2{[^}]*} \([0-9][0-9]*\).*/\1/p" | head -n 1
}
marks=""
for index in 0 1 2 3; do
  port=$(grep -m 1 '"message":"grpc server listening"' "$LOG_DIR/${SERVICES[$index]}.log" 2>/dev/null |
    sed -n 's/.*"metrics_port":\([0-9][0-9]*\).*/\1/p')
  if [ -n "$port" ]; then
    marks+=" ${SERVICES[$index]} $(metric_value "$port" qapmap_relay_mark_commits_total)/$(metric_value "$port" qapmap_marks_in_consumer_batches_total)"
  fi
done
echo "relay mark commits / rows marked in consumer batches, whole run:$marks"

for index in 0 1 2 3; do
  if ! kill -0 "${SERVICE_PIDS[$index]}" 2>/dev/null; then
    infra_log "${SERVICES[$index]} died during the benchmark; its errors, panics and last lines:"
    grep -m 10 -E 'panicked|"level":"(ERROR|WARN)"|^Error:|^Caused by|^    [0-9]+: [^ ]' "$LOG_DIR/${SERVICES[$index]}.log" \
      | grep -v -E '^ +[0-9]+: (std|core|tokio|<|__)' | cut -c1-600 >&2 || true
    tail -n 5 "$LOG_DIR/${SERVICES[$index]}.log" | cut -c1-400 >&2
    status=1
  fi
done
exit "$status"
