#!/usr/bin/env bash
# Scale run of the OptimizationPolicy controller (issue 7, item 7): 1,000 kwok nodes backed by moto
# instances in 10 Auto Scaling groups and 20,000 pods, watched by the real `cloudoptim run` binary; prints
# the operator's RSS (measured, and projected linearly to 5,000 nodes / 100,000 pods against the 256 MiB
# target) and the planner's time on the whole cluster. Numbers only, no assertions on them.
#
#   bench/scale.sh
#   CLOUDOPTIM_SCALE_NODES=2000 CLOUDOPTIM_SCALE_PODS_PER_NODE=20 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v go >/dev/null 2>&1; then e2e/tools/setup.sh >/dev/null; fi
# shellcheck disable=SC1091
source "${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/env.sh"
export CLOUDOPTIM_E2E_REQUIRED=1
cargo test --locked --test e2e_scale scale_run -- --ignored --nocapture 2>&1 \
    | grep -E '^scale run|test result|panicked'
