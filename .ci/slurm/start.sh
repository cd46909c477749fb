#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (root, Debian/Ubuntu), for tests and CI.
#
#   .ci/slurm/start.sh          # idempotent: returns at once if our cluster is already up
#   .ci/slurm/stop.sh           # stops exactly the daemons this script started
#
# What it does:
#   1. installs slurm-wlm and munge with apt-get when slurmctld/slurmd/munged are missing;
#   2. writes /etc/slurm/slurm.conf for this host, with the CPUs and memory `slurmd -C`
#      reports; no accounting database (accounting_storage/none), MinJobAge=3600 so that
#      `squeue --states=all` still lists finished jobs (the executor plugin's status check),
#      no cgroups (proctrack/linuxproc, task/none), so it also runs inside containers;
#   3. starts munged (unless a working one is already running), slurmctld and slurmd as
#      root, records their PIDs under $INFCORE_SLURM_STATE (default /var/tmp/infcore-slurm);
#   4. waits until `sinfo` shows the node idle (timeout $INFCORE_SLURM_TIMEOUT s, default 60).
#
# It never overwrites a slurm.conf that it did not write (it refuses and exits 3).
# Exit codes: 0 up; 2 not root / no apt-get; 3 foreign slurm.conf; 4 daemons failed.
set -euo pipefail

STATE=${INFCORE_SLURM_STATE:-/var/tmp/infcore-slurm}
TIMEOUT=${INFCORE_SLURM_TIMEOUT:-60}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by infcore .ci/slurm/start.sh"

log() { echo "[slurm/start] $*" >&2; }
die() { local code=$1; shift; log "ERROR: $*"; exit "$code"; }

[ "$(id -u)" -eq 0 ] || die 2 "must run as root (starts slurmctld/slurmd/munged)"

node_state() { timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true; }
# alive PIDFILE: the PID in it runs the daemon the file is named after (not a recycled PID)
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$(basename "$1" .pid)" ]
}

# --- 0. already up? -------------------------------------------------------------------
if [ -f "$CONF" ] && grep -qF "$MARKER" "$CONF" && alive "$STATE/slurmctld.pid" \
    && alive "$STATE/slurmd.pid"; then
  st=$(node_state)
  if [ "$st" = idle ] || [ "$st" = mix ] || [ "$st" = alloc ]; then
    log "cluster already up (node $st)"
    exit 0
  fi
fi

# --- 1. packages ------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die 2 "slurm-wlm/munge missing and no apt-get to install them"
  log "installing slurm-wlm and munge with apt-get (a few minutes)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$STATE.apt.log" 2>&1 || true
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$STATE.apt.log" 2>&1 \
    || { tail -n 20 "$STATE.apt.log" >&2; die 2 "apt-get install slurm-wlm munge failed"; }
fi

if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  die 3 "$CONF exists and was not written by this script; not touching a real cluster's config"
fi

# Stale daemons of ours (e.g. from an interrupted run): stop them before reconfiguring.
for d in slurmd slurmctld; do
  if alive "$STATE/$d.pid"; then
    log "stopping stale $d ($(cat "$STATE/$d.pid"))"
    kill "$(cat "$STATE/$d.pid")" 2>/dev/null || true
    for _ in $(seq 50); do alive "$STATE/$d.pid" || break; sleep 0.1; done
  fi
  rm -f "$STATE/$d.pid"
done

mkdir -p "$STATE/ctld" "$STATE/d" "$CONF_DIR"

# --- 2. slurm.conf ---------------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
[ -n "$CPUS" ] || CPUS=$(nproc)
[ -n "$MEM" ] || MEM=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
MEM=$((MEM * 95 / 100))   # leave room for the OS; slurmd drains the node if this is above real

cat >"$CONF.tmp" <<EOF
$MARKER; $(date -u +%FT%TZ)
ClusterName=infcore
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=3600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$HOST NodeHostname=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
mv "$CONF.tmp" "$CONF"
log "wrote $CONF (node $HOST: CPUs=$CPUS RealMemory=${MEM}MB)"

# --- 3. daemons -----------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force; else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; fi
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  if id munge >/dev/null 2>&1; then
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged || die 4 "munged failed to start"
  else
    /usr/sbin/munged --force || die 4 "munged failed to start"
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die 4 "munge does not work"
  [ -s /run/munge/munged.pid ] && cp /run/munge/munged.pid "$STATE/munged.pid"
  log "started munged"
fi

# slurmctld -i: ignore (our own stale) saved state; -c: clear saved jobs.
slurmctld -c -i || die 4 "slurmctld failed to start; see $STATE/slurmctld.log"
for _ in $(seq 100); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
slurmd || die 4 "slurmd failed to start; see $STATE/slurmd.log"
log "started slurmctld ($(cat "$STATE/slurmctld.pid" 2>/dev/null)) and slurmd ($(cat "$STATE/slurmd.pid" 2>/dev/null))"

# --- 4. wait for the node ---------------------------------------------------------------------
end=$((SECONDS + TIMEOUT))
while [ $SECONDS -lt $end ]; do
  st=$(node_state)
  case "$st" in
    idle|mix|alloc) log "node $HOST is $st; cluster ready"; exit 0 ;;
    drain|drng|down|fail)
      scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
log "node state after ${TIMEOUT}s: '$(node_state)'"
sinfo -N -l >&2 || true
tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
die 4 "node never became idle"
