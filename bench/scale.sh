#!/usr/bin/env bash
# Scale run of the OptimizationPolicy controller (DESIGN.md section 11: operator memory < 256 MiB at
# 5,000 nodes / 100,000 pods watched): kwok nodes backed by moto instances in Auto Scaling groups and
# pods bound to them, watched by the release `cloudoptim run` binary of the shared bench build
# (bench/lib.sh). Prints the operator's RSS after a plan, its peak RSS (VmHWM) and the planner's time,
# and exits 1 when the peak is above 256 MiB: measured when run at 5,000 nodes x 20 pods (the
# default), otherwise projected linearly from the size run, and said so.
#
#   bench/scale.sh                                          # 5,000 nodes / 100,000 pods
#   CLOUDOPTIM_SCALE_NODES=1000 bench/scale.sh              # smaller, peak projected
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
export CLOUDOPTIM_SCALE_NODES=${CLOUDOPTIM_SCALE_NODES:-5000}
export CLOUDOPTIM_SCALE_PODS_PER_NODE=${CLOUDOPTIM_SCALE_PODS_PER_NODE:-20}
bench_build
bench_e2e_env
out=$(bench_e2e e2e_scale scale_run --ignored | grep -E '^scale run|test result|panicked')
echo "$out"
read -r measured projected < <(printf '%s\n' "$out" |
    sed -n 's/^scale run: peak RSS (VmHWM) \([0-9.]*\) MiB.*5,000 nodes \/ 100,000 pods: \([0-9.]*\) MiB.*/\1 \2/p')
[ -n "${measured:-}" ] || {
    echo "scale: no peak RSS line" >&2
    exit 1
}
if [ "$CLOUDOPTIM_SCALE_NODES" -eq 5000 ] && [ "$CLOUDOPTIM_SCALE_PODS_PER_NODE" -eq 20 ]; then
    peak=$measured kind=measured
else
    peak=$projected kind="projected linearly from $CLOUDOPTIM_SCALE_NODES nodes (measured $measured MiB)"
fi
awk -v p="$peak" -v k="$kind" 'BEGIN {
    printf "peak RSS at 5,000 nodes / 100,000 pods: %.1f MiB (%s); target < 256 MiB: %s\n", p, k, (p < 256) ? "met" : "MISSED"
    exit !(p < 256) }'
