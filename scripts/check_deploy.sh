#!/usr/bin/env bash
# Renders every Kustomize target under deploy/k8s with `kubectl kustomize` and validates the
# manifests against the Kubernetes API schemas (`kubernetes-validate --strict`, from PyPI),
# and parses the Compose and Prometheus files as YAML. Needs kubectl and
# `pip install kubernetes-validate`; give the Python that has it as $PYTHON.
# The stream lists (streams.json) are checked by `cargo test --test http_api`.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
for target in deploy/k8s/base deploy/k8s/overlays/*/; do
  echo "== ${target%/}"
  kubectl kustomize "$target" >"$rendered"
  "$python" -m kubernetes_validate --strict --quiet "$rendered"
  echo "   $(grep -c '^kind:' "$rendered") resources valid"
done
"$python" - <<'PY'
import yaml
for path in ["deploy/compose/docker-compose.yml", "deploy/compose/prometheus.yml"]:
    yaml.safe_load(open(path))
    print(f"== {path}: YAML parses")
PY
