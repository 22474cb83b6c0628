//! `cloudoptim rank` as a user runs it: the real binary, the embedded sample catalog, files on disk.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn cloudoptim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .args(args)
        .output()
        .expect("run cloudoptim")
}

/// A file in a fresh temporary directory, unique per test.
fn write(test: &str, name: &str, content: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cloudoptim-rank-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn rank_json(args: &[&str]) -> Vec<Value> {
    let out = cloudoptim(&[&["rank", "--region", "us-east-1", "-o", "json"], args].concat());
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("stdout is a JSON array")
}

fn str_field<'a>(c: &'a Value, field: &str) -> &'a str {
    c[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {c}"))
}

fn template(families: &str) -> String {
    format!(
        "apiVersion: cloudoptim.io/v1alpha1\nkind: NodeTemplate\nmetadata:\n  name: t\nspec:\n  \
         autoScalingGroups:\n    names: [workers]\n  requirements:\n    families: {families}\n    \
         minVcpu: 2\n    maxVcpu: 16\n  strategy: Cheapest\n"
    )
}

#[test]
fn json_is_every_candidate_sorted_by_score_with_the_documented_fields() {
    let candidates = rank_json(&[]);
    assert!(
        candidates.len() > 800 * 6,
        "{} candidates",
        candidates.len()
    );
    for c in &candidates {
        for field in [
            "pricePerVcpuHour",
            "priceNorm",
            "risk",
            "score",
            "pricePerHour",
        ] {
            assert!(c[field].is_f64(), "{field} in {c}");
        }
        assert!(
            ["spot", "on-demand"].contains(&str_field(c, "capacityType")),
            "{c}"
        );
        assert!(str_field(c, "zone").starts_with("us-east-1"));
        assert!(!str_field(c, "instanceType").is_empty());
        assert_eq!(c["flagged"], Value::Bool(false));
    }
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] <= w[1]), "sorted by score");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
}

#[test]
fn template_limits_the_families() {
    let path = write("families", "template.yaml", &template("[m7g, c7g]"));
    let candidates = rank_json(&["--template", path.to_str().unwrap()]);
    assert!(!candidates.is_empty());
    for c in &candidates {
        let family = str_field(c, "instanceType").split('.').next().unwrap();
        assert!(["m7g", "c7g"].contains(&family), "{c}");
    }
}

#[test]
fn flags_file_removes_the_flagged_spot_pair() {
    let tpl = write("flags", "template.yaml", &template("[m5]"));
    let flags = write(
        "flags",
        "flags.yaml",
        "apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: cloudoptim.io/v1alpha1\n  kind: SpotRiskFlag\n  metadata: {name: us-east-1.us-east-1a.m5.large}\n  \
           spec: {region: us-east-1, zone: us-east-1a, instanceType: m5.large, reason: SpotInterruption, \
           expiresAt: \"2999-01-01T00:00:00Z\"}\n\
         - apiVersion: cloudoptim.io/v1alpha1\n  kind: SpotRiskFlag\n  metadata: {name: expired}\n  \
           spec: {region: us-east-1, zone: us-east-1b, instanceType: m5.large, expiresAt: \"2000-01-01T00:00:00Z\"}\n",
    );
    let tpl = tpl.to_str().unwrap();
    let find = |cs: &[Value], zone: &str, capacity: &str| {
        cs.iter().any(|c| {
            str_field(c, "instanceType") == "m5.large"
                && str_field(c, "zone") == zone
                && str_field(c, "capacityType") == capacity
        })
    };
    let before = rank_json(&["--template", tpl]);
    assert!(find(&before, "us-east-1a", "spot"));
    let after = rank_json(&["--template", tpl, "--flags", flags.to_str().unwrap()]);
    assert!(
        !find(&after, "us-east-1a", "spot"),
        "the active flag removes the spot candidate"
    );
    assert!(
        find(&after, "us-east-1b", "spot"),
        "the expired flag is ignored"
    );
    assert!(
        find(&after, "us-east-1a", "on-demand"),
        "on-demand capacity is not interrupted"
    );
    assert_eq!(after.len(), before.len() - 1);
}

#[test]
fn bad_template_field_exits_2_naming_file_and_field() {
    let path = write(
        "bad-template",
        "template.yaml",
        "apiVersion: cloudoptim.io/v1alpha1\nkind: NodeTemplate\nspec:\n  requirements:\n    minVcpu: four\n",
    );
    let out = cloudoptim(&[
        "rank",
        "--region",
        "us-east-1",
        "--template",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.requirements.minVcpu"), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_region_exits_2_listing_known_regions() {
    let out = cloudoptim(&["rank", "--region", "mars-north-1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--region mars-north-1") && stderr.contains("eu-west-1, us-east-1"),
        "{stderr}"
    );
}

#[test]
fn requirements_matching_nothing_exit_2_naming_the_field() {
    let path = write("no-match", "template.yaml", &template("[x9]"));
    let out = cloudoptim(&[
        "rank",
        "--region",
        "us-east-1",
        "--template",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requirements match no instance type") && stderr.contains("families"),
        "{stderr}"
    );
}

/// Table rows start with their rank number.
fn table_rows(table: &str) -> usize {
    let rank = |l: &str| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.parse::<usize>().is_ok())
    };
    table.lines().filter(|l| rank(l)).count()
}

#[test]
fn table_says_sample_data_and_shows_20_rows_by_default() {
    let out = cloudoptim(&["rank", "--region", "eu-west-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.lines().take(3).any(|l| l.contains("sample data")),
        "{stdout}"
    );
    assert_eq!(table_rows(&stdout), 20, "{stdout}");
    let out = cloudoptim(&["rank", "--region", "eu-west-1", "--limit", "3"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table_rows(&stdout), 3, "{stdout}");
}

#[test]
fn catalog_directory_replaces_the_embedded_one() {
    let dir = write(
        "catalog-dir",
        "instance-types.csv",
        "instance_type,family,arch,vcpu,memory_mib,gpu\nm5.large,m5,x86_64,2,8192,0\n",
    );
    let dir = dir.parent().unwrap();
    std::fs::write(
        dir.join("on-demand-prices.csv"),
        "region,instance_type,price\nap-south-1,m5.large,0.101\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("spot-prices.csv"),
        "region,zone,instance_type,price\nap-south-1,ap-south-1a,m5.large,0.04\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("spot-advisor.json"),
        r#"{"spot_advisor":{"ap-south-1":{"Linux":{"m5.large":{"s":60,"r":1}}}}}"#,
    )
    .unwrap();
    let out = cloudoptim(&[
        "rank",
        "--region",
        "ap-south-1",
        "--catalog",
        dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let candidates: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(candidates.len(), 2);
    assert_eq!(candidates[0]["riskBucket"], 1);
    let out = cloudoptim(&[
        "rank",
        "--region",
        "ap-south-1",
        "--catalog",
        dir.to_str().unwrap(),
    ]);
    assert!(
        !String::from_utf8(out.stdout)
            .unwrap()
            .contains("sample data")
    );
}

#[test]
fn a_catalog_with_the_real_advisor_feed_ranks_and_warns_about_its_skipped_entry() {
    let dir = write(
        "catalog-real-feed",
        "instance-types.csv",
        "instance_type,family,arch,vcpu,memory_mib,gpu\nm5.large,m5,x86_64,2,8192,0\n",
    );
    let dir = dir.parent().unwrap();
    std::fs::write(
        dir.join("on-demand-prices.csv"),
        "region,instance_type,price\nca-central-1,m5.large,0.107\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("spot-prices.csv"),
        "region,zone,instance_type,price\nca-central-1,ca-central-1a,m5.large,0.04\n",
    )
    .unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/spot-advisor/spot-advisor-data.json"),
        dir.join("spot-advisor.json"),
    )
    .unwrap();
    let out = cloudoptim(&[
        "rank",
        "--region",
        "ca-central-1",
        "--catalog",
        dir.to_str().unwrap(),
        "-o",
        "json",
        "--log-format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let candidates: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let spot = candidates
        .iter()
        .find(|c| c["capacityType"] == "spot")
        .expect("a spot candidate");
    assert_eq!(
        spot["riskBucket"], 4,
        "m5.large in ca-central-1 is r=4 in the real feed"
    );
    assert!(
        stderr.contains(r#""skipped":1"#) && stderr.contains("ca-central-1.Linux.p5.48xlarge"),
        "{stderr}"
    );
}
