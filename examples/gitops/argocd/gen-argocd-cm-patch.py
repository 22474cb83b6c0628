#!/usr/bin/env python3
"""Write argocd-cm-patch.yaml from health/<Kind>.lua (run after editing a script;
scripts/check-observability.sh fails when the patch and the scripts differ)."""
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ["NodeTemplate", "OptimizationPolicy", "HibernationSchedule", "SpotRiskFlag"]

out = [
    "# Argo CD health checks for CloudOptim's custom resources. Merge into the argocd-cm ConfigMap:",
    "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file examples/gitops/argocd/argocd-cm-patch.yaml",
    "# or, with the argo-cd Helm chart, put the same keys under configs.cm.",
    "# Generated from health/<Kind>.lua by gen-argocd-cm-patch.py; tested with gopher-lua (the interpreter",
    "# Argo CD runs) by scripts/check-observability.sh against health/testdata/<Kind>/health_test.yaml.",
    "apiVersion: v1",
    "kind: ConfigMap",
    "metadata:",
    "  name: argocd-cm",
    "  namespace: argocd",
    "data:",
]
for kind in KINDS:
    out.append(f"  resource.customizations.health.cloudoptim.io_{kind}: |")
    for line in (HERE / "health" / f"{kind}.lua").read_text().splitlines():
        out.append(("    " + line).rstrip())
(HERE / "argocd-cm-patch.yaml").write_text("\n".join(out) + "\n")
