#!/usr/bin/env bash
# Installs schemathesis (property-based testing of an API against its OpenAPI
# document), pinned, into .tools/schemathesis and prints that directory (for
# PYTHONPATH, with the CLI at <dir>/bin/st).
# Does nothing when it is there already. Used by gateway/tests/openapi.rs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/schemathesis"
pkg=schemathesis==4.32.5
if ! PYTHONPATH="$dir" python3 -c 'import schemathesis; assert schemathesis.__version__ == "4.32.5"' 2>/dev/null; then
  echo "installing $pkg into $dir ..." >&2
  mkdir -p "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "$pkg" >&2
fi
echo "$dir"
