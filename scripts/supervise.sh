#!/usr/bin/env bash
# Keeps a process running: starts the command, and when it dies (a crash, kill -9,
# an error exit) starts it again after a backoff (1 s doubling to 10 s; reset after
# 30 s of uptime). Exit status 0 (a clean stop) or 2 (a configuration error that a
# restart cannot fix) ends supervision. SIGTERM/SIGINT are forwarded to the
# command, and the supervisor exits once it has stopped.
#
#   scripts/supervise.sh <name> -- <command> [args...]
set -u
name=${1:?usage: supervise.sh <name> -- <command> [args...]}
shift
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: supervise.sh <name> -- <command> [args...]" >&2; exit 64; }

child=0
stopping=0
on_stop() {
  stopping=1
  if [ "$child" -gt 0 ]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap on_stop TERM INT

delay=1
while :; do
  started=$SECONDS
  "$@" &
  child=$!
  while :; do
    wait "$child"
    rc=$?
    # `wait` also returns when a trapped signal arrives; the child may still run.
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  if [ "$stopping" = 1 ] || [ "$rc" = 0 ]; then exit 0; fi
  if [ "$rc" = 2 ]; then
    echo "supervise: $name refused to start (configuration error, status 2); not restarting" >&2
    exit 2
  fi
  if ((SECONDS - started > 30)); then delay=1; fi
  echo "supervise: $name exited with status $rc; restarting in ${delay}s" >&2
  sleep "$delay" &
  wait $! 2>/dev/null
  [ "$stopping" = 1 ] && exit 0
  delay=$((delay * 2 > 10 ? 10 : delay * 2))
done
