#!/usr/bin/env bash
# Stop the two-node SLURM started by .ci/slurm-up.sh and remove what it made (best effort, never
# fails, safe to run twice): running jobs are cancelled, then every slurmd (both node namespaces),
# slurmctld and munged are stopped, processes still inside the node namespaces (left-overs of jobs)
# are killed, and the namespaces tfnode1/tfnode2, the veth pairs, the bridge tfbr0 and the
# /etc/hosts lines are removed. Configuration, controller state and the munge key are kept, so
# .ci/slurm-up.sh brings everything back quickly.
set -u

NODES=(tfnode1 tfnode2)
BRIDGE=tfbr0
HOSTS_MARK="# tfconv-slurm-up"

log() { echo "[slurm-down] $*"; }

if command -v scancel >/dev/null 2>&1 && pgrep -x slurmctld >/dev/null 2>&1; then
    timeout 10 scancel --user=root >/dev/null 2>&1 || true
fi

stop() {
    # stop NAME: SIGTERM, wait up to 10 s, then SIGKILL. Only exact-name daemons.
    local name=$1 pids
    pids=$(pgrep -x "$name" || true)
    [ -z "$pids" ] && return 0
    log "stopping $name ($(echo $pids))"
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 40); do
        pgrep -x "$name" >/dev/null || return 0
        sleep 0.25
    done
    pids=$(pgrep -x "$name" || true)
    [ -n "$pids" ] && { log "killing $name ($(echo $pids))"; kill -KILL $pids 2>/dev/null || true; }
    return 0
}

stop slurmd
stop slurmctld
stop munged
rm -f /run/munge/munge.socket.2.lock 2>/dev/null || true

if command -v ip >/dev/null 2>&1; then
    i=0
    for node in "${NODES[@]}"; do
        i=$(( i + 1 ))
        if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$node"; then
            pids=$(ip netns pids "$node" 2>/dev/null | tr '\n' ' ')
            if [ -n "${pids// /}" ]; then
                log "killing processes left in namespace $node: $pids"
                kill -KILL $pids 2>/dev/null || true
            fi
            ip netns del "$node" 2>/dev/null && log "removed network namespace $node"
        fi
        ip link del "tfv$i" 2>/dev/null || true   # gone with the namespace normally
    done
    ip link del "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE"
fi

if grep -q "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
    tmp=$(mktemp)
    grep -v "$HOSTS_MARK" /etc/hosts >"$tmp"
    cat "$tmp" >/etc/hosts   # in place: /etc/hosts may be a bind mount
    rm -f "$tmp"
    log "removed the node lines from /etc/hosts"
fi
log "done"
exit 0
