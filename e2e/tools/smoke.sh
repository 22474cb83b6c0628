#!/usr/bin/env bash
# Hand check of the peers that setup.sh built (not part of CI; the Rust e2e tests are):
#   e2e/tools/smoke.sh
# Starts the control plane in a temp dir, creates a kwok Node, a Deployment the real scheduler places
# on it (kwok marks its pods Running), a PDB with 0 allowed disruptions, checks that an Eviction is
# refused with HTTP 429 and allowed (201) once the PDB permits it; then starts moto_server with
# instance-type validation and checks POST /moto-api/reset. Stops everything it started.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}
# shellcheck disable=SC1091
. "$CACHE/env.sh"
DIR=$(mktemp -d /tmp/cloudoptim-smoke.XXXXXX)
MOTO_PID=
cleanup() {
    "$HERE/control-plane.sh" stop "$DIR" || true
    rm -rf "$DIR"
    [[ -n "$MOTO_PID" ]] && kill "$MOTO_PID" 2>/dev/null || true
}
trap cleanup EXIT
pass=0 fail=0
check() {   # check NAME CMD...
    if "${@:2}"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi
}

"$HERE/control-plane.sh" start "$DIR"
export KUBECONFIG="$DIR/kubeconfig"
# shellcheck disable=SC1091
. "$DIR/env"
TOKEN=$(cat "$DIR/token")
K=$CLOUDOPTIM_KUBECTL
api() { curl -sS --cacert "$DIR/ca.crt" -H "Authorization: Bearer $TOKEN" "$@"; }

check "kubectl get ns with --server/--token" \
    "$K" --kubeconfig=/dev/null --server "$API_SERVER" --token "$TOKEN" --certificate-authority "$DIR/ca.crt" get ns default -o name

"$K" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: smoke-node
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: smoke-node, type: kwok}
status:
  allocatable: {cpu: "4", memory: 16Gi, pods: "110"}
  capacity: {cpu: "4", memory: 16Gi, pods: "110"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
      - {name: app, image: example.invalid/app:1, resources: {requests: {cpu: 100m, memory: 64Mi}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: smoke, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: smoke}}
EOF
check "node Ready (kwok)" "$K" wait --for=condition=Ready node/smoke-node --timeout=30s
check "deployment available (scheduler + kwok)" "$K" rollout status deploy/smoke --timeout=60s
pods_running() {
    [[ $("$K" get pods -l app=smoke -o jsonpath='{range .items[*]}{.status.phase}/{.spec.nodeName} {end}') \
        == "Running/smoke-node Running/smoke-node " ]]
}
pdb_allows() {   # pdb_allows N: wait until the PDB allows N disruptions
    for _ in $(seq 50); do
        [[ $("$K" get pdb smoke -o jsonpath='{.status.disruptionsAllowed}') == "$1" ]] && return 0
        sleep 0.2
    done
    return 1
}
check "pods Running on smoke-node" pods_running
check "PDB allows 0 disruptions" pdb_allows 0
POD=$("$K" get pods -l app=smoke -o jsonpath='{.items[0].metadata.name}')
evict_code() {
    api -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        "$API_SERVER/api/v1/namespaces/default/pods/$POD/eviction" \
        -d "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"$POD\",\"namespace\":\"default\"}}"
}
check "eviction blocked by PDB -> 429" [ "$(evict_code)" = 429 ]
"$K" patch pdb smoke --type=merge -p '{"spec":{"minAvailable":1}}' >/dev/null
check "PDB allows 1 disruption" pdb_allows 1
check "eviction allowed -> 201" [ "$(evict_code)" = 201 ]
check "replacement pod Running" "$K" rollout status deploy/smoke --timeout=60s

# moto
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true "$CLOUDOPTIM_MOTO_SERVER" -H 127.0.0.1 -p "$PORT" >"$DIR/logs/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/moto-api/" 2>/dev/null && break; sleep 0.1; done
moto_reset() { [[ $(curl -sS -X POST "http://127.0.0.1:$PORT/moto-api/reset") == *'"ok"'* ]]; }
check "moto POST /moto-api/reset" moto_reset

echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
