#!/usr/bin/env bash
# Regenerate the CRD YAML from the Rust types into crds/ and the Helm chart (CI fails on drift).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -- crds --dir crds
cp crds/*.yaml charts/cloudoptim/crds/
