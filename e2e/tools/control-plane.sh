#!/usr/bin/env bash
# Starts / stops a real, throw-away Kubernetes control plane on loopback for the e2e tests:
#   etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (fake nodes).
#
#   e2e/tools/control-plane.sh start DIR   # blocks until everything is ready, then returns
#   e2e/tools/control-plane.sh stop DIR    # stops what `start DIR` started, keeps DIR
#
# After `start`, DIR holds:
#   kubeconfig   admin kubeconfig (server https://127.0.0.1:PORT, CA data inlined, bearer token)
#   token        the admin bearer token (user "e2e-admin", group system:masters)
#   ca.crt       CA that signed the API server's serving cert
#   env          shell-sourceable ports/URLs: API_SERVER, ETCD_URL, *_PORT ...
#   pids/*.pid   one per process;   logs/*.log   one per process, and logs/audit.log (API writes; every request of e2e-operator)
#   pki/ tokens.csv *.kubeconfig etcd/ kwok.yaml   (internals)
# Binaries come from the CLOUDOPTIM_* variables, else from the env.sh that setup.sh writes.
# Knobs: CLOUDOPTIM_E2E_COMPONENTS (default "etcd apiserver controller-manager scheduler kwok";
# a subset such as "etcd apiserver" starts only those), CLOUDOPTIM_E2E_READY_TIMEOUT (s, default 90).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}
COMPONENTS=" ${CLOUDOPTIM_E2E_COMPONENTS:-etcd apiserver controller-manager scheduler kwok} "
TIMEOUT=${CLOUDOPTIM_E2E_READY_TIMEOUT:-90}
SERVICE_CIDR=10.0.0.0/24      # first IP 10.0.0.1 = kubernetes.default; never routed, only stored
POD_CIDR=10.244.0.0/16        # kwok hands out pod IPs from here (status only, no traffic)

log() { echo "control-plane.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { [[ "$COMPONENTS" == *" $1 "* ]]; }

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# == 2 ]] || usage
CMD=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)

binaries() {
    if [[ -z "${CLOUDOPTIM_KUBE_APISERVER:-}" || -z "${CLOUDOPTIM_ETCD:-}" ]]; then
        [[ -f "$CACHE/env.sh" ]] || die "run e2e/tools/setup.sh first (no $CACHE/env.sh)"
        # Pre-set variables win over env.sh.
        local saved; saved=$(export -p | grep ' CLOUDOPTIM_' || true)
        # shellcheck disable=SC1091
        . "$CACHE/env.sh"
        eval "$saved"
    fi
    ETCD=${CLOUDOPTIM_ETCD:?}; APISERVER=${CLOUDOPTIM_KUBE_APISERVER:?}
    KCM=${CLOUDOPTIM_KUBE_CONTROLLER_MANAGER:-}; SCHED=${CLOUDOPTIM_KUBE_SCHEDULER:-}
    KWOK=${CLOUDOPTIM_KWOK:-}
    KWOK_STAGES=${CLOUDOPTIM_KWOK_STAGES:-$HERE/kwok/stages.yaml}
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_bg NAME CMD...: run CMD in its own process group, log to logs/NAME.log, pid to pids/NAME.pid.
start_bg() {
    local name=$1; shift
    printf '%q ' "$@" > "$DIR/logs/$name.cmdline"; echo >> "$DIR/logs/$name.cmdline"
    setsid "$@" > "$DIR/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$DIR/pids/$name.pid"
}

alive() { kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

# wait_for NAME CMD...: poll CMD every 0.1 s until it succeeds; die if process NAME exits or on timeout.
wait_for() {
    local name=$1 deadline=$(( $(date +%s) + TIMEOUT )); shift
    until "$@" >/dev/null 2>&1; do
        alive "$name" || { tail -n 30 "$DIR/logs/$name.log" >&2; die "$name exited"; }
        (( $(date +%s) < deadline )) || { tail -n 30 "$DIR/logs/$name.log" >&2; die "$name not ready after ${TIMEOUT}s"; }
        sleep 0.1
    done
}

now_ms() { date +%s%3N; }
rand_token() { openssl rand -hex 24; }

gen_pki() {
    local p="$DIR/pki"
    mkdir -p "$p"
    [[ -f "$p/.complete" ]] && return 0
    (
        cd "$p"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=cloudoptim-e2e-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver" 2>/dev/null
        printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
            > apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
        # Service-account token signing key pair.
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        touch .complete
    )
    cp "$p/ca.crt" "$DIR/ca.crt"
}

# write_kubeconfig FILE USER TOKEN
write_kubeconfig() {
    local ca; ca=$(base64 -w0 < "$DIR/pki/ca.crt")
    cat > "$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: e2e
  context:
    cluster: e2e
    user: $2
    namespace: default
current-context: e2e
EOF
    mv "$1.tmp" "$1"
}

do_start() {
    binaries
    mkdir -p "$DIR/pids" "$DIR/logs"
    for f in "$DIR"/pids/*.pid; do
        [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && die "already running in $DIR (stop it first)"
    done
    rm -f "$DIR"/pids/*.pid
    local t0 te; t0=$(now_ms)
    gen_pki
    log "pki ready ($(( $(now_ms) - t0 )) ms)"

    ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); API_PORT=$(free_port)
    KCM_PORT=$(free_port); SCHED_PORT=$(free_port); KWOK_PORT=$(free_port)
    ADMIN_TOKEN=$(rand_token); KCM_TOKEN=$(rand_token); SCHED_TOKEN=$(rand_token); KWOK_TOKEN=$(rand_token)
    OPERATOR_TOKEN=$(rand_token)
    # token,user,uid,"group1,group2"  (static token file; RBAC: system:masters is cluster-admin)
    cat > "$DIR/tokens.csv" <<EOF
$ADMIN_TOKEN,e2e-admin,e2e-admin,"system:masters"
$KCM_TOKEN,system:kube-controller-manager,kcm,"system:masters"
$SCHED_TOKEN,system:kube-scheduler,scheduler,"system:masters"
$KWOK_TOKEN,kwok-controller,kwok,"system:masters"
$OPERATOR_TOKEN,e2e-operator,e2e-operator,"e2e:operators"
EOF
    chmod 600 "$DIR/tokens.csv"
    write_kubeconfig "$DIR/kubeconfig" e2e-admin "$ADMIN_TOKEN"
    write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager "$KCM_TOKEN"
    write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler "$SCHED_TOKEN"
    write_kubeconfig "$DIR/kwok.kubeconfig" kwok-controller "$KWOK_TOKEN"
    # e2e-operator may only impersonate (granted by the tests): operators run as the chart's
    # ServiceAccount through it, so the chart's RBAC decides, and the audit log shows every request.
    write_kubeconfig "$DIR/operator.kubeconfig" e2e-operator "$OPERATOR_TOKEN"
    echo -n "$ADMIN_TOKEN" > "$DIR/token"
    cat > "$DIR/env" <<EOF
API_SERVER=https://127.0.0.1:$API_PORT
API_PORT=$API_PORT
ETCD_URL=http://127.0.0.1:$ETCD_PORT
ETCD_PORT=$ETCD_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
KUBECONFIG=$DIR/kubeconfig
EOF
    local curl_api=(curl -fsS --max-time 2 --cacert "$DIR/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN")

    # --- etcd ---
    rm -rf "$DIR/etcd"
    te=$(now_ms)
    start_bg etcd "$ETCD" \
        --name=e2e \
        --data-dir="$DIR/etcd" \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync=true \
        --log-level=warn
    wait_for etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
    log "etcd ready ($(( $(now_ms) - te )) ms after start)"

    # --- kube-apiserver ---
    # Audit log of every write (who, which user agent, when): the e2e tests read it as an outside
    # observer, e.g. to prove a fenced replica wrote nothing after losing the lease.
    cat > "$DIR/audit-policy.yaml" <<'EOF_AUDIT'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [e2e-operator]
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
EOF_AUDIT
    local ta; ta=$(now_ms)
    start_bg kube-apiserver "$APISERVER" \
        --audit-policy-file="$DIR/audit-policy.yaml" \
        --audit-log-path="$DIR/logs/audit.log" \
        --audit-log-maxsize=200 \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$API_PORT" \
        --tls-cert-file="$DIR/pki/apiserver.crt" \
        --tls-private-key-file="$DIR/pki/apiserver.key" \
        --client-ca-file="$DIR/pki/ca.crt" \
        --requestheader-client-ca-file="$DIR/pki/ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --token-auth-file="$DIR/tokens.csv" \
        --authorization-mode=RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$DIR/pki/sa.pub" \
        --service-account-signing-key-file="$DIR/pki/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --allow-privileged=true \
        --endpoint-reconciler-type=none \
        --profiling=false \
        --cert-dir="$DIR/pki/apiserver-generated" \
        --v=1
    wait_for kube-apiserver "${curl_api[@]}" "https://127.0.0.1:$API_PORT/readyz"
    log "kube-apiserver ready ($(( $(now_ms) - ta )) ms after start)"
    echo "$(( $(now_ms) - ta ))" > "$DIR/logs/apiserver-ready-ms"

    # --- kube-controller-manager ---
    if want controller-manager; then
        [[ -x "$KCM" ]] || die "CLOUDOPTIM_KUBE_CONTROLLER_MANAGER not set"
        start_bg kube-controller-manager "$KCM" \
            --kubeconfig="$DIR/controller-manager.kubeconfig" \
            --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
            --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
            --bind-address=127.0.0.1 \
            --secure-port="$KCM_PORT" \
            --cert-dir="$DIR/pki/kcm-generated" \
            --leader-elect=false \
            --service-account-private-key-file="$DIR/pki/sa.key" \
            --root-ca-file="$DIR/pki/ca.crt" \
            --cluster-name=e2e \
            --profiling=false \
            --v=1
    fi
    # --- kube-scheduler ---
    if want scheduler; then
        [[ -x "$SCHED" ]] || die "CLOUDOPTIM_KUBE_SCHEDULER not set"
        start_bg kube-scheduler "$SCHED" \
            --kubeconfig="$DIR/scheduler.kubeconfig" \
            --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
            --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
            --bind-address=127.0.0.1 \
            --secure-port="$SCHED_PORT" \
            --cert-dir="$DIR/pki/scheduler-generated" \
            --leader-elect=false \
            --profiling=false \
            --v=1
    fi
    # --- kwok: plays kubelet for Nodes annotated kwok.x-k8s.io/node=fake ---
    if want kwok; then
        [[ -x "$KWOK" ]] || die "CLOUDOPTIM_KWOK not set"
        start_bg kwok "$KWOK" \
            --kubeconfig="$DIR/kwok.kubeconfig" \
            --config="$KWOK_STAGES" \
            --manage-all-nodes=false \
            --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
            --manage-nodes-with-label-selector= \
            --node-lease-duration-seconds=40 \
            --cidr="$POD_CIDR" \
            --node-ip=10.1.0.1 \
            --server-address="127.0.0.1:$KWOK_PORT"
    fi
    want controller-manager && wait_for kube-controller-manager curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
    want scheduler && wait_for kube-scheduler curl -fsSk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"
    want kwok && wait_for kwok curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
    # Pods can only be created once the controller-manager made the namespace's default ServiceAccount.
    want controller-manager && wait_for kube-controller-manager \
        "${curl_api[@]}" "https://127.0.0.1:$API_PORT/api/v1/namespaces/default/serviceaccounts/default"
    log "control plane ready in $(( $(now_ms) - t0 )) ms: KUBECONFIG=$DIR/kubeconfig"
    echo "$(( $(now_ms) - t0 ))" > "$DIR/logs/all-ready-ms"
}

do_stop() {
    local order=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd) name pid i
    for name in "${order[@]}"; do
        [[ -f "$DIR/pids/$name.pid" ]] || continue
        pid=$(cat "$DIR/pids/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && { log "$name did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; }
        fi
        rm -f "$DIR/pids/$name.pid"
    done
    log "stopped ($DIR kept)"
}

start_with_retry() {
    # Free ports are picked before the servers bind them; if another process took one meanwhile,
    # start over with new ports (up to 3 times).
    local attempt rc
    for attempt in 1 2 3; do
        # Not `if (do_start)`: set -e would be off inside a condition.
        set +e; (set -e; do_start); rc=$?; set -e
        ((rc == 0)) && return 0
        if grep -qs 'address already in use' "$DIR"/logs/*.log && ((attempt < 3)); then
            log "a port was taken meanwhile; retrying with new ports"
            do_stop
            continue
        fi
        do_stop
        return 1
    done
}

case "$CMD" in
    start) start_with_retry ;;
    stop) do_stop ;;
    *) usage ;;
esac
