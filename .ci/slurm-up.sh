#!/usr/bin/env bash
# Bring up a one-node SLURM "cluster" on this machine (CI and local tests).
#
# Debian bookworm, run as root, PID 1 need not be systemd: the daemons are
# started by hand. Idempotent: safe to run again while the daemons are up;
# it then only re-checks that jobs run.
#
#   sudo .ci/slurm-up.sh          # install, configure, start, smoke-test
#   .ci/slurm-down.sh             # stop the daemons again
#
# Environment knobs:
#   SLURM_UP_TIMEOUT   seconds to wait for the node / the smoke job (default 60)
#   SLURM_UP_NO_APT=1  do not call apt-get (packages must already be installed)
set -euo pipefail

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm

log() { echo "[slurm-up] $*"; }
die() {
    echo "[slurm-up] ERROR: $*" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        if [ -f "$f" ]; then
            echo "----- last lines of $f -----" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

START=$(date +%s)

# ---------------------------------------------------------------- packages
need_install=0
for bin in munged slurmctld slurmd sinfo sbatch; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    [ "${SLURM_UP_NO_APT:-0}" = 1 ] && die "SLURM packages missing and SLURM_UP_NO_APT=1"
    log "installing munge slurmctld slurmd slurm-client with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client \
        >/dev/null || die "apt-get install failed"
else
    log "packages already installed"
fi

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
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_TOTAL_MB * 8 / 10 ))

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR"
install -d -m 0700 "$STATE_DIR"
install -d -m 0755 "$SPOOL_DIR"

NEW_CONF="$(mktemp)"
cat >"$NEW_CONF" <<EOF
# Written by .ci/slurm-up.sh: one-node SLURM for tests and CI. Do not edit by hand.
ClusterName=tfconv
SlurmctldHost=${HOST}
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
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SwitchType=switch/none
# Scheduling
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Keep finished jobs visible to squeue for 5 min (Snakemake's squeue status checks need it)
MinJobAge=300
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
# Node and partition
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${REAL_MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF

conf_changed=0
if [ ! -f "$CONF" ] || ! cmp -s "$NEW_CONF" "$CONF"; then
    log "writing $CONF (node ${HOST}, CPUs=${CPUS}, RealMemory=${REAL_MEM} MB)"
    install -m 0644 "$NEW_CONF" "$CONF"
    conf_changed=1
fi
rm -f "$NEW_CONF"
# No cgroup.conf: proctrack/linuxproc + task/none do not use cgroups (PID 1 is
# not systemd here, cgroup v2 delegation is not available).

# ---------------------------------------------------------------- daemons
running() { pgrep -x "$1" >/dev/null 2>&1; }

if running slurmctld && [ "$conf_changed" -eq 1 ]; then
    log "configuration changed: asking slurmctld/slurmd to reconfigure"
    scontrol reconfigure || true
fi
if ! running slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld || die "slurmctld failed to start"
fi
if ! running slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait for the node
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    state="$(timeout 10 sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*|unknown*|"")
            # A node left DOWN by an earlier run (e.g. unexpected reboot) is put back.
            if [ -n "$state" ] && [[ "$state" != unknown* ]]; then
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
            fi ;;
    esac
    [ "$(date +%s)" -ge "$deadline" ] && die "node ${HOST} not ready after ${TIMEOUT}s (sinfo state: '${state:-no answer}')"
    sleep 1
done
log "node ${HOST} is ${state}"

# ---------------------------------------------------------------- smoke job
remaining=$(( deadline - $(date +%s) ))
[ "$remaining" -lt 15 ] && remaining=15
out="$(timeout -k 5 "$remaining" sbatch --parsable --wait -o /dev/null --wrap hostname 2>&1)" \
    || die "smoke job 'sbatch --wait --wrap hostname' failed or timed out: $out"
log "smoke job ${out%%;*} completed"

log "SLURM ready in $(( $(date +%s) - START )) s (partition 'debug', node ${HOST})"
