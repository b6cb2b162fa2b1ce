# Sourced by the bench scripts (benches/forward_auth.sh, benches/upstream.sh): the proxy
# configurations of docs/forward-auth.md, read from the blocks its tests read
# (`<!-- forward-auth-test: NAME -->`), with the documented addresses replaced by the
# bench's. Every function fails (non-zero, a message on stderr) when the block or an
# address it replaces is missing: a docs edit that moves or renames one breaks the bench
# instead of benchmarking something else. tests/bench_scripts.rs runs them (BENCH_CHECK=1).

DOCS=docs/forward-auth.md

# docs_block NAME: the fenced block after `<!-- forward-auth-test: NAME -->` in $DOCS.
docs_block() {
    local block
    block=$(awk -v marker="<!-- forward-auth-test: $1 -->" '
        $0 == marker {found=1; next}
        found && !inside && /^```/ {inside=1; next}
        inside && /^```/ {exit}
        inside {print}' "$DOCS")
    [[ -n $block ]] || { echo "$DOCS has no <!-- forward-auth-test: $1 --> block" >&2; return 1; }
    printf '%s\n' "$block"
}

# replace TEXT FROM TO: TEXT with every FROM replaced by TO; fails when FROM is not in it.
replace() {
    [[ $1 == *"$2"* ]] || { echo "the $DOCS block has no \"$2\"" >&2; return 1; }
    printf '%s\n' "${1//"$2"/"$3"}"
}

# nginx_auth_conf GATEWAY BACKEND LISTEN LOGDIR: the nginx block (the `http {}` part), with
# the gateway at GATEWAY, the backend at BACKEND (host:port), listening on LISTEN
# (host:port) and logging under LOGDIR.
nginx_auth_conf() {
    local c
    c=$(docs_block nginx)
    c=$(replace "$c" 127.0.0.1:8080 "$1")
    c=$(replace "$c" 127.0.0.1:3000 "$2")
    c=$(replace "$c" 127.0.0.1:8000 "$3")
    replace "$c" /var/log/nginx/ "$4/"
}

# caddy_auth_conf GATEWAY BACKEND PORT LOGDIR: the whole Caddyfile, on 127.0.0.1:PORT.
caddy_auth_conf() {
    local c
    c=$(docs_block caddy)
    c=$(replace "$c" 127.0.0.1:8080 "$1")
    c=$(replace "$c" 127.0.0.1:3000 "$2")
    c=$(replace "$c" http://:8000 "http://:$3")
    replace "$c" /var/log/caddy/ "$4/"
}

# gateway_args: the arguments of `hapnd-auth serve` in the gateway block (the gateway as
# both proxies' blocks expect it), one a line.
gateway_args() {
    local line
    line=$(docs_block gateway | sed -e 's/#.*//' | grep -m1 'hapnd-auth serve')
    [[ -n $line ]] || { echo "the $DOCS gateway block runs no hapnd-auth serve" >&2; return 1; }
    # shellcheck disable=SC2086 # split on purpose: the block is one command line
    set -- $line
    shift 2
    printf '%s\n' "$@"
}

# nginx_check CONF: `nginx -t` on CONF, when nginx is installed; otherwise says so on
# stdout ("not validated: nginx is not installed"), which the test reports as a skip.
nginx_check() {
    if ! command -v nginx >/dev/null; then
        echo "not validated: nginx is not installed"
        return 0
    fi
    nginx -t -q -p "$(dirname "$1")" -c "$1"
}

# caddy_check CADDYFILE: `caddy validate` on it, when Caddy is installed.
caddy_check() {
    if ! command -v caddy >/dev/null; then
        echo "not validated: caddy is not installed"
        return 0
    fi
    local home
    home=$(dirname "$1")/home
    mkdir -p "$home"
    HOME=$home XDG_DATA_HOME=$home/data XDG_CONFIG_HOME=$home/config \
        caddy validate --adapter caddyfile --config "$1" >"$home/validate.log" 2>&1 ||
        { cat "$home/validate.log" >&2; return 1; }
}
