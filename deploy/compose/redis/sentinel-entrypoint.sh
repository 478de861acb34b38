#!/usr/bin/env bash
# Entry point of a Redis Sentinel. Sentinel rewrites its configuration file (it records there
# the current master, its replicas and the other Sentinels), so the file lives in the
# container's data volume and is written only on the first start: after a failover a restarted
# Sentinel still knows which server is the master now.
set -euo pipefail
: "${REDIS_MASTER_HOST:?}"
: "${REDIS_MASTER_NAME:?}"
: "${REDIS_PASSWORD:?set it in deploy/compose/.env}"
: "${SENTINEL_ANNOUNCE_HOST:?}"
quorum=${SENTINEL_QUORUM:-2}
conf=/data/sentinel.conf

if [ ! -f "$conf" ]; then
    # resolve-hostnames before "monitor": the master is named by its compose service name.
    cat > "$conf" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${SENTINEL_ANNOUNCE_HOST}
sentinel monitor ${REDIS_MASTER_NAME} ${REDIS_MASTER_HOST} 6379 ${quorum}
sentinel auth-pass ${REDIS_MASTER_NAME} ${REDIS_PASSWORD}
sentinel down-after-milliseconds ${REDIS_MASTER_NAME} 5000
sentinel failover-timeout ${REDIS_MASTER_NAME} 30000
sentinel parallel-syncs ${REDIS_MASTER_NAME} 1
CONF
fi

# The image's entry point hands /data to the redis user and drops root before starting.
exec docker-entrypoint.sh redis-server "$conf" --sentinel
