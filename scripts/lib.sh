# Shared helpers for the scripts (sourced, not run).
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something listens on 127.0.0.1:$1, up to $2 seconds.
wait_port() {
  local port=$1 limit=${2:-10} i
  for ((i = 0; i < limit * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# Builds the release binaries (progress shown by cargo).
build_release() {
  say "building release binaries (first build takes a few minutes) ..."
  (cd "$ROOT" && cargo build --release --bin reddit-engine --bin reddit-client --bin reddit-echo --bin reddit-gateway --bin reddit-chat) >&2
  BIN="$ROOT/target/release"
}

# The engine binary the scripts run: REDDIT_ENGINE_BIN if set (another build, to
# compare two side by side: scripts/bench-ab.sh), else the one just built.
engine_bin() { printf '%s\n' "${REDDIT_ENGINE_BIN:-$BIN/reddit-engine}"; }

is_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# $1 random bytes as hex.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Loads the system's secrets from $1/secrets.env (mode 600), creating them first
# if missing: the token secret, the NATS passwords of the engine and service
# roles (and the gateways'), and the auth callout's public issuer key (derived from the secret by
# the engine binary, which must be built). Exports them for nats-server and the
# shards. There are no defaults: every system gets its own random ones.
load_secrets() {
  local run=$1 file="$1/secrets.env" secret
  if [ ! -s "$file" ]; then
    secret=$(random_hex 32)
    (
      umask 077
      {
        echo "REDDIT_SECRET=$secret"
        echo "REDDIT_ENGINE_PASSWORD=$(random_hex 24)"
        echo "REDDIT_SERVICE_PASSWORD=$(random_hex 24)"
        echo "REDDIT_GATEWAY_PASSWORD=$(random_hex 24)"
        echo "REDDIT_CHAT_PASSWORD=$(random_hex 24)"
        echo "REDDIT_CALLOUT_ISSUER=$(REDDIT_SECRET=$secret "$(engine_bin)" --print-callout-issuer)"
      } >"$file"
    )
  fi
  # Systems made before the gateway and chat roles existed get their passwords now.
  local role
  for role in GATEWAY CHAT; do
    if ! grep -q "^REDDIT_${role}_PASSWORD=" "$file"; then
      echo "REDDIT_${role}_PASSWORD=$(random_hex 24)" >>"$file"
    fi
  done
  set -a
  # shellcheck disable=SC1090
  source "$file"
  set +a
}

# NATS URLs of role $1 (password $2; no role: anonymous) on the loopback ports
# $3, comma-separated (every node of a cluster), as a comma-separated list.
role_urls() {
  local user=$1 pw=$2 p out=() ports
  IFS=, read -ra ports <<<"$3"
  for p in "${ports[@]}"; do
    if [ -n "$user" ]; then out+=("nats://$user:$pw@127.0.0.1:$p"); else out+=("nats://127.0.0.1:$p"); fi
  done
  (IFS=,; echo "${out[*]}")
}

# The NATS URL(s) of the service role (simulator, benchmark, audit) on port(s) $1.
service_url() { role_urls service "$REDDIT_SERVICE_PASSWORD" "$1"; }

# The NATS URL(s) of the gateway role on port(s) $1.
gateway_url() { role_urls gateway "$REDDIT_GATEWAY_PASSWORD" "$1"; }

# The NATS URL(s) of the chat gateways' role on port(s) $1.
chat_url() { role_urls chat "$REDDIT_CHAT_PASSWORD" "$1"; }

# The NATS URL(s) of the engine role on port(s) $1.
engine_url() { role_urls engine "$REDDIT_ENGINE_PASSWORD" "$1"; }

# Stops the process whose pid is in file $1: SIGTERM, then SIGKILL after $2 s.
stop_pidfile() {
  local file=$1 grace=${2:-10} pid i
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 20; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "  $(basename "$file" .pid) did not stop in ${grace}s; killing it"
      # A supervised shard: its engine process too, not only the supervisor.
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# Starts shard $1 of $2 in run dir $3 against NATS port(s) $4 (comma-separated
# for a cluster), under the supervisor
# (scripts/supervise.sh restarts it if it crashes; with --standby, a restarted
# process that finds a standby serving in its place waits as the standby; the pid file holds the
# supervisor's pid, and SIGTERM to it stops both). REDDIT_STORAGE (jetstream or
# memory) and the engine's other REDDIT_* variables pass through.
start_shard() {
  local k=$1 n=$2 run=$3 port=$4
  is_running "$run/shard-$k.pid" && die "shard $k is already running (pid $(cat "$run/shard-$k.pid"))"
  touch "$run/shard-$k.log"
  SHARD_LOG_OFFSET=$(($(wc -c <"$run/shard-$k.log") + 1))
  load_secrets "$run"
  # The password travels in the environment, not on the command line.
  RUST_LOG="${RUST_LOG:-info}" NATS_URL="$(engine_url "$port")" \
    nohup "$ROOT/scripts/supervise.sh" "shard-$k" -- "$(engine_bin)" --standby \
    --shard "$k" --shards "$n" >>"$run/shard-$k.log" 2>&1 &
  echo $! >"$run/shard-$k.pid"
}

# Starts a standby for shard $1 of $2 (run dir $3, NATS port $4): a
# `reddit-engine --standby` under the supervisor that waits for the shard's
# lease and takes over when its owner dies. Its pid file is standby-<k>-<i>.pid.
start_standby() {
  local k=$1 n=$2 run=$3 port=$4 i=0
  while [ -e "$run/standby-$k-$i.pid" ] && is_running "$run/standby-$k-$i.pid"; do i=$((i + 1)); done
  load_secrets "$run"
  RUST_LOG="${RUST_LOG:-info}" NATS_URL="$(engine_url "$port")" \
    nohup "$ROOT/scripts/supervise.sh" "standby-$k-$i" -- "$(engine_bin)" --standby \
    --shard "$k" --shards "$n" >>"$run/standby-$k-$i.log" 2>&1 &
  echo $! >"$run/standby-$k-$i.pid"
}

# Waits until discovery finds all shards, up to $2 seconds; $1 is the NATS URL
# (discovery is open to anonymous connections).
wait_discovery() {
  local url=$1 limit=${2:-20} i
  for ((i = 0; i < limit * 4; i++)); do
    if "$BIN/reddit-client" --nats-url "$url" shards >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  "$BIN/reddit-client" --nats-url "$url" shards >&2 || true
  return 1
}

# Waits until the shard started last by start_shard (number $1, run dir $2) logs
# that it serves; fails at once if the process exits, or after $3 seconds.
wait_shard() {
  local k=$1 run=$2 limit=${3:-15} pid i
  pid=$(cat "$run/shard-$k.pid")
  for ((i = 0; i < limit * 20; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$run/shard-$k.pid"
      say "shard $k exited:"
      tail -c +"$SHARD_LOG_OFFSET" "$run/shard-$k.log" | tail -3 >&2
      return 1
    fi
    if tail -c +"$SHARD_LOG_OFFSET" "$run/shard-$k.log" | grep -q "serving"; then return 0; fi
    sleep 0.05
  done
  say "shard $k did not start serving within ${limit}s (see $run/shard-$k.log)"
  return 1
}

# Starts nats-server, $1 shards, $3 HTTP gateways (default none; the first at
# $GATEWAY_URL) and $4 chat gateways (default none; at $CHAT_ADDRS) on free
# ports in run dir $2, on $5 NATS nodes (default 1; 3: a cluster, at NATS_PORTS),
# with $6 standbys per shard (default none), and stops them
# (and anything whose pid file is in $2) when the calling script exits, also on
# failure or Ctrl-C. Sets PORT, BIN and SERVICE_URL (and exports the secrets).
start_throwaway_system() {
  local shards=$1 gateways=${3:-0} chats=${4:-0} nodes=${5:-1} standbys=${6:-0}
  THROWAWAY_RUN=$2
  trap '"$ROOT/scripts/stop.sh" --run-dir "$THROWAWAY_RUN" >/dev/null 2>&1 || true' EXIT
  trap 'exit 130' INT TERM
  PORT=$(free_port)
  # A cluster's nodes listen on PORT.. and route on PORT+1000..: check those too.
  while [ "$nodes" -gt 1 ] && { [ "$PORT" -gt 60000 ] || ! ports_free "$PORT" "$nodes"; }; do PORT=$(free_port); done
  local mport hport cport
  mport=$(free_port)
  hport=$(free_port)
  cport=$(free_port)
  GATEWAY_URL="http://127.0.0.1:$hport"
  # Chat gateways listen on cport, cport+1, ...
  CHAT_ADDRS=$(for ((g = 0; g < chats; g++)); do printf '%s127.0.0.1:%d' "$([ "$g" -gt 0 ] && echo ,)" "$((cport + g))"; done)
  "$ROOT/scripts/start.sh" --shards "$shards" --gateways "$gateways" --http-port "$hport" \
    --chats "$chats" --chat-port "$cport" --cluster "$nodes" --standbys "$standbys" \
    --port "$PORT" --monitor-port "$mport" --run-dir "$THROWAWAY_RUN" 2>&1 |
    grep -vE '^\s+(export|/|source|\$|chat:)|^stop with' >&2
  BIN="$ROOT/target/release"
  load_secrets "$THROWAWAY_RUN"
  NATS_PORTS=$(for ((i = 0; i < nodes; i++)); do printf '%s%d' "$([ "$i" -gt 0 ] && echo ,)" "$((PORT + i))"; done)
  SERVICE_URL=$(service_url "$NATS_PORTS")
}

# Whether ports $1..$1+$2-1 and $1+1000.. are free on loopback.
ports_free() {
  local i
  for ((i = 0; i < $2; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$(($1 + i))") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$(($1 + 1000 + i))") 2>/dev/null; then
      return 1
    fi
  done
}

# Waits until a simulation's run phase has begun: posts appear in the shards'
# stats (so only without a seeded corpus). Returns 1 if process $1 (the
# caller, say) exits first.
wait_run_phase() {
  local me=$1 posts
  while kill -0 "$me" 2>/dev/null; do
    posts=$("$BIN/reddit-client" --json stats 2>/dev/null |
      python3 -c 'import json,sys; print(sum(s["posts"] for s in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "${posts:-0}" -gt 0 ] && return 0
    sleep 0.2
  done
  return 1
}
