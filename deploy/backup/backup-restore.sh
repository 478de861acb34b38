#!/usr/bin/env bash
# Backup, point-in-time restore and retention of the langgraph-resilient Postgres, with
# pgBackRest (configuration and the reasons for pgBackRest: pgbackrest.conf next to this file).
# Run it as the postgres OS user on the database host (or where pgbackrest.conf points to it).
#
# Redis is not backed up: it is a cache and coordinator here, every acknowledged write is in
# Postgres, and after a restore the saver refills Redis by itself. Flush it after a restore.
#
# Environment:
#   PGBACKREST_CONFIG  pgBackRest configuration file (default /etc/pgbackrest/pgbackrest.conf)
#   PGBACKREST_STANZA  the stanza (default langgraph)
#   PGBACKREST_*       any other pgBackRest option, read by pgBackRest itself
#   PGHOST, PGPORT, PGUSER, PGDATABASE   libpq settings, for restore-point only
set -euo pipefail

config=${PGBACKREST_CONFIG:-/etc/pgbackrest/pgbackrest.conf}
stanza=${PGBACKREST_STANZA:-langgraph}

# Given on the command line (not only through the environment) so that the restore_command
# pgBackRest writes into a restored cluster names them too.
pgbr() {
    pgbackrest --config="$config" --stanza="$stanza" "$@"
}

usage() {
    cat <<'EOF'
usage: backup-restore.sh COMMAND [ARGS]

  init                    create the stanza (once, after archive_command is set), then check
                          that WAL archiving works
  backup [full|diff|incr] take a backup (default incr; the first one is always full); old
                          backups are expired by the retention afterwards
  restore-point NAME      create a named restore point on the running primary and wait until
                          its WAL is archived: a target for "restore --name NAME"
  restore --to DIR [--time TIME | --name NAME | --lsn LSN] [--set LABEL] [-- PGBACKREST_ARGS]
                          restore into DIR, a new, empty data directory (a new cluster; the
                          running one is never touched), replaying archived WAL up to the
                          target (point-in-time recovery: TIME like '2026-01-31 12:00:00+00')
                          or, without a target, to the end of the archive. The cluster promotes
                          itself when it reaches the target. Start it with
                          pg_ctl -D DIR start, then flush Redis and point the servers at it.
  cleanup                 expire backups and WAL past the retention (repo1-retention-full)
  info [--output=json]    the backups and the WAL range they cover
  check                   check that WAL archiving works (forces a WAL switch, waits for it)
EOF
}

die() {
    echo "backup-restore.sh: $*" >&2
    exit 2
}

cmd_restore() {
    local to="" target_type="" target="" set_label=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --to) to=${2:?--to needs a directory}; shift 2 ;;
            --time) target_type="time"; target=${2:?--time needs a time}; shift 2 ;;
            --name) target_type="name"; target=${2:?--name needs a restore point}; shift 2 ;;
            --lsn) target_type="lsn"; target=${2:?--lsn needs an LSN}; shift 2 ;;
            --set) set_label=${2:?--set needs a backup label}; shift 2 ;;
            --) shift; break ;;
            *) die "restore: unknown argument $1 (see --help)" ;;
        esac
    done
    [ -n "$to" ] || die "restore needs --to DIR, a new data directory"
    # Never restore over a cluster: the target must be new or empty.
    if [ -d "$to" ] && [ -n "$(ls -A "$to")" ]; then
        die "restore: $to is not empty; restore into a new directory"
    fi
    mkdir -p "$to"
    chmod 700 "$to"

    local args=(--pg1-path="$to")
    if [ -n "$target_type" ]; then
        # Promote when the target is reached (pgBackRest's default would pause there).
        args+=(--type="$target_type" --target="$target" --target-action=promote)
    fi
    if [ -n "$set_label" ]; then
        args+=(--set="$set_label")
    fi
    pgbr "${args[@]}" "$@" restore
    echo "restored into $to; start it with: pg_ctl -D $to start"
}

cmd_restore_point() {
    local name=${1:?restore-point needs a name}
    # From standard input: psql substitutes :'name' (quoted) there, not in --command.
    psql --no-psqlrc -v ON_ERROR_STOP=1 --quiet --tuples-only --set=name="$name" <<'SQL'
SELECT pg_create_restore_point(:'name');
SQL
    # check switches to a new WAL segment and waits until the one with the point is archived.
    pgbr check
}

main() {
    local command=${1:-}
    [ $# -gt 0 ] && shift
    case "$command" in
        init)
            pgbr stanza-create
            pgbr check
            ;;
        backup)
            local type=${1:-incr}
            case "$type" in
                full | diff | incr) ;;
                *) die "backup type must be full, diff or incr (got $type)" ;;
            esac
            pgbr --type="$type" backup
            ;;
        restore-point) cmd_restore_point "$@" ;;
        restore) cmd_restore "$@" ;;
        cleanup) pgbr expire ;;
        info) pgbr info "$@" ;;
        check) pgbr check ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
