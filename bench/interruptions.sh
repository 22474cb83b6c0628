#!/usr/bin/env bash
# Interruption throughput (DESIGN.md section 6: 200 simultaneous warnings all cordoned, p99 < 2 s): runs
# the ignored e2e test `interruption_burst` against the real test peers (kube-apiserver, kwok, moto SQS,
# the release `cloudoptim run` binary of the shared bench build, bench/lib.sh). It creates 200 kwok
# nodes, sends 200 Spot interruption warnings to the SQS queue in batches of 10, watches the nodes, and
# prints the send -> cordoned latency p50/p99/max. Numbers only (the test asserts just that every node
# was cordoned); bench/run.sh checks the target.
#
#   bench/interruptions.sh                  # 200 warnings
#   CLOUDOPTIM_BURST=500 bench/interruptions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_build
bench_e2e_env
bench_e2e e2e_interruptions interruption_burst --ignored | grep -E '^interruption burst|test result'
