#!/usr/bin/env bash
# Stop the one-node SLURM started by .ci/slurm-up.sh (best effort, never fails).
# Running jobs are cancelled first. Configuration, state and munge key are kept,
# so .ci/slurm-up.sh can bring everything back quickly.
set -u

log() { echo "[slurm-down] $*"; }

if command -v scancel >/dev/null 2>&1 && pgrep -x slurmctld >/dev/null 2>&1; then
    timeout 10 scancel --user=root >/dev/null 2>&1 || true
fi

stop() {
    # stop NAME: SIGTERM, wait up to 10 s, then SIGKILL. Only exact-name daemons.
    local name=$1 pids
    pids=$(pgrep -x "$name" || true)
    [ -z "$pids" ] && return 0
    log "stopping $name ($pids)"
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 40); do
        pgrep -x "$name" >/dev/null || return 0
        sleep 0.25
    done
    pids=$(pgrep -x "$name" || true)
    [ -n "$pids" ] && { log "killing $name ($pids)"; kill -KILL $pids 2>/dev/null || true; }
    return 0
}

stop slurmd
stop slurmctld
stop munged
rm -f /run/munge/munge.socket.2.lock 2>/dev/null || true
log "done"
exit 0
