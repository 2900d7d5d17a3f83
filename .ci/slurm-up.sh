#!/usr/bin/env bash
# Bring up a two-node SLURM cluster on this one machine (CI and local tests).
#
# Debian bookworm, run as root, PID 1 need not be systemd: the daemons are started by hand.
#
#   sudo .ci/slurm-up.sh          # install, configure, start, smoke-test
#   sudo .ci/slurm-down.sh        # stop the daemons, remove namespaces, bridge, /etc/hosts lines
#
# Layout (everything local to this machine):
#   * a Linux bridge tfbr0 with the host address <net>.1/24 (<net> is SLURM_UP_NET, default
#     198.51.100 = TEST-NET-2, documentation-only and never routed; 192.0.2.0/24 is often already
#     eth0's network on the CI machines);
#   * two network namespaces tfnode1 / tfnode2, each with a veth into the bridge and the address
#     <net>.11 / <net>.12 (default route via the host, no NAT: nodes reach each other and the
#     host's addresses, nothing beyond this machine);
#   * one slurmd per namespace, also in its own UTS namespace (hostname tfnode1 / tfnode2), started
#     as `slurmd -N tfnodeX`; its jobs inherit both namespaces, so loopback inside a job is private
#     to its node, exactly as on two machines: servers in jobs must bind the node's address;
#   * slurmctld and munged on the host (slurmctld at <net>.1; munged's socket is a file, so both
#     namespaces use the same munge daemon and key); /etc/hosts lines for the node names.
# Idempotent: run again while up, it only re-checks; a changed slurm.conf restarts the daemons.
#
# Environment knobs:
#   SLURM_UP_TIMEOUT   seconds to wait for the nodes / the smoke job (default 60)
#   SLURM_UP_NO_APT=1  do not call apt-get (packages must already be installed)
#   SLURM_UP_NET       first three octets of the private /24 (default 198.51.100)
set -euo pipefail

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
NET="${SLURM_UP_NET:-198.51.100}"
BRIDGE=tfbr0
NODES=(tfnode1 tfnode2)
HOST_ADDR="${NET}.1"
node_addr() { echo "${NET}.$(( 10 + $1 ))"; }   # node index 1.. -> <net>.11, .12
HOSTS_MARK="# tfconv-slurm-up"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm

log() { echo "[slurm-up] $*"; }
die() {
    echo "[slurm-up] ERROR: $*" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR"/slurmd-*.log; do
        if [ -f "$f" ]; then
            echo "----- last lines of $f -----" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages, makes network namespaces and starts daemons)"
[[ "$NET" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "SLURM_UP_NET='$NET': give three octets, e.g. 198.51.100"

START=$(date +%s)

# ---------------------------------------------------------------- packages
need_install=0
for bin in munged slurmctld slurmd sinfo sbatch; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_install=1
done
for bin in ip unshare nsenter; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    [ "${SLURM_UP_NO_APT:-0}" = 1 ] && die "SLURM packages (or iproute2/util-linux) missing and SLURM_UP_NO_APT=1"
    log "installing munge slurmctld slurmd slurm-client iproute2 with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client iproute2 util-linux \
        >/dev/null || die "apt-get install failed"
else
    log "packages already installed"
fi

# ---------------------------------------------------------------- network: bridge + one netns per node
# The private /24 must not be in use on any other interface (it would shadow a real route).
other=$(ip -4 -o addr show | awk -v br="$BRIDGE" -v net="$NET." '$2 != br && index($4, net) == 1 {print $2 " " $4}')
[ -z "$other" ] || die "the network ${NET}.0/24 is already used here ($other): set SLURM_UP_NET to a free /24"
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($HOST_ADDR/24)"
    ip link add "$BRIDGE" type bridge || die "cannot create a Linux bridge (needs CAP_NET_ADMIN)"
fi
ip addr replace "$HOST_ADDR/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
i=0
for node in "${NODES[@]}"; do
    i=$(( i + 1 ))
    addr=$(node_addr "$i")
    ip netns list | awk '{print $1}' | grep -qx "$node" || { log "creating network namespace $node ($addr)"; ip netns add "$node"; }
    if ! ip link show "tfv$i" >/dev/null 2>&1; then
        ip link add "tfv$i" type veth peer name "tfv${i}n"
        ip link set "tfv${i}n" netns "$node"
        ip -n "$node" link set "tfv${i}n" name eth0
    fi
    ip link set "tfv$i" master "$BRIDGE"
    ip link set "tfv$i" up
    ip -n "$node" addr replace "$addr/24" dev eth0
    ip -n "$node" link set lo up
    ip -n "$node" link set eth0 up
    # Default route via the host: the host's other addresses (e.g. eth0's, which clients outside
    # SLURM may advertise) are reachable from the nodes. Nothing beyond this machine: no NAT.
    ip -n "$node" route replace default via "$HOST_ADDR" dev eth0
done

# /etc/hosts: the node names (jobs, srun and slurmctld resolve them); rewritten in place (it may be
# a bind mount, so no rename).
hosts_new="$(mktemp)"
grep -v "$HOSTS_MARK" /etc/hosts >"$hosts_new" || true
i=0
for node in "${NODES[@]}"; do
    i=$(( i + 1 ))
    echo "$(node_addr "$i") $node $HOSTS_MARK" >>"$hosts_new"
done
cmp -s "$hosts_new" /etc/hosts || cat "$hosts_new" >/etc/hosts
rm -f "$hosts_new"

# ---------------------------------------------------------------- munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if ! pgrep -x munged >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2.lock 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
fi
for _ in $(seq 1 20); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.25
done
munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge round-trip fails (munged not working)"

# ---------------------------------------------------------------- slurm.conf
CTL_HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
# Both nodes share this machine's memory: each offers 40 % (together 80 %).
REAL_MEM=$(( MEM_TOTAL_MB * 4 / 10 ))

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR"
install -d -m 0700 "$STATE_DIR"
install -d -m 0755 "$SPOOL_DIR"
node_lines=""
i=0
for node in "${NODES[@]}"; do
    i=$(( i + 1 ))
    install -d -m 0755 "$SPOOL_DIR/$node"
    node_lines+="NodeName=${node} NodeAddr=$(node_addr "$i") CPUs=${CPUS} RealMemory=${REAL_MEM} State=UNKNOWN"$'\n'
done
node_list=$(IFS=,; echo "${NODES[*]}")

NEW_CONF="$(mktemp)"
cat >"$NEW_CONF" <<CONF
# Written by .ci/slurm-up.sh: two-node SLURM on one machine (network namespaces) for tests and CI.
# Do not edit by hand.
ClusterName=tfconv
SlurmctldHost=${CTL_HOST}(${HOST_ADDR})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
# %n: the node name (two slurmd share this file system)
SlurmdPidFile=${RUN_DIR}/slurmd-%n.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}/%n
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SwitchType=switch/none
# Scheduling
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Keep finished jobs visible to squeue/scontrol for an hour (Snakemake's status checks and the tests, which
# read every job's record after a workflow of several minutes, need it; with no slurmdbd nothing else keeps them)
MinJobAge=3600
# No slurmdbd: no accounting (sacct only sees what slurmctld still holds)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Timers
InactiveLimit=0
KillWait=10
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
# Nodes (one network namespace each) and partition
${node_lines}PartitionName=debug Nodes=${node_list} Default=YES MaxTime=INFINITE State=UP
CONF

conf_changed=0
if [ ! -f "$CONF" ] || ! cmp -s "$NEW_CONF" "$CONF"; then
    log "writing $CONF (nodes ${node_list} at ${NET}.11.., CPUs=${CPUS}, RealMemory=${REAL_MEM} MB each)"
    install -m 0644 "$NEW_CONF" "$CONF"
    conf_changed=1
fi
rm -f "$NEW_CONF"
# No cgroup.conf: proctrack/linuxproc + task/none do not use cgroups (PID 1 is
# not systemd here, cgroup v2 delegation is not available).

# ---------------------------------------------------------------- daemons
running() { pgrep -x "$1" >/dev/null 2>&1; }
stop_all() {  # stop every process named $1 (SIGTERM, then SIGKILL after 10 s)
    local pids
    pids=$(pgrep -x "$1" || true)
    [ -z "$pids" ] && return 0
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 40); do pgrep -x "$1" >/dev/null || return 0; sleep 0.25; done
    pids=$(pgrep -x "$1" || true)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
}
# The slurmd of node $1 runs (pid file alive, and inside that node's network namespace).
slurmd_up() {
    local pid
    pid=$(cat "$RUN_DIR/slurmd-$1.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(ip netns identify "$pid" 2>/dev/null)" = "$1" ]
}

if [ "$conf_changed" -eq 1 ] && { running slurmctld || running slurmd; }; then
    # Nodes may have been added or removed (e.g. the earlier one-node layout): restart everything
    # and drop the old controller state (its jobs ran on nodes that may no longer exist).
    log "configuration changed: restarting slurmctld and every slurmd (controller state cleared)"
    stop_all slurmd
    stop_all slurmctld
    rm -f "$RUN_DIR"/slurmd*.pid "$RUN_DIR/slurmctld.pid"
    clear_state=1
fi
# A slurmd outside the node namespaces (e.g. the earlier one-node layout) would register as a
# node this configuration does not have: stop it.
for pid in $(pgrep -x slurmd || true); do
    ns=$(ip netns identify "$pid" 2>/dev/null || true)
    if [[ " ${NODES[*]} " != *" $ns "* ]]; then
        log "stopping slurmd $pid (not inside a node namespace)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
done
if ! running slurmctld; then
    log "starting slurmctld"
    if [ "${clear_state:-0}" = 1 ]; then
        /usr/sbin/slurmctld -c || die "slurmctld failed to start"
    else
        /usr/sbin/slurmctld || die "slurmctld failed to start"
    fi
fi
for node in "${NODES[@]}"; do
    if ! slurmd_up "$node"; then
        log "starting slurmd of $node (netns $node, hostname $node)"
        # nsenter, not `ip netns exec`: the latter remounts /sys, hiding /sys/fs/cgroup (slurmd needs it)
        nsenter --net="/run/netns/$node" unshare --uts sh -c "hostname $node && exec /usr/sbin/slurmd" \
            || die "slurmd of $node failed to start"
    fi
done

# ---------------------------------------------------------------- wait for the nodes
deadline=$(( $(date +%s) + TIMEOUT ))
for node in "${NODES[@]}"; do
    state=""
    while :; do
        state="$(timeout 10 sinfo -h -n "$node" -o '%T' 2>/dev/null | head -n1 || true)"
        case "$state" in
            idle|mixed|allocated|completing) break ;;
            down*|drain*|fail*|unknown*|"")
                # A node left DOWN by an earlier run (e.g. slurmd killed) is put back.
                if [ -n "$state" ] && [[ "$state" != unknown* ]]; then
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                fi ;;
        esac
        [ "$(date +%s)" -ge "$deadline" ] && die "node ${node} not ready after ${TIMEOUT}s (sinfo state: '${state:-no answer}')"
        sleep 1
    done
    log "node ${node} is ${state}"
done

# ---------------------------------------------------------------- smoke: one step on both nodes
remaining=$(( deadline - $(date +%s) ))
[ "$remaining" -lt 15 ] && remaining=15
out="$(timeout -k 5 "$remaining" srun -N2 --ntasks-per-node=1 -t 1 hostname 2>&1)" \
    || die "smoke step 'srun -N2 hostname' failed or timed out: $out"
got=$(echo "$out" | sort | tr '\n' ' ')
want=$(printf '%s\n' "${NODES[@]}" | sort | tr '\n' ' ')
[ "$got" = "$want" ] || die "smoke step 'srun -N2 hostname' printed '$got', expected '$want'"
log "smoke step 'srun -N2 hostname' ran on: $got"

log "SLURM ready in $(( $(date +%s) - START )) s (partition 'debug', nodes ${node_list}, bridge ${BRIDGE} ${HOST_ADDR}/24)"
