#!/usr/bin/env bash
# Installs what the browser tests need and prints the selenium directory (put it
# on PYTHONPATH): Debian's chromium and chromium-driver (when `chromedriver` is
# missing; needs root and apt-get, as on CI), and selenium, pinned, into
# .tools/selenium. Does nothing that is done already. Used by
# gateway/tests/browser.rs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/selenium"
version=4.38.0
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium and chromium-driver (a few minutes, once) ..." >&2
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "the browser tests need chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
if ! PYTHONPATH="$dir" python3 -c "import selenium, sys; sys.exit(selenium.__version__ != '$version')" 2>/dev/null; then
  echo "installing selenium==$version into $dir ..." >&2
  mkdir -p "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "selenium==$version" >&2
fi
echo "$dir"
