#!/usr/bin/env bash
# Install Slurm 22.05 from Debian's packages and start a single-node cluster for tests.
#
# One node (this host) with GPUS fake GPUs of GPU_TYPE (symlinks to /dev/null: slurmd accepts a
# character device and jobs get CUDA_VISIBLE_DEVICES as on a real node), accounting through
# slurmdbd into MariaDB (the one on 127.0.0.1:3306 when it answers, else a local mariadbd
# started here), limits enforced (associations,limits,qos,safe) and multifactor priority so
# that usage accrues. No systemd: the daemons are started directly.
#
# Then it starts a second cluster B on this host (scripts/slurm/setup_second.sh: ClusterName
# siteb, /etc/slurm-b/slurm.conf, GPUs of another type, the same slurmdbd) for the two-site
# tests; SLURM_SECOND_CLUSTER=0 leaves it out.
#
# Idempotent: a second run with the cluster up and the configuration unchanged only checks it
# (about a second); a changed configuration restarts the daemons. Exit status 0 when the node
# is up and usable; 2 when this machine cannot run it (not root, no apt-get) so that callers
# can skip rather than fail; anything else is a real failure.
#
# Environment: SLURM_CLUSTER (gpucenter), SLURM_GPUS (8), SLURM_GPU_TYPE (h100),
# SLURM_DB_PASS (slurm-test-pass), MYSQL_HOST (127.0.0.1), MYSQL_PORT (3306),
# SLURM_SECOND_CLUSTER (1), and setup_second.sh's SLURM_B_*.
set -euo pipefail

CLUSTER="${SLURM_CLUSTER:-gpucenter}"
GPUS="${SLURM_GPUS:-8}"
GPU_TYPE="${SLURM_GPU_TYPE:-h100}"
DB_PASS="${SLURM_DB_PASS:-slurm-test-pass}"
MYSQL_HOST="${MYSQL_HOST:-127.0.0.1}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
CONF_DIR=/etc/slurm
FAKE_DIR=/var/lib/slurm/fakegpu
LOG_DIR=/var/log/slurm
T0=$(date +%s.%N)
# How long to wait for each daemon to answer: generous, since a loaded machine starts them
# slowly (30 s was not enough under load); SLURM_READY_TIMEOUT overrides it.
READY_S="${SLURM_READY_TIMEOUT:-180}"

say() { printf 'slurm-setup: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.1 s until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      die "$what not ready after ${limit}s"
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

# ------------------------------------------------------------------ can we run here at all?
if [[ $(id -u) -ne 0 ]]; then
  say "needs root (installs packages, starts daemons)"
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1 && ! command -v slurmctld >/dev/null 2>&1; then
  say "no apt-get and no Slurm installed: cannot set up Slurm on this machine"
  exit 2
fi

# ------------------------------------------------------------------------------- packages
PKGS=(slurm-wlm slurmdbd munge slurm-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if mysql_ok=$(mysqladmin -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot ping 2>/dev/null); then
  : "${mysql_ok}"
  MYSQL_LOCAL=0
else
  MYSQL_LOCAL=1
  dpkg-query -W -f='${Status}' mariadb-server 2>/dev/null | grep -q 'install ok installed' ||
    missing+=(mariadb-server)
fi
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

# ------------------------------------------------------------------------------- MariaDB
if ((MYSQL_LOCAL)); then
  if ! mysqladmin -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot ping >/dev/null 2>&1; then
    say "starting a local mariadbd"
    install -d -o mysql -g mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    runuser -u mysql -- mariadbd --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
      >>/var/log/mariadbd-slurm.log 2>&1 &
    wait_for "$READY_S" "mariadbd" mysqladmin -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot ping
  fi
fi
# As root: over TCP where the server lets root in that way (a MariaDB started for us), else
# through the local socket, where Debian's MariaDB authenticates root by its Unix identity.
mysql_root() {
  if mysql -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    mysql -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot "$@"
  else
    mysql --protocol=socket -uroot "$@"
  fi
}
mysql_root <<SQL || die "cannot prepare the accounting database"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '${DB_PASS}';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '${DB_PASS}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --------------------------------------------------------------------------------- munge
if ! alive /run/munge/munged.pid; then
  [[ -s /etc/munge/munge.key ]] || {
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
  }
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --force
fi
wait_for "$READY_S" "munged" bash -c 'munge -n | unmunge'

# ------------------------------------------------------------------------- configuration
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
install -d -o slurm -g slurm /var/lib/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd \
  "$LOG_DIR" "$CONF_DIR"
install -d "$FAKE_DIR"
for ((i = 0; i < GPUS; i++)); do
  ln -sfn /dev/null "$FAKE_DIR/nvidia$i"
done

changed=0
# put FILE MODE OWNER: write stdin to FILE when its content differs; remember that it did.
put() {
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
# Written by gpucenter scripts/slurm/setup.sh: a one-node test cluster with fake GPUs.
ClusterName=${CLUSTER}
SlurmctldHost=${HOST}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
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
# gpucenter's submit rule (job_submit.lua): refuses jobs in a refusing namespace's project
# accounts that root or SlurmUser did not submit (gpucenter/dispatch/slurm/submit_rule.py).
JobSubmitPlugins=lua
PriorityType=priority/multifactor
PriorityCalcPeriod=1
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityWeightFairshare=10000
PriorityWeightAge=1000
NodeName=${HOST} CPUs=${CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${MEM_MB} Gres=gpu:${GPU_TYPE}:${GPUS} State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

# The rule's script, rendered by gpucenter itself (the module runs without its package);
# which namespaces refuse is a file each in /etc/slurm/gpucenter-refuse.d, not the script.
put "$CONF_DIR/job_submit.lua" 644 root < <(
  python3 "$(dirname "${BASH_SOURCE[0]}")/../../gpucenter/dispatch/slurm/submit_rule.py" 0 "$(id -u slurm)"
)
install -d -m 755 /etc/slurm/gpucenter-refuse.d

put "$CONF_DIR/gres.conf" 644 root <<EOF
# Fake GPUs: symlinks to /dev/null (see scripts/slurm/setup.sh).
NodeName=${HOST} Name=gpu Type=${GPU_TYPE} File=${FAKE_DIR}/nvidia[0-$((GPUS - 1))]
EOF

put "$CONF_DIR/slurmdbd.conf" 600 slurm <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=${LOG_DIR}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=${MYSQL_HOST}
StoragePort=${MYSQL_PORT}
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF

# ---------------------------------------------------------------------------------- daemons
stop() { # stop PIDFILE: TERM, wait up to 10 s, KILL; remove the pid file
  local pf=$1 pid
  if [[ -s $pf ]]; then
    pid=$(cat "$pf")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pf"
}

if ((changed)); then
  say "configuration changed: (re)starting the daemons"
  stop /run/slurmd.pid
  stop /run/slurmctld.pid
  stop /run/slurmdbd.pid
fi

if ! alive /run/slurmdbd.pid; then
  rm -f /run/slurmdbd.pid
  slurmdbd
fi
wait_for "$READY_S" "slurmdbd" sacctmgr -n show cluster

restart_slurmd=0
if ! alive /run/slurmctld.pid; then
  rm -f /run/slurmctld.pid
  slurmctld
  restart_slurmd=1 # a slurmctld restarted alone leaves the node 'unk' for ~30 s
fi
wait_for "$READY_S" "slurmctld" scontrol ping

if ((restart_slurmd)) || ! alive /run/slurmd.pid; then
  stop /run/slurmd.pid
  slurmd
fi

node_up() {
  local st
  st=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1)
  [[ $st == idle || $st == mixed || $st == allocated ]]
}
wait_for "$READY_S" "node ${HOST} (sinfo)" node_up
# The cluster registers itself with slurmdbd when slurmctld starts; make sure it is there.
wait_for "$READY_S" "cluster ${CLUSTER} in slurmdbd" bash -c \
  "sacctmgr -n -P show cluster format=cluster | grep -qx '${CLUSTER}'"

say "up in $(elapsed)s: cluster ${CLUSTER}, node ${HOST} $(sinfo -h -n "$HOST" -o '%T %G')"

if [[ ${SLURM_SECOND_CLUSTER:-1} != 0 ]]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/setup_second.sh" || die "second cluster (setup_second.sh) failed"
  say "both clusters up in $(elapsed)s"
fi
