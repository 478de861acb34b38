#!/usr/bin/env bash
# Runs once, when the primary's data directory is first created (the image runs every script
# in /docker-entrypoint-initdb.d): the role the standby replicates as, a replication slot that
# keeps the WAL the standby has not received yet, and the pg_hba.conf line that lets that role
# connect for replication. The server reads pg_hba.conf when the image starts it for real,
# right after these scripts.
set -euo pipefail
: "${POSTGRES_REPLICATION_PASSWORD:?set it in deploy/compose/.env}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=replication_password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'replication_password';
SELECT pg_create_physical_replication_slot('standby_1');
SQL

echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
