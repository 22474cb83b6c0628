#!/usr/bin/env bash
# Runs the engine benchmarks and prints each DESIGN.md section 11 figure next to its target and next to
# the naive baseline measured in the same run, as ratios.
#
#   bench/run.sh                 # ranking and consolidation
#   bench/run.sh consolidation   # one of them
#
# Each criterion bench prints, after its groups, `ratio ...` lines with the medians it measured itself
# (see the doc comment at the top of benches/<name>.rs for what is measured and what the baseline is);
# this script collects them into one table. Criterion's own reports stay in target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(ranking consolidation)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
for bench in "${benches[@]}"; do
    if [ ! -f "benches/$bench.rs" ]; then
        echo "bench/run.sh: benches/$bench.rs does not exist, skipped" >&2
        continue
    fi
    echo "== cargo bench --bench $bench" >&2
    if ! cargo bench --bench "$bench" >"$logs/$bench.log" 2>&1; then
        echo "bench/run.sh: cargo bench --bench $bench failed; last lines:" >&2
        tail -20 "$logs/$bench.log" >&2
        status=1
        continue
    fi
    # Criterion's medians, one line each: "<group>/<function>  time: [low median high]".
    awk '/^[^ ]/ && !/^(Benchmarking|Found|Warning|Gnuplot|ratio)/ {name=$0} /^ +time:/ {sub(/^ +/, ""); print "   " name "  " $0}' \
        "$logs/$bench.log" >&2 || true
done

echo
echo "DESIGN.md section 11 targets, measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPU(s): $(uname -m)"
printf '%-24s %-86s %s\n' "MEASURE" "MEASURED" "RATIO"
found=0
for log in "$logs"/*.log; do
    [ -e "$log" ] || continue
    # "ratio <name>: <what was measured>, <a>/<b> = <x>x"
    while IFS= read -r line; do
        found=1
        name=${line#ratio }
        name=${name%%:*}
        body=${line#*: }
        ratio=${body##*, }
        measured=${body%, *}
        printf '%-24s %-86s %s\n' "$name" "$measured" "$ratio"
    done < <(grep '^ratio ' "$log" || true)
done
if [ "$found" -eq 0 ]; then
    echo "(no ratio lines: no benchmark ran)"
    status=1
fi
echo
echo "Ratios above 1x beat the target (target/measured) or the baseline (baseline/measured)."
exit "$status"
