#!/usr/bin/env bash
# Starts a local system: nats-server (with nats.conf), N engine shards, G HTTP
# gateways and C chat gateways, each a separate process, with logs and pid files
# in the run directory.
#
#   scripts/start.sh [--shards N] [--standbys S] [--cluster 1|3] [--gateways G]
#                    [--http-port H] [--chats C] [--chat-port T] [--port P]
#                    [--monitor-port M] [--run-dir DIR]
#
# Defaults: 3 shards, 1 HTTP gateway on 8080 (the next ones on 8081, ...), 2 chat
# gateways on 4000 and 4001 (nc localhost 4000), no standbys (S per shard: each
# waits for its shard's lease and takes over when the owner dies), one
# nats-server on 4222 (monitoring on 8222), run dir ./run. --cluster 3 runs a
# 3-node NATS cluster instead (client ports P, P+1, P+2; routes on P+1000..;
# monitoring M, M+1, M+2; JetStream on every node) and keeps the logs,
# snapshots, leases and chat history on all three (replicas 3).
# Stop everything with scripts/stop.sh; add a shard process with scripts/spawn-shard.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shards=3 standbys=0 cluster=1 gateways=1 hport=8080 chats=2 cport=4000 port=4222 mport=8222 run="$ROOT/run"
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --standbys) standbys=$2; shift 2 ;;
    --cluster) cluster=$2; shift 2 ;;
    --gateways) gateways=$2; shift 2 ;;
    --http-port) hport=$2; shift 2 ;;
    --chats) chats=$2; shift 2 ;;
    --chat-port) cport=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --monitor-port) mport=$2; shift 2 ;;
    --run-dir) run=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "--shards must be a positive number"
[[ "$gateways" =~ ^[0-9]+$ ]] || die "--gateways must be a number"
[[ "$chats" =~ ^[0-9]+$ ]] || die "--chats must be a number"
[[ "$standbys" =~ ^[0-9]+$ ]] || die "--standbys must be a number"
[[ "$cluster" =~ ^(1|3|5)$ ]] || die "--cluster must be 1, 3 or 5 (nodes; an odd number keeps a majority)"
for ((g = 0; g < gateways; g++)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$((hport + g))") 2>/dev/null; then
    die "port $((hport + g)) is in use; pick others with --http-port"
  fi
done
for ((g = 0; g < chats; g++)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$((cport + g))") 2>/dev/null; then
    die "port $((cport + g)) is in use; pick others with --chat-port (or --chats 0)"
  fi
done

mkdir -p "$run"
run="$(cd "$run" && pwd)"
if is_running "$run/nats.pid" || is_running "$run/nats-0.pid"; then
  die "a system is already running from $run (scripts/stop.sh --run-dir $run stops it)"
fi
# The client port of every NATS node, comma-separated.
ports=$(for ((i = 0; i < cluster; i++)); do printf '%s%d' "$([ "$i" -gt 0 ] && echo ,)" "$((port + i))"; done)
IFS=, read -ra port_list <<<"$ports"
for p in "${port_list[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p is in use; pick another with --port"
  fi
done

nats_bin="$("$ROOT/scripts/install-nats.sh")"
# A benchmark builds once before its first system (REDDIT_BUILT=1), so every
# system it starts runs the binaries it started with.
if [ "${REDDIT_BUILT:-}" = 1 ] && [ -x "$ROOT/target/release/reddit-engine" ]; then
  BIN="$ROOT/target/release"
else
  build_release
fi

trap 'say "start failed; stopping what was started"; "$ROOT/scripts/stop.sh" --run-dir "$run" >&2' ERR
# This system's own secrets (token secret, NATS passwords, callout issuer), kept
# in $run/secrets.env (mode 600) so spawn-shard.sh and restarts reuse them.
load_secrets "$run"

if [ "$cluster" = 1 ]; then
  say "starting nats-server on 127.0.0.1:$port (monitoring on $mport) ..."
  nohup "$nats_bin" -c "$ROOT/nats.conf" -a 127.0.0.1 -p "$port" -m "$mport" \
    -sd "$run/jetstream" >>"$run/nats.log" 2>&1 &
  echo $! >"$run/nats.pid"
  wait_port "$port" 10 || { tail -5 "$run/nats.log" >&2; false; }
else
  say "starting a $cluster-node NATS cluster on 127.0.0.1:$ports (monitoring on $mport..$((mport + cluster - 1))) ..."
  # Each node: the project's nats.conf (copied, with nats-auth.conf, next to
  # the node's own file), its name, and routes to every other node.
  cp "$ROOT/nats.conf" "$ROOT/nats-auth.conf" "$run/"
  for ((i = 0; i < cluster; i++)); do
    routes=$(for ((j = 0; j < cluster; j++)); do
      if [ "$j" != "$i" ]; then printf '"nats-route://127.0.0.1:%d", ' "$((port + 1000 + j))"; fi
    done)
    cat >"$run/nats-$i.conf" <<CONF
include ./nats.conf
server_name: "n$i"
cluster {
  name: "reddit"
  listen: "127.0.0.1:$((port + 1000 + i))"
  routes: [${routes%, }]
}
CONF
    nohup "$nats_bin" -c "$run/nats-$i.conf" -a 127.0.0.1 -p "$((port + i))" -m "$((mport + i))" \
      -sd "$run/jetstream-$i" >>"$run/nats-$i.log" 2>&1 &
    echo $! >"$run/nats-$i.pid"
  done
  for ((i = 0; i < cluster; i++)); do
    wait_port "$((port + i))" 10 || { tail -5 "$run/nats-$i.log" >&2; false; }
  done
  # Logs, snapshots, leases and chat history on every node.
  export REDDIT_REPLICAS=$cluster
fi

cat >"$run/env" <<ENV
NATS_URL=$(role_urls "" "" "$ports")
NATS_PORT=$ports
REDDIT_REPLICAS=${REDDIT_REPLICAS:-1}
REDDIT_SHARDS=$shards
ENV
echo "REDDIT_SERVICE_URL=$(service_url "$ports")" >>"$run/secrets.env.tmp"
grep -v '^REDDIT_SERVICE_URL=' "$run/secrets.env" >>"$run/secrets.env.tmp" || true
chmod 600 "$run/secrets.env.tmp" && mv "$run/secrets.env.tmp" "$run/secrets.env"

say "starting $shards engine shard(s) ..."
for ((k = 0; k < shards; k++)); do
  start_shard "$k" "$shards" "$run" "$ports"
  wait_shard "$k" "$run" 30
done
wait_discovery "$(role_urls "" "" "$ports")" 30
if [ "$standbys" -gt 0 ]; then
  say "starting $standbys standby(s) per shard ..."
  for ((k = 0; k < shards; k++)); do
    for ((j = 0; j < standbys; j++)); do start_standby "$k" "$shards" "$run" "$ports"; done
  done
fi
urls=()
if [ "$gateways" -gt 0 ]; then
  say "starting $gateways HTTP gateway(s) ..."
fi
for ((g = 0; g < gateways; g++)); do
  # The password travels in the environment, not on the command line.
  NATS_URL="$(gateway_url "$ports")" nohup "$BIN/reddit-gateway" \
    --listen "127.0.0.1:$((hport + g))" >>"$run/gateway-$g.log" 2>&1 &
  echo $! >"$run/gateway-$g.pid"
  wait_port "$((hport + g))" 30 || { tail -5 "$run/gateway-$g.log" >&2; false; }
  urls+=("http://127.0.0.1:$((hport + g))")
done
if [ "$chats" -gt 0 ]; then
  say "starting $chats chat gateway(s) ..."
fi
for ((g = 0; g < chats; g++)); do
  NATS_URL="$(chat_url "$ports")" nohup "$BIN/reddit-chat" \
    --listen "127.0.0.1:$((cport + g))" >>"$run/chat-$g.log" 2>&1 &
  echo $! >"$run/chat-$g.pid"
  wait_port "$((cport + g))" 30 || { tail -5 "$run/chat-$g.log" >&2; false; }
done
trap - ERR

http_urls=$(IFS=,; echo "${urls[*]:-}")
[ -n "$http_urls" ] && echo "REDDIT_HTTP=$http_urls" >>"$run/env"
cat >&2 <<MSG
ready: $([ "$cluster" = 1 ] && echo nats-server || echo "a $cluster-node NATS cluster") + $shards shards (+ $standbys standby each) + $gateways HTTP gateway(s) + $chats chat gateway(s) (logs and pids in $run; secrets in $run/secrets.env)
${http_urls:+  web page: ${urls[0]}/   HTTP API: ${urls[0]}/api/v1 (documentation: ${urls[0]}/docs)
}$( [ "$chats" -gt 0 ] && echo "  chat: nc localhost $cport$( [ "$chats" -gt 1 ] && echo " (and nc localhost $((cport + 1)) from another terminal)")" )
  export NATS_URL=$(role_urls "" "" "$ports")
  $BIN/reddit-client register alice
  $BIN/reddit-client --user alice sub create rust
  $BIN/reddit-client --user alice stats
  source $run/secrets.env   # the service role, for the simulator and the audit:
  $BIN/reddit-client --nats-url "\$REDDIT_SERVICE_URL" audit
stop with: scripts/stop.sh${run:+ --run-dir $run}
MSG
