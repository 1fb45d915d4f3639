#!/usr/bin/env bash
# Runs the benches of issue 7: bash bench/run.sh [ingest] [e2e] [scale] [worker_path] [webhook_path] [database_cost] [--profile]
# With no name, the three of the issue, one after the other; worker_path, webhook_path and database_cost (CPU
# per text in the workers, per webhook in a web process, in process, and PostgreSQL's per stored text) only when named. From a fresh clone: installs what the benches need when
# missing (the .venv with the test and bench extras, redis-server, PostgreSQL), like scripts/test.sh. Each
# bench starts and stops its own gateway, PostgreSQL scratch database and redis-server. --profile adds a
# py-spy run to bench/ingest and bench/e2e (summaries in bench/out/); bench/scale has no profile run.
set -uo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
benches=()
profile=()
for arg in "$@"; do
  case "$arg" in
    ingest|e2e|scale|worker_path|webhook_path|database_cost) benches+=("$arg") ;;
    --profile) profile=(--profile) ;;
    *) echo "usage: bash bench/run.sh [ingest] [e2e] [scale] [worker_path] [webhook_path] [database_cost] [--profile]" >&2; exit 2 ;;
  esac
done
[ ${#benches[@]} -eq 0 ] && benches=(ingest e2e scale)
ensure_python_env test,bench || exit 1
ensure_redis_server || exit 1
ensure_postgres || exit 1
cd "$ROOT"
status=0
for bench in "${benches[@]}"; do
  echo "== bench/$bench"
  if [ "$bench" = ingest ] || [ "$bench" = e2e ]; then
    .venv/bin/python "bench/$bench.py" "${profile[@]}" || status=1
  else
    .venv/bin/python "bench/$bench.py" || status=1
  fi
  echo
done
exit $status
