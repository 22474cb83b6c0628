//! Zombies (DESIGN.md 3.2): EC2 instances carrying this cluster's tag that no Node stands for, and
//! `available` (unattached) EBS volumes carrying it. Pure: the controller passes what it listed, the
//! instance ids the cluster's Nodes name in their providerID, and when each zombie was first seen (kept
//! in the policy's status, so a restart does not restart the grace period).
//!
//! Nothing that may hold data or be about to join is a zombie: a volume that a PersistentVolume (any
//! phase) or a VolumeSnapshotContent names is kept whatever its state (a StatefulSet scaled to zero by
//! hibernation leaves exactly such volumes detached every night), a `pending` instance is still
//! booting, and the grace periods have floors ([`MIN_VOLUME_GRACE`], [`MIN_INSTANCE_GRACE`]) that no
//! spec can go below.

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

/// The least time a volume must be unattached and unreferenced before it is a zombie: 1 hour.
pub const MIN_VOLUME_GRACE: i64 = 3600;
/// The least time an instance must have had no Node before it is a zombie: 10 minutes, longer than a
/// node takes to boot and register.
pub const MIN_INSTANCE_GRACE: i64 = 600;

/// Grace periods in seconds, each at least its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// For instances.
    pub instances: i64,
    /// For volumes.
    pub volumes: i64,
}

impl Grace {
    /// The spec's grace period raised to each kind's floor (`floors` = (instances, volumes); the
    /// operator passes [`MIN_INSTANCE_GRACE`] and [`MIN_VOLUME_GRACE`]).
    pub fn with_floors(spec_seconds: i64, floors: (i64, i64)) -> Grace {
        Grace {
            instances: spec_seconds.max(floors.0),
            volumes: spec_seconds.max(floors.1),
        }
    }

    fn of(&self, kind: ZombieKind) -> i64 {
        match kind {
            ZombieKind::Instance => self.instances,
            ZombieKind::Volume => self.volumes,
        }
    }
}

/// The EBS volume id in a PersistentVolume's `csi.volumeHandle` / `awsElasticBlockStore.volumeID` or a
/// VolumeSnapshotContent's `source.volumeHandle`: `vol-0abc`, or `aws://us-east-1a/vol-0abc`.
pub fn ebs_volume_id(handle: &str) -> Option<&str> {
    let id = handle.rsplit('/').next()?;
    id.starts_with("vol-").then_some(id)
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

/// Instances with no Node and tagged available volumes no PersistentVolume or snapshot content names,
/// each with its first sighting and whether its grace period has passed. Instances that are booting
/// (`pending`), shutting down or terminated are not zombies.
pub fn find(
    instances: &[InstanceFacts],
    node_instance_ids: &BTreeSet<String>,
    volumes: &[String],
    referenced_volumes: &BTreeSet<String>,
    first_seen: &BTreeMap<(ZombieKind, String), i64>,
    now: i64,
    grace: Grace,
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
            due: now - since >= grace.of(kind),
            hourly,
        }
    };
    let mut out: Vec<Zombie> = instances
        .iter()
        .filter(|i| matches!(i.state.as_str(), "running" | "stopping" | "stopped"))
        .filter(|i| !node_instance_ids.contains(&i.id))
        .map(|i| zombie(ZombieKind::Instance, &i.id, i.hourly))
        .collect();
    out.extend(
        volumes
            .iter()
            .filter(|v| !referenced_volumes.contains(*v))
            .map(|v| zombie(ZombieKind::Volume, v, None)),
    );
    out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_volume_a_persistent_volume_or_snapshot_names_is_never_a_zombie() {
        let referenced: BTreeSet<String> = ["vol-pv".to_string()].into();
        let seen = [
            ((ZombieKind::Volume, "vol-pv".to_string()), 0),
            ((ZombieKind::Volume, "vol-free".to_string()), 0),
        ]
        .into();
        let found = find(
            &[],
            &BTreeSet::new(),
            &["vol-pv".into(), "vol-free".into()],
            &referenced,
            &seen,
            1_000_000,
            Grace::with_floors(0, (MIN_INSTANCE_GRACE, MIN_VOLUME_GRACE)),
        );
        let ids: Vec<&str> = found.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(ids, ["vol-free"]);
        assert_eq!(ebs_volume_id("aws://us-east-1a/vol-0abc"), Some("vol-0abc"));
        assert_eq!(ebs_volume_id("vol-0abc"), Some("vol-0abc"));
        assert_eq!(ebs_volume_id("fs-123"), None);
    }

    #[test]
    fn grace_periods_have_floors_and_pending_instances_are_booting() {
        let grace = Grace::with_floors(0, (MIN_INSTANCE_GRACE, MIN_VOLUME_GRACE));
        assert_eq!(
            grace,
            Grace {
                instances: 600,
                volumes: 3600
            }
        );
        let instances = [instance("i-boot", "pending"), instance("i-lost", "running")];
        let found = find(
            &instances,
            &none(),
            &["vol-1".into()],
            &none(),
            &BTreeMap::new(),
            0,
            grace,
        );
        let ids: Vec<&str> = found.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(
            ids,
            ["i-lost", "vol-1"],
            "a pending instance is not a zombie"
        );
        let seen = [
            ((ZombieKind::Instance, "i-lost".to_string()), 0),
            ((ZombieKind::Volume, "vol-1".to_string()), 0),
        ]
        .into();
        let at = |now| {
            find(
                &instances,
                &none(),
                &["vol-1".into()],
                &none(),
                &seen,
                now,
                grace,
            )
            .into_iter()
            .map(|z| (z.id, z.due))
            .collect::<Vec<_>>()
        };
        assert_eq!(at(599), [("i-lost".into(), false), ("vol-1".into(), false)]);
        assert_eq!(at(600), [("i-lost".into(), true), ("vol-1".into(), false)]);
        assert_eq!(at(3600), [("i-lost".into(), true), ("vol-1".into(), true)]);
        assert_eq!(
            Grace::with_floors(7200, (600, 3600)).volumes,
            7200,
            "a longer spec wins"
        );
    }

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
        let grace = Grace::with_floors(1800, (0, 0));
        let found = find(
            &instances,
            &nodes,
            &[],
            &none(),
            &BTreeMap::new(),
            1000,
            grace,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].id.as_str(), found[0].since, found[0].due),
            ("i-lost", 1000, false)
        );
        let seen = [((ZombieKind::Instance, "i-lost".to_string()), 1000)].into();
        let later = find(&instances, &nodes, &[], &none(), &seen, 2799, grace);
        assert!(!later[0].due);
        let later = find(&instances, &nodes, &[], &none(), &seen, 2800, grace);
        assert!(later[0].due && later[0].since == 1000);
    }

    #[test]
    fn volumes_are_reported_with_their_own_first_sighting() {
        let seen = [((ZombieKind::Volume, "vol-1".to_string()), 10)].into();
        let found = find(
            &[],
            &BTreeSet::new(),
            &["vol-1".into(), "vol-2".into()],
            &none(),
            &seen,
            100,
            Grace::with_floors(60, (0, 0)),
        );
        assert_eq!(found.len(), 2);
        assert!(found[0].due && found[0].since == 10);
        assert!(!found[1].due && found[1].since == 100);
    }
}
