//! `rightsizing.mode: Apply` (issue #17): which workloads get new requests this pass, and which get
//! their old ones back. Pure: the controller reads the workloads and writes the patches.
//!
//! Rules, in the order they are checked for each workload with a recommendation:
//! 1. `cloudoptim.io/rightsizing: revert` on the workload restores the values recorded before the
//!    first change, at once (a person asked for it; no budget, no cadence). Any other value of that
//!    annotation (`reverted` after a revert, `off`) keeps the workload out of Apply.
//! 2. Never in a namespace of `disruption.excludeNamespaces`, never on a workload (or pod template)
//!    annotated do-not-disrupt. Only Deployments, StatefulSets, DaemonSets and CronJobs are patched:
//!    a bare ReplicaSet or Job has no template worth changing.
//! 3. A field changes only when it moves by more than [`Rules::threshold`] (10%) of its current value;
//!    a container without a request for a resource is left alone (adding a request changes its QoS
//!    class). A limit that is set moves in proportion to its request (rounded up, never below it).
//! 4. At most one change per workload per [`Rules::interval`] (1 day), from the
//!    `cloudoptim.io/rightsized-at` annotation, except an OOM bump: memory that grows after an
//!    OOMKill is applied at once.
//! 5. Each change rolls the workload's pods (a CronJob's next run only): it counts as one disruption
//!    against the policy's budgets for the `Rightsized` reason, together with the rollouts it caused
//!    that are not finished yet. Largest saving first (OOM bumps before everything).
//!
//! The first change records the values it replaces (`cloudoptim.io/rightsizing-previous`); later
//! changes keep that first record, so a revert always returns to what the workload had before
//! CloudOptim touched it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{MIB, Recommendation, Requests, Workload, WorkloadKind};

/// A container's resource fields as written (quantity text), each `None` when not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// `resources.requests.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    /// `resources.requests.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    /// `resources.limits.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// `resources.limits.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

impl Written {
    /// No field set.
    pub fn is_empty(&self) -> bool {
        *self == Written::default()
    }
}

/// One container of a workload's pod template.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// The fields as written.
    pub written: Written,
    /// Requests, parsed.
    pub requests: Requests,
    /// Limits, parsed.
    pub limits: Requests,
}

/// What the `cloudoptim.io/rightsizing` annotation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// No annotation: Apply manages the workload.
    Managed,
    /// `revert`: restore the recorded values.
    Revert,
    /// Any other value (`reverted`, `off`): left alone.
    Out(String),
}

impl Control {
    /// From the annotation's value.
    pub fn from_annotation(value: Option<&str>) -> Control {
        match value.map(str::trim) {
            None | Some("") => Control::Managed,
            Some("revert") => Control::Revert,
            Some(other) => Control::Out(other.to_string()),
        }
    }
}

/// A workload as Apply sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The workload.
    pub workload: Workload,
    /// Its pod template's containers.
    pub containers: Vec<Container>,
    /// `cloudoptim.io/rightsizing`.
    pub control: Control,
    /// Annotated do-not-disrupt (the workload or its pod template).
    pub do_not_disrupt: bool,
    /// In a namespace of `disruption.excludeNamespaces`.
    pub excluded: bool,
    /// `cloudoptim.io/rightsized-at`.
    pub changed_at: Option<DateTime<Utc>>,
    /// `cloudoptim.io/rightsizing-previous`: per container, the values before the first change.
    pub previous: BTreeMap<String, Written>,
    /// A rollout this operator caused is not finished.
    pub rolling_out: bool,
}

/// The limits Apply works within.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// A field changes only when it moves by more than this share of its value (0.10).
    pub threshold: f64,
    /// At most one change per workload in this long (1 day).
    pub interval: Duration,
    /// Rollouts the budgets allow at once (`None`: unlimited).
    pub rollouts_allowed: Option<usize>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            threshold: 0.10,
            interval: Duration::days(1),
            rollouts_allowed: None,
        }
    }
}

/// Why a workload with a recommendation is not changed this pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    /// A do-not-disrupt annotation.
    DoNotDisrupt,
    /// Its namespace is in `disruption.excludeNamespaces`.
    ExcludedNamespace,
    /// `cloudoptim.io/rightsizing` says so.
    OptedOut(String),
    /// A bare ReplicaSet or Job.
    NotPatchable,
    /// Changed less than the interval ago; the next change may come at this time.
    ChangedRecently(DateTime<Utc>),
    /// No field moves by more than the threshold.
    BelowThreshold,
    /// The budgets allow no more rollouts now.
    Budget,
    /// The workload was not found in the cluster.
    NotFound,
}

impl Skip {
    /// Every [`Skip::reason`].
    pub const REASONS: [&'static str; 8] = [
        "DoNotDisrupt",
        "ExcludedNamespace",
        "OptedOut",
        "NotPatchable",
        "ChangedRecently",
        "BelowThreshold",
        "Budget",
        "NotFound",
    ];

    /// A short reason for the status, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::DoNotDisrupt => "DoNotDisrupt",
            Skip::ExcludedNamespace => "ExcludedNamespace",
            Skip::OptedOut(_) => "OptedOut",
            Skip::NotPatchable => "NotPatchable",
            Skip::ChangedRecently(_) => "ChangedRecently",
            Skip::BelowThreshold => "BelowThreshold",
            Skip::Budget => "Budget",
            Skip::NotFound => "NotFound",
        }
    }
}

/// What to do to one workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set these fields (per container), record `previous`, stamp the time.
    Apply {
        /// New values, only the fields that change.
        set: BTreeMap<String, Written>,
        /// The record to keep in `cloudoptim.io/rightsizing-previous` (the first values).
        previous: BTreeMap<String, Written>,
        /// It is (or includes) an OOM bump.
        oom: bool,
        /// It starts a rollout (not a CronJob).
        rollout: bool,
    },
    /// Put these fields back, drop the record, mark the workload `reverted`.
    Revert {
        /// The recorded values (empty: nothing was recorded).
        set: BTreeMap<String, Written>,
    },
    /// Leave it.
    Skip(Skip),
}

/// `250m`, `2`.
pub fn cpu_text(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// `360Mi`.
pub fn memory_text(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(MIB))
}

/// `to` differs from `from` by more than `threshold` of `from`.
fn moves(from: u64, to: u64, threshold: f64) -> bool {
    from == 0 || (to as f64 - from as f64).abs() > threshold * from as f64
}

/// `limit` scaled by `to / from`, rounded up to `unit`, never below `to`.
fn scaled(limit: u64, from: u64, to: u64, unit: u64) -> u64 {
    let exact = (limit as f64 * to as f64 / from.max(1) as f64).ceil() as u64;
    exact.div_ceil(unit).saturating_mul(unit).max(to)
}

/// The fields of one container that change for `target`, with the limits in proportion.
fn container_change(c: &Container, target: &Requests, threshold: f64) -> Written {
    let mut set = Written::default();
    if let (Some(from), Some(to)) = (c.requests.cpu_millis, target.cpu_millis)
        && to != from
        && moves(from, to, threshold)
    {
        set.cpu_request = Some(cpu_text(to));
        if let Some(limit) = c.limits.cpu_millis {
            set.cpu_limit = Some(cpu_text(scaled(limit, from, to, 1)));
        }
    }
    if let (Some(from), Some(to)) = (c.requests.memory_bytes, target.memory_bytes)
        && to != from
        && moves(from, to, threshold)
    {
        set.memory_request = Some(memory_text(to));
        if let Some(limit) = c.limits.memory_bytes {
            set.memory_limit = Some(memory_text(scaled(limit, from, to, MIB)));
        }
    }
    set
}

/// The record after changing `set` on `c`: the earlier record where it has a field, the value as
/// written now otherwise.
fn record(previous: &mut Written, c: &Container, set: &Written) {
    let keep = |old: &mut Option<String>, now: &Option<String>, changed: &Option<String>| {
        if changed.is_some() && old.is_none() {
            *old = now.clone();
        }
    };
    keep(
        &mut previous.cpu_request,
        &c.written.cpu_request,
        &set.cpu_request,
    );
    keep(
        &mut previous.memory_request,
        &c.written.memory_request,
        &set.memory_request,
    );
    keep(
        &mut previous.cpu_limit,
        &c.written.cpu_limit,
        &set.cpu_limit,
    );
    keep(
        &mut previous.memory_limit,
        &c.written.memory_limit,
        &set.memory_limit,
    );
}

/// The decision for every workload that has a recommendation or asks for a revert, in the order of
/// `recs` (largest saving first; the caller's order), OOM bumps first, reverts before everything.
pub fn decide(
    states: &[State],
    recs: &[Recommendation],
    now: DateTime<Utc>,
    rules: &Rules,
) -> Vec<(Workload, Action)> {
    let by_workload: BTreeMap<&Workload, &State> =
        states.iter().map(|s| (&s.workload, s)).collect();
    let mut out = Vec::new();
    for state in states.iter().filter(|s| s.control == Control::Revert) {
        out.push((
            state.workload.clone(),
            Action::Revert {
                set: state.previous.clone(),
            },
        ));
    }
    // Workloads in recommendation order, OOM-bumped ones first.
    let mut order: Vec<&Workload> = Vec::new();
    for oom_first in [true, false] {
        for r in recs.iter().filter(|r| r.oom_bumped == oom_first) {
            if !order.contains(&&r.workload) {
                order.push(&r.workload);
            }
        }
    }
    let mut rollouts_left = rules
        .rollouts_allowed
        .map(|allowed| allowed.saturating_sub(states.iter().filter(|s| s.rolling_out).count()));
    for workload in order {
        let Some(state) = by_workload.get(workload) else {
            out.push((workload.clone(), Action::Skip(Skip::NotFound)));
            continue;
        };
        let skip = |why| (workload.clone(), Action::Skip(why));
        match &state.control {
            Control::Revert => continue,
            Control::Out(value) => {
                out.push(skip(Skip::OptedOut(value.clone())));
                continue;
            }
            Control::Managed => {}
        }
        if state.excluded {
            out.push(skip(Skip::ExcludedNamespace));
            continue;
        }
        if state.do_not_disrupt {
            out.push(skip(Skip::DoNotDisrupt));
            continue;
        }
        if !workload.kind.patchable() {
            out.push(skip(Skip::NotPatchable));
            continue;
        }
        let mut set = BTreeMap::new();
        let mut previous = state.previous.clone();
        let mut oom = false;
        for r in recs.iter().filter(|r| &r.workload == workload) {
            let Some(c) = state.containers.iter().find(|c| c.name == r.container) else {
                continue;
            };
            let change = container_change(c, &r.target(), rules.threshold);
            if change.is_empty() {
                continue;
            }
            oom |= r.oom_bumped
                && change.memory_request.is_some()
                && r.target().memory_bytes > c.requests.memory_bytes;
            record(previous.entry(c.name.clone()).or_default(), c, &change);
            set.insert(c.name.clone(), change);
        }
        if set.is_empty() {
            out.push(skip(Skip::BelowThreshold));
            continue;
        }
        if let Some(at) = state.changed_at
            && !oom
            && now < at + rules.interval
        {
            out.push(skip(Skip::ChangedRecently(at + rules.interval)));
            continue;
        }
        let rollout = workload.kind != WorkloadKind::CronJob;
        if rollout && let Some(left) = rollouts_left.as_mut() {
            if *left == 0 {
                out.push(skip(Skip::Budget));
                continue;
            }
            *left -= 1;
        }
        out.push((
            workload.clone(),
            Action::Apply {
                set,
                previous,
                oom,
                rollout,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rightsizing::{Confidence, GIB};

    fn workload(kind: WorkloadKind, name: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            kind,
            name: name.into(),
        }
    }

    fn container(cpu: u64, memory: u64, limits: Option<(u64, u64)>) -> Container {
        Container {
            name: "app".into(),
            written: Written {
                cpu_request: Some(cpu_text(cpu)),
                memory_request: Some(memory_text(memory)),
                cpu_limit: limits.map(|l| cpu_text(l.0)),
                memory_limit: limits.map(|l| memory_text(l.1)),
            },
            requests: Requests {
                cpu_millis: Some(cpu),
                memory_bytes: Some(memory),
            },
            limits: Requests {
                cpu_millis: limits.map(|l| l.0),
                memory_bytes: limits.map(|l| l.1),
            },
        }
    }

    fn state(w: &Workload, c: Container) -> State {
        State {
            workload: w.clone(),
            containers: vec![c],
            control: Control::Managed,
            do_not_disrupt: false,
            excluded: false,
            changed_at: None,
            previous: BTreeMap::new(),
            rolling_out: false,
        }
    }

    fn rec(w: &Workload, current: (u64, u64), to: (u64, u64), saving: f64) -> Recommendation {
        Recommendation {
            workload: w.clone(),
            container: "app".into(),
            replicas: 1,
            current: Requests {
                cpu_millis: Some(current.0),
                memory_bytes: Some(current.1),
            },
            recommended: Requests {
                cpu_millis: Some(to.0),
                memory_bytes: Some(to.1),
            },
            confidence: Confidence::High,
            span_seconds: 14 * 86_400,
            oom_bumped: false,
            monthly_savings: saving,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn requests_change_and_limits_follow_in_proportion_with_the_old_values_recorded() {
        let web = workload(WorkloadKind::Deployment, "web");
        let states = [state(&web, container(1000, GIB, Some((2000, 2 * GIB))))];
        let recs = [rec(&web, (1000, GIB), (250, 360 * MIB), 10.0)];
        let decided = decide(&states, &recs, now(), &Rules::default());
        let Action::Apply { set, previous, .. } = &decided[0].1 else {
            panic!("{decided:?}");
        };
        assert_eq!(
            set["app"],
            Written {
                cpu_request: Some("250m".into()),
                memory_request: Some("360Mi".into()),
                cpu_limit: Some("500m".into()),
                memory_limit: Some("720Mi".into()),
            }
        );
        assert_eq!(previous["app"], states[0].containers[0].written);
    }

    #[test]
    fn a_change_of_ten_percent_or_less_is_left_alone_and_a_missing_request_is_not_added() {
        let web = workload(WorkloadKind::Deployment, "web");
        let states = [state(&web, container(1000, GIB, None))];
        let recs = [rec(&web, (1000, GIB), (1100, GIB * 95 / 100), 1.0)];
        assert_eq!(
            decide(&states, &recs, now(), &Rules::default())[0].1,
            Action::Skip(Skip::BelowThreshold)
        );
        let mut bare = state(&web, container(1000, GIB, None));
        bare.containers[0].requests.cpu_millis = None;
        bare.containers[0].written.cpu_request = None;
        let recs = [rec(&web, (1000, GIB), (100, GIB), 1.0)];
        assert_eq!(
            decide(&[bare], &recs, now(), &Rules::default())[0].1,
            Action::Skip(Skip::BelowThreshold)
        );
    }

    #[test]
    fn once_a_day_except_an_oom_bump_and_the_first_record_is_kept() {
        let api = workload(WorkloadKind::Deployment, "api");
        let mut s = state(&api, container(500, 512 * MIB, Some((1000, 512 * MIB))));
        s.changed_at = Some(now() - Duration::hours(3));
        s.previous.insert(
            "app".into(),
            Written {
                memory_request: Some("1Gi".into()),
                memory_limit: Some("1Gi".into()),
                ..Written::default()
            },
        );
        let shrink = [rec(&api, (500, 512 * MIB), (100, 512 * MIB), 5.0)];
        assert_eq!(
            decide(std::slice::from_ref(&s), &shrink, now(), &Rules::default())[0].1,
            Action::Skip(Skip::ChangedRecently(now() + Duration::hours(21)))
        );
        let mut bump = rec(&api, (500, 512 * MIB), (500, 615 * MIB), -1.0);
        bump.oom_bumped = true;
        let decided = decide(std::slice::from_ref(&s), &[bump], now(), &Rules::default());
        let Action::Apply {
            set, previous, oom, ..
        } = &decided[0].1
        else {
            panic!("{decided:?}");
        };
        assert!(oom);
        assert_eq!(set["app"].memory_request.as_deref(), Some("615Mi"));
        assert_eq!(set["app"].memory_limit.as_deref(), Some("615Mi"));
        assert_eq!(
            previous["app"].memory_request.as_deref(),
            Some("1Gi"),
            "the first record stays"
        );
        assert_eq!(
            previous["app"].cpu_request, None,
            "CPU did not change, nothing recorded for it"
        );
    }

    #[test]
    fn exclusions_opt_outs_and_unpatchable_kinds_are_never_changed() {
        let recs_for = |w: &Workload| rec(w, (1000, GIB), (100, 100 * MIB), 1.0);
        let cases = [
            (
                WorkloadKind::Deployment,
                "excluded",
                Skip::ExcludedNamespace,
            ),
            (WorkloadKind::StatefulSet, "pinned", Skip::DoNotDisrupt),
            (
                WorkloadKind::Deployment,
                "off",
                Skip::OptedOut("off".into()),
            ),
            (WorkloadKind::ReplicaSet, "bare", Skip::NotPatchable),
            (WorkloadKind::Job, "once", Skip::NotPatchable),
        ];
        for (kind, name, expected) in cases {
            let w = workload(kind, name);
            let mut s = state(&w, container(1000, GIB, None));
            s.excluded = name == "excluded";
            s.do_not_disrupt = name == "pinned";
            if name == "off" {
                s.control = Control::from_annotation(Some("off"));
            }
            let decided = decide(&[s], &[recs_for(&w)], now(), &Rules::default());
            assert_eq!(decided, vec![(w, Action::Skip(expected))]);
        }
    }

    #[test]
    fn budgets_count_unfinished_rollouts_and_a_cronjob_rolls_nothing_out() {
        let names = ["a", "b", "c"];
        let mut states: Vec<State> = names
            .iter()
            .map(|n| {
                state(
                    &workload(WorkloadKind::Deployment, n),
                    container(1000, GIB, None),
                )
            })
            .collect();
        let cron = workload(WorkloadKind::CronJob, "report");
        states.push(state(&cron, container(1000, GIB, None)));
        let mut busy = state(
            &workload(WorkloadKind::Deployment, "busy"),
            container(100, GIB, None),
        );
        busy.rolling_out = true;
        states.push(busy);
        let mut recs: Vec<Recommendation> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                rec(
                    &workload(WorkloadKind::Deployment, n),
                    (1000, GIB),
                    (100, GIB),
                    10.0 - i as f64,
                )
            })
            .collect();
        recs.push(rec(&cron, (1000, GIB), (100, GIB), 1.0));
        let rules = Rules {
            rollouts_allowed: Some(2),
            ..Rules::default()
        };
        let decided: Vec<(String, &str)> = decide(&states, &recs, now(), &rules)
            .iter()
            .map(|(w, a)| {
                let what = match a {
                    Action::Apply { .. } => "apply",
                    Action::Skip(s) => s.reason(),
                    Action::Revert { .. } => "revert",
                };
                (w.name.clone(), what)
            })
            .collect();
        assert_eq!(
            decided,
            [
                ("a".to_string(), "apply"),
                ("b".to_string(), "Budget"),
                ("c".to_string(), "Budget"),
                ("report".to_string(), "apply"),
            ]
        );
    }

    #[test]
    fn a_revert_restores_the_record_at_once_even_without_a_recommendation() {
        let web = workload(WorkloadKind::Deployment, "web");
        let mut s = state(&web, container(120, 360 * MIB, None));
        s.control = Control::from_annotation(Some("revert"));
        s.changed_at = Some(now());
        let original = Written {
            cpu_request: Some("1".into()),
            memory_request: Some("1Gi".into()),
            ..Written::default()
        };
        s.previous.insert("app".into(), original.clone());
        let rules = Rules {
            rollouts_allowed: Some(0),
            ..Rules::default()
        };
        let decided = decide(&[s], &[], now(), &rules);
        assert_eq!(
            decided,
            vec![(
                web,
                Action::Revert {
                    set: BTreeMap::from([("app".to_string(), original)])
                }
            )]
        );
    }
}
