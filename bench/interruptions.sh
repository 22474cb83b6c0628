#!/usr/bin/env bash
# Interruption throughput (DESIGN.md section 6: 200 simultaneous warnings all cordoned, p99 < 2 s): runs
# the ignored e2e test `interruption_burst` against the real test peers (kube-apiserver, kwok, moto SQS,
# the real `cloudoptim run` binary). It creates 200 kwok nodes, sends 200 Spot interruption warnings to
# the SQS queue in batches of 10, watches the nodes, and prints the send -> cordoned latency p50/p99/max.
# Numbers only; the test asserts just that every node was cordoned.
#
#   bench/interruptions.sh                  # 200 warnings
#   CLOUDOPTIM_BURST=500 bench/interruptions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v go >/dev/null 2>&1; then e2e/tools/setup.sh >/dev/null; fi
# shellcheck disable=SC1091
source "${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}/env.sh"
export CLOUDOPTIM_E2E_REQUIRED=1
cargo test --locked --test e2e_interruptions interruption_burst -- --ignored --nocapture 2>&1 \
    | grep -E '^interruption burst|test result'
