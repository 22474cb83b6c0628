//! The shipped IAM policy allows exactly the AWS calls the code makes: every SDK operation called in
//! `src/cloud/aws.rs` is granted, and every granted action is either called or implied by a call
//! (`cloud::iam::IMPLIED`). A new SDK call without a policy line, or a policy line nothing uses,
//! fails here.

use std::collections::BTreeSet;

use cloudoptim::cloud::iam::{IMPLIED, PolicyParams, actions, render};
use regex::Regex;

/// `describe_auto_scaling_groups` -> `DescribeAutoScalingGroups`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every `self.<client>.<operation>()` in the AWS implementation, as `service:Operation`.
fn called() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cloud/aws.rs"))
        .expect("src/cloud/aws.rs");
    let call = Regex::new(r"self\s*\.\s*(ec2|autoscaling|sqs|pricing)\s*\.\s*([a-z_]+)\s*\(\s*\)")
        .unwrap();
    let found: BTreeSet<String> = call
        .captures_iter(&source)
        .map(|c| format!("{}:{}", &c[1], pascal(&c[2])))
        .collect();
    // The parser must see the calls at all, or the comparison below proves nothing.
    assert!(found.contains("ec2:TerminateInstances"), "{found:?}");
    assert!(found.contains("sqs:ReceiveMessage"), "{found:?}");
    found
}

fn granted() -> BTreeSet<String> {
    let params = PolicyParams {
        cluster_name: "c1".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
        queue_name: "cloudoptim-c1".into(),
        node_role_arn: Some("arn:aws:iam::123456789012:role/nodes".into()),
        partition: "aws".into(),
    };
    let doc = serde_json::from_str(&render(&params).expect("renders")).expect("json");
    actions(&doc)
}

#[test]
fn every_call_is_granted() {
    let granted = granted();
    let missing: Vec<_> = called()
        .into_iter()
        .filter(|a| !granted.contains(a))
        .collect();
    assert!(
        missing.is_empty(),
        "src/cloud/aws.rs calls {missing:?} but charts/cloudoptim/files/iam-policy.json does not grant them"
    );
}

#[test]
fn every_grant_is_used() {
    let called = called();
    let unused: Vec<_> = granted()
        .into_iter()
        .filter(|a| {
            !called.contains(a)
                && !IMPLIED
                    .iter()
                    .any(|(implied, by, _)| implied == a && called.contains(*by))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the IAM policy grants {unused:?}, which no code calls: remove them"
    );
}
