#!/usr/bin/env bash
# Installs the Python packages of the in-repo Python client (the minimal client of
# docs/protocol.md, client/tests/python/) into .tools/pyclient, pinned, and prints
# that directory (for PYTHONPATH). Does nothing when they are there already.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/pyclient"
pkgs=(nats-py==2.16.0 msgpack==1.2.4 pynacl==1.6.2 nkeys==0.2.1)
if ! PYTHONPATH="$dir" python3 -c 'import nats, msgpack, nacl, nkeys' 2>/dev/null; then
  echo "installing ${pkgs[*]} into $dir ..." >&2
  mkdir -p "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "${pkgs[@]}" >&2
fi
echo "$dir"
