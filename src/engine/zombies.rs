//! Zombies (DESIGN.md 3.2): EC2 instances carrying this cluster's tag that no Node stands for, and
//! `available` (unattached) EBS volumes carrying it. Pure: the controller passes what it listed, the
//! instance ids the cluster's Nodes name in their providerID, and when each zombie was first seen (kept
//! in the policy's status, so a restart does not restart the grace period).

use std::collections::{BTreeMap, BTreeSet};

/// What kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZombieKind {
    /// An EC2 instance.
    Instance,
    /// An EBS volume.
    Volume,
}

impl ZombieKind {
    /// `Instance` or `Volume`, as in status.
    pub fn as_str(self) -> &'static str {
        match self {
            ZombieKind::Instance => "Instance",
            ZombieKind::Volume => "Volume",
        }
    }
}

/// An instance as listed (already filtered to this cluster's tag by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceFacts {
    /// Instance id.
    pub id: String,
    /// EC2 state name (`pending`, `running`, `stopped`, `terminated`, ...).
    pub state: String,
    /// Estimated price per hour, if known.
    pub hourly: Option<f64>,
}

/// A zombie found now.
#[derive(Debug, Clone, PartialEq)]
pub struct Zombie {
    /// Instance or volume.
    pub kind: ZombieKind,
    /// EC2 id.
    pub id: String,
    /// When it was first seen as a zombie (unix seconds).
    pub since: i64,
    /// It has been a zombie for the whole grace period: report it as such, and delete it in Delete mode.
    pub due: bool,
    /// Estimated price per hour, if known.
    pub hourly: Option<f64>,
}

/// Instances with no Node and tagged available volumes, each with its first sighting and whether its
/// grace period has passed. Instances that are shutting down or terminated are not zombies.
pub fn find(
    instances: &[InstanceFacts],
    node_instance_ids: &BTreeSet<String>,
    volumes: &[String],
    first_seen: &BTreeMap<(ZombieKind, String), i64>,
    now: i64,
    grace_seconds: i64,
) -> Vec<Zombie> {
    let zombie = |kind: ZombieKind, id: &str, hourly: Option<f64>| {
        let since = first_seen
            .get(&(kind, id.to_string()))
            .copied()
            .unwrap_or(now)
            .min(now);
        Zombie {
            kind,
            id: id.to_string(),
            since,
            due: now - since >= grace_seconds,
            hourly,
        }
    };
    let mut out: Vec<Zombie> = instances
        .iter()
        .filter(|i| {
            matches!(
                i.state.as_str(),
                "pending" | "running" | "stopping" | "stopped"
            )
        })
        .filter(|i| !node_instance_ids.contains(&i.id))
        .map(|i| zombie(ZombieKind::Instance, &i.id, i.hourly))
        .collect();
    out.extend(volumes.iter().map(|v| zombie(ZombieKind::Volume, v, None)));
    out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: &str) -> InstanceFacts {
        InstanceFacts {
            id: id.into(),
            state: state.into(),
            hourly: Some(0.1),
        }
    }

    #[test]
    fn instances_without_a_node_become_due_after_the_grace_period() {
        let nodes: BTreeSet<String> = ["i-node".to_string()].into();
        let instances = [
            instance("i-node", "running"),
            instance("i-lost", "running"),
            instance("i-gone", "terminated"),
            instance("i-leaving", "shutting-down"),
        ];
        let found = find(&instances, &nodes, &[], &BTreeMap::new(), 1000, 1800);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].id.as_str(), found[0].since, found[0].due),
            ("i-lost", 1000, false)
        );
        let seen = [((ZombieKind::Instance, "i-lost".to_string()), 1000)].into();
        let later = find(&instances, &nodes, &[], &seen, 2799, 1800);
        assert!(!later[0].due);
        let later = find(&instances, &nodes, &[], &seen, 2800, 1800);
        assert!(later[0].due && later[0].since == 1000);
    }

    #[test]
    fn volumes_are_reported_with_their_own_first_sighting() {
        let seen = [((ZombieKind::Volume, "vol-1".to_string()), 10)].into();
        let found = find(
            &[],
            &BTreeSet::new(),
            &["vol-1".into(), "vol-2".into()],
            &seen,
            100,
            60,
        );
        assert_eq!(found.len(), 2);
        assert!(found[0].due && found[0].since == 10);
        assert!(!found[1].due && found[1].since == 100);
    }
}
