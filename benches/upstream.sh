#!/usr/bin/env bash
# `serve --upstream` against nginx, one backend: nginx alone in front of it (bare), nginx with
# README's auth_request configuration (auth), and the gateway as the proxy itself
# (upstream), loaded by wrk over loopback in alternating rows. The backend is nginx itself
# (a `return 200` server), so what is measured is the proxy and the authentication.
# Caddy is not in it yet (issue 24 asks for it).
#
# Run from the repository root:   bash benches/upstream.sh
# Knobs (environment):  RUNS=3 DURATION=5s CONNECTIONS=16 PORT=18500
#                       NGINX_CPU=0 GATEWAY_CPU=0 WRK_CPU=1 (taskset CPU lists)
# Reports per row: throughput at CONNECTIONS and p50 at one connection for bare, auth and
# upstream; then the medians of upstream/auth and upstream/bare throughput and of the
# upstream/bare p50 ratio, against the issue's targets (>= 2, >= 0.8, <= 1.2).
# Bounds: every wrk run lasts DURATION (killed after DURATION+10 s); everything binds
# 127.0.0.1 and is stopped on exit (trap), whatever happens.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-18500}
NGINX_CPU=${NGINX_CPU:-0}
GATEWAY_CPU=${GATEWAY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

cd "$(dirname "$0")/.."
cargo build --release -p hapnd-auth-cli
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hapnd-auth

dir=$(mktemp -d)
gateway_pid=""
nginx_pid=""
upstream_pid=""
cleanup() {
    [[ -n "$upstream_pid" ]] && { kill "$upstream_pid" 2>/dev/null || true; wait "$upstream_pid" 2>/dev/null || true; }
    [[ -n "$nginx_pid" ]] && { kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; }
    [[ -n "$gateway_pid" ]] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

AUTH_PORT=$PORT BARE_PORT=$((PORT + 1)) BACKEND_PORT=$((PORT + 2))
GATEWAY_PORT=$((PORT + 3)) ADMIN_PORT=$((PORT + 4))
UPSTREAM_PORT=$((PORT + 5)) UPSTREAM_ADMIN_PORT=$((PORT + 6))

# The gateway, on a fresh SQLite database, and one live key.
db=$dir/keys.db
"$BIN" keys create --db "$db" --tenant bench --env live --name bench >"$dir/key.out"
key=$(awk '/^ *sk_live_/{print $1}' "$dir/key.out")
HAPND_LOG=warn taskset -c "$GATEWAY_CPU" "$BIN" serve --db "$db" \
    --listen "127.0.0.1:$GATEWAY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$dir/gateway.out" 2>"$dir/gateway.err" &
gateway_pid=$!
# The same database, as the proxy itself in front of the same backend.
HAPND_LOG=warn taskset -c "$GATEWAY_CPU" "$BIN" serve --db "$db" --no-demo-key \
    --listen "127.0.0.1:$UPSTREAM_PORT" --admin-listen "127.0.0.1:$UPSTREAM_ADMIN_PORT" \
    --upstream "http://127.0.0.1:$BACKEND_PORT" \
    >"$dir/upstream.out" 2>"$dir/upstream.err" &
upstream_pid=$!

# README's nginx block, addresses substituted, next to a bare proxy and the backend.
mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp"
awk '/<!-- forward-auth-test: nginx -->/{found=1; next}
     found && /^```nginx/{inside=1; next}
     inside && /^```/{exit}
     inside{print}' README.md |
    sed -e "s/127.0.0.1:8080/127.0.0.1:$GATEWAY_PORT/; s/127.0.0.1:3000/127.0.0.1:$BACKEND_PORT/" \
        -e "s/127.0.0.1:8000/127.0.0.1:$AUTH_PORT/; s|/var/log/nginx/|$dir/nginx/logs/|" \
        >"$dir/nginx/hapnd.conf"
grep -q "$GATEWAY_PORT" "$dir/nginx/hapnd.conf" || { echo "no nginx block in README.md" >&2; exit 1; }
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
taskset -c "$NGINX_CPU" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' \
    2>"$dir/nginx/logs/stderr.log" &
nginx_pid=$!

for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" &&
        curl -s -o /dev/null "http://127.0.0.1:$AUTH_PORT/" && break
    sleep 0.05
done
for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$UPSTREAM_ADMIN_PORT/healthz" && break
    sleep 0.05
done
for url in "http://127.0.0.1:$AUTH_PORT/api/x" "http://127.0.0.1:$BARE_PORT/api/x" \
    "http://127.0.0.1:$GATEWAY_PORT/auth/verify" "http://127.0.0.1:$UPSTREAM_PORT/api/x"; do
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

vs_auth=() vs_bare=() p50_ratio=()
printf '%-4s %10s %10s %10s | %8s %8s %8s | %9s %9s %9s\n' row bare_rps auth_rps up_rps \
    up/auth up/bare p50x bare_p50 auth_p50 up_p50
for i in $(seq "$RUNS"); do
    load "$CONNECTIONS" "http://127.0.0.1:$BARE_PORT/api/x"; bare_rps=$rps
    load "$CONNECTIONS" "http://127.0.0.1:$AUTH_PORT/api/x"; auth_rps=$rps
    load "$CONNECTIONS" "http://127.0.0.1:$UPSTREAM_PORT/api/x"; up_rps=$rps
    load 1 "http://127.0.0.1:$BARE_PORT/api/x"; bare_p50=$p50
    load 1 "http://127.0.0.1:$AUTH_PORT/api/x"; auth_p50=$p50
    load 1 "http://127.0.0.1:$UPSTREAM_PORT/api/x"; up_p50=$p50
    a=$(awk -v u="$up_rps" -v x="$auth_rps" 'BEGIN{printf "%.3f", u/x}')
    b=$(awk -v u="$up_rps" -v x="$bare_rps" 'BEGIN{printf "%.3f", u/x}')
    p=$(awk -v u="$up_p50" -v x="$bare_p50" 'BEGIN{printf "%.3f", u/x}')
    vs_auth+=("$a") vs_bare+=("$b") p50_ratio+=("$p")
    printf '%-4s %10s %10s %10s | %8s %8s %8s | %9s %9s %9s\n' "$i" "$bare_rps" "$auth_rps" "$up_rps" \
        "$a" "$b" "$p" "$bare_p50" "$auth_p50" "$up_p50"
done
echo "median upstream/auth_request throughput at $CONNECTIONS connections: $(printf '%s\n' "${vs_auth[@]}" | median) (target >= 2)"
echo "median upstream/nginx-alone throughput: $(printf '%s\n' "${vs_bare[@]}" | median) (target >= 0.8)"
echo "median upstream/nginx-alone p50 at one connection: $(printf '%s\n' "${p50_ratio[@]}" | median) (target <= 1.2)"
