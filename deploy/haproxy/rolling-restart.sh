#!/usr/bin/env bash
# Rolling restart of the replicas behind HAProxy, one at a time, without failing a request.
#
#   rolling-restart.sh [-s SOCKET] [-b BACKEND] [-t SECONDS] restart COMMAND [ARG...]
#       every server of BACKEND in turn: drain it, run COMMAND ARG... SERVER_NAME (which must
#       stop the replica, start it again and return), put it back in rotation
#   rolling-restart.sh [...] drain SERVER     the first half, for one server
#   rolling-restart.sh [...] ready SERVER     the second half, once the replica runs again
#
#   -s  HAProxy's runtime API socket (haproxy.cfg's LGR_ADMIN_SOCKET; default
#       /run/haproxy/admin.sock); talked to with socat
#   -b  the backend (default langgraph_servers)
#   -t  how long to wait for a drained server's requests to end, and for a restarted one to
#       pass its health checks (default 60 s)
#
# Example, with systemd units langgraph@app1 ... langgraph@app3 (the server name is appended
# to COMMAND as its last argument, $1 of the sh -c script):
#   rolling-restart.sh -s /run/haproxy/admin.sock restart \
#       sh -c 'systemctl restart "langgraph@$1"' restart
#
# Why not just SIGTERM the replica: a draining replica answers new runs with 503 at once, and
# HAProxy only notices at its next health checks (up to inter x fall = 2 s later). Requests
# it sends there meanwhile get that 503, and HAProxy rightly does not send a POST that reached
# a replica to another one (a run must never execute twice). Draining first sends no new
# request to the replica; the ones it is serving end (or get the server's drain grace).
#
# Steps for each server:
#   1. `set server BACKEND/SERVER state drain`: no new requests; wait until it serves none
#      (its current sessions, scur, reach 0; after -t seconds go on: the server's own drain
#      grace, --drain-grace-s, still lets in-flight runs end after SIGTERM).
#   2. COMMAND stops the replica (SIGTERM: it drains and exits) and starts it again.
#   3. `set server BACKEND/SERVER health down`: the new process must pass `rise` health checks
#      of its own (a quick restart might never have been seen down), then it shows DRAIN (up,
#      drained); `set server BACKEND/SERVER state ready` puts it back in rotation.
# A server is drained only while another server of the backend is UP.
set -euo pipefail

socket=/run/haproxy/admin.sock
backend=langgraph_servers
timeout_s=60

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

api() {
    local answer
    answer=$(printf '%s\n' "$*" | socat -t 5 - "UNIX-CONNECT:$socket")
    # Commands that change something answer an empty line, or say what went wrong.
    if [[ $1 == set && -n ${answer//[[:space:]]/} ]]; then
        echo "haproxy: $*: $answer" >&2
        return 1
    fi
    printf '%s\n' "$answer"
}

# column SERVER NAME: one column of `show stat` for one server of the backend.
column() {
    api "show stat $backend 4 -1" | awk -F, -v server="$1" -v name="$2" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) index_of[$i] = i; next }
        $2 == server { print $(index_of[name]) }'
}

servers() {
    api "show stat $backend 4 -1" | awk -F, 'NR > 1 && $2 != "" { print $2 }'
}

# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds, at most timeout_s seconds.
wait_for() {
    local what=$1 deadline=$((SECONDS + timeout_s))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "timeout after ${timeout_s}s: $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

idle() { [[ $(column "$1" scur) == 0 ]]; }
status_is() { [[ $(column "$1" status) == "$2" ]]; }

others_up() {
    local server
    for server in $(servers); do
        if [[ $server != "$1" ]] && status_is "$server" UP; then
            return 0
        fi
    done
    return 1
}

drain() {
    local server=$1
    [[ -n $(column "$server" status) ]] || { echo "no server $backend/$server" >&2; return 1; }
    others_up "$server" || {
        echo "refusing to drain $server: no other server of $backend is UP" >&2
        return 1
    }
    api "set server $backend/$server state drain" >/dev/null
    echo "$server: draining"
    if ! wait_for "$server still serves $(column "$server" scur) requests" idle "$server"; then
        echo "$server: going on; its drain grace covers the requests left" >&2
    fi
    echo "$server: drained"
}

ready() {
    local server=$1
    api "set server $backend/$server health down" >/dev/null
    wait_for "$server passing its health checks" status_is "$server" DRAIN
    api "set server $backend/$server state ready" >/dev/null
    wait_for "$server UP" status_is "$server" UP
    echo "$server: UP"
}

while getopts "s:b:t:h" option; do
    case $option in
        s) socket=$OPTARG ;;
        b) backend=$OPTARG ;;
        t) timeout_s=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 2 ]] || usage
command -v socat >/dev/null || { echo "socat is needed (apt-get install socat)" >&2; exit 1; }

case $1 in
    drain) drain "$2" ;;
    ready) ready "$2" ;;
    restart)
        shift
        for server in $(servers); do
            drain "$server"
            echo "$server: restarting"
            "$@" "$server"
            ready "$server"
        done
        ;;
    *) usage ;;
esac
