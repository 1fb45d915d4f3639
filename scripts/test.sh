#!/usr/bin/env bash
# Installs everything the test suite needs (Python packages, redis-server, PostgreSQL, Chromium) when missing,
# then runs the whole suite. Arguments are passed to pytest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_python_env test,bench
ensure_redis_server
ensure_curl
ensure_chromium || { [ "${CI:-}" = "true" ] && exit 1; say "Chromium unavailable: the browser tests will be skipped"; }
ensure_postgres || { [ "${CI:-}" = "true" ] && exit 1; say "PostgreSQL unavailable: its tests will be skipped"; }
cd "$ROOT"
pytest=("$VENV/bin/python" -m pytest)

# Naming tests (a file, a folder, file::test) runs just those, in this process.
for arg in "$@"; do
  if [ -e "${arg%%::*}" ] && [ "${arg#-}" = "$arg" ]; then exec "${pytest[@]}" "$@"; fi
done

# The whole suite runs in two passes. Most tests wait on subprocesses, servers and sockets, so they
# are spread over one pytest-xdist process per core (at most 4). The tests marked `timing` assert an
# upper bound on elapsed time, which a neighbour's load could break, so they run afterwards, alone.
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -gt 4 ] && workers=4
status=0
"${pytest[@]}" -n "$workers" --dist worksteal -m "not timing" "$@" || status=$?
"${pytest[@]}" -m timing "$@" || { code=$?; [ "$status" -eq 0 ] && status=$code; }
exit "$status"
