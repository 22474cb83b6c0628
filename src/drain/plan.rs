//! The drain's decisions, over plain data: which pods of a node to evict, in which order, which to leave
//! alone, and what forbids the drain. Nothing here talks to Kubernetes; [`super`] lists the pods, turns
//! them into [`PodFacts`], asks [`plan`] and carries the answer out.
//!
//! Rules, in the order they are applied to each pod:
//! 1. Finished pods (`Succeeded`/`Failed`) and pods already terminating (`deletionTimestamp` set) are
//!    skipped: there is nothing to evict (the drainer then waits, within its deadline, until the
//!    terminating ones are gone before it calls the node drained).
//! 2. Mirror pods (static pods, annotation `kubernetes.io/config.mirror`) are skipped: the API server
//!    cannot evict them; they go with the node.
//! 3. DaemonSet pods (controller reference of kind `DaemonSet`) are skipped: the DaemonSet controller
//!    would put them straight back, and they serve the node until it goes (what `kubectl drain
//!    --ignore-daemonsets` does).
//! 4. Any other pod that forbids disruption (`cloudoptim.io/do-not-disrupt: "true"` and its aliases)
//!    blocks the whole drain before anything is evicted: [`plan`] returns [`Blocked`] naming every such
//!    pod.
//! 5. The rest are evicted in waves: first every non-critical pod, lowest priority first; then, once those
//!    are gone, the critical ones (priority class `system-cluster-critical` / `system-node-critical`, or a
//!    priority at or above the system-critical threshold), so DNS, CNI and the like keep serving the pods
//!    still being moved.

use std::fmt;

/// Priority classes Kubernetes reserves for pods the cluster cannot work without.
pub const CRITICAL_PRIORITY_CLASSES: [&str; 2] =
    ["system-cluster-critical", "system-node-critical"];
/// Priorities from here up are system-critical (`scheduling.SystemCriticalPriority`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Names one pod: namespace, name and the uid that tells it apart from a later pod of the same name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the drain needs to know about one pod on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// Which pod.
    pub pod: PodRef,
    /// Phase `Succeeded` or `Failed`.
    pub finished: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// A mirror (static) pod.
    pub mirror: bool,
    /// Its controller is a DaemonSet.
    pub daemon_set: bool,
    /// Annotated so that CloudOptim must not disrupt it.
    pub do_not_disrupt: bool,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// `spec.priorityClassName`.
    pub priority_class: Option<String>,
}

impl PodFacts {
    /// A running, evictable pod with priority 0 and nothing special about it.
    pub fn new(namespace: &str, name: &str, uid: &str) -> Self {
        PodFacts {
            pod: PodRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
            },
            finished: false,
            terminating: false,
            mirror: false,
            daemon_set: false,
            do_not_disrupt: false,
            priority: 0,
            priority_class: None,
        }
    }

    /// System-critical: evicted only after every other pod is gone.
    pub fn critical(&self) -> bool {
        self.priority >= SYSTEM_CRITICAL_PRIORITY
            || self
                .priority_class
                .as_deref()
                .is_some_and(|c| CRITICAL_PRIORITY_CLASSES.contains(&c))
    }

    /// A pod a drain would evict: not finished, not terminating, not a mirror or DaemonSet pod. Terminating
    /// its node without a drain would kill it.
    pub fn evictable(&self) -> bool {
        self.skip().is_none()
    }

    fn skip(&self) -> Option<Skip> {
        if self.finished {
            Some(Skip::Finished)
        } else if self.terminating {
            Some(Skip::Terminating)
        } else if self.mirror {
            Some(Skip::Mirror)
        } else if self.daemon_set {
            Some(Skip::DaemonSet)
        } else {
            None
        }
    }
}

/// Why a pod is left on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// Phase `Succeeded` or `Failed`.
    Finished,
    /// Already being deleted.
    Terminating,
    /// A mirror (static) pod.
    Mirror,
    /// Owned by a DaemonSet.
    DaemonSet,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::Finished => "finished",
            Skip::Terminating => "terminating",
            Skip::Mirror => "mirror",
            Skip::DaemonSet => "DaemonSet",
        })
    }
}

/// How urgent a pod is to the cluster; waves go from the first tier to the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Ordinary workloads.
    Normal,
    /// System-critical pods.
    Critical,
}

/// Pods evicted together; the next wave starts only when this one is gone from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// The tier of every pod in the wave.
    pub tier: Tier,
    /// The pods, lowest priority first.
    pub pods: Vec<PodRef>,
}

/// What to do with the pods of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    /// Waves in eviction order; empty when nothing is left to evict.
    pub waves: Vec<Wave>,
    /// Pods left on the node, and why.
    pub skipped: Vec<(PodRef, Skip)>,
}

impl DrainPlan {
    /// Nothing left to evict.
    pub fn is_empty(&self) -> bool {
        self.waves.is_empty()
    }
}

/// Pods that forbid the drain; nothing may be evicted while they run on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Every do-not-disrupt pod on the node, sorted.
    pub pods: Vec<PodRef>,
}

/// Decide how to drain a node that runs `pods`.
pub fn plan(pods: &[PodFacts]) -> Result<DrainPlan, Blocked> {
    let mut skipped = Vec::new();
    let mut evictable = Vec::new();
    let mut blocking = Vec::new();
    for facts in pods {
        match facts.skip() {
            Some(why) => skipped.push((facts.pod.clone(), why)),
            None if facts.do_not_disrupt => blocking.push(facts.pod.clone()),
            None => evictable.push(facts),
        }
    }
    if !blocking.is_empty() {
        blocking.sort();
        return Err(Blocked { pods: blocking });
    }
    evictable.sort_by(|a, b| (tier(a), a.priority, &a.pod).cmp(&(tier(b), b.priority, &b.pod)));
    let mut waves: Vec<Wave> = Vec::new();
    for facts in evictable {
        let tier = tier(facts);
        match waves.last_mut() {
            Some(wave) if wave.tier == tier => wave.pods.push(facts.pod.clone()),
            _ => waves.push(Wave {
                tier,
                pods: vec![facts.pod.clone()],
            }),
        }
    }
    skipped.sort();
    Ok(DrainPlan { waves, skipped })
}

fn tier(facts: &PodFacts) -> Tier {
    if facts.critical() {
        Tier::Critical
    } else {
        Tier::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodFacts {
        PodFacts::new("app", name, &format!("uid-{name}"))
    }

    fn names(wave: &Wave) -> Vec<&str> {
        wave.pods.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn ordinary_pods_are_evicted_in_one_wave_lowest_priority_first() {
        let mut high = pod("high");
        high.priority = 1000;
        let mut low = pod("low");
        low.priority = -10;
        let plan = plan(&[high, pod("zero"), low]).expect("not blocked");
        assert_eq!(plan.waves.len(), 1);
        assert_eq!(plan.waves[0].tier, Tier::Normal);
        assert_eq!(names(&plan.waves[0]), ["low", "zero", "high"]);
    }

    #[test]
    fn critical_pods_come_in_a_later_wave_than_every_ordinary_pod() {
        let mut dns = pod("coredns");
        dns.priority_class = Some("system-cluster-critical".into());
        let mut cni = pod("cni");
        cni.priority = SYSTEM_CRITICAL_PRIORITY + 1000;
        let mut busy = pod("busy");
        busy.priority = 1_000_000;
        let plan = plan(&[dns, busy, cni, pod("web")]).expect("not blocked");
        let tiers: Vec<Tier> = plan.waves.iter().map(|w| w.tier).collect();
        assert_eq!(tiers, [Tier::Normal, Tier::Critical]);
        assert_eq!(names(&plan.waves[0]), ["web", "busy"]);
        assert_eq!(names(&plan.waves[1]), ["coredns", "cni"]);
    }

    #[test]
    fn node_critical_priority_class_alone_makes_a_pod_critical() {
        let mut proxy = pod("kube-proxy");
        proxy.priority_class = Some("system-node-critical".into());
        assert!(proxy.critical());
        assert!(!pod("web").critical());
    }

    #[test]
    fn daemon_set_and_mirror_pods_are_skipped_not_evicted() {
        let mut ds = pod("fluentbit");
        ds.daemon_set = true;
        let mut mirror = pod("etcd");
        mirror.mirror = true;
        let plan = plan(&[ds.clone(), mirror.clone(), pod("web")]).expect("not blocked");
        assert_eq!(names(&plan.waves[0]), ["web"]);
        assert!(!ds.evictable() && !mirror.evictable());
        assert_eq!(
            plan.skipped,
            [(mirror.pod, Skip::Mirror), (ds.pod, Skip::DaemonSet)]
        );
    }

    #[test]
    fn terminating_and_finished_pods_are_skipped() {
        let mut leaving = pod("leaving");
        leaving.terminating = true;
        let mut done = pod("job-done");
        done.finished = true;
        assert!(!leaving.evictable() && !done.evictable() && pod("web").evictable());
        let plan = plan(&[leaving, done]).expect("not blocked");
        assert!(plan.is_empty(), "nothing to evict: {plan:?}");
        let why: Vec<Skip> = plan.skipped.iter().map(|(_, s)| *s).collect();
        assert_eq!(why, [Skip::Finished, Skip::Terminating]);
    }

    #[test]
    fn a_do_not_disrupt_pod_blocks_the_drain_and_is_named() {
        let mut pinned = pod("pinned");
        pinned.do_not_disrupt = true;
        let blocked = plan(&[pod("web"), pinned.clone()]).expect_err("blocked");
        assert_eq!(blocked.pods, [pinned.pod]);
    }

    #[test]
    fn every_do_not_disrupt_pod_is_named_in_order() {
        let mut b = pod("b");
        b.do_not_disrupt = true;
        let mut a = pod("a");
        a.do_not_disrupt = true;
        let blocked = plan(&[b.clone(), a.clone()]).expect_err("blocked");
        assert_eq!(blocked.pods, [a.pod, b.pod]);
    }

    #[test]
    fn a_do_not_disrupt_pod_that_is_already_leaving_does_not_block() {
        let mut finished = pod("batch");
        finished.do_not_disrupt = true;
        finished.finished = true;
        let mut ds = pod("agent");
        ds.do_not_disrupt = true;
        ds.daemon_set = true;
        let plan = plan(&[finished, ds, pod("web")]).expect("not blocked");
        assert_eq!(names(&plan.waves[0]), ["web"]);
    }

    #[test]
    fn an_empty_node_has_an_empty_plan() {
        assert_eq!(plan(&[]), Ok(DrainPlan::default()));
    }

    #[test]
    fn equal_priorities_are_ordered_by_namespace_and_name() {
        let mut other = PodFacts::new("a-team", "z", "u1");
        other.priority = 0;
        let plan = plan(&[pod("b"), pod("a"), other]).expect("not blocked");
        let order: Vec<String> = plan.waves[0].pods.iter().map(|p| p.to_string()).collect();
        assert_eq!(order, ["a-team/z", "app/a", "app/b"]);
    }
}
