# Shared set-up for scripts/run and scripts/test: a .venv with the project installed.
# Sourced, not run. Installs again only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "chatscale needs Python 3.11 or newer; none found on PATH" >&2
  exit 1
}

ensure_apt_packages() {
  # ensure_apt_packages COMMAND:PACKAGE ...: install Debian packages whose command is missing.
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing ${missing[*]} (install them; tests needing them will skip)" >&2
    return 0
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_postgresql() {
  # Debian's postgresql package, for the PostgreSQL server the tests start themselves
  # (tests/harness/postgres.py). Its binaries live in /usr/lib/postgresql/<version>/bin.
  if command -v postgres >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: PostgreSQL is missing (install postgresql; its tests will skip)" >&2
    return 0
  fi
  echo "installing Debian packages: postgresql"
  # The tests run their own server: no system cluster on port 5432 is created for them.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/chatscale-tests.conf
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

ensure_venv() {
  # ensure_venv EXTRAS: create .venv and install the project with those extras.
  local extras=$1
  if [ ! -x .venv/bin/python ]; then
    "$(pick_python)" -m venv .venv
  fi
  local stamp=".venv/.chatscale-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}
