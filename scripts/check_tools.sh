#!/usr/bin/env bash
# Fail early, naming the Debian package to install, when a build tool is missing.
set -u
python="${1:-python3.11}"
missing=0
need() {  # need COMMAND PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "error: '$1' not found. Install it with: sudo apt-get install -y $2" >&2
    missing=1
  fi
}
need "$python" "python3.11 python3.11-venv python3.11-dev"
need cmake cmake
need cc build-essential
need c++ build-essential
need npm npm
if [ "$missing" = 0 ]; then
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $python cannot create virtual environments. Install: sudo apt-get install -y python3.11-venv" >&2
    missing=1
  fi
  cmake_version="$(cmake --version | head -1 | awk '{print $3}')"
  if ! printf '%s\n' 3.21 "$cmake_version" | sort -V -C; then
    echo "error: cmake >= 3.21 is needed, found $cmake_version. Install a newer cmake (pip install cmake)" >&2
    missing=1
  fi
fi
exit "$missing"
