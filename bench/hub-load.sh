#!/usr/bin/env bash
# Hub throughput (DESIGN.md section 11: >= 20,000 reports/s on 2 cores): runs benches/hub_load.rs, which
# serves the hub's real HTTP API on loopback and posts distinct reports over keep-alive connections,
# then prints reports/s, latency p50/p99 and the ratio to the target. Numbers only; bench/run.sh checks
# the target. Member propagation latency (report at member A -> SpotRiskFlag in member B) is printed by
# the e2e test `cargo test --test e2e_hub -- --nocapture` ("member propagation ...").
#
#   bench/hub-load.sh                                   # 5 s, 64 connections
#   HUB_LOAD_SECONDS=10 HUB_LOAD_CONNECTIONS=128 bench/hub-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
export HUB_LOAD_SECONDS=${HUB_LOAD_SECONDS:-5}
export HUB_LOAD_CONNECTIONS=${HUB_LOAD_CONNECTIONS:-64}
bench_build
"${BENCH_EXE[hub_load]}" --bench 2>/dev/null | grep -E '^(hub load|ratio)'
