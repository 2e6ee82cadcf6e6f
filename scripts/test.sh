#!/usr/bin/env bash
# The test command: formatting, lints, docker-compose.yml, and every test against
# real nats-server processes (installed into .tools/ if none is on PATH).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
NATS_SERVER_BIN="$("$ROOT/scripts/install-nats.sh")"
export NATS_SERVER_BIN
# The in-repo Python client's packages (pinned, into .tools/pyclient).
"$ROOT/scripts/install-python-client.sh" >/dev/null
say "== cargo fmt --check"
cargo fmt --all -- --check
say "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
say "== docker-compose.yml"
scripts/check-compose.sh
say "== cargo test (nats-server: $NATS_SERVER_BIN)"
# The closing line counts every test of the run (cargo prints one line per binary).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
