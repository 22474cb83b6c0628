#!/usr/bin/env bash
# Runs every benchmark and prints each DESIGN.md section 11 target with the figure measured in this
# run and their ratio; exits 1 when a target is missed or a benchmark fails. Ratios are only ever
# taken between a target and a figure of this run, or between two figures of this run (Karpenter and
# CloudOptim on one input); a figure measured elsewhere is shown for context only, marked so.
#
#   bench/run.sh                          # everything: about 13 min on 2 cores with KARPENTER_PODS=5000,
#                                         # about 25 min more at the default 20,000 (Karpenter ~1 min/Solve)
#   bench/run.sh consolidation ranking    # some of: consolidation ranking hub karpenter interruptions
#                                         #          fleet hibernation scale
#   KARPENTER_PODS=5000 CLOUDOPTIM_SCALE_NODES=2000 bench/run.sh
#
# One build (bench/lib.sh): a single `cargo bench --no-run` compiles the criterion benches, the
# Karpenter input bench, the e2e benchmark tests and target/release/cloudoptim with one feature set;
# the e2e benchmarks (interruptions, fleet, hibernation, scale) start that release operator binary.
# On a shared machine run the whole script under the build lock (`flock /tmp/cargo-build.lock
# bench/run.sh`) so that no compile competes with the measurements.
#
# Ratio: target/measured for upper bounds (time, memory), measured/target for lower bounds
# (throughput); >= 1 means the target is met.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=bench/lib.sh
source bench/lib.sh

all=(consolidation ranking hub karpenter interruptions fleet hibernation scale)
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${all[@]}")
wants() {
    local s
    for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
rows=$logs/rows
: >"$rows"
status=0
scale_nodes=${CLOUDOPTIM_SCALE_NODES:-5000}
scale_pods_per_node=${CLOUDOPTIM_SCALE_PODS_PER_NODE:-20}
export CLOUDOPTIM_SCALE_NODES=$scale_nodes CLOUDOPTIM_SCALE_PODS_PER_NODE=$scale_pods_per_node

# row <measure> <op: < <= >=> <target> <unit> <measured or empty> [note]
row() {
    local name=$1 op=$2 target=$3 unit=$4 measured=$5 note=${6:-}
    if [ -z "$measured" ]; then
        printf '%s\t%s %s %s\t%s\t%s\t%s\t%s\n' "$name" "$op" "$target" "$unit" "(no figure)" "-" "FAILED" "$note" >>"$rows"
        status=1
        return
    fi
    local ratio verdict
    read -r ratio verdict < <(awk -v op="$op" -v t="$target" -v m="$measured" 'BEGIN {
        if (op == ">=") { r = (t > 0) ? m / t : 0; ok = (m >= t) }
        else { r = (m > 0) ? t / m : 1e9; ok = (op == "<") ? (m < t) : (m <= t) }
        printf "%.2fx %s\n", r, ok ? "met" : "MISSED" }')
    printf '%s\t%s %s %s\t%s %s\t%s\t%s\t%s\n' "$name" "$op" "$target" "$unit" "$measured" "$unit" \
        "$ratio" "$verdict" "$note" >>"$rows"
    [ "$verdict" = met ] || status=1
}

# The value after `measured <key>` in a log.
measured() { awk -v k="$2" '$1 == "measured" && $2 == k { v = $3 } END { print v }' "$1"; }

run_criterion() {
    local name=$1
    echo "== benches/$name.rs" >&2
    "${BENCH_EXE[$name]}" --bench >"$logs/$name.log" 2>&1 || {
        echo "bench/run.sh: benches/$name.rs failed; last lines:" >&2
        tail -20 "$logs/$name.log" >&2
        status=1
    }
    grep -E '^(ratio|packing)' "$logs/$name.log" >&2 || true
}

echo "== one build for every benchmark" >&2
bench_build || exit 1

if wants consolidation; then
    run_criterion consolidation
    row "consolidation plan, 5,000 nodes / 100,000 pods, one core" "<" 1 s \
        "$(measured "$logs/consolidation.log" consolidation_plan_s)"
fi
if wants ranking; then
    run_criterion ranking
    row "ranking, 946 types x 6 zones" "<" 5 ms "$(measured "$logs/ranking.log" ranking_ms)"
fi
if wants hub; then
    echo "== benches/hub_load.rs" >&2
    HUB_LOAD_SECONDS=${HUB_LOAD_SECONDS:-5} HUB_LOAD_CONNECTIONS=${HUB_LOAD_CONNECTIONS:-64} \
        "${BENCH_EXE[hub_load]}" --bench >"$logs/hub.log" 2>&1 || status=1
    grep '^hub load' "$logs/hub.log" >&2 || true
    row "hub reports/s (in-process HTTP, 64 connections)" ">=" 20000 "reports/s" \
        "$(measured "$logs/hub.log" hub_reports_per_s)"
fi
if wants karpenter; then
    echo "== bench/karpenter-compare.sh" >&2
    bench/karpenter-compare.sh >"$logs/karpenter.log" || true
    grep -v '^measured' "$logs/karpenter.log" >&2 || true
    note="Karpenter $(sed -n 's/.*); Karpenter \(v[0-9.]*\);.*/\1/p' "$logs/karpenter.log") on the same input file, ${KARPENTER_PODS:-20000} pods; see notes above"
    row "packing pods/s vs Karpenter, cold (same input)" ">=" 20 x "$(measured "$logs/karpenter.log" karpenter_ratio_cold)" "$note"
    row "packing pods/s vs Karpenter, warm (same input)" ">=" 20 x "$(measured "$logs/karpenter.log" karpenter_ratio_warm)" "$note"
    row "packing hourly cost, CloudOptim/Karpenter" "<=" 1 x "$(measured "$logs/karpenter.log" karpenter_cost_ratio)" "$note"
fi
if wants interruptions || wants fleet || wants hibernation || wants scale; then
    bench_e2e_env
fi
if wants interruptions; then
    echo "== e2e_interruptions interruption_burst (200 warnings through moto SQS)" >&2
    bench_e2e e2e_interruptions interruption_burst --ignored >"$logs/interruptions.log" || status=1
    grep -E '^interruption burst|test result' "$logs/interruptions.log" >&2 || true
    row "interruption -> cordoned, 200 at once, p99" "<" 2 s \
        "$(sed -n 's/^interruption burst: .* p99 \([0-9.]*\) s.*/\1/p' "$logs/interruptions.log")"
fi
if wants fleet; then
    echo "== e2e_fleet (warning in member A's queue -> type out of member B's overrides)" >&2
    bench_e2e e2e_fleet a_flag_raised_in_member_a_reaches_member_b_and_expires >"$logs/fleet.log" || status=1
    grep -E '^fleet propagation|test result' "$logs/fleet.log" >&2 || true
    row "fleet propagation, A's queue -> B's overrides" "<" 2 s \
        "$(sed -n 's/^fleet propagation: .* in \([0-9.]*\) s.*/\1/p' "$logs/fleet.log")" \
        "target is from A's flag; measured from the SQS send, so it includes A's detection"
fi
if wants hibernation; then
    echo "== e2e_hibernation (timetable boundary -> Woke Event)" >&2
    bench_e2e e2e_hibernation hibernation_sleeps_and_wakes_workloads_and_node_groups >"$logs/hibernation.log" || status=1
    grep -E '^timetable wake|test result' "$logs/hibernation.log" >&2 || true
    row "hibernation boundary -> wake action (Event)" "<=" 5 s \
        "$(sed -n 's/^timetable wake: Event \(-*[0-9.]*\) s after.*/\1/p' "$logs/hibernation.log")"
fi
if wants scale; then
    echo "== e2e_scale scale_run ($scale_nodes nodes x $scale_pods_per_node pods)" >&2
    bench_e2e e2e_scale scale_run --ignored >"$logs/scale.log" || status=1
    grep -E '^scale run|test result|panicked' "$logs/scale.log" >&2 || true
    peak=$(sed -n 's/^scale run: peak RSS (VmHWM) \([0-9.]*\) MiB.*projected linearly to 5,000 nodes \/ 100,000 pods: \([0-9.]*\) MiB.*/\1 \2/p' "$logs/scale.log")
    if [ "$scale_nodes" -eq 5000 ] && [ "$scale_pods_per_node" -eq 20 ]; then
        row "operator peak RSS (VmHWM), 5,000 nodes / 100,000 pods" "<" 256 MiB "${peak%% *}" "measured at that size"
    else
        row "operator peak RSS (VmHWM), 5,000 nodes / 100,000 pods" "<" 256 MiB "${peak##* }" \
            "PROJECTED linearly from $scale_nodes nodes x $scale_pods_per_node pods (measured ${peak%% *} MiB)"
    fi
fi

echo
echo "DESIGN.md section 11 targets, measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPU(s), $(uname -m), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
{
    printf 'MEASURE\tTARGET\tMEASURED\tRATIO\tSTATUS\tNOTE\n'
    cat "$rows"
} | column -t -s $'\t'
echo
echo "Context only (published figure, other machine; no ratio taken): Karpenter's scheduling benchmark ~680 pods/s."
exit "$status"
