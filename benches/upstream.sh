#!/usr/bin/env bash
# `serve --upstream` against the proxies it replaces, one backend for all: the backend
# alone (wrk straight to it), nginx alone in front of it, nginx with docs/forward-auth.md's
# auth_request configuration, Caddy with its forward_auth Caddyfile, and the gateway as the
# proxy itself (`serve --upstream`), loaded by wrk over loopback in alternating rows, and a
# sixth row, the floor: cli/examples/floor_proxy.rs, hyper and tokio forwarding with no
# authentication, header rules, pool or metrics (how close to nginx this stack gets). The
# backend is an nginx process of its own (one worker, a `return 200` server), so every
# proxy crosses a process boundary to reach it, as a real backend makes it.
#
# Run from the repository root:   bash benches/upstream.sh
# BENCH_CHECK=1 writes and validates the configurations (nginx -t, caddy validate) and
# stops: no build, no load (tests/bench_scripts.rs runs it).
# Knobs (environment):  RUNS=3 DURATION=5s CONNECTIONS=16 PORT=18500
#                       SERVER_CPU=0 (taskset CPU list of the backend, the proxies and the
#                       gateways) WRK_CPU=1 (wrk's, a core of its own)
# Reports per row: throughput at CONNECTIONS and p50 at one connection for each of the
# five; then the medians of upstream/auth_request and upstream/nginx-alone throughput and
# of the upstream/nginx-alone p50 ratio, against issue 24's targets (>= 2, >= 0.8, <= 1.2),
# and of upstream/Caddy+forward_auth and upstream/backend.
# Bounds: every wrk run lasts DURATION (killed after DURATION+10 s); everything binds
# 127.0.0.1 and is stopped on exit (trap), whatever happens.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-18500}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

cd "$(dirname "$0")/.."
source benches/proxy_configs.sh

dir=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

AUTH_PORT=$PORT BARE_PORT=$((PORT + 1)) BACKEND_PORT=$((PORT + 2))
GATEWAY_PORT=$((PORT + 3)) ADMIN_PORT=$((PORT + 4))
UPSTREAM_PORT=$((PORT + 5)) UPSTREAM_ADMIN_PORT=$((PORT + 6)) CADDY_PORT=$((PORT + 7))
FLOOR_PORT=$((PORT + 8))

# nginx_main NAME BODY: an nginx.conf of one worker under $dir/NAME, BODY in its http {}.
nginx_main() {
    local root=$dir/$1 t=$dir/$1/tmp
    mkdir -p "$root/logs" "$t"
    cat >"$root/nginx.conf" <<EOF
worker_processes 1;
error_log $root/logs/error.log warn;
pid $root/nginx.pid;
events { worker_connections 1024; }
http {
    client_body_temp_path $t/body; proxy_temp_path $t/proxy; fastcgi_temp_path $t/fastcgi;
    uwsgi_temp_path $t/uwsgi; scgi_temp_path $t/scgi;
$2
}
EOF
}

# The backend, in a process of its own.
nginx_main backend "    server {
        listen 127.0.0.1:$BACKEND_PORT;
        access_log off;
        location / { return 200 \"ok\\n\"; }
    }"
# docs' nginx block, addresses substituted, and beside it nginx alone: the same upstream
# block (keepalive 32) and access log, no auth_request.
mkdir -p "$dir/nginx/logs"
nginx_auth_conf "127.0.0.1:$GATEWAY_PORT" "127.0.0.1:$BACKEND_PORT" "127.0.0.1:$AUTH_PORT" \
    "$dir/nginx/logs" >"$dir/nginx-hapnd.conf"
nginx_main nginx "    include $dir/nginx-hapnd.conf;
    server {   # nginx alone
        listen 127.0.0.1:$BARE_PORT;
        access_log $dir/nginx/logs/bare-access.log hapnd;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        location /api/ { proxy_pass http://backend; }
    }"
# docs' Caddyfile, addresses substituted.
mkdir -p "$dir/caddy/logs"
caddy_auth_conf "127.0.0.1:$GATEWAY_PORT" "127.0.0.1:$BACKEND_PORT" "$CADDY_PORT" \
    "$dir/caddy/logs" >"$dir/caddy/Caddyfile"
# The gateway both proxies ask, run as docs' gateway block runs it.
mapfile -t gateway_flags < <(gateway_args)

if [[ -n ${BENCH_CHECK:-} ]]; then
    nginx_check "$dir/backend/nginx.conf"
    nginx_check "$dir/nginx/nginx.conf"
    caddy_check "$dir/caddy/Caddyfile"
    echo "bench configuration checked: ${gateway_flags[*]}"
    exit 0
fi

cargo build --release -p hapnd-auth-cli --bin hapnd-auth --example floor_proxy
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hapnd-auth
FLOOR_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/floor_proxy

# A fresh SQLite database and one live key, for both gateways.
db=$dir/keys.db
"$BIN" keys create --db "$db" --tenant bench --env live --name bench >"$dir/key.out"
key=$(awk '/^ *sk_live_/{print $1}' "$dir/key.out")

# An array, not a function: taskset execs the server, so $! is the server's pid to kill.
pin=(taskset -c "$SERVER_CPU")
HAPND_LOG=warn "${pin[@]}" "$BIN" serve "${gateway_flags[@]}" --db "$db" \
    --listen "127.0.0.1:$GATEWAY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$dir/gateway.out" 2>"$dir/gateway.err" &
pids+=($!)
HAPND_LOG=warn "${pin[@]}" "$BIN" serve --db "$db" --no-demo-key \
    --listen "127.0.0.1:$UPSTREAM_PORT" --admin-listen "127.0.0.1:$UPSTREAM_ADMIN_PORT" \
    --upstream "http://127.0.0.1:$BACKEND_PORT" \
    >"$dir/upstream.out" 2>"$dir/upstream.err" &
pids+=($!)
HAPND_LOG=warn "${pin[@]}" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT" \
    >"$dir/floor.out" 2>"$dir/floor.err" &
pids+=($!)
for name in backend nginx; do
    "${pin[@]}" nginx -p "$dir/$name" -c "$dir/$name/nginx.conf" -g 'daemon off;' \
        2>"$dir/$name/logs/stderr.log" &
    pids+=($!)
done
home=$dir/caddy/home
mkdir -p "$home"
HOME=$home XDG_DATA_HOME=$home/data XDG_CONFIG_HOME=$home/config \
    "${pin[@]}" caddy run --adapter caddyfile --config "$dir/caddy/Caddyfile" \
    >"$dir/caddy/logs/stdout.log" 2>"$dir/caddy/logs/stderr.log" &
pids+=($!)

BACKEND=http://127.0.0.1:$BACKEND_PORT/api/x
BARE=http://127.0.0.1:$BARE_PORT/api/x
AUTH=http://127.0.0.1:$AUTH_PORT/api/x
CADDY=http://127.0.0.1:$CADDY_PORT/api/x
UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT/api/x
FLOOR=http://127.0.0.1:$FLOOR_PORT/api/x
for url in "http://127.0.0.1:$ADMIN_PORT/healthz" "http://127.0.0.1:$UPSTREAM_ADMIN_PORT/healthz" \
    "$BACKEND" "$BARE" "$CADDY" "$FLOOR"; do
    for _ in $(seq 200); do
        curl -s -o /dev/null "$url" && break
        sleep 0.05
    done
done
for url in "$BACKEND" "$BARE" "$AUTH" "$CADDY" "$UPSTREAM" "$FLOOR" "http://127.0.0.1:$GATEWAY_PORT/auth/verify"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$url")
    [[ $code == 200 ]] || {
        echo "$url answered $code to the key" >&2
        cat "$dir"/*.err "$dir"/caddy/logs/stderr.log >&2
        exit 1
    }
done
# Without the key, every authenticating row refuses: what is measured is authentication.
for url in "$AUTH" "$CADDY" "$UPSTREAM"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
    [[ $code == 401 ]] || { echo "$url answered $code without a key" >&2; exit 1; }
done

secs=${DURATION%s}
# wrk, pinned; sets rps and p50 (in us). Any non-2xx answer or socket error fails the run.
load() { # $1 = connections, $2 = url
    timeout $((secs + 10)) taskset -c "$WRK_CPU" wrk -t1 -c"$1" -d"$DURATION" --latency \
        -H "Authorization: Bearer $key" "$2" >"$dir/wrk.out"
    if grep -q 'Non-2xx\|Socket errors' "$dir/wrk.out"; then cat "$dir/wrk.out" >&2; exit 1; fi
    read -r rps p50 < <(awk '/^Requests\/sec:/{rps=$2}
        $1=="50%"{v=$2; u=1;
            if (v ~ /us$/) {u=1} else if (v ~ /ms$/) {u=1000} else if (v ~ /s$/) {u=1000000}
            sub(/[a-z]+$/, "", v); p50=v*u}
        END{printf "%s %.1f\n", rps, p50}' "$dir/wrk.out")
}

median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }

names=(backend bare auth caddy up floor)
urls=("$BACKEND" "$BARE" "$AUTH" "$CADDY" "$UPSTREAM" "$FLOOR")
vs_auth=() vs_bare=() p50_ratio=() vs_caddy=() vs_backend=() floor_bare=() floor_p50=()
echo "uptime: $(uptime)"
printf '%-3s %9s %9s %9s %9s %9s %9s | %7s %7s %7s %7s %7s %7s | %8s %8s %8s %8s %8s %8s\n' row \
    backend nginx nginx+ar caddy+fa upstream floor up/ar up/ngx p50x up/cad up/be fl/ngx \
    p50_be p50_ngx p50_ar p50_cad p50_up p50_fl
for i in $(seq "$RUNS"); do
    declare -A rps_of=() p50_of=()
    # Throughput rows first, then latency rows, each in the row order: alternating.
    for j in "${!names[@]}"; do
        load "$CONNECTIONS" "${urls[$j]}"
        rps_of[${names[$j]}]=$rps
    done
    for j in "${!names[@]}"; do
        load 1 "${urls[$j]}"
        p50_of[${names[$j]}]=$p50
    done
    a=$(ratio "${rps_of[up]}" "${rps_of[auth]}")
    b=$(ratio "${rps_of[up]}" "${rps_of[bare]}")
    p=$(ratio "${p50_of[up]}" "${p50_of[bare]}")
    c=$(ratio "${rps_of[up]}" "${rps_of[caddy]}")
    e=$(ratio "${rps_of[up]}" "${rps_of[backend]}")
    f=$(ratio "${rps_of[floor]}" "${rps_of[bare]}")
    fp=$(ratio "${p50_of[floor]}" "${p50_of[bare]}")
    vs_auth+=("$a") vs_bare+=("$b") p50_ratio+=("$p") vs_caddy+=("$c") vs_backend+=("$e")
    floor_bare+=("$f") floor_p50+=("$fp")
    printf '%-3s %9s %9s %9s %9s %9s %9s | %7s %7s %7s %7s %7s %7s | %8s %8s %8s %8s %8s %8s\n' "$i" \
        "${rps_of[backend]}" "${rps_of[bare]}" "${rps_of[auth]}" "${rps_of[caddy]}" "${rps_of[up]}" \
        "${rps_of[floor]}" "$a" "$b" "$p" "$c" "$e" "$f" \
        "${p50_of[backend]}" "${p50_of[bare]}" "${p50_of[auth]}" "${p50_of[caddy]}" "${p50_of[up]}" \
        "${p50_of[floor]}"
done
echo "uptime: $(uptime)"
echo "median upstream/nginx+auth_request throughput at $CONNECTIONS connections: $(printf '%s\n' "${vs_auth[@]}" | median) (target >= 2)"
echo "median upstream/nginx-alone throughput: $(printf '%s\n' "${vs_bare[@]}" | median) (target >= 0.8)"
echo "median upstream/nginx-alone p50 at one connection: $(printf '%s\n' "${p50_ratio[@]}" | median) (target <= 1.2)"
echo "median upstream/Caddy+forward_auth throughput: $(printf '%s\n' "${vs_caddy[@]}" | median)"
echo "median upstream/backend-alone throughput: $(printf '%s\n' "${vs_backend[@]}" | median)"
echo "median floor/nginx-alone throughput: $(printf '%s\n' "${floor_bare[@]}" | median), p50: $(printf '%s\n' "${floor_p50[@]}" | median)"
# The authenticated rows were answered by the gateway, not short-circuited.
grep -q "tenant=bench env=live" "$dir/nginx/logs/hapnd-access.log" || { echo "no authenticated request in nginx's log" >&2; exit 1; }
