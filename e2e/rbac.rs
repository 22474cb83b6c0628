//! The chart's RBAC is exactly what the operator uses: no verb missing, none extra.
//!
//! Every other end-to-end test runs its operators as the chart's ServiceAccount (see
//! `support/rbac.rs`) and leaves the requests the API server's audit log saw in
//! `$CARGO_TARGET_TMPDIR/rbac-used/`. This test (ignored on its own, run last by `scripts/test.sh`)
//! fails on any request the API server refused with 403 (a missing grant) and on any grant no request
//! used (an extra one).

mod support;

use std::collections::BTreeSet;

use support::rbac::{Mode, rendered_rbac, used_dir};

/// `verb group resource` for every rule of the rendered ClusterRole and Role.
fn granted(mode: Mode) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for object in rendered_rbac("rbac-check", mode) {
        if !matches!(object["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in object["rules"].as_array().expect("rules") {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in list("apiGroups") {
                let group = if group.is_empty() {
                    "core".into()
                } else {
                    group
                };
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert(format!("{verb} {group} {resource}"));
                    }
                }
            }
        }
    }
    out
}

/// Fail on a refused request or an unused grant of `mode`.
fn check(mode: Mode) {
    let dir = used_dir(mode);
    let mut used = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run the other e2e tests first)", dir.display()))
    {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
        for line in text.lines() {
            let (request, code) = line.rsplit_once(' ').expect("verb group resource code");
            if code == "403" {
                refused.insert(request.to_string());
            }
            used.insert(request.to_string());
        }
    }
    assert!(
        used.len() >= 3,
        "{mode:?}: too few requests recorded to judge: {used:?}"
    );
    assert!(
        refused.is_empty(),
        "{mode:?}: the API server refused the ServiceAccount (missing in charts/cloudoptim/templates/rbac.yaml): {refused:#?}"
    );
    let granted = granted(mode);
    let extra: Vec<_> = granted.difference(&used).collect();
    assert!(
        extra.is_empty(),
        "{mode:?}: charts/cloudoptim/templates/rbac.yaml grants what no request used: {extra:#?}\nused: {used:#?}"
    );
}

#[test]
#[ignore = "run by scripts/test.sh after every other end-to-end test"]
fn the_chart_grants_exactly_the_verbs_the_operator_uses() {
    if support::chart::require_helm().is_none() {
        return;
    }
    check(Mode::Operator);
}

#[test]
#[ignore = "run by scripts/test.sh after every other end-to-end test"]
fn the_chart_grants_exactly_the_verbs_the_hub_uses() {
    if support::chart::require_helm().is_none() {
        return;
    }
    check(Mode::Hub);
}
