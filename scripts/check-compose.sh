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
# No default secrets: without them the file must not resolve. (An empty env file,
# so that a developer's own .env does not count.)
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
if env -u REDDIT_SECRET -u REDDIT_ENGINE_PASSWORD -u REDDIT_SERVICE_PASSWORD \
  -u REDDIT_GATEWAY_PASSWORD -u REDDIT_CHAT_PASSWORD -u REDDIT_CALLOUT_ISSUER \
  "${compose[@]}" -f docker-compose.yml --env-file "$empty" config >/dev/null 2>&1; then
  die "docker-compose.yml resolves without secrets; every secret must be required (\${VAR:?...})"
fi
for files in "-f docker-compose.yml" "-f docker-compose.yml -f docker-compose.cluster.yml"; do
  # shellcheck disable=SC2086
  REDDIT_SECRET=check REDDIT_ENGINE_PASSWORD=check REDDIT_SERVICE_PASSWORD=check \
    REDDIT_GATEWAY_PASSWORD=check REDDIT_CHAT_PASSWORD=check REDDIT_CALLOUT_ISSUER=check \
    "${compose[@]}" $files --env-file "$empty" config >/dev/null
done
say "docker-compose.yml (alone and with docker-compose.cluster.yml) is valid and requires its secrets (${compose[*]} config)"
