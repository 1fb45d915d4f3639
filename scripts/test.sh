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
empty=0
run_pass() {
  local code=0
  "${pytest[@]}" "$@" || code=$?
  # 5 is "no tests selected": one empty pass is fine (-k may pick only timing tests), both are not.
  if [ "$code" -eq 5 ]; then empty=$((empty + 1)); elif [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then status=$code; fi
}
run_pass -n "$workers" --dist worksteal -m "not timing" "$@"
run_pass -m timing "$@"
[ "$status" -eq 0 ] && [ "$empty" -eq 2 ] && status=5
exit "$status"
