#!/usr/bin/env bash
# The main job for now: starts nats-server and 3 engine shards on free ports, walks
# through every feature with the CLI as three users (register, subreddits, posts, a
# repost, comments on comments, votes and karma, feeds, DMs, stats, audit), and stops
# everything it started, also on failure or Ctrl-C.
#
#   scripts/demo.sh [--shards N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shards=3
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done

run="$ROOT/run/demo-$$"
start_throwaway_system "$shards" "$run"
export NATS_URL="nats://127.0.0.1:$PORT" REDDIT_CLIENT_DIR="$run/client"
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() {
  printf '\n%s$ reddit-client' "$bold"
  printf ' %q' "$@"
  printf '%s\n' "$plain"
  "$BIN/reddit-client" "$@"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

for u in alice bob carol; do step register "$u"; done
step --user alice sub create rust --description "All things Rust"
step --user bob sub create cooking
for u in alice bob carol; do step --user "$u" sub join rust; done
step --user bob sub join cooking
post=$("$BIN/reddit-client" --json --user alice post create rust "Sharding a Reddit over NATS" --body "Each shard owns a hash partition." | field id)
echo "alice posted $post"
step --user bob post create cooking "Fermented hot sauce" --body "Day 3."
step --user carol post create cooking "Worth a read" --repost-of "rust/$post"
c1=$("$BIN/reddit-client" --json --user bob comment rust "$post" "How do feeds work?" | field id)
c2=$("$BIN/reddit-client" --json --user alice comment rust "$post" "Fan out to the shards, merge, page." --parent "$c1" | field id)
step --user carol comment rust "$post" "And karma?" --parent "$c2"
step --user bob vote rust post "$post" up
step --user carol vote rust post "$post" up
step --user alice vote rust comment "$c1" up
step --user carol comments rust "$post"
step --user bob feed --sort new
step --user bob dm send alice "Great post!"
step --user alice dm list --unread
dm=$("$BIN/reddit-client" --json --user alice dm list | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"][0]["id"])')
step --user alice dm reply "$dm" "Thanks, bob"
step --user bob dm list
step --user bob user alice
step --user bob sub list
step --user bob stats
# The audit reads every shard's facts: the service role's (its password is in the
# run directory's secrets.env).
NATS_URL="$SERVICE_URL" step audit
printf '\ndemo finished; stopping nats-server and %s shards\n' "$shards"
"$ROOT/scripts/stop.sh" --run-dir "$run" >/dev/null 2>&1 || true
rm -rf "$run"
