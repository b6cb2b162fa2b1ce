#!/usr/bin/env bash
# Every test, with the real parts they drive: installs what is missing (Debian's nginx-light,
# caddy, chromium, chromium-driver, postgresql, python3, curl; as root), starts a throwaway
# PostgreSQL with TLS on a free loopback port, runs the command it is given (README's test
# command: `bash scripts/test.sh cargo test --workspace --all-features`, which is also what it
# runs when given none), stops the database, and ends with the tests that could not run and why.
#
# A test that cannot run (not root, no package registry) is reported as skipped, by name and
# reason, never counted among the passed without a word. With CI set, it fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'scripts/test.sh: %s\n' "$*" >&2; }

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v caddy >/dev/null || missing+=(caddy)
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# README's `serve --upstream` quickstart runs a Python API and curl.
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "cannot install ${missing[*]} (needs root and apt-get): the tests that drive them will be skipped"
  fi
fi

# A throwaway PostgreSQL, unless the caller gave one.
if [ -z "${HAPND_TEST_DATABASE_URL:-}" ]; then
  if [ "$(id -u)" = 0 ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    PG_PORT=${HAPND_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)}
    PG_DATA=${HAPND_PG_DATA:-/tmp/hapnd-test-pgdata-$$}
    # Stopped (and deleted) however this script ends, even if starting it failed halfway.
    trap 'bash scripts/pg-stop.sh "$PG_DATA"' EXIT
    HAPND_TEST_DATABASE_URL=$(HAPND_PG_SSL=1 bash scripts/pg-start.sh "$PG_PORT" "$PG_DATA")
    export HAPND_TEST_DATABASE_URL HAPND_TEST_PG_ROOT_CERT="$PG_DATA-root.crt"
    say "PostgreSQL on 127.0.0.1:$PG_PORT"
  else
    say "cannot start PostgreSQL (needs root and Debian's postgresql): its tests will be skipped"
  fi
fi

skips=$(mktemp)
export HAPND_SKIP_LOG="$skips"
status=0
# The command to run with all that set up: README's test command gives it in full.
if [ $# -eq 0 ]; then set -- cargo test --workspace --all-features; fi
"$@" || status=$?

count=$(sort -u "$skips" | grep -c . || true)
if [ "$count" -gt 0 ]; then
  printf '\n%s tests SKIPPED (they passed without testing what they are for):\n' "$count" >&2
  sort -u "$skips" | awk -F'\t' '{ print "  " $1 ": " $2 }' >&2
else
  printf '\nno test skipped\n' >&2
fi
rm -f "$skips"
exit "$status"
