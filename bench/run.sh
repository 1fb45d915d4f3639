#!/usr/bin/env bash
# Runs every bench of issue 7, one after the other: bash bench/run.sh [--profile]
# From a fresh clone: installs what the benches need when missing (the .venv with the test and bench
# extras, redis-server, PostgreSQL), like scripts/test.sh. Each bench starts and stops its own gateway,
# PostgreSQL scratch database and redis-server. --profile adds a py-spy run to bench/ingest and
# bench/e2e (summaries in bench/out/).
set -uo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
ensure_python_env test,bench || exit 1
ensure_redis_server || exit 1
ensure_postgres || exit 1
cd "$ROOT"
PY=.venv/bin/python
profile=()
[ "${1:-}" = "--profile" ] && profile=(--profile)
status=0
echo "== bench/ingest"; $PY bench/ingest.py "${profile[@]}" || status=1
echo; echo "== bench/e2e"; $PY bench/e2e.py "${profile[@]}" || status=1
echo; echo "== bench/scale"; $PY bench/scale.py || status=1
exit $status
