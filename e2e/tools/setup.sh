#!/usr/bin/env bash
# Builds (once) and caches the real peers used by CloudOptim's e2e tests:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s/go.mod)
#   etcd (etcd/go.mod), kwok (kwok/go.mod), helm (helm/go.mod)
#   lua-health (lua-health/: Argo CD's Lua interpreter, gopher-lua, running health scripts)
#   crane (crane/go.mod: builds the container image without a daemon, scripts/build-image.sh)
#   actionlint (actionlint/go.mod: lints .github/workflows, scripts/check-image.sh)
#   moto_server (a Python venv), cfn-lint (a Python venv: scripts/check-chart.sh lints the
#   CloudFormation template with it), prometheus + promtool (Debian package, optional)
#
# Everything goes to ${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/<component>-<version>/.
# A warm run only checks that the binaries exist and takes about a second.
#
# Output: writes $CACHE/env.sh and prints the same `export CLOUDOPTIM_...=...` lines as the
# last lines on stdout (progress goes to stderr), so both of these work:
#   eval "$(e2e/tools/setup.sh)"
#   e2e/tools/setup.sh >/dev/null && . "${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/env.sh"
#
# Knobs:
#   CLOUDOPTIM_E2E_CACHE     cache root (default $HOME/.cache/cloudoptim-e2e)
#   CLOUDOPTIM_E2E_REQUIRED  1 = a missing optional peer (prometheus) is an error
#   CLOUDOPTIM_E2E_SKIP      space-separated components not to build: k8s etcd kwok helm lua crane actionlint moto cfnlint
#                            prometheus
#   CLOUDOPTIM_<NAME>        a pre-set path to an executable wins over the cache (e.g. CLOUDOPTIM_ETCD)
#   KUBEBUILDER_ASSETS       a dir holding kube-apiserver / etcd / kubectl is used for those
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}
REQUIRED=${CLOUDOPTIM_E2E_REQUIRED:-0}
SKIP=" ${CLOUDOPTIM_E2E_SKIP:-} "
MOTO_VERSION=5.2.5
MOTO_EXTRAS="server,ec2,autoscaling,sqs,events,sts"
CFN_LINT_VERSION=1.58.0

export GOTOOLCHAIN=local      # never download a Go toolchain
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0          # static binaries, as the upstream release builds; no C toolchain needed
# Build flags shared by every Go build: small, reproducible binaries.
GO_BUILD=(nice -n 10 go build -trimpath)

log() { echo "setup.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

mkdir -p "$CACHE"
# One setup.sh at a time per cache (concurrent test runs would otherwise build twice).
exec 9>"$CACHE/.lock"
flock 9

# --- helpers -------------------------------------------------------------------------------

# gomod_version DIR MODULE: the version of MODULE required by DIR/go.mod.
gomod_version() {
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"
}

# go_build_tool MODDIR PKG OUT LDFLAGS: build PKG (a `tool` of MODDIR/go.mod) to OUT atomically.
go_build_tool() {
    local moddir=$1 pkg=$2 out=$3 ldflags=$4 tmp t0
    if ((NOBUILD)); then log "not building $(basename "$out") (CLOUDOPTIM_E2E_SKIP)"; return 0; fi
    tmp="$out.tmp.$$"
    t0=$(date +%s)
    log "building $(basename "$out") from $pkg (cd $moddir) ..."
    (cd "$moddir" && "${GO_BUILD[@]}" -ldflags="-s -w $ldflags" -o "$tmp" "$pkg") \
        || { rm -f "$tmp"; die "go build $pkg failed"; }
    mv -f "$tmp" "$out"
    echo "$(( $(date +%s) - t0 ))" > "$out.build-seconds"
    log "built $(basename "$out") in $(( $(date +%s) - t0 ))s"
}

# RESOLVED[VAR] = the path exported for VAR.
declare -A RESOLVED=()
preset() {   # preset VAR: succeed (and record) if the user pre-set VAR to an executable (or file)
    local var=$1 val=${!1:-}
    if [[ -n "$val" ]]; then
        if [[ $var == *_STAGES ]]; then
            [[ -f "$val" ]] || die "$var=$val is not a file"
        else
            [[ -x "$val" ]] || die "$var=$val is not an executable"
        fi
        RESOLVED[$var]=$val
        return 0
    fi
    return 1
}
from_kubebuilder() {   # from_kubebuilder VAR NAME
    local f="${KUBEBUILDER_ASSETS:-}/$2"
    if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$f" ]]; then
        RESOLVED[$1]=$f
        log "$1: using $f from KUBEBUILDER_ASSETS"
        return 0
    fi
    return 1
}

# --- Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl -----------
build_k8s() {
    local moddir="$HERE/k8s" ver minor dir ld name var pkg need=()
    ver=$(gomod_version "$moddir" k8s.io/kubernetes)
    [[ -n "$ver" ]] || die "no k8s.io/kubernetes version in $moddir/go.mod"
    dir="$CACHE/kubernetes-$ver/bin"
    local -A vars=([kube-apiserver]=CLOUDOPTIM_KUBE_APISERVER
                   [kube-controller-manager]=CLOUDOPTIM_KUBE_CONTROLLER_MANAGER
                   [kube-scheduler]=CLOUDOPTIM_KUBE_SCHEDULER
                   [kubectl]=CLOUDOPTIM_KUBECTL)
    for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        var=${vars[$name]}
        preset "$var" && continue
        [[ $name == kube-apiserver || $name == kubectl ]] && from_kubebuilder "$var" "$name" && continue
        RESOLVED[$var]="$dir/$name"
        [[ -x "$dir/$name" ]] || need+=("$name")
    done
    if ((${#need[@]})); then
        mkdir -p "$dir"
        minor=${ver#v1.}; minor=${minor%%.*}
        # What hack/lib/version.sh stamps, so /version and `kubectl version` report $ver.
        ld=""
        for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
            ld+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
            ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
        done
        for name in "${need[@]}"; do
            go_build_tool "$moddir" "k8s.io/kubernetes/cmd/$name" "$dir/$name" "$ld"
        done
    fi
}

# --- etcd ------------------------------------------------------------------------------------
build_etcd() {
    preset CLOUDOPTIM_ETCD && return 0
    from_kubebuilder CLOUDOPTIM_ETCD etcd && return 0
    local moddir="$HERE/etcd" ver dir
    ver=$(gomod_version "$moddir" go.etcd.io/etcd/server/v3)
    dir="$CACHE/etcd-$ver/bin"
    RESOLVED[CLOUDOPTIM_ETCD]="$dir/etcd"
    [[ -x "$dir/etcd" ]] && return 0
    mkdir -p "$dir"
    go_build_tool "$moddir" go.etcd.io/etcd/server/v3 "$dir/etcd" ""
}

# --- kwok (the fake-kubelet controller, not kwokctl) -----------------------------------------
build_kwok() {
    local moddir="$HERE/kwok" ver dir
    ver=$(gomod_version "$moddir" sigs.k8s.io/kwok)
    # kwok needs its stages (what kwokctl injects by default); keep a copy beside the binary.
    mkdir -p "$CACHE/kwok-$ver"
    cp "$moddir/stages.yaml" "$CACHE/kwok-$ver/stages.yaml.tmp.$$"
    mv -f "$CACHE/kwok-$ver/stages.yaml.tmp.$$" "$CACHE/kwok-$ver/stages.yaml"
    preset CLOUDOPTIM_KWOK_STAGES || RESOLVED[CLOUDOPTIM_KWOK_STAGES]="$CACHE/kwok-$ver/stages.yaml"
    preset CLOUDOPTIM_KWOK && return 0
    dir="$CACHE/kwok-$ver/bin"
    RESOLVED[CLOUDOPTIM_KWOK]="$dir/kwok"
    [[ -x "$dir/kwok" ]] && return 0
    mkdir -p "$dir"
    go_build_tool "$moddir" sigs.k8s.io/kwok/cmd/kwok "$dir/kwok" \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=${ver#v}"
}

# --- helm ------------------------------------------------------------------------------------
build_helm() {
    preset CLOUDOPTIM_HELM && return 0
    local moddir="$HERE/helm" ver kver kmaj kmin dir ld
    ver=$(gomod_version "$moddir" helm.sh/helm/v3)
    dir="$CACHE/helm-$ver/bin"
    RESOLVED[CLOUDOPTIM_HELM]="$dir/helm"
    [[ -x "$dir/helm" ]] && return 0
    mkdir -p "$dir"
    # As helm's Makefile: version, and the default Kubernetes version from its client-go (v0.X -> 1.X).
    kver=$(gomod_version "$moddir" k8s.io/client-go); kver=${kver#v}
    kmaj=$(( ${kver%%.*} + 1 )); kmin=${kver#*.}; kmin=${kmin%%.*}
    ld="-X helm.sh/helm/v3/internal/version.version=$ver -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmaj -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kmin"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmaj -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kmin"
    go_build_tool "$moddir" helm.sh/helm/v3/cmd/helm "$dir/helm" "$ld"
}

# --- lua-health (Argo CD health scripts under gopher-lua) ------------------------------------
build_lua() {
    preset CLOUDOPTIM_LUA_HEALTH && return 0
    local moddir="$HERE/lua-health" ver sum dir
    ver=$(gomod_version "$moddir" github.com/yuin/gopher-lua)
    # The runner is ours, so its source is part of the cache key, beside gopher-lua's version.
    sum=$(cat "$moddir/go.mod" "$moddir/go.sum" "$moddir/main.go" | sha256sum | cut -c1-12)
    dir="$CACHE/lua-health-$ver-$sum/bin"
    RESOLVED[CLOUDOPTIM_LUA_HEALTH]="$dir/lua-health"
    [[ -x "$dir/lua-health" ]] && return 0
    mkdir -p "$dir"
    go_build_tool "$moddir" . "$dir/lua-health" ""
}

# --- crane (go-containerregistry's registry client: daemonless image assembly) ---------------
build_crane() {
    preset CLOUDOPTIM_CRANE && return 0
    local moddir="$HERE/crane" ver dir
    ver=$(gomod_version "$moddir" github.com/google/go-containerregistry)
    dir="$CACHE/crane-$ver/bin"
    RESOLVED[CLOUDOPTIM_CRANE]="$dir/crane"
    [[ -x "$dir/crane" ]] && return 0
    mkdir -p "$dir"
    # `crane version` reads the module version from the build info; nothing to stamp.
    go_build_tool "$moddir" github.com/google/go-containerregistry/cmd/crane "$dir/crane" ""
}

# --- actionlint (GitHub Actions workflow linter) ---------------------------------------------
build_actionlint() {
    preset CLOUDOPTIM_ACTIONLINT && return 0
    local moddir="$HERE/actionlint" ver dir
    ver=$(gomod_version "$moddir" github.com/rhysd/actionlint)
    dir="$CACHE/actionlint-$ver/bin"
    RESOLVED[CLOUDOPTIM_ACTIONLINT]="$dir/actionlint"
    [[ -x "$dir/actionlint" ]] && return 0
    mkdir -p "$dir"
    go_build_tool "$moddir" github.com/rhysd/actionlint/cmd/actionlint "$dir/actionlint" ""
}

# --- moto (AWS fake) -------------------------------------------------------------------------
build_moto() {
    preset CLOUDOPTIM_MOTO_SERVER && return 0
    local dir="$CACHE/moto-$MOTO_VERSION" py t0
    RESOLVED[CLOUDOPTIM_MOTO_SERVER]="$dir/venv/bin/moto_server"
    [[ -f "$dir/.complete" && -x "$dir/venv/bin/moto_server" ]] && return 0
    if ((NOBUILD)); then log "not installing moto (CLOUDOPTIM_E2E_SKIP)"; return 0; fi
    t0=$(date +%s)
    py=$(command -v python3) || die "python3 not found (needed for moto)"
    log "creating moto $MOTO_VERSION venv in $dir/venv ..."
    rm -rf "$dir/venv" "$dir/.complete"
    mkdir -p "$dir"
    "$py" -m venv "$dir/venv"
    nice -n 10 "$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
        "moto[$MOTO_EXTRAS]==$MOTO_VERSION" >&2 || die "pip install moto failed"
    "$dir/venv/bin/moto_server" --help >/dev/null || die "moto_server does not run"
    echo "$(( $(date +%s) - t0 ))" > "$dir/build-seconds"
    touch "$dir/.complete"
    log "moto venv ready in $(( $(date +%s) - t0 ))s"
}

# --- cfn-lint (CloudFormation linter for deploy/cloudformation) -----------------------------
build_cfnlint() {
    preset CLOUDOPTIM_CFN_LINT && return 0
    local dir="$CACHE/cfn-lint-$CFN_LINT_VERSION" py t0
    RESOLVED[CLOUDOPTIM_CFN_LINT]="$dir/venv/bin/cfn-lint"
    [[ -f "$dir/.complete" && -x "$dir/venv/bin/cfn-lint" ]] && return 0
    if ((NOBUILD)); then log "not installing cfn-lint (CLOUDOPTIM_E2E_SKIP)"; return 0; fi
    t0=$(date +%s)
    py=$(command -v python3) || die "python3 not found (needed for cfn-lint)"
    log "creating cfn-lint $CFN_LINT_VERSION venv in $dir/venv ..."
    rm -rf "$dir/venv" "$dir/.complete"
    mkdir -p "$dir"
    "$py" -m venv "$dir/venv"
    nice -n 10 "$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
        "cfn-lint==$CFN_LINT_VERSION" >&2 || die "pip install cfn-lint failed"
    "$dir/venv/bin/cfn-lint" --version >/dev/null || die "cfn-lint does not run"
    touch "$dir/.complete"
    log "cfn-lint venv ready in $(( $(date +%s) - t0 ))s"
}

# --- prometheus + promtool (optional; Debian package) ----------------------------------------
build_prometheus() {
    local p t
    preset CLOUDOPTIM_PROMETHEUS && p=1 || p=0
    preset CLOUDOPTIM_PROMTOOL && t=1 || t=0
    ((p && t)) && return 0
    if ((NOBUILD)); then
        log "not installing prometheus (CLOUDOPTIM_E2E_SKIP)"
    elif ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            log "installing Debian package prometheus ..."
            { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2 \
                || log "WARNING: apt-get install prometheus failed"
        else
            log "WARNING: prometheus not installed and cannot apt-get install it (not root or no apt-get)"
        fi
    fi
    ((p)) || { command -v prometheus >/dev/null && RESOLVED[CLOUDOPTIM_PROMETHEUS]=$(command -v prometheus); } || true
    ((t)) || { command -v promtool >/dev/null && RESOLVED[CLOUDOPTIM_PROMTOOL]=$(command -v promtool); } || true
    if ((!NOBUILD)) && [[ -z "${RESOLVED[CLOUDOPTIM_PROMETHEUS]:-}" || -z "${RESOLVED[CLOUDOPTIM_PROMTOOL]:-}" ]]; then
        [[ "$REQUIRED" == 1 ]] && die "prometheus/promtool unavailable and CLOUDOPTIM_E2E_REQUIRED=1"
        log "WARNING: prometheus/promtool unavailable; the tests that need them will skip"
    fi
}

# --- main ------------------------------------------------------------------------------------
T0=$(date +%s)
# A skipped component is not built, but an already cached copy is still exported.
for comp in k8s etcd kwok helm lua crane actionlint moto cfnlint prometheus; do
    NOBUILD=0
    skipped "$comp" && NOBUILD=1
    if ((!NOBUILD)) && [[ $comp != moto && $comp != cfnlint && $comp != prometheus ]]; then
        command -v go >/dev/null || die "go not found in PATH (needed to build $comp)"
    fi
    "build_$comp"
done

ENV_FILE="$CACHE/env.sh"
{
    echo "# written by e2e/tools/setup.sh"
    for var in CLOUDOPTIM_KUBE_APISERVER CLOUDOPTIM_KUBE_CONTROLLER_MANAGER CLOUDOPTIM_KUBE_SCHEDULER \
               CLOUDOPTIM_KUBECTL CLOUDOPTIM_ETCD CLOUDOPTIM_KWOK CLOUDOPTIM_KWOK_STAGES CLOUDOPTIM_HELM \
               CLOUDOPTIM_LUA_HEALTH CLOUDOPTIM_CRANE CLOUDOPTIM_ACTIONLINT CLOUDOPTIM_MOTO_SERVER CLOUDOPTIM_CFN_LINT CLOUDOPTIM_PROMETHEUS CLOUDOPTIM_PROMTOOL; do
        [[ -n "${RESOLVED[$var]:-}" && -e "${RESOLVED[$var]}" ]] && printf 'export %s=%q\n' "$var" "${RESOLVED[$var]}"
    done
    printf 'export %s=%q\n' CLOUDOPTIM_E2E_CACHE "$CACHE"
} > "$ENV_FILE.tmp.$$"
mv -f "$ENV_FILE.tmp.$$" "$ENV_FILE"
log "done in $(( $(date +%s) - T0 ))s; wrote $ENV_FILE"
cat "$ENV_FILE"
