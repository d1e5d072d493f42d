# Sourced by scripts/run.sh and scripts/test.sh.
#
# Makes Postgres, NATS (with JetStream) and Redis available and exports where
# they are:
#   QAPMAP_PG_ADMIN_URL  a superuser URL to the `postgres` database
#   QAPMAP_NATS_URL_BASE, QAPMAP_REDIS_URL_BASE
# A server already listening on its default port (5432, 4222, 6379) is used as
# it is and never stopped or reconfigured. A missing one is started here, on a
# free port, with its data in $QAPMAP_STATE_DIR, and stopped by infra_cleanup
# (call it from an EXIT trap). Missing binaries are installed from Debian's
# packages when running as root; otherwise we say what to install and stop.

QAPMAP_STATE_DIR="${QAPMAP_STATE_DIR:-$(mktemp -d /tmp/qapmap-state-XXXXXX)}"
INFRA_STARTED_PIDS=()
INFRA_STARTED_PG_DATA=""

infra_log() { printf '[infra] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local port
  for port in $(seq "$1" $(($1 + 200))); do
    if ! port_open "$port"; then echo "$port"; return 0; fi
  done
  return 1
}

wait_port() {
  local port=$1 tries=${2:-150}
  while ((tries-- > 0)); do port_open "$port" && return 0; sleep 0.2; done
  return 1
}

apt_updated=""
install_packages() {
  if [ "$(id -u)" != 0 ]; then
    infra_log "missing: $*. Install them (Debian: sudo apt-get install -y $*) and run again."
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  infra_log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

pg_bin_dir() {
  local dir
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

as_postgres_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_postgres() {
  if port_open 5432; then
    export QAPMAP_PG_ADMIN_URL="${QAPMAP_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    infra_log "using the Postgres already on 5432"
    return 0
  fi
  local bin port data
  bin=$(pg_bin_dir) || { install_packages postgresql; bin=$(pg_bin_dir); }
  command -v psql >/dev/null || install_packages postgresql-client
  port=$(free_port 55432)
  data="$QAPMAP_STATE_DIR/postgres"
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$QAPMAP_STATE_DIR" && chmod 755 "$QAPMAP_STATE_DIR"
  as_postgres_owner "$bin/initdb" -D "$data/data" -U postgres --auth=trust -E UTF8 >/dev/null
  as_postgres_owner "$bin/pg_ctl" -D "$data/data" -l "$data/postgres.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  INFRA_STARTED_PG_DATA="$data/data"
  export QAPMAP_PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
  infra_log "started Postgres on $port (data in $data)"
}

ensure_nats() {
  if port_open 4222; then
    export QAPMAP_NATS_URL_BASE="${QAPMAP_NATS_URL_BASE:-nats://127.0.0.1:4222}"
    infra_log "using the NATS already on 4222"
    return 0
  fi
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || install_packages nats-server
  local server port
  server=$(command -v nats-server || echo /usr/sbin/nats-server)
  port=$(free_port 54222)
  mkdir -p "$QAPMAP_STATE_DIR/nats"
  "$server" -a 127.0.0.1 -p "$port" -js -sd "$QAPMAP_STATE_DIR/nats" >"$QAPMAP_STATE_DIR/nats.log" 2>&1 &
  INFRA_STARTED_PIDS+=($!)
  wait_port "$port" || { infra_log "nats-server did not start"; exit 1; }
  export QAPMAP_NATS_URL_BASE="nats://127.0.0.1:$port"
  infra_log "started NATS with JetStream on $port"
}

ensure_redis() {
  if port_open 6379; then
    export QAPMAP_REDIS_URL_BASE="${QAPMAP_REDIS_URL_BASE:-redis://127.0.0.1:6379}"
    infra_log "using the Redis already on 6379"
    return 0
  fi
  command -v redis-server >/dev/null || install_packages redis-server
  local port
  port=$(free_port 56379)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$QAPMAP_STATE_DIR/redis.log" 2>&1 &
  INFRA_STARTED_PIDS+=($!)
  wait_port "$port" || { infra_log "redis-server did not start"; exit 1; }
  export QAPMAP_REDIS_URL_BASE="redis://127.0.0.1:$port"
  infra_log "started Redis on $port"
}

ensure_infra() {
  mkdir -p "$QAPMAP_STATE_DIR"
  ensure_postgres
  ensure_nats
  ensure_redis
}

# Stops only what ensure_infra started.
infra_cleanup() {
  local pid bin
  for pid in "${INFRA_STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${INFRA_STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$INFRA_STARTED_PG_DATA" ] && bin=$(pg_bin_dir); then
    as_postgres_owner "$bin/pg_ctl" -D "$INFRA_STARTED_PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  case "$QAPMAP_STATE_DIR" in /tmp/qapmap-state-*) rm -rf "$QAPMAP_STATE_DIR" ;; esac
}

ensure_cargo_nextest() {
  command -v cargo >/dev/null || { infra_log "the Rust toolchain (cargo) is required"; exit 1; }
  if ! cargo nextest --version >/dev/null 2>&1; then
    infra_log "installing cargo-nextest from crates.io"
    cargo install cargo-nextest --locked >&2
  fi
}
