#!/usr/bin/env bash
# Build (once) and start a real Kubernetes control plane on this machine for gpucenter's tests.
#
# Everything comes from Go modules through the ordinary `go` client: kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes, the etcd server
# from go.etcd.io/etcd/server/v3, KWOK from sigs.k8s.io/kwok and Kueue from sigs.k8s.io/kueue,
# each pinned by a small module under scripts/kubernetes/tools/ (go.mod and go.sum committed).
# The binaries are built once into a cache outside the repository and reused while the pins stay
# the same; their sha256 sums are written beside them and logged.
#
# The cluster: etcd and the API server on loopback only, with certificates and kubeconfigs
# generated here (openssl); the controller manager and the scheduler as in any cluster; KWOK
# playing the kubelet for N fake GPU nodes (8 x nvidia.com/gpu each) in topology blocks, with
# two GPU types. There is no container runtime: a pod bound to a fake node goes Running, and
# when its template carries the annotation gpucenter.io/fake-duration (a Go duration, "5s")
# it ends that long after it started, Succeeded, or Failed when gpucenter.io/fake-exit-code
# is not "0". Kueue (ClusterQueue, LocalQueue, Workload) runs beside it as the in-cluster quota
# layer, its webhooks served on loopback; K8S_KUEUE=0 leaves it out.
#
# Idempotent: a second run with everything up and the configuration unchanged only checks
# readiness (a second or two); a daemon whose command line changed is restarted alone.
# Exit status 0 when the cluster is up (the admin kubeconfig's path is then printed on stdout,
# everything else goes to stderr); 2 when this machine cannot run it (not root, or neither Go
# nor cached binaries, no openssl/curl) so that callers can skip; anything else is a failure.
#
# Environment:
#   GPUCENTER_K8S_CACHE  binary cache (/var/cache/gpucenter-k8s), kept by stop.sh
#   GPUCENTER_K8S_STATE  certificates, kubeconfigs, etcd data, logs, pid files
#                        (/var/lib/gpucenter-k8s); stop.sh --wipe removes it
#   K8S_NODES (8), K8S_NODES_PER_BLOCK (4), K8S_GPU_TYPES ("h100 b200", one type per block,
#   in turn), K8S_GPUS_PER_NODE (8), K8S_API_PORT (16443), K8S_ETCD_PORT (12379),
#   K8S_KUEUE (1), K8S_CLIENT_QPS (200: the controllers' and scheduler's API rate, raised from
#   the defaults so that the benchmark measures scheduling rather than client throttling),
#   GPUCENTER_K8S_BUILD_JOBS (1: `go build -p`; the build runs under nice -n 10),
#   GPUCENTER_K8S_KEEP_GOCACHE (0: the Go build cache under the cache folder is removed after
#   a build).
#
# `setup.sh --build-only` builds (or finds in the cache) the binaries and starts nothing.
set -euo pipefail

BUILD_ONLY=0
case "${1:-}" in
  --build-only) BUILD_ONLY=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--build-only]" >&2
    exit 64
    ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$HERE/tools"
CACHE="${GPUCENTER_K8S_CACHE:-/var/cache/gpucenter-k8s}"
STATE="${GPUCENTER_K8S_STATE:-/var/lib/gpucenter-k8s}"
NODES="${K8S_NODES:-8}"
PER_BLOCK="${K8S_NODES_PER_BLOCK:-4}"
read -r -a GPU_TYPES <<<"${K8S_GPU_TYPES:-h100 b200}"
GPUS_PER_NODE="${K8S_GPUS_PER_NODE:-8}"
API_PORT="${K8S_API_PORT:-16443}"
ETCD_PORT="${K8S_ETCD_PORT:-12379}"
ETCD_PEER_PORT=$((ETCD_PORT + 1))
KCM_PORT="${K8S_KCM_PORT:-10257}"
SCHED_PORT="${K8S_SCHEDULER_PORT:-10259}"
KWOK_PORT="${K8S_KWOK_PORT:-10247}"
KUEUE="${K8S_KUEUE:-1}"
KUEUE_WEBHOOK_PORT="${K8S_KUEUE_WEBHOOK_PORT:-19443}"
KUEUE_HEALTH_PORT="${K8S_KUEUE_HEALTH_PORT:-18081}"
QPS="${K8S_CLIENT_QPS:-200}"
BUILD_JOBS="${GPUCENTER_K8S_BUILD_JOBS:-1}"
PKI="$STATE/pki"
RUN="$STATE/run"
LOG="$STATE/log"
KUBECONFIG_ADMIN="$STATE/admin.kubeconfig"
API="https://127.0.0.1:${API_PORT}"
NODE_LABEL="gpucenter.io/fake-node" # value "kwok": the nodes KWOK manages (and stop.sh may delete)
T0=$(date +%s.%N)

say() { printf 'k8s-setup: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
elapsed() { awk -v a="${1:-$T0}" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      die "$what not ready after ${limit}s (logs in $LOG)"
    fi
    sleep 0.2
  done
}

# wait_up NAME SECONDS DESCRIPTION COMMAND...: wait_for, but give up at once (with the end of
# its log) when daemon NAME has exited meanwhile.
wait_up() {
  local name=$1 limit=$2 what=$3
  shift 3
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    # (kill -0, not `running`: right after the start the pid may still be setsid's, before exec)
    if ! kill -0 "$(cat "$RUN/$name.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
      tail -n 20 "$LOG/$name.log" >&2
      die "$name exited while starting (log: $LOG/$name.log)"
    fi
    if (($(date +%s) >= deadline)); then
      die "$what not ready after ${limit}s (log: $LOG/$name.log)"
    fi
    sleep 0.2
  done
}

# ------------------------------------------------------------------ can we run here at all?
if [[ $(id -u) -ne 0 ]]; then
  say "needs root (writes $CACHE and $STATE, starts daemons)"
  exit 2
fi
for tool in openssl curl flock setsid; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "no $tool on this machine"
    exit 2
  fi
done
[[ $NODES =~ ^[0-9]+$ && $NODES -ge 1 ]] || die "K8S_NODES must be a positive integer"
[[ $PER_BLOCK =~ ^[0-9]+$ && $PER_BLOCK -ge 1 ]] || die "K8S_NODES_PER_BLOCK must be positive"
((${#GPU_TYPES[@]})) || die "K8S_GPU_TYPES is empty"

install -d -m 755 "$CACHE" "$STATE" "$RUN" "$LOG"
install -d -m 700 "$PKI"
# One setup at a time on this machine (a developer's run and CI's may overlap).
exec 9>"$STATE/setup.lock"
flock 9

# ---------------------------------------------------------------------------------- build
# pinned DIR MODULE: the version of MODULE that DIR/go.mod requires.
pinned() {
  awk -v m="$2" '!/=>/ && !/^\/\// { for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' \
    "$1/go.mod"
}

# build NAME MODULE LDFLAGS PACKAGE[=BINARY]...: build the packages of tools/NAME into
# $CACHE/NAME-VERSION/bin (VERSION: MODULE's pinned release) unless a build of the same go.mod,
# go.sum and flags is there already.
declare -A BIN
build() {
  local name=$1 module=$2 ldflags=$3
  shift 3
  local dir="$TOOLS/$name" version key out t0 tmp spec pkg exe
  version=$(pinned "$dir" "$module")
  [[ -n $version ]] || die "tools/$name/go.mod requires no $module"
  key=$(cat "$dir/go.mod" "$dir/go.sum" <(printf '%s %s' "$ldflags" "$*") | sha256sum | cut -c1-16)
  out="$CACHE/$name-$version"
  BIN[$name]="$out/bin"
  if [[ -f $out/inputs.sha256 && $(cat "$out/inputs.sha256") == "$key" ]]; then
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    say "no Go toolchain and no cached build of $name $version"
    exit 2
  fi
  say "building $name $version ($*) into $out: the first time this takes long"
  t0=$(date +%s.%N)
  tmp="$out.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  : >"$LOG/build-$name.log"
  for spec in "$@"; do
    pkg=${spec%%=*}
    exe=${spec#*=}
    [[ $spec == *=* ]] || exe=$(basename "$pkg")
    # A build cache of its own: other Go work on the machine neither trims it nor is slowed
    # by it. CGO off: static binaries, no C compiler in the way. -p and nice keep a shared
    # 2-core machine usable meanwhile.
    if ! (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
      GOCACHE="$CACHE/go-build" nice -n 10 go build -p "$BUILD_JOBS" -trimpath \
      -ldflags "$ldflags" -o "$tmp/bin/$exe" "$pkg") >>"$LOG/build-$name.log" 2>&1; then
      tail -n 30 "$LOG/build-$name.log" >&2
      rm -rf "$tmp"
      die "building $pkg ($name $version) failed (log: $LOG/build-$name.log)"
    fi
  done
  (cd "$tmp/bin" && sha256sum -- *) >"$tmp/SHA256SUMS"
  printf '%s\n' "$key" >"$tmp/inputs.sha256"
  go version >"$tmp/go-version"
  # Same folder, new binaries (go.sum or flags changed): what runs the old ones restarts.
  [[ -d $out ]] && REBUILT+=("$name")
  rm -rf "$out"
  mv "$tmp" "$out"
  say "built $name $version in $(elapsed "$t0")s"
  BUILT=1
}
BUILT=0
REBUILT=()

KUBE_VERSION=$(pinned "$TOOLS/kube" k8s.io/kubernetes)
KUBE_MINOR=$(cut -d. -f2 <<<"$KUBE_VERSION")
KUBE_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KUBE_LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
  KUBE_LDFLAGS+=" -X $pkg.gitMinor=$KUBE_MINOR -X $pkg.gitTreeState=clean"
done

exec 8>"$CACHE/build.lock"
flock 8
build kube k8s.io/kubernetes "$KUBE_LDFLAGS" k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
build etcd go.etcd.io/etcd/server/v3 "-s -w" go.etcd.io/etcd/server/v3=etcd
build kwok sigs.k8s.io/kwok "-s -w" sigs.k8s.io/kwok/cmd/kwok
if [[ $KUEUE != 0 ]]; then
  build kueue sigs.k8s.io/kueue "-s -w" sigs.k8s.io/kueue/cmd/kueue
fi
# The compiler's cache is some 6 GiB once everything is built; it only speeds up a rebuild
# after a pin changes, so it goes unless GPUCENTER_K8S_KEEP_GOCACHE=1.
if ((BUILT)) && [[ ${GPUCENTER_K8S_KEEP_GOCACHE:-0} != 1 ]]; then
  rm -rf "$CACHE/go-build"
fi
flock -u 8
for f in "$CACHE"/*/SHA256SUMS; do
  sed "s|^|k8s-setup: sha256 $(basename "$(dirname "$f")")/bin/|" "$f" >&2
done
if ((BUILD_ONLY)); then
  say "binaries ready in $(elapsed)s: ${BIN[*]}"
  exit 0
fi
KUBECTL="${BIN[kube]}/kubectl"
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# -------------------------------------------------------------------- certificates (openssl)
# cert NAME SUBJECT [SAN]: a key and a certificate signed by the CA named by $CA (the cluster
# CA, "ca", by default), unless present.
cert() {
  local name=$1 subj=$2 san=${3:-} ca=${CA:-ca}
  [[ -s $PKI/$name.crt && -s $PKI/$name.key ]] && return 0
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}
# make_ca NAME CN: a self-signed CA, unless present; a new CA drops the certificates it signed
# before (all of them for the cluster CA, whose certificates are everywhere).
make_ca() {
  local name=$1 cn=$2
  [[ -s $PKI/$name.crt && -s $PKI/$name.key ]] && return 0
  say "generating the $cn CA and its certificates in $PKI"
  if [[ $name == ca ]]; then
    rm -f "$PKI"/*.crt "$PKI"/*.key
  fi
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.crt" \
    -days 3650 -sha256 -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}
make_ca ca gpucenter-test-ca
# The front proxy's CA: how the API server vouches for users when it forwards a request to an
# aggregated API server (and what its own components read as the request-header CA).
make_ca front-proxy-ca gpucenter-test-front-proxy-ca
[[ -s $PKI/front-proxy-client.crt ]] || CA=front-proxy-ca cert front-proxy-client "/CN=front-proxy-client"
cert apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=gpucenter-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kwok "/O=system:masters/CN=kwok-controller"
cert kueue "/O=system:masters/CN=kueue-manager"
cert kueue-webhook "/CN=kueue-webhook" "IP:127.0.0.1,DNS:localhost"
if [[ ! -s $PKI/sa.key ]]; then
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi

# kubeconfig NAME: a self-contained kubeconfig (certificates embedded) for the NAME cert.
kubeconfig() {
  local name=$1 file=$2
  b64() { base64 -w0 <"$1"; }
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gpucenter-test
  cluster:
    server: ${API}
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: ${name}
  user:
    client-certificate-data: $(b64 "$PKI/$name.crt")
    client-key-data: $(b64 "$PKI/$name.key")
contexts:
- name: ${name}@gpucenter-test
  context:
    cluster: gpucenter-test
    user: ${name}
current-context: ${name}@gpucenter-test
EOF
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    install -m 600 "$tmp" "$file"
    rm -f "$tmp"
  fi
}
for who in admin controller-manager scheduler kwok kueue; do
  kubeconfig "$who" "$STATE/$who.kubeconfig"
done
# The admin kubeconfig is what tests and people use: readable by the local developers' group.
chmod 640 "$KUBECONFIG_ADMIN"

# ---------------------------------------------------------------------------------- daemons
# running NAME: NAME's pid file names a live process with the command line we started it with
# (a pid file left by a machine restart may name an unrelated process by now).
running() {
  local pid
  [[ -s $RUN/$1.pid && -s $RUN/$1.cmdline ]] || return 1
  pid=$(cat "$RUN/$1.pid")
  # (through a pipe: cmp -s takes a /proc file's size of 0 for its length)
  # shellcheck disable=SC2002 # the cat is the point: cmp must read a pipe
  [[ -r /proc/$pid/cmdline ]] && cat "/proc/$pid/cmdline" | cmp -s - "$RUN/$1.cmdline"
}

stop_daemon() { # stop_daemon NAME: TERM, wait up to 15 s, KILL; forget it
  local pid
  if running "$1"; then
    pid=$(cat "$RUN/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid" "$RUN/$1.cmdline"
}

# daemon NAME BINARY ARGS...: start it in its own session unless it runs with these very
# arguments already; a changed command line restarts it. Returns 0 when it (re)started.
# A function before_start_NAME, where defined, runs just before the start.
daemon() {
  local name=$1
  shift
  printf '%s\0' "$@" >"$RUN/$name.cmdline.new"
  if running "$name"; then
    if cmp -s "$RUN/$name.cmdline" "$RUN/$name.cmdline.new"; then
      rm -f "$RUN/$name.cmdline.new"
      return 1
    fi
    say "$name: command line changed, restarting"
  fi
  stop_daemon "$name"
  if declare -F "before_start_$name" >/dev/null; then
    "before_start_$name"
  fi
  printf '\n=== %s starting %s\n' "$(date -Is)" "$name" >>"$LOG/$name.log"
  # Without our lock descriptors (8, 9): a daemon holding them would block every later run.
  setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN/$name.pid"
  mv "$RUN/$name.cmdline.new" "$RUN/$name.cmdline"
  say "started $name (pid $!, log $LOG/$name.log)"
  return 0
}

curl_admin() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"
}

for name in "${REBUILT[@]}"; do
  case $name in
    kube)
      stop_daemon kube-scheduler
      stop_daemon kube-controller-manager
      stop_daemon kube-apiserver
      ;;
    *) stop_daemon "$name" ;;
  esac
done

# etcd: loopback only; fsync off because this is a throw-away test store on a shared disk.
ETCD_URL="http://127.0.0.1:${ETCD_PORT}"
daemon etcd "${BIN[etcd]}/etcd" --name gpucenter --data-dir "$STATE/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster "gpucenter=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --unsafe-no-fsync --quota-backend-bytes $((4 * 1024 * 1024 * 1024)) \
  --log-level warn || true
etcd_healthy() { curl -fsS --max-time 2 "$ETCD_URL/health" | grep -q '"health":"true"'; }
wait_up etcd 60 "etcd" etcd_healthy

# The API server: loopback only; RBAC and Node authorisation, the default admission plugins
# (ResourceQuota among them). The endpoint reconciler is off: the 'kubernetes' service cannot
# point at a loopback address, and nothing in the cluster needs to reach the API through it.
daemon kube-apiserver "${BIN[kube]}/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --etcd-servers="$ETCD_URL" --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=Node,RBAC \
  --endpoint-reconciler-type=none --allow-privileged=true --profiling=false \
  --event-ttl=1h --v=1 || true
wait_up kube-apiserver 120 "kube-apiserver /readyz" curl_admin "$API/readyz"

# Controller manager and scheduler: one instance each, so no leader election; their own
# identities (system:kube-controller-manager, system:kube-scheduler) with the default RBAC.
# Node leases last 120 s (KWOK renews each every 30 s) and a node counts as lost after 180 s
# without one: a kubelet's 40 s would cost 500 fake nodes 50 lease writes a second at idle.
daemon kube-controller-manager "${BIN[kube]}/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --use-service-account-credentials=true --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" --kube-api-qps="$QPS" \
  --kube-api-burst=$((QPS * 2)) --concurrent-job-syncs=10 \
  --node-monitor-grace-period=180s --profiling=false --v=1 || true

cat >"$STATE/scheduler.yaml.new" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ${STATE}/scheduler.kubeconfig
  qps: ${QPS}
  burst: $((QPS * 2))
leaderElection:
  leaderElect: false
EOF
if cmp -s "$STATE/scheduler.yaml.new" "$STATE/scheduler.yaml"; then
  rm -f "$STATE/scheduler.yaml.new"
else
  mv "$STATE/scheduler.yaml.new" "$STATE/scheduler.yaml"
  stop_daemon kube-scheduler # the file changed under the same command line
fi
daemon kube-scheduler "${BIN[kube]}/kube-scheduler" --config="$STATE/scheduler.yaml" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --profiling=false --v=1 || true

wait_up kube-controller-manager 60 "kube-controller-manager /healthz" \
  curl -fsSk --max-time 2 "https://127.0.0.1:${KCM_PORT}/healthz"
wait_up kube-scheduler 60 "kube-scheduler /healthz" curl -fsSk --max-time 2 "https://127.0.0.1:${SCHED_PORT}/healthz"
# The controllers are in when the 'default' service account exists (token controller, SA
# controller) — without it no pod can be created in a new namespace.
wait_up kube-controller-manager 60 "service account default/default" kc get serviceaccount default -n default

# --------------------------------------------------------------------------------- KWOK
# Stages: how fake nodes and pods move through their life cycle. Written for gpucenter; the
# Stage API is KWOK's (kwok.x-k8s.io/v1alpha1).
cat >"$STATE/kwok.yaml.new" <<'EOF'
# Written by scripts/kubernetes/setup.sh: KWOK stages for gpucenter's fake GPU nodes.
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
# Parallelism spelt out: KWOK applies none of its defaults to a configuration file's options.
options:
  podPlayStageParallelism: 8
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 2
---
# A new fake node becomes Ready at once and keeps its declared capacity.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpucenter-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KwokReady, message: fake GPU node is ready, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: MemoryPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: DiskPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: PIDPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: NetworkUnavailable, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      - {type: Hostname, address: {{ .metadata.name | Quote }}}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: fake
        kubeProxyVersion: fake
        containerRuntimeVersion: fake
        kernelVersion: fake
        osImage: gpucenter fake GPU node
        machineID: ""
        bootID: ""
        systemUUID: ""
      phase: Running
---
# Conditions refreshed now and then; liveness itself is the node lease KWOK renews.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpucenter-node-heartbeat
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ['True']
  delay:
    durationMilliseconds: 120000
    jitterDurationMilliseconds: 180000
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KwokReady, message: fake GPU node is ready, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}}
      - {type: MemoryPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}}
      - {type: DiskPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}}
      - {type: PIDPressure, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}}
      - {type: NetworkUnavailable, status: "False", reason: KwokReady, message: fake, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}}
---
# A pod bound to a fake node starts running: every container started, the pod Ready.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpucenter-pod-running
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: PodReadyToStartContainers, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
# A running pod that says how long it runs (gpucenter.io/fake-duration, a Go duration) ends
# then: Succeeded, or Failed with gpucenter.io/fake-exit-code when that is not "0". Pods
# without the annotation run until deleted, like a service or a job that never ends.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpucenter-pod-finish
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.metadata.annotations["gpucenter.io/fake-duration"]'
      operator: Exists
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["gpucenter.io/fake-duration"]'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := or (index .metadata.annotations "gpucenter.io/fake-exit-code") "0" }}
      {{ $started := or .status.startTime $now }}
      conditions:
      - {type: PodReadyToStartContainers, status: "False", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {{ $code }}
            reason: {{ if eq $code "0" }}Completed{{ else }}Error{{ end }}
            startedAt: {{ $started | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}
---
# No kubelet will ever confirm a deletion: finish it.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpucenter-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    delete: true
EOF
if cmp -s "$STATE/kwok.yaml.new" "$STATE/kwok.yaml"; then
  rm -f "$STATE/kwok.yaml.new"
else
  mv "$STATE/kwok.yaml.new" "$STATE/kwok.yaml"
  stop_daemon kwok
fi
# KWOK manages a node only while it holds the node's lease, and each KWOK process has a new
# identity: a restarted KWOK would leave every node alone until the old leases ran out (two
# minutes). The leases go first, so that the new process takes the nodes over at once.
before_start_kwok() {
  local names
  names=$(kc get nodes -l "${NODE_LABEL}=kwok" -o name | sed 's|^node/||')
  if [[ -n $names ]]; then
    # shellcheck disable=SC2086 # one name a word
    kc delete lease -n kube-node-lease --ignore-not-found --wait=false $names >/dev/null
  fi
}
daemon kwok "${BIN[kwok]}/kwok" --kubeconfig="$STATE/kwok.kubeconfig" --config="$STATE/kwok.yaml" \
  --manage-all-nodes=false --manage-nodes-with-label-selector="${NODE_LABEL}=kwok" \
  --node-lease-duration-seconds=120 --cidr=10.244.0.0/16 --node-ip=10.243.0.1 \
  --server-address="127.0.0.1:${KWOK_PORT}" || true
wait_up kwok 60 "kwok /healthz" curl -fsS --max-time 2 "http://127.0.0.1:${KWOK_PORT}/healthz"

# ------------------------------------------------------------------------------ fake nodes
# NODES nodes in blocks of PER_BLOCK (a block: the nodes behind one leaf switch / NVLink
# domain); each block has one GPU type, the types taken in turn. Labels as a GPU operator's
# feature discovery would set them, plus gpucenter's own.
gpu_product() {
  case $1 in
    h100) echo NVIDIA-H100-80GB-HBM3 ;;
    h200) echo NVIDIA-H200 ;;
    b200) echo NVIDIA-B200 ;;
    a100) echo NVIDIA-A100-SXM4-80GB ;;
    *) echo "NVIDIA-${1^^}" ;;
  esac
}
nodes_file="$STATE/nodes.yaml"
{
  echo "# Written by scripts/kubernetes/setup.sh: ${NODES} fake GPU nodes."
  echo "apiVersion: v1"
  echo "kind: List"
  echo "items:"
  for ((i = 0; i < NODES; i++)); do
    block=$((i / PER_BLOCK))
    type=${GPU_TYPES[block % ${#GPU_TYPES[@]}]}
    name=$(printf 'gpu-%s-b%02d-n%03d' "$type" "$block" "$i")
    cat <<EOF
- apiVersion: v1
  kind: Node
  metadata:
    name: ${name}
    labels:
      ${NODE_LABEL}: kwok
      kubernetes.io/hostname: ${name}
      kubernetes.io/os: linux
      kubernetes.io/arch: amd64
      node.kubernetes.io/instance-type: gpu-${GPUS_PER_NODE}x${type}
      topology.kubernetes.io/region: gpucenter-test
      topology.kubernetes.io/zone: gpucenter-test-a
      gpucenter.io/block: $(printf 'block-%02d' "$block")
      gpucenter.io/gpu-type: ${type}
      nvidia.com/gpu.product: $(gpu_product "$type")
      nvidia.com/gpu.count: "${GPUS_PER_NODE}"
      nvidia.com/gpu.present: "true"
    annotations:
      kwok.x-k8s.io/node: fake
      node.alpha.kubernetes.io/ttl: "0"
  spec: {}
  status:
    capacity: &cap${i}
      cpu: "224"
      memory: 2Ti
      ephemeral-storage: 30Ti
      pods: "110"
      nvidia.com/gpu: "${GPUS_PER_NODE}"
    allocatable: *cap${i}
EOF
  done
} >"$nodes_file.new"
want_names=$(grep -E '^    name: ' "$nodes_file.new" | awk '{ print $2 }' | sort)
have_names=$(kc get nodes -l "${NODE_LABEL}=kwok" -o name | sed 's|^node/||' | sort)
if [[ $want_names != "$have_names" ]] || ! cmp -s "$nodes_file.new" "$nodes_file"; then
  t0=$(date +%s.%N)
  extra=$(comm -13 <(echo "$want_names") <(echo "$have_names") | sed '/^$/d')
  if [[ -n $extra ]]; then
    say "deleting $(wc -l <<<"$extra") fake nodes no longer wanted"
    # shellcheck disable=SC2086
    kc delete node --wait=false $extra >/dev/null
  fi
  kc apply --server-side --force-conflicts --field-manager=gpucenter-setup \
    -f "$nodes_file.new" >/dev/null || die "cannot create the fake nodes"
  mv "$nodes_file.new" "$nodes_file"
  say "applied ${NODES} fake nodes in $(elapsed "$t0")s"
else
  rm -f "$nodes_file.new"
fi
ready_nodes() {
  kc get nodes -l "${NODE_LABEL}=kwok" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c '^True$'
}
all_nodes_ready() { [[ $(ready_nodes) -eq $NODES ]]; }
wait_up kwok 300 "${NODES} fake nodes Ready" all_nodes_ready

# ---------------------------------------------------------------------------------- Kueue
if [[ $KUEUE != 0 ]]; then
  # shellcheck source=scripts/kubernetes/kueue.sh
  source "$HERE/kueue.sh"
else
  # Its webhooks fail closed: left behind without Kueue they would refuse every Job.
  stop_daemon kueue
  kc delete mutatingwebhookconfiguration kueue-mutating-webhook-configuration \
    --ignore-not-found >/dev/null
  kc delete validatingwebhookconfiguration kueue-validating-webhook-configuration \
    --ignore-not-found >/dev/null
  rm -f "$STATE/kueue-manifests.sha256"
fi

say "up in $(elapsed)s: kube-apiserver ${KUBE_VERSION} at ${API}, ${NODES} fake GPU nodes" \
  "(${GPU_TYPES[*]}), kueue $([[ $KUEUE != 0 ]] && echo on || echo off)"
say "kubeconfig: ${KUBECONFIG_ADMIN}  (kubectl: ${KUBECTL})"
printf '%s\n' "$KUBECONFIG_ADMIN"
