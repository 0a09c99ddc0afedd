#!/usr/bin/env bash
# Stops what infra/local/up.sh started: LocalStack and the PostgreSQL cluster.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pidfile="$here/.run/localstack.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
fi
# Anything still holding the port (a LocalStack started by hand) goes too.
pkill -f 'localstack.runtime.main' 2>/dev/null || true
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h | while read -r ver name _port status _; do
    if [ "$status" = "online" ]; then
      if [ "$(id -u)" -eq 0 ]; then pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop; else sudo pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop; fi
    fi
  done
fi
echo "local stack down"
