//! `cloudoptim plan` as a user runs it: the real binary, on the bundled example and on files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .arg("plan")
        .args(args)
        // From another directory: the bundled example must not depend on the working directory.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the cloudoptim binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cloudoptim-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("temp file");
    path
}

fn json(args: &[&str]) -> Value {
    let output = plan(args);
    assert!(output.status.success(), "plan failed: {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("plan -o json prints JSON")
}

#[test]
fn without_flags_it_prints_a_report_on_the_bundled_example() {
    let output = plan(&[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "examples/snapshot.yaml (bundled example)",
        "40 nodes",
        "prices: sample data",
        "per hour",
        "per month (x730)",
        "REMOVE",
        "MOVE",
        "KEEP",
        "TOP SPOT CANDIDATES PER ZONE",
        "PDB payments/api allows 0 disruptions",
    ] {
        assert!(
            text.to_lowercase().contains(&expected.to_lowercase()),
            "report lacks {expected:?}:\n{text}"
        );
    }
}

#[test]
fn json_output_has_the_documented_keys_and_consistent_moves() {
    let v = json(&["-o", "json"]);
    let cost = &v["cost"];
    for key in [
        "currentHourly",
        "optimizedHourly",
        "savingsHourly",
        "savingsMonthly",
        "savingsPercent",
    ] {
        assert!(cost[key].is_number(), "cost.{key} missing: {cost}");
    }
    let savings = cost["savingsHourly"].as_f64().unwrap_or(-1.0);
    assert!(savings >= 0.0);
    let monthly = cost["savingsMonthly"].as_f64().unwrap_or(-1.0);
    assert!((monthly - savings * 730.0).abs() < 1e-6);

    let removed: BTreeSet<&str> = v["removeNodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let kept: BTreeSet<&str> = v["keptNodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(!removed.is_empty());
    assert!(removed.is_disjoint(&kept));
    assert_eq!(removed.len() + kept.len(), 40);
    assert!(
        v["keptNodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );

    let moves = v["moves"].as_array().unwrap();
    assert!(!moves.is_empty());
    for m in moves {
        for key in ["namespace", "pod", "from", "to"] {
            assert!(m[key].is_string(), "move lacks {key}: {m}");
        }
        assert!(
            removed.contains(m["from"].as_str().unwrap()),
            "moves leave removed nodes: {m}"
        );
        assert!(
            kept.contains(m["to"].as_str().unwrap()),
            "moves land on kept nodes: {m}"
        );
    }

    let batched: Vec<&str> = v["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    let order: Vec<&str> = v["removeNodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(batched, order, "batches split removeNodes in order");

    let ranking = v["ranking"].as_array().unwrap();
    assert!(!ranking.is_empty());
    for c in ranking {
        for key in [
            "instanceType",
            "zone",
            "capacityType",
            "pricePerVcpuHour",
            "priceNorm",
            "risk",
            "score",
        ] {
            assert!(!c[key].is_null(), "ranking entry lacks {key}: {c}");
        }
    }
    assert_eq!(v["sampleData"], Value::Bool(true));
}

#[test]
fn a_policy_changes_the_plan() {
    let off = temp_file(
        "off.yaml",
        "apiVersion: cloudoptim.io/v1alpha1\nkind: OptimizationPolicy\nmetadata: {name: p}\nspec:\n  consolidation: {mode: Off}\n  spot: {percentage: 0}\n",
    );
    let v = json(&["-o", "json", "--policy", off.to_str().unwrap()]);
    assert_eq!(v["removeNodes"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["cost"]["savingsHourly"].as_f64(), Some(0.0));

    let min = temp_file(
        "min.yaml",
        "kind: OptimizationPolicy\nspec:\n  nodes: {min: 38}\n  disruption: {budgets: [{nodes: \"1\"}]}\n",
    );
    let v = json(&["-o", "json", "--policy", min.to_str().unwrap()]);
    assert_eq!(v["removeNodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["batches"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_snapshot_file_is_read_in_yaml_or_json() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Node","metadata":{"name":"a","labels":{
        "node.kubernetes.io/instance-type":"m5.large","topology.kubernetes.io/zone":"us-east-1a"}},
       "status":{"allocatable":{"cpu":"1930m","memory":"7220184Ki","pods":"29"}}},
      {"apiVersion":"v1","kind":"Node","metadata":{"name":"b","labels":{
        "node.kubernetes.io/instance-type":"m5.large","topology.kubernetes.io/zone":"us-east-1a"}},
       "status":{"allocatable":{"cpu":"1930m","memory":"7220184Ki","pods":"29"}}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"x","ownerReferences":[
        {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"r","uid":"u","controller":true}]},
       "spec":{"nodeName":"a","containers":[{"name":"c","resources":{"requests":{"cpu":"100m"}}}]}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"q","namespace":"x","ownerReferences":[
        {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"r","uid":"u","controller":true}]},
       "spec":{"nodeName":"b","containers":[{"name":"c","resources":{"requests":{"cpu":"800m"}}}]}}]}"#;
    let path = temp_file("two.json", list);
    let v = json(&["-o", "json", "--snapshot", path.to_str().unwrap()]);
    assert_eq!(v["removeNodes"], serde_json::json!(["a"]));
    assert_eq!(
        v["moves"],
        serde_json::json!([{"namespace": "x", "pod": "p", "from": "a", "to": "b"}])
    );
    assert!(
        (v["cost"]["currentHourly"].as_f64().unwrap_or(0.0) - 0.192).abs() < 1e-9,
        "2 x m5.large on demand"
    );
}

#[test]
fn a_bad_snapshot_exits_2_naming_the_file_and_item_path() {
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n}\n  status: {allocatable: {cpu: '2', memory: 8Gi}}\n\
               - apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: x}\n  spec:\n    nodeName: n\n    containers:\n    - name: c\n      resources: {requests: {cpu: abc}}\n";
    let path = temp_file("bad.yaml", bad);
    let output = plan(&["--snapshot", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("bad.yaml"), "{message}");
    assert!(
        message.contains(
            r#"items[1].spec.containers[0].resources.requests.cpu: "abc" is not a quantity"#
        ),
        "{message}"
    );
}

#[test]
fn missing_files_and_bad_policies_exit_2() {
    let output = plan(&["--snapshot", "/nonexistent/snapshot.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/snapshot.yaml"));
    let policy = temp_file(
        "bad-policy.yaml",
        "kind: OptimizationPolicy\nspec: {spot: {percentage: 150}}\n",
    );
    let output = plan(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("spec.spot.percentage: 150 is above 100"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_hibernation_schedule_adds_its_savings_on_top_of_the_optimised_cost() {
    let schedule = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hibernationschedule.yaml"
    );
    let report = json(&["--hibernation", schedule, "-o", "json"]);
    let h = &report["hibernation"];
    // Awake Mon-Fri 07:30-20:30 with a 30 min pre-warm: nodes are down 100.5 h of 168 in a week
    // (a DST change inside the 52 weeks shifts this by minutes, not hours).
    let asleep = h["asleepHoursPerWeek"]
        .as_f64()
        .expect("asleepHoursPerWeek");
    assert!((asleep - 100.5).abs() < 0.1, "{h}");
    let optimized = report["cost"]["optimizedHourly"]
        .as_f64()
        .expect("optimized");
    let saved = h["savingsHourly"].as_f64().expect("savingsHourly");
    let average = h["averageHourly"].as_f64().expect("averageHourly");
    assert!(saved > 0.0 && average > 0.0, "{h}");
    assert!(
        (saved + average - optimized).abs() < 0.001,
        "{h} vs {optimized}"
    );
    assert!((saved / optimized - asleep / 168.0).abs() < 0.001, "{h}");
    assert_eq!(h["timeZone"], "Europe/Berlin");

    let table = plan(&["--hibernation", schedule]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("with hibernation (") && stdout(&table).contains("nodes down 100."),
        "{}",
        stdout(&table)
    );
    let bad = temp_file(
        "bad-hib.yaml",
        "apiVersion: cloudoptim.io/v1alpha1\nkind: HibernationSchedule\nspec: {timeZone: Europe/Berln, awake: [\"Mon-Fri 07:30-20:30\"]}\n",
    );
    let out = plan(&["--hibernation", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("spec.timeZone"), "{}", stderr(&out));
}

/// Three on-demand m5.4xlarge, each 56% requested (six 1.5-vCPU pods of a Deployment): no node can be
/// removed (two nodes' pods do not fit into one), but one cheaper new node holds all eighteen pods.
fn three_busy_m5_4xlarge() -> String {
    let mut items = Vec::new();
    for n in 0..3 {
        items.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("busy-{n}"), "labels": {
                "node.kubernetes.io/instance-type": "m5.4xlarge",
                "topology.kubernetes.io/zone": "us-east-1a",
                "kubernetes.io/arch": "amd64",
                "eks.amazonaws.com/capacityType": "ON_DEMAND"}},
            "status": {"allocatable": {"cpu": "15890m", "memory": "62Gi", "pods": "110"}}
        }));
        for p in 0..6 {
            items.push(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-{n}-{p}"), "namespace": "shop", "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]},
                "spec": {"nodeName": format!("busy-{n}"), "containers": [{"name": "c", "image": "web",
                    "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}}}]},
                "status": {"phase": "Running"}
            }));
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

#[test]
fn three_busy_on_demand_nodes_are_replaced_by_one_cheaper_node() {
    let snapshot = temp_file("three-busy.json", &three_busy_m5_4xlarge());
    let v = json(&["-o", "json", "--snapshot", snapshot.to_str().unwrap()]);
    assert_eq!(v["removeNodes"].as_array().map(Vec::len), Some(0), "{v}");
    let replacements = v["replacements"].as_array().expect("replacements");
    assert_eq!(replacements.len(), 1, "{v}");
    let r = &replacements[0];
    let replaced: BTreeSet<&str> = r["replace"]
        .as_array()
        .expect("replace")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(replaced, BTreeSet::from(["busy-0", "busy-1", "busy-2"]));
    assert_eq!(r["podsMoved"], 18);
    // The default policy's 70% Spot above no base allows no Spot node out of one: on-demand.
    assert_eq!(r["with"]["capacityType"], "on-demand");
    let new = r["with"]["hourly"].as_f64().expect("hourly");
    let was = r["replacedHourly"].as_f64().expect("replaced");
    assert!((was - 3.0 * 0.768).abs() < 1e-6, "three m5.4xlarge: {was}");
    assert!(
        new <= 0.9 * was,
        "cheaper by the 10% margin: {new} vs {was}"
    );
    // Counted once: the optimised cost is the new node's price.
    let cost = &v["cost"];
    assert!(
        (cost["optimizedHourly"].as_f64().unwrap() - new).abs() < 1e-3,
        "{cost}"
    );
    assert!((cost["replacementHourly"].as_f64().unwrap() - (was - new)).abs() < 1e-3);
    assert!((cost["savingsHourly"].as_f64().unwrap() - (was - new)).abs() < 1e-3);
    // And the text report says so.
    let text = stdout(&plan(&["--snapshot", snapshot.to_str().unwrap()]));
    assert!(text.contains("REPLACE 3 NODES WITH 1"), "{text}");
}

/// 14 days of hourly samples for the bundled example: shop/catalog steady (0.1 cores, 300Mi) on its
/// three pods and on one pod of the same ReplicaSet gone since; shop/cart OOM-killed on day 10;
/// search/query seen for 10 hours only; a pod of no workload.
fn usage_csv() -> String {
    let start = 1_764_000_000i64;
    let mut csv = String::from("timestamp,namespace,pod,container,cpu,memory,oom_killed\n");
    let mut row = |h: i64, ns: &str, pod: &str, c: &str, cpu: &str, mem: &str, oom: u8| {
        csv.push_str(&format!(
            "{},{ns},{pod},{c},{cpu},{mem},{oom}\n",
            start + h * 3600
        ));
    };
    for h in 0..14 * 24 {
        for pod in [
            "catalog-dnzgdglz2x-qzvms",
            "catalog-dnzgdglz2x-227w6",
            "catalog-dnzgdglz2x-rn9sq",
            "catalog-dnzgdglz2x-gone0",
        ] {
            row(h, "shop", pod, "catalog", "100m", "300Mi", 0);
        }
        let oom = u8::from(h >= 10 * 24);
        row(
            h,
            "shop",
            "cart-bc8nkg8xjd-lggwl",
            "cart",
            "50m",
            "400Mi",
            oom,
        );
        row(h, "x", "ghost-1", "c", "1", "1Gi", 0);
    }
    for h in 0..10 {
        row(
            h,
            "search",
            "query-pqxczg4spp-qn2lk",
            "query",
            "10m",
            "64Mi",
            0,
        );
    }
    csv
}

fn recommendation<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["rightsizing"]["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no recommendation for {name}: {v}"))
}

#[test]
fn usage_adds_right_sizing_per_workload_and_the_consolidation_after_it() {
    let usage = temp_file("usage.csv", &usage_csv());
    let v = json(&["--usage", usage.to_str().unwrap(), "-o", "json"]);
    let catalog = recommendation(&v, "catalog");
    assert_eq!(catalog["kind"], "Deployment");
    assert_eq!(catalog["replicas"], 3, "running pods in the snapshot");
    assert_eq!(catalog["current"]["cpuMillis"], 500);
    assert_eq!(catalog["recommended"]["cpuMillis"], 120, "0.1 x 1.2");
    assert_eq!(
        catalog["recommended"]["memoryBytes"],
        360u64 << 20,
        "300Mi x 1.2"
    );
    assert_eq!(catalog["confidence"], "High");
    assert!(catalog["savingsMonthly"].as_f64().unwrap() > 0.0);
    let cart = recommendation(&v, "cart");
    assert_eq!(cart["oomBumped"], true);
    // Killed at its 512Mi limit: 512Mi x 1.2, rounded up to a MiB.
    assert_eq!(cart["recommended"]["memoryBytes"], 615u64 << 20);
    let query = recommendation(&v, "query");
    assert_eq!(query["confidence"], "None");
    assert_eq!(query["recommended"], query["current"], "too new: unchanged");
    let section = &v["rightsizing"];
    assert_eq!(section["podsWithoutWorkload"], 1);
    let before = v["cost"]["optimizedHourly"].as_f64().unwrap();
    let after = &section["consolidationAfter"];
    let further = after["furtherSavingsHourly"].as_f64().unwrap();
    assert!((before - after["optimizedHourly"].as_f64().unwrap() - further).abs() < 1e-3);

    let text = stdout(&plan(&["--usage", usage.to_str().unwrap()]));
    for expected in [
        "RIGHT-SIZING from",
        "shop/Deployment/catalog",
        "500m -> 120m",
        "1Gi -> 360Mi",
        "OOMKilled: bumped",
        "consolidation after right-sizing",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}

#[test]
fn a_bad_usage_file_is_refused_naming_the_line_and_column() {
    let usage = temp_file(
        "bad-usage.csv",
        "timestamp,namespace,pod,container,cpu,memory\n1764000000,shop,cart-bc8nkg8xjd-lggwl,cart,lots,1Mi\n",
    );
    let output = plan(&["--usage", usage.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("bad-usage.csv: line 2: cpu:"), "{message}");
}
