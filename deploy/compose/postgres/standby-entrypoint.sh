#!/usr/bin/env bash
# Entry point of the streaming standby. On its first start the data directory is empty: clone
# the primary with pg_basebackup (streaming the WAL the copy needs, through the primary's
# replication slot; --write-recovery-conf leaves standby.signal and primary_conninfo, so the
# copy starts as a standby of the primary). Every start then runs Postgres the way the image
# does, as a read-only hot standby that follows the primary.
# Promote it by hand (docker compose exec postgres-standby pg_ctl promote, as user postgres)
# when the primary is lost: deploy/README.md.
set -euo pipefail
: "${PRIMARY_HOST:?}"
: "${POSTGRES_REPLICATION_PASSWORD:?set it in deploy/compose/.env}"
PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until gosu postgres pg_isready --quiet --host "$PRIMARY_HOST"; do
        echo "waiting for the primary at $PRIMARY_HOST"
        sleep 1
    done
    PGPASSWORD=$POSTGRES_REPLICATION_PASSWORD gosu postgres pg_basebackup \
        --host "$PRIMARY_HOST" --username replicator --pgdata "$PGDATA" \
        --wal-method stream --slot standby_1 --write-recovery-conf --checkpoint fast
fi

exec docker-entrypoint.sh postgres -c hot_standby=on
