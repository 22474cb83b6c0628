# shellcheck shell=bash
# Sourced by the bench scripts. One build serves every benchmark: a single
# `cargo bench --no-run` invocation compiles, with one feature set (dev-dependencies included, as
# benches need them), the criterion benches, the Karpenter input bench, the e2e benchmark tests and
# target/release/cloudoptim, which those e2e tests start. Running it again is a no-op (cargo sees
# nothing changed), so scripts that call each other do not rebuild. A plain `cargo build --release`
# resolves features without the dev-dependencies (tokio's `test-util`, ...) and would build a second
# copy of the dependency tree; the bench scripts never call it.
#
# CARGO overrides the cargo command (e.g. `CARGO="flock /tmp/cargo.lock cargo"`); do not use a lock
# that the caller of the script already holds.

BENCH_TARGETS=(
    --bench ranking --bench consolidation --bench hub_load --bench karpenter_input
    --test e2e_scale --test e2e_interruptions --test e2e_fleet --test e2e_hibernation
)
declare -A BENCH_EXE=()

# Builds everything once and fills BENCH_EXE[<target name>] with the executables' paths.
bench_build() {
    local json
    json=$(mktemp)
    echo "== ${CARGO:-cargo} bench --locked --no-run ${BENCH_TARGETS[*]}" >&2
    # shellcheck disable=SC2086 # CARGO may be a command with arguments
    if ! ${CARGO:-cargo} bench --locked --no-run --message-format=json-render-diagnostics \
        "${BENCH_TARGETS[@]}" >"$json"; then
        rm -f "$json"
        echo "bench: the build failed" >&2
        return 1
    fi
    local name path
    while IFS=$'\t' read -r name path; do
        BENCH_EXE[$name]=$path
    done < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"] + "\t" + m["executable"])
' "$json")
    rm -f "$json"
    [ -n "${BENCH_EXE[cloudoptim]:-}" ] || {
        echo "bench: the build produced no cloudoptim binary" >&2
        return 1
    }
}

# The e2e environment (kube-apiserver, etcd, kwok, moto) for the e2e benchmarks.
bench_e2e_env() {
    if command -v go >/dev/null 2>&1 && [ -x e2e/tools/setup.sh ]; then e2e/tools/setup.sh >/dev/null; fi
    # shellcheck disable=SC1091
    source "${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/env.sh"
    export CLOUDOPTIM_E2E_REQUIRED=1
}

# Runs one test of an e2e test executable from the shared build: bench_e2e <target> <test> [--ignored].
# libtest prints `test <name> ... ` without a newline before the test's own output; that prefix is cut
# so that every line the test prints starts a line.
bench_e2e() {
    local target=$1 name=$2
    shift 2
    "${BENCH_EXE[$target]}" --exact "$name" --nocapture --test-threads=1 "$@" 2>&1 |
        sed 's/^test [^ ]* \.\.\. //'
}
