//! The operator's least-privilege IAM policy, rendered for one cluster.
//!
//! The template (`charts/cloudoptim/files/iam-policy.json`) is the single source: the chart ships it,
//! `cloudoptim iam-policy` renders it with this cluster's values, and `tests/iam_policy.rs` checks that
//! every AWS call in `src/cloud/aws.rs` is allowed by it and nothing else is. Every mutating action is
//! scoped to resources carrying `cloudoptim.io/cluster = <this cluster>`, in this account and region.

use std::collections::BTreeSet;

use serde_json::Value;

/// The policy template; `${NAME}` placeholders are filled by [`render`].
pub const TEMPLATE: &str = include_str!("../../charts/cloudoptim/files/iam-policy.json");

/// Actions the template grants that no SDK call names, because AWS checks them on behalf of one:
/// `(granted action, the call that needs it, why)`.
pub const IMPLIED: &[(&str, &str, &str)] = &[
    (
        "ec2:CreateTags",
        "ec2:CreateSnapshot",
        "the snapshot is tagged in the same call (TagSpecifications)",
    ),
    (
        "ec2:CreateTags",
        "ec2:RunInstances",
        "a replacement instance and its volumes are tagged in the launch call (TagSpecifications)",
    ),
    (
        "ec2:RunInstances",
        "autoscaling:UpdateAutoScalingGroup",
        "Auto Scaling checks that the caller may launch the group's launch template",
    ),
    (
        "iam:PassRole",
        "autoscaling:UpdateAutoScalingGroup",
        "the launch template's instance profile is passed to EC2 on the caller's behalf",
    ),
];

/// Values for one cluster's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParams {
    /// The `cloudoptim.io/cluster` tag value of this cluster's instances, volumes, groups and launch
    /// templates (the chart's `clusterName`).
    pub cluster_name: String,
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// 12-digit account id.
    pub account_id: String,
    /// Name of the interruption queue (EventBridge -> SQS).
    pub queue_name: String,
    /// The node role the groups' launch templates carry; `None` drops the PassRole statement (groups
    /// whose templates have no instance profile).
    pub node_role_arn: Option<String>,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
}

/// Why a policy cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IamError {
    /// A value that would widen or break the policy.
    #[error("{field} {value:?} is not valid: {fix}")]
    Invalid {
        field: &'static str,
        value: String,
        fix: &'static str,
    },
    /// The template itself is broken (a build defect).
    #[error("the IAM policy template is not valid JSON: {0}")]
    Template(String),
}

fn check(
    field: &'static str,
    value: &str,
    ok: impl Fn(char) -> bool,
    fix: &'static str,
) -> Result<(), IamError> {
    if value.is_empty() || !value.chars().all(ok) {
        return Err(IamError::Invalid {
            field,
            value: value.to_string(),
            fix,
        });
    }
    Ok(())
}

impl PolicyParams {
    fn validate(&self) -> Result<(), IamError> {
        // No wildcards or quotes: a `*` or `?` here would widen a StringEquals/ARN match to other
        // clusters, which is exactly what this policy exists to prevent.
        check(
            "--cluster-name",
            &self.cluster_name,
            |c| c.is_ascii_alphanumeric() || "-_.:/@+=".contains(c),
            "use the exact cloudoptim.io/cluster tag value (letters, digits, - _ . : / @ + =; no wildcards)",
        )?;
        check(
            "--region",
            &self.region,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "use a region name such as eu-west-1",
        )?;
        if self.account_id.len() != 12 {
            return Err(IamError::Invalid {
                field: "--account-id",
                value: self.account_id.clone(),
                fix: "use the 12-digit AWS account id",
            });
        }
        check(
            "--account-id",
            &self.account_id,
            |c| c.is_ascii_digit(),
            "use the 12-digit AWS account id",
        )?;
        check(
            "--queue-name",
            &self.queue_name,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.',
            "use the interruption queue's exact name (no wildcards)",
        )?;
        if !matches!(self.partition.as_str(), "aws" | "aws-cn" | "aws-us-gov") {
            return Err(IamError::Invalid {
                field: "--partition",
                value: self.partition.clone(),
                fix: "use aws, aws-cn or aws-us-gov",
            });
        }
        if let Some(arn) = &self.node_role_arn {
            let prefix = format!("arn:{}:iam::{}:role/", self.partition, self.account_id);
            if !arn.starts_with(&prefix) || arn.contains('*') || arn.len() == prefix.len() {
                return Err(IamError::Invalid {
                    field: "--node-role-arn",
                    value: arn.clone(),
                    fix: "use the exact ARN of the nodes' role in this account (arn:<partition>:iam::<account>:role/<name>)",
                });
            }
        }
        Ok(())
    }
}

/// The policy document for `params`, pretty-printed.
pub fn render(params: &PolicyParams) -> Result<String, IamError> {
    params.validate()?;
    let mut text = TEMPLATE.to_string();
    for (name, value) in [
        ("PARTITION", params.partition.as_str()),
        ("REGION", &params.region),
        ("ACCOUNT_ID", &params.account_id),
        ("CLUSTER_NAME", &params.cluster_name),
        ("QUEUE_NAME", &params.queue_name),
        (
            "NODE_ROLE_ARN",
            params.node_role_arn.as_deref().unwrap_or_default(),
        ),
    ] {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| IamError::Template(e.to_string()))?;
    if let Some(statements) = doc["Statement"].as_array_mut() {
        // A statement whose resource was left empty (no node role) is dropped, not widened.
        statements.retain(|s| s["Resource"].as_str() != Some(""));
    }
    serde_json::to_string_pretty(&doc).map_err(|e| IamError::Template(e.to_string()))
}

/// Every action a policy document allows, e.g. `ec2:DescribeInstances`.
pub fn actions(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for statement in doc["Statement"].as_array().into_iter().flatten() {
        match &statement["Action"] {
            Value::String(a) => {
                out.insert(a.clone());
            }
            Value::Array(list) => {
                out.extend(list.iter().filter_map(|a| a.as_str().map(String::from)))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> PolicyParams {
        PolicyParams {
            cluster_name: "prod-eu".into(),
            region: "eu-west-1".into(),
            account_id: "123456789012".into(),
            queue_name: "cloudoptim-prod-eu".into(),
            node_role_arn: Some("arn:aws:iam::123456789012:role/prod-eu-nodes".into()),
            partition: "aws".into(),
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_every_write_names_this_cluster() {
        let text = render(&params()).unwrap();
        assert!(!text.contains("${"), "unfilled placeholder in {text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        for s in doc["Statement"].as_array().unwrap() {
            let acts = actions(&serde_json::json!({ "Statement": [s] }));
            let read_only = acts.iter().all(|a| {
                let op = a.split(':').nth(1).unwrap();
                op.starts_with("Describe")
                    || op.starts_with("Receive")
                    || op == "DeleteMessage"
                    || a == "pricing:GetProducts"
            });
            if read_only || s["Sid"] == "InterruptionQueue" {
                // Reads can't be tag-scoped in EC2 (nor the Price List API, which has no resource
                // type); the queue is named exactly.
                if s["Sid"] == "InterruptionQueue" {
                    assert_eq!(
                        s["Resource"],
                        "arn:aws:sqs:eu-west-1:123456789012:cloudoptim-prod-eu"
                    );
                }
                continue;
            }
            let scoped = s.to_string();
            assert!(
                scoped.contains("\"prod-eu\"")
                    || scoped.contains("ec2:CreateAction")
                    || scoped.contains("launch-template/*")
                    || scoped.contains("role/prod-eu-nodes"),
                "mutating statement not scoped to this cluster: {s}"
            );
            assert!(
                !s["Resource"].as_str().unwrap_or("*").contains("::*:")
                    && s["Resource"] != "arn:aws:ec2:*:*:instance/*",
                "resource spans accounts or regions: {s}"
            );
        }
    }

    #[test]
    fn wildcards_and_bad_values_are_refused_naming_the_flag() {
        for (mutate, field) in [
            (
                (|p: &mut PolicyParams| p.cluster_name = "*".into()) as fn(&mut PolicyParams),
                "--cluster-name",
            ),
            (|p| p.cluster_name = "a\"b".into(), "--cluster-name"),
            (|p| p.account_id = "12345".into(), "--account-id"),
            (|p| p.queue_name = "cloudoptim-*".into(), "--queue-name"),
            (|p| p.region = "eu-*".into(), "--region"),
            (
                |p| p.node_role_arn = Some("arn:aws:iam::999999999999:role/x".into()),
                "--node-role-arn",
            ),
            (|p| p.partition = "aws-x".into(), "--partition"),
        ] {
            let mut p = params();
            mutate(&mut p);
            match render(&p) {
                Err(IamError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn without_a_node_role_the_pass_role_statement_is_dropped_not_widened() {
        let mut p = params();
        p.node_role_arn = None;
        let doc: Value = serde_json::from_str(&render(&p).unwrap()).unwrap();
        assert!(!actions(&doc).contains("iam:PassRole"));
        assert!(actions(&doc).contains("ec2:TerminateInstances"));
    }
}
