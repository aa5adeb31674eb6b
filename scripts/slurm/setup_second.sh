#!/usr/bin/env bash
# Start a second Slurm cluster on this machine, next to the one of setup.sh (which runs this
# at its end): a second site for gpucenter's broker, with GPUs of another type.
#
# Cluster B shares munge and slurmdbd (multi-cluster accounting: one database, one
# `sacctmgr ... cluster=<name>` per cluster) with cluster A, and has everything else of its
# own: /etc/slurm-b/{slurm,gres}.conf, ClusterName, SlurmctldPort/SlurmdPort, state and spool
# directories, pid and log files, and fake GPUs (symlinks to /dev/null) in its own folder.
# Its one node has a name of its own (NodeName=<host>b, NodeHostname=localhost,
# NodeAddr=127.0.0.1) and its slurmd is started with `-f /etc/slurm-b/slurm.conf -N <name>`.
# Clients pick the cluster with SLURM_CONF=/etc/slurm-b/slurm.conf.
#
# Needs munged and slurmdbd up (setup.sh starts them first). Idempotent: with B up and its
# configuration unchanged it only checks it; a changed configuration restarts B's daemons
# (never A's). Exit status 0 when B's node is up; anything else is a failure.
#
# Environment: SLURM_B_CLUSTER (siteb), SLURM_B_GPUS (4), SLURM_B_GPU_TYPE (b200),
# SLURM_B_CTLD_PORT (6917), SLURM_B_SLURMD_PORT (6918).
set -euo pipefail

CLUSTER="${SLURM_B_CLUSTER:-siteb}"
GPUS="${SLURM_B_GPUS:-4}"
GPU_TYPE="${SLURM_B_GPU_TYPE:-b200}"
CTLD_PORT="${SLURM_B_CTLD_PORT:-6917}"
SLURMD_PORT="${SLURM_B_SLURMD_PORT:-6918}"
CONF_DIR=/etc/slurm-b
STATE_DIR=/var/lib/slurm-b
FAKE_DIR=$STATE_DIR/fakegpu
LOG_DIR=/var/log/slurm-b
CTLD_PID=/run/slurmctld-b.pid
SLURMD_PID=/run/slurmd-b.pid
T0=$(date +%s.%N)
# How long to wait for each daemon to answer: generous, since a loaded machine starts them
# slowly (30 s was not enough under load); SLURM_READY_TIMEOUT overrides it.
READY_S="${SLURM_READY_TIMEOUT:-180}"
export SLURM_CONF=$CONF_DIR/slurm.conf

say() { printf 'slurm-setup-b: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.1 s until COMMAND succeeds
  local limit=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      die "$what not ready after ${limit}s (logs: $LOG_DIR)"
    fi
    sleep 0.1
  done
}

alive() { # alive PIDFILE: the process named in PIDFILE runs (a zombie does not: a daemon
  # that died under a child subreaper which never reaps, e.g. a test process running jobs,
  # stays a zombie whose pid still answers kill -0)
  local pid
  [[ -s $1 ]] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

stop() { # stop PIDFILE: TERM, wait up to 10 s, KILL; remove the pid file
  local pf=$1 pid
  if [[ -s $pf ]]; then
    pid=$(cat "$pf")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pf"
}

[[ $(id -u) -eq 0 ]] || die "needs root"
command -v slurmctld >/dev/null 2>&1 || die "Slurm is not installed (run setup.sh)"
[[ -s /run/slurmdbd.pid ]] || die "slurmdbd is not running (run setup.sh)"

HOST=$(hostname -s)
NODE="${SLURM_B_NODE:-${HOST}b}"
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
install -d -o slurm -g slurm "$STATE_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
install -d "$CONF_DIR" "$FAKE_DIR"
for ((i = 0; i < GPUS; i++)); do
  ln -sfn /dev/null "$FAKE_DIR/nvidia$i"
done

changed=0
put() { # put FILE MODE OWNER: write stdin to FILE when its content differs
  local file=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    install -m "$mode" -o "$owner" -g "$owner" "$tmp" "$file"
    rm -f "$tmp"
    changed=1
  fi
}

put "$CONF_DIR/slurm.conf" 644 root <<EOF
# Written by gpucenter scripts/slurm/setup_second.sh: cluster B, a second one-node test
# cluster on this host (ports, state, spool, pids and logs of its own; slurmdbd shared).
ClusterName=${CLUSTER}
SlurmctldHost=${HOST}
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
KillWait=2
MinJobAge=600
InactiveLimit=0
OverTimeLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu,gres/gpu:${GPU_TYPE}
AccountingStorageEnforce=associations,limits,qos,safe
AccountingStoreFlags=job_comment
PriorityType=priority/multifactor
PriorityCalcPeriod=1
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityWeightFairshare=10000
PriorityWeightAge=1000
NodeName=${NODE} NodeHostname=localhost NodeAddr=127.0.0.1 Port=${SLURMD_PORT} CPUs=${CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${MEM_MB} Gres=gpu:${GPU_TYPE}:${GPUS} State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

put "$CONF_DIR/gres.conf" 644 root <<EOF
# Fake GPUs of cluster B: symlinks to /dev/null (see scripts/slurm/setup_second.sh).
NodeName=${NODE} Name=gpu Type=${GPU_TYPE} File=${FAKE_DIR}/nvidia[0-$((GPUS - 1))]
EOF

if ((changed)); then
  say "configuration changed: (re)starting cluster ${CLUSTER}'s daemons"
  stop "$SLURMD_PID"
  stop "$CTLD_PID"
fi

restart_slurmd=0
if ! alive "$CTLD_PID"; then
  rm -f "$CTLD_PID"
  slurmctld -f "$CONF_DIR/slurm.conf"
  restart_slurmd=1 # a slurmctld restarted alone leaves the node 'unk' for ~30 s
fi
wait_for "$READY_S" "slurmctld of ${CLUSTER}" scontrol ping

if ((restart_slurmd)) || ! alive "$SLURMD_PID"; then
  stop "$SLURMD_PID"
  slurmd -f "$CONF_DIR/slurm.conf" -N "$NODE"
fi

node_up() {
  local st
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)
  [[ $st == idle || $st == mixed || $st == allocated ]]
}
wait_for "$READY_S" "node ${NODE} of ${CLUSTER} (sinfo)" node_up
wait_for "$READY_S" "cluster ${CLUSTER} in slurmdbd" bash -c \
  "sacctmgr -n -P show cluster format=cluster | grep -qx '${CLUSTER}'"

say "up in $(elapsed)s: cluster ${CLUSTER}, node ${NODE} $(sinfo -h -n "$NODE" -o '%T %G')"
