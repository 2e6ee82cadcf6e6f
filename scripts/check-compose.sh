#!/usr/bin/env bash
# Checks that docker-compose.yml parses (`docker compose config`). Docker engines
# cannot run on every machine, but the file must stay valid: uses `docker compose`
# if present, else Debian's docker-compose, installing it when running as root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing Debian's docker-compose to validate docker-compose.yml ..."
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  compose=(docker-compose)
else
  say "warning: neither docker compose nor docker-compose is available; docker-compose.yml not validated"
  exit 0
fi
REDDIT_SECRET=check "${compose[@]}" -f docker-compose.yml config >/dev/null
say "docker-compose.yml is valid (${compose[*]} config)"
