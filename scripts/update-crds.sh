#!/usr/bin/env bash
# Regenerate the CRD YAML from the Rust types into crds/ and copy it to both charts (CI fails on drift):
#   charts/cloudoptim/crds/           the same files (helm installs them once, never upgrades them)
#   charts/cloudoptim-crds/templates/ the same files with the annotation helm.sh/resource-policy: keep
#                                     (a chart whose `helm upgrade` upgrades the CRDs)
#
#   scripts/update-crds.sh           regenerate and copy
#   scripts/update-crds.sh --check   only check that both charts hold what crds/ says (no cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

# The crds chart's copy of one CRD: the annotation added under the top-level metadata.
keep() { awk '{ print } /^metadata:$/ { print "  annotations:"; print "    helm.sh/resource-policy: keep" }' "$1"; }

if [[ "${1:-}" == --check ]]; then
    status=0
    if ! diff -r crds charts/cloudoptim/crds; then
        echo "charts/cloudoptim/crds differs from crds/: run scripts/update-crds.sh" >&2
        status=1
    fi
    for f in crds/*.yaml; do
        if ! keep "$f" | diff -u - "charts/cloudoptim-crds/templates/$(basename "$f")"; then
            echo "charts/cloudoptim-crds/templates/$(basename "$f") differs from $f: run scripts/update-crds.sh" >&2
            status=1
        fi
    done
    # No file there that crds/ does not have.
    if ! diff <(cd crds && ls) <(cd charts/cloudoptim-crds/templates && ls); then
        echo "charts/cloudoptim-crds/templates holds other files than crds/: run scripts/update-crds.sh" >&2
        status=1
    fi
    exit "$status"
fi

cargo run -q -- crds --dir crds
rm -f charts/cloudoptim/crds/*.yaml charts/cloudoptim-crds/templates/*.yaml
cp crds/*.yaml charts/cloudoptim/crds/
for f in crds/*.yaml; do
    keep "$f" > "charts/cloudoptim-crds/templates/$(basename "$f")"
done
