#!/usr/bin/env bash
# Writes .env (mode 600) for docker compose with fresh random secrets: the token
# secret shared by the shards, the NATS passwords of the engine and service roles,
# and the auth callout's issuer key (derived from the secret; nats.conf needs its
# public half). Refuses to overwrite an existing .env unless --force: a new
# secret invalidates every login token, and new passwords need a restart of
# everything.
#
#   scripts/gen-env.sh [--force] [--out FILE]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out="$ROOT/.env" force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -e "$out" ] && [ "$force" = 0 ] && die "$out exists; pass --force to replace its secrets"

secret=$(random_hex 32)
# The issuer key comes from the engine binary: a local build, else cargo, else
# the compose image.
if [ -x "$ROOT/target/release/reddit-engine" ]; then
  issuer=$(REDDIT_SECRET=$secret "$ROOT/target/release/reddit-engine" --print-callout-issuer)
elif command -v cargo >/dev/null 2>&1; then
  build_release
  issuer=$(REDDIT_SECRET=$secret "$BIN/reddit-engine" --print-callout-issuer)
elif command -v docker >/dev/null 2>&1; then
  say "building the engine image to derive the callout issuer key ..."
  docker build -q -t reddit-engine:latest "$ROOT" >/dev/null
  issuer=$(docker run --rm -e REDDIT_SECRET="$secret" reddit-engine:latest --print-callout-issuer)
else
  die "need the engine binary (cargo or docker) to derive the callout issuer key"
fi
(
  umask 077
  cat >"$out" <<ENV
# Made by scripts/gen-env.sh on $(date -u +%Y-%m-%dT%H:%MZ). Keep it secret.
REDDIT_SECRET=$secret
REDDIT_ENGINE_PASSWORD=$(random_hex 24)
REDDIT_SERVICE_PASSWORD=$(random_hex 24)
REDDIT_GATEWAY_PASSWORD=$(random_hex 24)
REDDIT_CHAT_PASSWORD=$(random_hex 24)
REDDIT_CALLOUT_ISSUER=$issuer
ENV
)
say "wrote $out (mode 600); start with: docker compose up --build"
