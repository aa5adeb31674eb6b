#!/usr/bin/env bash
# Stop the test clusters started by setup.sh: cluster B's slurmd and slurmctld
# (setup_second.sh), then cluster A's slurmd, slurmctld, slurmdbd and munged, by the
# pids in their pid files, then remove the pid files (a stale slurmctld.pid makes a later
# `apt-get purge` fail: the package's prerm runs scancel). MariaDB is left alone: it may
# serve others. Safe to run when nothing runs.
set -uo pipefail

stop() {
  local pf=$1 pid
  if [[ -s $pf ]]; then
    pid=$(cat "$pf")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null
    fi
  fi
  rm -f "$pf"
}

stop /run/slurmd-b.pid
stop /run/slurmctld-b.pid
stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/slurmdbd.pid
stop /run/munge/munged.pid
echo "slurm-stop: stopped" >&2
