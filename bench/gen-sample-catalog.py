#!/usr/bin/env python3
"""Regenerate the embedded SAMPLE catalog in data/catalog/ (stdlib only, deterministic).

Usage:
    python3 bench/gen-sample-catalog.py [SOURCE_CSV] [OUT_DIR]

SOURCE_CSV defaults to /work/shared/data/instance-types.csv (the factual instance-type reference:
specs and real us-east-1 on-demand prices, taken from aws/karpenter-provider-aws); OUT_DIR defaults to
data/catalog next to this script's parent. The output is committed: CI never runs this script. Running it
twice on the same input writes byte-identical files.

The rule (also in data/catalog/README.md):
- Types: every row whose family is general purpose (m), compute optimised (c), memory optimised (r) or
  burstable (t), i.e. family matches ^[mcrt][0-9], except bare-metal sizes (size contains "metal").
- us-east-1 on-demand price: the real price from the source, unchanged.
- eu-west-1 on-demand price: us-east-1 price x 1.12, rounded to 6 decimals. SAMPLE (the source has no
  eu-west-1 prices; 1.12 is close to the usual Ireland premium but is not the real price).
- Zones: us-east-1a..us-east-1f (6), eu-west-1a..eu-west-1c (3); every type is offered in every zone.
- Spot price per (zone, type): on-demand price of the zone's region x f, rounded to 6 decimals, where
  f = 0.25 + 0.35 * u and u = unit(SEED, "spot", zone, type). SAMPLE DATA.
- Spot Advisor per (region, type): with u = unit(SEED, "advisor", region, type), bucket r = 0 if u < 0.45,
  1 if u < 0.70, 2 if u < 0.82, 3 if u < 0.90, else 4. A type has no advisor entry at all when
  unit(SEED, "advisor-missing", region, type) < 0.02 (the real feed also lacks some types).
  "s" (savings %) = round(100 * (1 - mean over the region's zones of spot / on-demand)). SAMPLE DATA.
- unit(...) = first 8 bytes (big-endian) of SHA-256("|".join(parts)) / 2**64, a number in [0, 1).
"""

import csv
import hashlib
import json
import os
import re
import sys

SEED = "cloudoptim-sample-catalog-v1"
EU_WEST_1_FACTOR = 1.12
SPOT_MIN_FACTOR = 0.25
SPOT_MAX_FACTOR = 0.60
ZONES = {
    "us-east-1": ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1e", "us-east-1f"],
    "eu-west-1": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
}
# Cumulative upper bounds of u for buckets 0..3; anything above is bucket 4.
BUCKET_BOUNDS = [0.45, 0.70, 0.82, 0.90]
ADVISOR_MISSING_SHARE = 0.02
# The public feed's own ranges table (index r -> interruption frequency label).
RANGES = [
    {"index": 0, "label": "<5%", "dots": 0, "max": 5},
    {"index": 1, "label": "5-10%", "dots": 1, "max": 11},
    {"index": 2, "label": "10-15%", "dots": 2, "max": 16},
    {"index": 3, "label": "15-20%", "dots": 3, "max": 22},
    {"index": 4, "label": ">20%", "dots": 4, "max": 100},
]


def unit(*parts):
    digest = hashlib.sha256("|".join((SEED,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def price(value):
    return "%.6f" % value


def selected(row):
    return re.match(r"^[mcrt][0-9]", row["family"]) and "metal" not in row["generation_size"]


def bucket(u):
    for r, bound in enumerate(BUCKET_BOUNDS):
        if u < bound:
            return r
    return len(BUCKET_BOUNDS)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    source = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/instance-types.csv"
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "data", "catalog")
    with open(source, newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if selected(r)), key=lambda r: r["instance_type"])
    os.makedirs(out, exist_ok=True)

    on_demand = {}  # (region, type) -> float, as written (rounded)
    for r in rows:
        us = float(r["od_price_us_east_1"])
        on_demand[("us-east-1", r["instance_type"])] = us
        on_demand[("eu-west-1", r["instance_type"])] = round(us * EU_WEST_1_FACTOR, 6)

    with open(os.path.join(out, "instance-types.csv"), "w", newline="") as f:
        f.write("instance_type,family,arch,vcpu,memory_mib,gpu\n")
        for r in rows:
            f.write(",".join([r["instance_type"], r["family"], r["arch"], r["vcpu"], r["memory_mib"], r["gpu"]]))
            f.write("\n")

    with open(os.path.join(out, "on-demand-prices.csv"), "w", newline="") as f:
        f.write("region,instance_type,price\n")
        for region in ZONES:
            for r in rows:
                f.write("%s,%s,%s\n" % (region, r["instance_type"], price(on_demand[(region, r["instance_type"])])))

    spot_ratio = {}  # (region, type) -> list of spot / on-demand over the region's zones
    with open(os.path.join(out, "spot-prices.csv"), "w", newline="") as f:
        f.write("region,zone,instance_type,price\n")
        for region, zones in ZONES.items():
            for zone in zones:
                for r in rows:
                    name = r["instance_type"]
                    od = on_demand[(region, name)]
                    factor = SPOT_MIN_FACTOR + (SPOT_MAX_FACTOR - SPOT_MIN_FACTOR) * unit("spot", zone, name)
                    spot = round(od * factor, 6)
                    spot_ratio.setdefault((region, name), []).append(spot / od)
                    f.write("%s,%s,%s,%s\n" % (region, zone, name, price(spot)))

    # spot-advisor.json, in the public feed's layout, one entry per line so diffs stay readable.
    lines = ["{", '"global_rate": "<10%",', '"instance_types": {']
    for i, r in enumerate(rows):
        info = {"emr": False, "cores": int(r["vcpu"]), "ram_gb": round(int(r["memory_mib"]) / 1024.0, 3)}
        sep = "," if i + 1 < len(rows) else ""
        lines.append("%s:%s%s" % (json.dumps(r["instance_type"]), json.dumps(info, separators=(",", ":")), sep))
    lines.append("},")
    lines.append('"ranges": %s,' % json.dumps(RANGES))
    lines.append('"spot_advisor": {')
    regions = list(ZONES)
    for ri, region in enumerate(regions):
        lines.append("  %s: {" % json.dumps(region))
        lines.append('    "Linux": {')
        entries = []
        for r in rows:
            name = r["instance_type"]
            if unit("advisor-missing", region, name) < ADVISOR_MISSING_SHARE:
                continue
            ratios = spot_ratio[(region, name)]
            savings = int(round(100.0 * (1.0 - sum(ratios) / len(ratios))))
            entry = {"s": savings, "r": bucket(unit("advisor", region, name))}
            entries.append("%s:%s" % (json.dumps(name), json.dumps(entry, separators=(",", ":"))))
        lines.append(",\n".join(entries))
        lines.append("    },")
        lines.append('    "Windows": {}')
        lines.append("  }" + ("," if ri + 1 < len(regions) else ""))
    lines.append("}")
    lines.append("}")
    with open(os.path.join(out, "spot-advisor.json"), "w", newline="") as f:
        f.write("\n".join(lines) + "\n")

    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if not n.endswith(".md"))
    print("wrote %d instance types to %s (%d bytes of data)" % (len(rows), out, total), file=sys.stderr)


if __name__ == "__main__":
    main()
