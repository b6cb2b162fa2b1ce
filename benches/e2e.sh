#!/usr/bin/env bash
# End-to-end throughput: the bench_server example with the layer off (bare) and on, loaded
# by wrk over loopback, alternating bare/auth runs so drift on a shared machine hits both
# alike. Reports each pair's auth/bare throughput ratio and their median.
#
# Run from the crate root:   bash benches/e2e.sh
# Knobs (environment):       RUNS=5 DURATION=3s CONNECTIONS=32 THREADS=1 PORT=18080
#                            (ports PORT .. PORT+2*RUNS+1 are used, one per server)
#                            SERVER_CPUS=0 WRK_CPUS=1 (taskset lists; empty: no pinning)
#                            AUTH_MODE=on (the layer through Router::layer) or outer
#                            (the layer wrapping the whole Router): see bench_server.rs
# The server and wrk are pinned to different cores, so the load generator does not
# take CPU from the server it measures (tokio sizes its pool from the affinity mask).
# Bounds: every wrk run lasts DURATION (and is killed by `timeout` after DURATION+10 s);
# servers bind 127.0.0.1 only and are killed on exit (trap), whatever happens.
set -euo pipefail

RUNS=${RUNS:-5}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
AUTH_MODE=${AUTH_MODE:-on}
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
start_server() { # $1 = on|outer|off, $2 = port; sets server_pid and key
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

server_cpu_ticks() { # user + system clock ticks the server has used so far
    awk '{print $14 + $15}' "/proc/$server_pid/stat"
}

run() { # $1 = on|outer|off, $2 = port; sets rps and per_cpu
    start_server "$1" "$2"
    local secs=${DURATION%s} report ticks
    ticks=$(server_cpu_ticks)
    # Both modes send the same request bytes; only the server differs.
    report=$(timeout $((secs + 10)) "${wrk_pin[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
        -H "Authorization: Bearer $key" "http://127.0.0.1:$2/")
    ticks=$(($(server_cpu_ticks) - ticks))
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$report")
    # Requests per second of server CPU time: what a core of its own would serve. On a
    # machine shared with other work the server gets a varying share of its core, which
    # moves rps run to run; this moves much less.
    per_cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" \
        '/ requests in /{printf "%.0f", $1 / (t / hz)}' <<<"$report")
    # A rejected request would be fast and wrong: check the layer lets the key through.
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$2/") == 200 ]] ||
        { echo "server answered non-200 to the key" >&2; exit 1; }
    stop_server
}

ratios=()
cpu_ratios=()
printf '%-4s %12s %12s %8s %16s %16s %8s\n' run bare_rps auth_rps ratio bare_req/cpu_s auth_req/cpu_s ratio
for i in $(seq "$RUNS"); do
    # A fresh port per server: no waiting on the previous one's sockets.
    run off $((PORT + 2 * i)); bare=$rps; bare_cpu=$per_cpu
    run "$AUTH_MODE" $((PORT + 2 * i + 1)); auth=$rps; auth_cpu=$per_cpu
    ratio=$(awk -v a="$auth" -v b="$bare" 'BEGIN{printf "%.4f", a/b}')
    cpu_ratio=$(awk -v a="$auth_cpu" -v b="$bare_cpu" 'BEGIN{printf "%.4f", a/b}')
    ratios+=("$ratio")
    cpu_ratios+=("$cpu_ratio")
    printf '%-4s %12s %12s %8s %16s %16s %8s\n' "$i" "$bare" "$auth" "$ratio" "$bare_cpu" "$auth_cpu" "$cpu_ratio"
done
median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
echo "AUTH_MODE=$AUTH_MODE: median auth/bare throughput ratio over $RUNS pairs: $(printf '%s\n' "${ratios[@]}" | median) (target >= 0.95)"
echo "median auth/bare requests per server CPU second over $RUNS pairs: $(printf '%s\n' "${cpu_ratios[@]}" | median)"
