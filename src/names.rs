//! Every `cloudoptim.io/*` name CloudOptim writes or reads on objects it does not own: labels,
//! annotations, taints, finalizers and AWS tags. One definition each; the modules that use them import
//! them from here.

/// AWS tag (instances, volumes, groups, launch templates, snapshots) naming the cluster a resource
/// belongs to; CloudOptim acts only on resources whose value is this cluster's name.
pub const CLUSTER_TAG: &str = "cloudoptim.io/cluster";

/// Annotation (nodes and pods): never disrupt this node, or the node this pod runs on.
pub const DO_NOT_DISRUPT: &str = "cloudoptim.io/do-not-disrupt";
/// Node label naming the capacity type (`spot`/`on-demand`), read after Karpenter's and EKS's.
pub const CAPACITY_TYPE_LABEL: &str = "cloudoptim.io/capacity-type";

/// Taint (and annotation prefix `-at`, `-reason`) of a voluntary disruption (consolidation).
pub const DISRUPTED_TAINT: &str = "cloudoptim.io/disrupted";
/// Taint (and annotation prefix) of an involuntary disruption (Spot interruption, rebalance, ...).
pub const INTERRUPTED_TAINT: &str = "cloudoptim.io/interrupted";
/// Node annotations of a consolidation mark: when and why (`<taint>-at`, `<taint>-reason`).
pub const DISRUPTED_AT_ANNOTATION: &str = "cloudoptim.io/disrupted-at";
/// See [`DISRUPTED_AT_ANNOTATION`].
pub const DISRUPTED_REASON_ANNOTATION: &str = "cloudoptim.io/disrupted-reason";
/// Node annotation: CloudOptim set `spec.unschedulable`, so releasing it uncordons.
pub const CORDONED_ANNOTATION: &str = "cloudoptim.io/cordoned";

/// Workload annotation (Deployments, StatefulSets, DaemonSets, CronJobs): the requests right-sizing
/// recommends per container, `{"<container>":{"cpu":"120m","memory":"360Mi"}}` (policy
/// `rightsizing.mode: Recommend` or `Apply`).
pub const RECOMMENDED_REQUESTS: &str = "cloudoptim.io/recommended-requests";
/// Workload annotation set by people: `revert` puts back the requests right-sizing replaced (the
/// operator then writes `reverted`); any value keeps `mode: Apply` away from the workload.
pub const RIGHTSIZING_CONTROL: &str = "cloudoptim.io/rightsizing";
/// Workload annotation: when `mode: Apply` last changed the workload's requests (RFC 3339).
pub const RIGHTSIZED_AT: &str = "cloudoptim.io/rightsized-at";
/// Workload annotation: per container, the resource values before `mode: Apply` first changed them,
/// `{"<container>":{"cpuRequest":"1","memoryRequest":"1Gi","memoryLimit":"2Gi"}}`.
pub const RIGHTSIZING_PREVIOUS: &str = "cloudoptim.io/rightsizing-previous";

/// NodeTemplate annotation: groups on on-demand after a Spot capacity error, until when.
pub const SPOT_FALLBACK_ANNOTATION: &str = "cloudoptim.io/spot-fallback";

/// HibernationSchedule finalizer: restore what the schedule holds before it goes.
pub const HIBERNATION_FINALIZER: &str = "cloudoptim.io/hibernation-restore";
/// Workload label and Auto Scaling group tag: the schedule that put it to sleep.
pub const HIBERNATED_BY: &str = "cloudoptim.io/hibernated-by";
/// Workload annotation: the replica count to restore.
pub const ORIGINAL_REPLICAS: &str = "cloudoptim.io/original-replicas";
/// Workload/namespace annotation: `"false"` keeps it awake.
pub const HIBERNATE_ANNOTATION: &str = "cloudoptim.io/hibernate";
/// Auto Scaling group tag written first when a group goes to sleep: the schedule saving its sizes.
pub const HIBERNATING_FOR_TAG: &str = "cloudoptim.io/hibernating-for";
/// Auto Scaling group tag: `min/max/desired` to restore.
pub const ORIGINAL_SIZE_TAG: &str = "cloudoptim.io/original-size";

/// Instance tags of a replacement in flight (launched by the OptimizationPolicy controller, not yet
/// done): the instance ids it replaces (space-separated), the policy, the group that adopts it, why,
/// and the replaced nodes' and its own price (USD per hour). They are written in the launch call itself
/// and removed (all but the cluster tag) when the replaced nodes are gone; a restarted operator resumes
/// from them, and they are the whole record: nothing is kept in memory between passes.
pub const REPLACES_TAG: &str = "cloudoptim.io/replaces";
/// See [`REPLACES_TAG`].
pub const REPLACEMENT_POLICY_TAG: &str = "cloudoptim.io/replacement-policy";
/// See [`REPLACES_TAG`].
pub const REPLACEMENT_GROUP_TAG: &str = "cloudoptim.io/replacement-group";
/// See [`REPLACES_TAG`].
pub const REPLACEMENT_REASON_TAG: &str = "cloudoptim.io/replacement-reason";
/// See [`REPLACES_TAG`].
pub const REPLACED_HOURLY_TAG: &str = "cloudoptim.io/replaced-hourly";
/// See [`REPLACES_TAG`].
pub const REPLACEMENT_HOURLY_TAG: &str = "cloudoptim.io/replacement-hourly";

/// Snapshot tag: the zombie volume a snapshot was taken of before it was deleted.
pub const ZOMBIE_VOLUME_TAG: &str = "cloudoptim.io/zombie-volume";

/// SpotRiskFlag label of the flags a hub stores.
pub const HUB_LABEL: &str = "cloudoptim.io/hub";
/// SpotRiskFlag label of the flags a member mirrors from its hub.
pub const MIRROR_LABEL: &str = "cloudoptim.io/mirrored-from-hub";

#[cfg(test)]
mod tests {
    #[test]
    fn the_mark_annotations_are_the_taint_key_with_a_suffix() {
        assert_eq!(
            super::DISRUPTED_AT_ANNOTATION,
            format!("{}-at", super::DISRUPTED_TAINT)
        );
        assert_eq!(
            super::DISRUPTED_REASON_ANNOTATION,
            format!("{}-reason", super::DISRUPTED_TAINT)
        );
    }

    #[test]
    fn every_name_is_a_valid_qualified_key_under_cloudoptim_io() {
        for name in [
            super::CLUSTER_TAG,
            super::DO_NOT_DISRUPT,
            super::CAPACITY_TYPE_LABEL,
            super::RIGHTSIZING_CONTROL,
            super::RIGHTSIZED_AT,
            super::RIGHTSIZING_PREVIOUS,
            super::DISRUPTED_TAINT,
            super::INTERRUPTED_TAINT,
            super::CORDONED_ANNOTATION,
            super::DISRUPTED_AT_ANNOTATION,
            super::DISRUPTED_REASON_ANNOTATION,
            super::SPOT_FALLBACK_ANNOTATION,
            super::HIBERNATION_FINALIZER,
            super::HIBERNATED_BY,
            super::ORIGINAL_REPLICAS,
            super::HIBERNATE_ANNOTATION,
            super::HIBERNATING_FOR_TAG,
            super::ORIGINAL_SIZE_TAG,
            super::ZOMBIE_VOLUME_TAG,
            super::HUB_LABEL,
            super::MIRROR_LABEL,
        ] {
            let (prefix, key) = name.split_once('/').expect("prefix/key");
            assert_eq!(prefix, "cloudoptim.io");
            // Label/annotation keys: at most 63 characters, alphanumerics, '-', '_', '.'.
            assert!(
                !key.is_empty()
                    && key.len() <= 63
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{name}"
            );
        }
    }
}
