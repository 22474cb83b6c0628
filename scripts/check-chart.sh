#!/usr/bin/env bash
# Static checks of what ships besides the binary: both Helm charts and the CloudFormation template.
# scripts/test.sh runs it after the cargo tests; it needs helm and cfn-lint from e2e/tools/setup.sh.
#
#   1. helm lint charts/cloudoptim with no values file (the defaults are valid)
#   2. values.schema.json rejects bad values, naming the field: replicas "two", mode foo, dryRun "yes",
#      an unknown top-level key, a misspelt key under image, a malformed image.digest
#   3. helm template of the defaults: the same objects with the same names as before, standard labels
#      on every object; of ci/all-options-values.yaml: every optional value landed where it should
#   4. helm lint/template of charts/cloudoptim-crds: the four CRDs, each kept on uninstall; both charts
#      hold crds/ (scripts/update-crds.sh --check); the two charts have the same version
#   5. cfn-lint deploy/cloudformation/cloudoptim.yaml, and scripts/check-cfn-policy.py (the stack's
#      policy equals iam-policy.json, trust, one rule per message kind the intake reads, queue policy)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck disable=SC1091
[[ -n "${CLOUDOPTIM_HELM:-}" && -n "${CLOUDOPTIM_CFN_LINT:-}" ]] ||
    . "${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/env.sh"
HELM=${CLOUDOPTIM_HELM:?helm not found: run e2e/tools/setup.sh}
CFN_LINT=${CLOUDOPTIM_CFN_LINT:?cfn-lint not found: run e2e/tools/setup.sh}
# The cfn-lint venv's python has PyYAML.
PY="$(dirname "$CFN_LINT")/python"
export HELM_CACHE_HOME=${TMPDIR:-/tmp}/cloudoptim-helm-cache HELM_CONFIG_HOME=${TMPDIR:-/tmp}/cloudoptim-helm-config
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }

# 1. Defaults lint.
if "$HELM" lint charts/cloudoptim >"$work/lint" 2>&1; then
    ok "helm lint charts/cloudoptim (no values)"
else
    bad "helm lint charts/cloudoptim (no values):"; cat "$work/lint" >&2
fi

# 2. Bad values fail, and the message names the field.
bad_value() {   # bad_value WHAT EXPECTED-IN-MESSAGE HELM-ARGS...
    local what=$1 expected=$2
    shift 2
    if "$HELM" lint charts/cloudoptim --set clusterName=prod --set region=eu-west-1 "$@" >"$work/bad" 2>&1; then
        bad "$what: helm lint accepted it"
    elif grep -qF -- "$expected" "$work/bad"; then
        ok "$what: refused ($(grep -F -- "$expected" "$work/bad" | head -1 | sed 's/^[- ]*//'))"
    else
        bad "$what: refused without naming $expected:"; cat "$work/bad" >&2
    fi
}
bad_value 'replicas: "two"' "'/replicas'" --set replicas=two
bad_value "mode: foo" "'/mode'" --set mode=foo
bad_value 'dryRun: "yes"' "'/dryRun'" --set dryRun=yes
bad_value "unknown top-level key" "'replica'" --set replica=3
bad_value "misspelt image key" "'tga'" --set image.tga=v1
bad_value "malformed image.digest" "'/image/digest'" --set image.digest=latest

# 3. Renders.
"$HELM" template cloudoptim charts/cloudoptim --namespace platform \
    --set clusterName=prod --set region=eu-west-1 >"$work/default.yaml"
"$HELM" template cloudoptim charts/cloudoptim --namespace platform \
    -f charts/cloudoptim/ci/all-options-values.yaml >"$work/all.yaml"
if "$PY" - "$work/default.yaml" "$work/all.yaml" charts/cloudoptim/ci/all-options-values.yaml <<'EOF'
import sys, yaml
default = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
everything = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
values = yaml.safe_load(open(sys.argv[3]))
errors = []
def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, file=sys.stdout if cond else sys.stderr)
    if not cond:
        errors.append(what)

# The default render's objects and names, as the other tests know them.
expected = {("ServiceAccount", "cloudoptim"), ("ClusterRole", "cloudoptim"),
            ("ClusterRoleBinding", "cloudoptim"), ("Role", "cloudoptim-leader-election"),
            ("RoleBinding", "cloudoptim-leader-election"), ("Service", "cloudoptim"),
            ("Deployment", "cloudoptim"), ("PodDisruptionBudget", "cloudoptim"),
            ("ValidatingAdmissionPolicy", "cloudoptim-workload-guard"),
            ("ValidatingAdmissionPolicyBinding", "cloudoptim-workload-guard"),
            ("ValidatingAdmissionPolicy", "cloudoptim-cronjob-guard"),
            ("ValidatingAdmissionPolicyBinding", "cloudoptim-cronjob-guard")}
got = {(o["kind"], o["metadata"]["name"]) for o in default}
check(got == expected, f"default render: the same {len(expected)} objects and names (got {sorted(got - expected)} extra, {sorted(expected - got)} missing)")
standard = {"app.kubernetes.io/name": "cloudoptim", "app.kubernetes.io/instance": "cloudoptim",
            "app.kubernetes.io/version": "0.1.0", "app.kubernetes.io/managed-by": "Helm",
            "helm.sh/chart": "cloudoptim-0.1.0"}
for name, objects in [("default", default), ("all-options", everything)]:
    missing = [f'{o["kind"]}/{o["metadata"]["name"]}' for o in objects
               if any(o["metadata"].get("labels", {}).get(k) != v for k, v in standard.items())]
    check(not missing, f"{name} render: standard labels on every object {missing or ''}")
d = next(o for o in default if o["kind"] == "Deployment")["spec"]["template"]
check(all(d["metadata"]["labels"].get(k) == v for k, v in standard.items()), "default render: standard labels on the pods")
check(d["spec"]["containers"][0]["image"] == "ghcr.io/cloudoptim/cloudoptim:0.1.0", "default image repository:appVersion")

by_kind = {o["kind"]: o for o in everything}
pod = by_kind["Deployment"]["spec"]["template"]
spec, c = pod["spec"], pod["spec"]["containers"][0]
check(c["image"] == f'{values["image"]["repository"]}@{values["image"]["digest"]}', f'image.digest wins over the tag: {c["image"]}')
check(spec.get("imagePullSecrets") == values["imagePullSecrets"], "imagePullSecrets")
check(pod["metadata"]["annotations"] == {"cloudoptim.io/do-not-disrupt": "true", **values["podAnnotations"]}, "podAnnotations (do-not-disrupt kept)")
check(all(pod["metadata"]["labels"].get(k) == v for k, v in {**values["podLabels"], **standard}.items()), "podLabels (standard labels kept)")
check(c["args"][-len(values["extraArgs"]):] == values["extraArgs"] and "--leader-elect" in c["args"], "extraArgs appended to the chart's args")
check(c["env"][-len(values["extraEnv"]):] == values["extraEnv"], "extraEnv appended")
check({"name": "CLOUDOPTIM_SPOT_ADVISOR_URL", "value": values["aws"]["spotAdvisorUrl"]} in c["env"], "aws.spotAdvisorUrl -> CLOUDOPTIM_SPOT_ADVISOR_URL")
check(spec["volumes"] == values["extraVolumes"] and c["volumeMounts"] == values["extraVolumeMounts"], "extraVolumes/extraVolumeMounts")
for key in ["nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"]:
    check(spec.get(key) == values[key], key)
check(by_kind["ServiceAccount"]["metadata"]["annotations"] == values["serviceAccount"]["annotations"], "serviceAccount.annotations")
for kind, key in [("ServiceMonitor", "serviceMonitor"), ("PodMonitor", "podMonitor")]:
    o = by_kind.get(kind)
    check(o is not None and o["metadata"]["labels"].get("release") == "kube-prometheus-stack", f"metrics.{key}.enabled + additionalLabels")
check(by_kind["PodMonitor"]["spec"]["podMetricsEndpoints"][0] == {"port": "metrics", "interval": "15s"}, "podMonitor scrapes the metrics port")
sys.exit(1 if errors else 0)
EOF
then ok "renders (default and ci/all-options-values.yaml)"; else bad "renders"; fi

# 4. The CRDs chart.
if "$HELM" lint charts/cloudoptim-crds >"$work/lint" 2>&1; then
    ok "helm lint charts/cloudoptim-crds"
else
    bad "helm lint charts/cloudoptim-crds:"; cat "$work/lint" >&2
fi
"$HELM" template cloudoptim-crds charts/cloudoptim-crds >"$work/crds.yaml"
n=$(grep -c '^kind: CustomResourceDefinition' "$work/crds.yaml" || true)
k=$(grep -c 'helm.sh/resource-policy: keep' "$work/crds.yaml" || true)
want=$(find crds -name '*.yaml' | wc -l)
if [[ $n == "$want" && $k == "$want" ]]; then ok "charts/cloudoptim-crds renders the $want CRDs, each with resource-policy keep"
else bad "charts/cloudoptim-crds renders $n CRDs ($k kept), want $want"; fi
if scripts/update-crds.sh --check; then ok "both charts hold crds/ (scripts/update-crds.sh --check)"
else bad "the charts' CRDs differ from crds/"; fi
v1=$(awk '$1 == "version:" { print $2 }' charts/cloudoptim/Chart.yaml)
v2=$(awk '$1 == "version:" { print $2 }' charts/cloudoptim-crds/Chart.yaml)
if [[ "$v1" == "$v2" ]]; then ok "charts/cloudoptim and charts/cloudoptim-crds are both version $v1"
else bad "chart versions differ: cloudoptim $v1, cloudoptim-crds $v2"; fi

# 5. CloudFormation.
if "$CFN_LINT" deploy/cloudformation/cloudoptim.yaml; then ok "cfn-lint deploy/cloudformation/cloudoptim.yaml"
else bad "cfn-lint deploy/cloudformation/cloudoptim.yaml"; fi
if "$PY" scripts/check-cfn-policy.py; then ok "scripts/check-cfn-policy.py"
else bad "scripts/check-cfn-policy.py"; fi

echo "check-chart: $passed passed, $failed failed"
[[ $failed == 0 ]]
