#!/usr/bin/env bash
# Regenerates k8s/go.mod + k8s/go.sum for another Kubernetes release:
#   e2e/tools/gen-k8s-gomod.sh v1.36.3
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
# replaces them with ./staging/... paths that are not part of the published module, so a module that
# depends on it must replace every staging module with the published v0.X.Y tag. The list is taken from
# k8s.io/kubernetes's own go.mod, which `go mod download -json` puts in the module cache.
set -euo pipefail
VER=${1:?usage: $0 v1.X.Y}
[[ "$VER" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "not a v1.X.Y version: $VER" >&2; exit 2; }
STAGING_VER="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=local

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
GOMOD=$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@$VER" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$GOMOD" ]] || { echo "could not download k8s.io/kubernetes@$VER" >&2; exit 1; }
GO_DIRECTIVE=$(awk '$1 == "go" { print $2; exit }' "$GOMOD")
STAGING=$(sed -n '/^replace (/,/^)/p' "$GOMOD" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }')
[[ -n "$STAGING" ]] || { echo "no staging replaces found in $GOMOD" >&2; exit 1; }

{
    echo "// Pins the Kubernetes control-plane commands built by ../setup.sh for the e2e tests."
    echo "// Regenerate for another version with ../gen-k8s-gomod.sh vX.Y.Z."
    echo "module cloudoptim.local/e2e/k8s"
    echo
    echo "go $GO_DIRECTIVE"
    echo
    echo "require k8s.io/kubernetes $VER"
    echo
    echo "tool ("
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        echo "	k8s.io/kubernetes/cmd/$c"
    done
    echo ")"
    echo
    echo "// Every staging module of k8s.io/kubernetes $VER, pinned to its published tag."
    echo "replace ("
    for m in $STAGING; do echo "	$m => $m $STAGING_VER"; done
    echo ")"
} > "$HERE/k8s/go.mod"
rm -f "$HERE/k8s/go.sum"
(cd "$HERE/k8s" && nice -n 10 go mod tidy)
echo "k8s/go.mod now pins k8s.io/kubernetes $VER (staging modules $STAGING_VER)" >&2
