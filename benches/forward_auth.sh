#!/usr/bin/env bash
# Forward auth end to end: nginx -> backend alone (bare) against nginx -> gateway -> backend
# with docs/forward-auth.md's nginx configuration (auth), loaded by wrk over loopback in alternating
# pairs, plus the gateway's /auth/verify asked directly. The backend is nginx itself (a
# `return 200` server), so what is measured is the proxy hop and the gateway.
#
# Run from the repository root:   bash benches/forward_auth.sh
# BENCH_CHECK=1 writes and validates the configurations (nginx -t) and stops: no build, no load.
# Knobs (environment):  RUNS=3 DURATION=5s CONNECTIONS=16 PORT=18400
#                       NGINX_CPU=0 GATEWAY_CPU=0 WRK_CPU=1 (taskset CPU lists)
# The proxy and the gateway share a core by default, as a sidecar gateway would: on this
# 2-vCPU KVM guest a wake-up across cores costs some 40 to 60 us, and the auth hop makes
# two of them (nginx -> gateway -> nginx) when the two sit on different cores.
# Reports per pair: throughput at CONNECTIONS and p50 at one connection, bare and auth; then
# the medians of the auth/bare throughput ratio and of the p50 added by auth.
# Bounds: every wrk run lasts DURATION (killed after DURATION+10 s); everything binds
# 127.0.0.1 and is stopped on exit (trap), whatever happens.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-18400}
NGINX_CPU=${NGINX_CPU:-0}
GATEWAY_CPU=${GATEWAY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

cd "$(dirname "$0")/.."
source benches/proxy_configs.sh

dir=$(mktemp -d)
gateway_pid=""
nginx_pid=""
cleanup() {
    [[ -n "$nginx_pid" ]] && { kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; }
    [[ -n "$gateway_pid" ]] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

AUTH_PORT=$PORT BARE_PORT=$((PORT + 1)) BACKEND_PORT=$((PORT + 2))
GATEWAY_PORT=$((PORT + 3)) ADMIN_PORT=$((PORT + 4))

# docs/forward-auth.md's nginx block, addresses substituted, next to a bare proxy and the
# backend; its gateway block's flags for the gateway.
mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp"
nginx_auth_conf "127.0.0.1:$GATEWAY_PORT" "127.0.0.1:$BACKEND_PORT" "127.0.0.1:$AUTH_PORT" \
    "$dir/nginx/logs" >"$dir/nginx/hapnd.conf"
mapfile -t gateway_flags < <(gateway_args)
t=$dir/nginx/tmp
cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $dir/nginx/logs/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    client_body_temp_path $t/body; proxy_temp_path $t/proxy; fastcgi_temp_path $t/fastcgi;
    uwsgi_temp_path $t/uwsgi; scgi_temp_path $t/scgi;
    include $dir/nginx/hapnd.conf;
    server {   # the backend
        listen 127.0.0.1:$BACKEND_PORT;
        access_log off;
        location / { return 200 "ok\n"; }
    }
    server {   # nginx -> backend alone, the same upstream and log
        listen 127.0.0.1:$BARE_PORT;
        access_log $dir/nginx/logs/bare-access.log hapnd;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /api/ { proxy_pass http://backend; }
    }
}
EOF
# BENCH_CHECK=1: the configurations only (written and validated), no build, no load.
if [[ -n ${BENCH_CHECK:-} ]]; then
    nginx_check "$dir/nginx/nginx.conf"
    echo "bench configuration checked: ${gateway_flags[*]}"
    exit 0
fi

cargo build --release -p hapnd-auth-cli
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hapnd-auth

# The gateway, on a fresh SQLite database, and one live key.
db=$dir/keys.db
"$BIN" keys create --db "$db" --tenant bench --env live --name bench >"$dir/key.out"
key=$(awk '/^ *sk_live_/{print $1}' "$dir/key.out")
HAPND_LOG=warn taskset -c "$GATEWAY_CPU" "$BIN" serve "${gateway_flags[@]}" --db "$db" \
    --listen "127.0.0.1:$GATEWAY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$dir/gateway.out" 2>"$dir/gateway.err" &
gateway_pid=$!

taskset -c "$NGINX_CPU" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' \
    2>"$dir/nginx/logs/stderr.log" &
nginx_pid=$!

for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" &&
        curl -s -o /dev/null "http://127.0.0.1:$AUTH_PORT/" && break
    sleep 0.05
done
for url in "http://127.0.0.1:$AUTH_PORT/api/x" "http://127.0.0.1:$BARE_PORT/api/x" \
    "http://127.0.0.1:$GATEWAY_PORT/auth/verify"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$url")
    [[ $code == 200 ]] || { echo "$url answered $code to the key" >&2; cat "$dir/gateway.err" >&2; exit 1; }
done

secs=${DURATION%s}
# wrk, pinned; sets rps and p50 (in us). Any non-2xx answer fails the run.
load() { # $1 = connections, $2 = url
    timeout $((secs + 10)) taskset -c "$WRK_CPU" wrk -t1 -c"$1" -d"$DURATION" --latency \
        -H "Authorization: Bearer $key" "$2" >"$dir/wrk.out"
    if grep -q 'Non-2xx' "$dir/wrk.out"; then cat "$dir/wrk.out" >&2; exit 1; fi
    read -r rps p50 < <(awk '/^Requests\/sec:/{rps=$2}
        $1=="50%"{v=$2; u=1;
            if (v ~ /us$/) {u=1} else if (v ~ /ms$/) {u=1000} else if (v ~ /s$/) {u=1000000}
            sub(/[a-z]+$/, "", v); p50=v*u}
        END{printf "%s %.1f\n", rps, p50}' "$dir/wrk.out")
}

median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

ratios=() added=()
printf '%-4s %12s %12s %7s | %12s %12s %10s\n' pair bare_rps auth_rps ratio bare_p50_us auth_p50_us added_us
for i in $(seq "$RUNS"); do
    load "$CONNECTIONS" "http://127.0.0.1:$BARE_PORT/api/x"; bare_rps=$rps
    load "$CONNECTIONS" "http://127.0.0.1:$AUTH_PORT/api/x"; auth_rps=$rps
    load 1 "http://127.0.0.1:$BARE_PORT/api/x"; bare_p50=$p50
    load 1 "http://127.0.0.1:$AUTH_PORT/api/x"; auth_p50=$p50
    ratio=$(awk -v a="$auth_rps" -v b="$bare_rps" 'BEGIN{printf "%.3f", a/b}')
    add=$(awk -v a="$auth_p50" -v b="$bare_p50" 'BEGIN{printf "%.1f", a-b}')
    ratios+=("$ratio") added+=("$add")
    printf '%-4s %12s %12s %7s | %12s %12s %10s\n' "$i" "$bare_rps" "$auth_rps" "$ratio" "$bare_p50" "$auth_p50" "$add"
done
load "$CONNECTIONS" "http://127.0.0.1:$GATEWAY_PORT/auth/verify"; direct_rps=$rps
load 1 "http://127.0.0.1:$GATEWAY_PORT/auth/verify"; direct_p50=$p50
echo "median auth/bare throughput ratio at $CONNECTIONS connections: $(printf '%s\n' "${ratios[@]}" | median) (target >= 0.45)"
echo "median p50 added at one connection: $(printf '%s\n' "${added[@]}" | median) us (target <= 80)"
echo "/auth/verify directly: $direct_rps req/s at $CONNECTIONS connections, p50 $direct_p50 us at one"
# The auth runs were answered by the gateway, not short-circuited.
grep -q "tenant=bench env=live" "$dir/nginx/logs/hapnd-access.log" || { echo "no authenticated request in the log" >&2; exit 1; }
