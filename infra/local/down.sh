#!/usr/bin/env bash
# Stops what infra/local/up.sh started: LocalStack (its process group, from the pid file)
# and the PostgreSQL cluster. Idempotent: fine when nothing runs. LocalStack keeps its
# state in memory, so the next up.sh provisions the bucket and queues again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pidfile="$here/.run/localstack.pid"
ls_port=4566

log() { echo "down.sh: $*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
is_localstack() { [[ "$1" =~ ^[0-9]+$ ]] && grep -qaE 'localstack_loopback|localstack\.runtime\.main' "/proc/$1/cmdline" 2>/dev/null; }
port_busy() { ss -Hltn "sport = :$ls_port" 2>/dev/null | grep -q .; }
# Pids of LocalStack processes listening on the port (one started by hand, or whose pid
# file was lost). Only processes whose command line is LocalStack's are considered.
port_owners() {
  ss -Hltnp "sport = :$ls_port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u |
    while read -r p; do is_localstack "$p" && echo "$p"; done || true
}
stop_group() { # TERM the process group led by $1, KILL it after 15 s
  local pid="$1"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  log "LocalStack (pid $pid) ignored SIGTERM, killing it"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# ---- LocalStack ------------------------------------------------------------------------
if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if is_localstack "$pid"; then
    log "stopping LocalStack (pid $pid)"
    stop_group "$pid"
  fi
  rm -f "$pidfile"
fi
for pid in $(port_owners); do
  log "stopping LocalStack (pid $pid, listening on :$ls_port)"
  # Its whole group only when it leads one (as up.sh starts it); else just the process.
  if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
    stop_group "$pid"
  else
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
for _ in $(seq 1 40); do port_busy || break; sleep 0.25; done
if port_busy; then
  echo "down.sh: port $ls_port is still in use:" >&2
  ss -Hltnp "sport = :$ls_port" >&2 || true
  exit 1
fi

# ---- PostgreSQL (the first cluster, the one up.sh uses) -----------------------------------
if command -v pg_lsclusters >/dev/null 2>&1; then
  read -r pg_ver pg_name _port pg_status _ <<<"$(pg_lsclusters -h 2>/dev/null | head -n1)" || true
  if [ "${pg_status:-}" = "online" ]; then
    log "stopping PostgreSQL $pg_ver/$pg_name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" stop
  fi
fi
log "local stack is down"
