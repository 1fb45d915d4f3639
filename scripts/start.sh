#!/usr/bin/env bash
# Installs the gateway (when needed) and starts it on its embedded defaults with the demo phone:
# SQLite in ./instance, an in-process queue, the sandbox sender, the faq engine. Nothing else to run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_python_env
cd "$ROOT"
exec "$VENV/bin/gateway" demo "$@"
