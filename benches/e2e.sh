#!/usr/bin/env bash
# End-to-end throughput: the bench_server example with the layer off (bare) and on, loaded
# by wrk over loopback, alternating bare/auth runs so drift on a shared machine hits both
# alike. Reports each pair's auth/bare throughput ratio and their median.
#
# Run from the crate root:   bash benches/e2e.sh
# Knobs (environment):       RUNS=5 DURATION=3s CONNECTIONS=32 THREADS=1 PORT=18080
#                            (ports PORT .. PORT+2*RUNS+1 are used, one per server)
#                            SERVER_CPUS=0 WRK_CPUS=1 (taskset lists; empty: no pinning)
# The server and wrk are pinned to different cores, so the load generator does not
# take CPU from the server it measures (tokio sizes its pool from the affinity mask).
# Bounds: every wrk run lasts DURATION (and is killed by `timeout` after DURATION+10 s);
# servers bind 127.0.0.1 only and are killed on exit (trap), whatever happens.
set -euo pipefail

RUNS=${RUNS:-5}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PORT=${PORT:-18080}
WRK=${WRK:-wrk}
SERVER_CPUS=${SERVER_CPUS-0}
WRK_CPUS=${WRK_CPUS-1}
# taskset execs the command: the server's pid stays the one to kill.
server_pin=(); [[ -n "$SERVER_CPUS" ]] && server_pin=(taskset -c "$SERVER_CPUS")
wrk_pin=(); [[ -n "$WRK_CPUS" ]] && wrk_pin=(taskset -c "$WRK_CPUS")

cd "$(dirname "$0")/.."
cargo build --release --example bench_server
SERVER=target/release/examples/bench_server

server_pid=""
out=$(mktemp)
log=$(mktemp)
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -f "$out" "$log"
}
trap cleanup EXIT INT TERM

# No function below runs in a subshell: the EXIT trap must see the server's pid.
start_server() { # $1 = on|off, $2 = port; sets server_pid and key
    : >"$out" # no READY from the previous server
    "${server_pin[@]}" "$SERVER" --auth "$1" --port "$2" >"$out" 2>"$log" &
    server_pid=$!
    for _ in $(seq 200); do
        grep -q '^READY' "$out" 2>/dev/null && break
        sleep 0.05
    done
    grep -q '^READY' "$out" || { echo "server did not start:" >&2; cat "$log" >&2; exit 1; }
    key=$(awk '/^KEY /{print $2}' "$out")
}

stop_server() {
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

run() { # $1 = on|off, $2 = port; sets rps
    start_server "$1" "$2"
    local secs=${DURATION%s}
    # Both modes send the same request bytes; only the server differs.
    rps=$(timeout $((secs + 10)) "${wrk_pin[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
        -H "Authorization: Bearer $key" "http://127.0.0.1:$2/" |
        awk '/^Requests\/sec:/{print $2}')
    # A rejected request would be fast and wrong: check the layer lets the key through.
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$2/") == 200 ]] ||
        { echo "server answered non-200 to the key" >&2; exit 1; }
    stop_server
}

ratios=()
printf '%-4s %14s %14s %8s\n' run bare_rps auth_rps ratio
for i in $(seq "$RUNS"); do
    # A fresh port per server: no waiting on the previous one's sockets.
    run off $((PORT + 2 * i)); bare=$rps
    run on $((PORT + 2 * i + 1)); auth=$rps
    ratio=$(awk -v a="$auth" -v b="$bare" 'BEGIN{printf "%.4f", a/b}')
    ratios+=("$ratio")
    printf '%-4s %14s %14s %8s\n' "$i" "$bare" "$auth" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }')
echo "median auth/bare throughput ratio over $RUNS pairs: $median (target >= 0.95)"
