#!/usr/bin/env bash
# Stop the daemons .ci/slurm/start.sh started (by the PIDs it recorded), and nothing else.
# Cancels our jobs first. Leaves /etc/slurm/slurm.conf in place (start.sh rewrites it).
set -uo pipefail

STATE=${INFCORE_SLURM_STATE:-/var/tmp/infcore-slurm}
log() { echo "[slurm/stop] $*" >&2; }
# alive PIDFILE: the PID in it runs the daemon the file is named after (not a recycled PID)
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$(basename "$1" .pid)" ]
}

if alive "$STATE/slurmctld.pid"; then
  timeout 10 scancel --user=root >/dev/null 2>&1 || true
fi
for d in slurmd slurmctld munged; do
  f=$STATE/$d.pid
  if alive "$f"; then
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped $d ($pid)"
  fi
  rm -f "$f"
done
exit 0
