# Shared by scripts/start.sh and scripts/test.sh: install what is missing, never more.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || { say "apt-get not found: install $* yourself"; return 1; }
  say "installing $* (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# The virtual environment with the gateway installed (editable) plus the given extras.
ensure_python_env() {
  local extras="${1:-}"
  local python="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment in .venv"
    "$python" -m venv "$VENV" || { apt_install python3-venv && "$python" -m venv "$VENV"; }
  fi
  # Reinstall only when pyproject.toml changed since the last install.
  local stamp="$VENV/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)${extras:+-$extras}"
  if [ ! -f "$stamp" ]; then
    say "installing the gateway${extras:+ with [$extras]} into .venv"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

# The docs quick-start test runs the page's curl commands as printed.
ensure_curl() {
  command -v curl >/dev/null || apt_install curl
}

ensure_redis_server() {
  command -v redis-server >/dev/null || apt_install redis-server
}

# PostgreSQL on 127.0.0.1:5432 (the tests create and drop their own database in it).
ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql || return 1; fi
  local version
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$version" ] || { say "no PostgreSQL cluster found"; return 1; }
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 1; done
  say "PostgreSQL did not come up on 127.0.0.1:5432"; return 1
}

# Debian's Chromium at /usr/bin/chromium for the console's browser tests (Playwright drives it;
# `playwright install` is never used, so no browser is downloaded from elsewhere).
ensure_chromium() {
  [ -x /usr/bin/chromium ] || apt_install chromium
}
