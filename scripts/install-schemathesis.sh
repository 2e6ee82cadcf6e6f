#!/usr/bin/env bash
# Installs schemathesis (property-based testing of an API against its own
# OpenAPI document), pinned, into .tools/schemathesis and prints that directory:
# put it on PYTHONPATH and run `python3 <dir>/bin/st`. Does nothing when it is
# there already. Used by gateway/tests/openapi.rs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/schemathesis"
version=4.32.5
if ! PYTHONPATH="$dir" python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$version')" 2>/dev/null; then
  echo "installing schemathesis==$version into $dir ..." >&2
  mkdir -p "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "schemathesis==$version" >&2
fi
echo "$dir"
