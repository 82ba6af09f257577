#!/usr/bin/env bash
# Runs every Nimbus test on a fresh machine: installs what the tests need (Debian packages when
# root, pip and npm packages), builds the workspace, then runs the Rust tests and the
# integration tests (pytest, which starts the real `nimbus` binary on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ -f tests/apt-packages.txt ]; then
  while read -r pkg; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done < tests/apt-packages.txt
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

step "python packages"
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt

if [ -f tests/package.json ]; then
  step "npm packages"
  (cd tests && npm install --no-audit --no-fund --loglevel=error)
fi

step "build"
cargo build --workspace --all-targets

step "rust tests"
cargo test --workspace

step "integration tests"
cd tests
python3 -m pytest
