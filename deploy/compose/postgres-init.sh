#!/usr/bin/env bash
# Runs once, when the Postgres volume is first initialised (the postgres
# image's /docker-entrypoint-initdb.d/ hook): one database per QapMap process.
# Each process creates its own tables at start (embedded migrations).
set -euo pipefail
for database in qapmap_equity qapmap_shareholder qapmap_ledger qapmap_orchestrator; do
  echo "creating database $database"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"$database\" OWNER \"$POSTGRES_USER\""
done
