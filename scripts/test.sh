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
exec "$VENV/bin/python" -m pytest "$@"
