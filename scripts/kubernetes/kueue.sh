# shellcheck shell=bash
# Kueue on the test site: sourced by setup.sh once the API server, the controllers and the fake
# nodes are up (it uses setup.sh's variables and functions: BIN, STATE, PKI, kc, daemon...).
#
# Kueue runs as a process on loopback, not as a pod (there is no container runtime here). Its
# CRDs come from the pinned module's own config/components/crd/bases; its webhooks from
# config/components/webhook/manifests.yaml, rewritten by kueue_manifests.py to call
# https://127.0.0.1:$KUEUE_WEBHOOK_PORT with our CA. Certificate management inside Kueue is off
# (it would point the API server at a Service); our CA signs its serving certificate.
# Only the batch/job integration is on. Kueue's webhooks fail closed: while Kueue is down the
# API server refuses new Jobs, so setup.sh is what brings a stopped cluster back.

# The manifests of the pinned release, copied beside the binary the first time (later runs
# need no Go and no module cache).
KUEUE_SRC="${BIN[kueue]%/bin}/manifests"
if [[ ! -f $KUEUE_SRC/webhook/manifests.yaml ]]; then
  kueue_mod=$(cd "$TOOLS/kueue" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/kueue) ||
    die "cannot find the sigs.k8s.io/kueue module's source"
  install -d "$KUEUE_SRC/crd" "$KUEUE_SRC/webhook"
  install -m 644 "$kueue_mod"/config/components/crd/bases/*.yaml "$KUEUE_SRC/crd/"
  install -m 644 "$kueue_mod/config/components/webhook/manifests.yaml" "$KUEUE_SRC/webhook/"
fi
KUEUE_URL="https://127.0.0.1:${KUEUE_WEBHOOK_PORT}"
KUEUE_CERTS="$STATE/kueue-certs"

install -d -m 700 "$KUEUE_CERTS" /etc/kueue/metrics/certs
# Kueue reads its webhook certificate from certDir and, with certificate management off, its
# metrics certificate from a fixed path under /etc/kueue.
for d in "$KUEUE_CERTS" /etc/kueue/metrics/certs; do
  cmp -s "$PKI/kueue-webhook.crt" "$d/tls.crt" || install -m 600 "$PKI/kueue-webhook.crt" "$d/tls.crt"
  cmp -s "$PKI/kueue-webhook.key" "$d/tls.key" || install -m 600 "$PKI/kueue-webhook.key" "$d/tls.key"
done

cat >"$STATE/kueue.yaml.new" <<EOF
# Written by scripts/kubernetes/setup.sh: Kueue as a loopback process beside the test site.
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:${KUEUE_HEALTH_PORT}
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: ${KUEUE_WEBHOOK_PORT}
  certDir: ${KUEUE_CERTS}
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
clientConnection:
  qps: ${QPS}
  burst: $((QPS * 2))
manageJobsWithoutQueueName: false
integrations:
  frameworks:
  - batch/job
EOF
if cmp -s "$STATE/kueue.yaml.new" "$STATE/kueue.yaml"; then
  rm -f "$STATE/kueue.yaml.new"
else
  mv "$STATE/kueue.yaml.new" "$STATE/kueue.yaml"
  stop_daemon kueue
fi

# CRDs and webhook configurations: applied when the pinned manifests or the CA change.
kueue_manifests() {
  local what=$1
  shift
  kc create --dry-run=client -o json "$@" |
    python3 "$HERE/kueue_manifests.py" "$what" "$KUEUE_URL" "$PKI/ca.crt"
}
kueue_key=$(cat "$TOOLS/kueue/go.sum" "$PKI/ca.crt" "$HERE/kueue_manifests.py" \
  <(echo "$KUEUE_URL") | sha256sum | cut -c1-16)
if [[ $(cat "$STATE/kueue-manifests.sha256" 2>/dev/null) != "$kueue_key" ]] ||
  ! kc get crd clusterqueues.kueue.x-k8s.io >/dev/null 2>&1 ||
  ! kc get validatingwebhookconfiguration kueue-validating-webhook-configuration >/dev/null 2>&1; then
  t0=$(date +%s.%N)
  kc get namespace kueue-system >/dev/null 2>&1 || kc create namespace kueue-system >/dev/null
  kueue_manifests crds -f "$KUEUE_SRC/crd" >"$STATE/kueue-crds.json" ||
    die "cannot read Kueue's CRDs"
  kc apply --server-side --force-conflicts --field-manager=gpucenter-setup \
    -f "$STATE/kueue-crds.json" >/dev/null || die "cannot apply Kueue's CRDs"
  kueue_manifests webhooks -f "$KUEUE_SRC/webhook/manifests.yaml" \
    >"$STATE/kueue-webhooks.json" || die "cannot read Kueue's webhooks"
  kc apply --server-side --force-conflicts --field-manager=gpucenter-setup \
    -f "$STATE/kueue-webhooks.json" >/dev/null || die "cannot apply Kueue's webhooks"
  for crd in $(kc get crd -o name | grep 'kueue.x-k8s.io$'); do
    wait_for 60 "$crd established" kc wait --for=condition=Established --timeout=5s "$crd"
  done
  echo "$kueue_key" >"$STATE/kueue-manifests.sha256"
  say "applied Kueue's CRDs and webhooks in $(elapsed "$t0")s"
fi

daemon kueue "${BIN[kueue]}/kueue" --kubeconfig="$STATE/kueue.kubeconfig" \
  --config="$STATE/kueue.yaml" --feature-gates=VisibilityOnDemand=false \
  --zap-log-level=info || true
wait_up kueue 120 "kueue /readyz" curl -fsS --max-time 2 "http://127.0.0.1:${KUEUE_HEALTH_PORT}/readyz"
# Ready means its webhooks answer: a server-side dry run goes through them.
kueue_webhook_answers() {
  kc create --dry-run=server -f - <<'EOF'
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: gpucenter-setup-probe
EOF
}
wait_up kueue 60 "kueue webhooks" kueue_webhook_answers
