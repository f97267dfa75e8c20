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
# open3d's wheel links libusb-1.0 (for its RealSense support) but the library is not a Python package.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libusb-1.0-0 (needed by open3d) with apt-get" >&2
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1; }) \
      || { echo "error: could not install libusb-1.0-0; run: sudo apt-get install -y libusb-1.0-0" >&2; missing=1; }
  else
    echo "error: libusb-1.0 not found (open3d needs it). Install it with: sudo apt-get install -y libusb-1.0-0" >&2
    missing=1
  fi
fi
exit "$missing"
