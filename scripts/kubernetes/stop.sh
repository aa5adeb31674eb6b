#!/usr/bin/env bash
# Stop the Kubernetes test site that scripts/kubernetes/setup.sh started: each daemon named by
# a pid file under $GPUCENTER_K8S_STATE/run, newest first (Kueue, KWOK, scheduler, controller
# manager, API server, etcd), TERM then KILL after 15 s. The binary cache stays, so the next
# setup.sh starts in seconds.
#
# Kept: certificates, kubeconfigs and etcd's data, so that the next setup.sh brings back the
# same cluster with the same objects. `stop.sh --wipe` removes them as well (a clean cluster
# next time; the cache is still kept).
#
# Exit status 0 when nothing of the site is left running; 2 when not root.
set -euo pipefail

STATE="${GPUCENTER_K8S_STATE:-/var/lib/gpucenter-k8s}"
RUN="$STATE/run"
WIPE=0
case "${1:-}" in
  --wipe) WIPE=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--wipe]" >&2
    exit 64
    ;;
esac

say() { printf 'k8s-stop: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  say "needs root (the daemons run as root)"
  exit 2
fi

left=0
for name in kueue kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pf="$RUN/$name.pid"
  [[ -s $pf ]] || continue
  pid=$(cat "$pf")
  # Only the process setup.sh started: same pid and the command line it recorded.
  # (through a pipe: cmp -s takes a /proc file's size of 0 for its length)
  # shellcheck disable=SC2002 # the cat is the point: cmp must read a pipe
  if [[ -r /proc/$pid/cmdline ]] && cat "/proc/$pid/cmdline" | cmp -s - "$RUN/$name.cmdline"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) ignored TERM: killing it"
      kill -9 "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) is still running"
      left=1
      continue
    fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pf" "$RUN/$name.cmdline"
done

if ((WIPE)) && ((left == 0)); then
  # Only what setup.sh writes there; the directory itself may be a mount point.
  rm -rf "${STATE:?}/etcd" "${STATE:?}/pki" "${STATE:?}/kueue-certs" "${STATE:?}/run" \
    "${STATE:?}"/*.kubeconfig "${STATE:?}"/*.yaml "${STATE:?}"/*.json "${STATE:?}"/*.sha256
  say "wiped $STATE (logs kept in $STATE/log)"
fi
exit "$left"
