//! What a notice leaves behind: a Spot fallback for a group, a SpotRiskFlag for a (zone, type).

use super::*;

impl<C: Cloud> Intake<C> {
    /// Put `group` on on-demand for `restore`: annotate every NodeTemplate bound to it (the NodeTemplate
    /// controller owns the group's MixedInstancesPolicy and applies it, then restores Spot at the end).
    pub(super) async fn fall_back(
        &self,
        group: &str,
        restore: Duration,
    ) -> Result<(), kube::Error> {
        let ctx = &self.ctx;
        let api: Api<NodeTemplate> = Api::all(ctx.client.clone());
        let now = chrono::Utc::now().timestamp();
        let until = now + i64::try_from(restore.as_secs()).unwrap_or(i64::MAX / 2);
        let mut bound = 0;
        for template in api.list(&ListParams::default()).await?.items {
            let binds = match group_selector(&template) {
                GroupSelector::Names(names) => names.iter().any(|n| n == group),
                selector @ GroupSelector::Tags(_) => match ctx.cloud.groups(&selector).await {
                    Ok(groups) => groups.iter().any(|g| g.name == group),
                    Err(e) => {
                        tracing::warn!(template = %template.name_any(), error = %e, "could not resolve the template's groups");
                        false
                    }
                },
            };
            if !binds {
                continue;
            }
            bound += 1;
            let current = template
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPOT_FALLBACK_ANNOTATION))
                .map(String::as_str);
            let value = with_fallback(current, group, until, now);
            api.patch(
                &template.name_any(),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {SPOT_FALLBACK_ANNOTATION: value}}}),
                ),
            )
            .await?;
            ctx.event(
                &template.object_ref(&()),
                true,
                "SpotFallback",
                format!(
                    "Auto Scaling group {group} could not get Spot capacity; on-demand until Spot is tried again in {}s (spot.restoreToSpotAfter)",
                    restore.as_secs()
                ),
            )
            .await;
        }
        if bound == 0 {
            tracing::info!(
                group,
                "Spot capacity error for a group no NodeTemplate binds"
            );
        }
        Ok(())
    }

    /// Raise (or renew) the SpotRiskFlag of the node's (zone, type): read the flag -> decide its next
    /// spec (pure, [`next_flag`]) -> write it, serialised so concurrent reports all count; then the
    /// Event and the hub report.
    pub(super) async fn raise_flag(
        &self,
        notice: &Notice,
        node: &Node,
        reason: RiskReason,
    ) -> Result<(), kube::Error> {
        let ctx = &self.ctx;
        let Some(key) = FlagKey::of(&ctx.config.region, node) else {
            tracing::info!(node = %node.name_any(), "no zone or instance-type label: no SpotRiskFlag");
            return Ok(());
        };
        let observed = notice
            .time_millis
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or_else(Timestamp::now);
        let api: Api<SpotRiskFlag> = Api::all(ctx.client.clone());
        let name = key.name();
        let spec = {
            let _serial = self.flags.lock().await;
            let existing = api.get_opt(&name).await?;
            let spec = next_flag(
                &key,
                existing.as_ref().map(|flag| &flag.spec),
                reason,
                observed,
                Timestamp::now(),
                &ctx.config.cluster_name,
            );
            write_flag(&api, &name, &spec).await?;
            spec
        };
        self.announce(node, &name, &spec, observed).await;
        Ok(())
    }

    /// The Event on the node and the report to the hub for a flag just written.
    async fn announce(
        &self,
        node: &Node,
        name: &str,
        spec: &SpotRiskFlagSpec,
        observed: Timestamp,
    ) {
        let SpotRiskFlagSpec {
            region,
            zone,
            instance_type,
            reason,
            count,
            ..
        } = spec;
        self.ctx
            .event(
                &node.object_ref(&()),
                true,
                "RiskFlagRaised",
                format!(
                    "{reason:?} for {instance_type} in {zone}: SpotRiskFlag {name} (count {count}); ranking avoids it for 30 minutes"
                ),
            )
            .await;
        if let Some(hub) = &self.hub {
            hub.report(LocalReport {
                region: region.clone(),
                zone: zone.clone(),
                instance_type: instance_type.clone(),
                reason: *reason,
                observed_at: observed,
            });
        }
    }
}

/// What a SpotRiskFlag is raised for: the (zone, instance type) of a node in the cluster's region.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FlagKey {
    region: String,
    zone: String,
    instance_type: String,
}

impl FlagKey {
    /// The node's zone and instance type from its well-known labels (`None` when either is missing).
    fn of(region: &str, node: &Node) -> Option<FlagKey> {
        let labels = node.labels();
        Some(FlagKey {
            region: region.to_string(),
            zone: labels.get("topology.kubernetes.io/zone")?.clone(),
            instance_type: labels.get("node.kubernetes.io/instance-type")?.clone(),
        })
    }

    /// The flag's object name, `<region>.<zone>.<type>`.
    fn name(&self) -> String {
        format!("{}.{}.{}", self.region, self.zone, self.instance_type)
    }
}

/// The flag's next spec after a notice `observed` at that instant (pure): an active flag (not expired
/// at `now`) counts one more and keeps its first sighting and clusters; an expired or missing one starts
/// over. Either way this cluster is named, and the flag expires [`FLAG_TTL`] after its last sighting.
pub(super) fn next_flag(
    key: &FlagKey,
    existing: Option<&SpotRiskFlagSpec>,
    reason: RiskReason,
    observed: Timestamp,
    now: Timestamp,
    cluster: &str,
) -> SpotRiskFlagSpec {
    let (first_seen, count, mut clusters) = match existing {
        Some(flag) if flag.expires_at.0 > now => (
            flag.first_seen.0.min(observed),
            flag.count.saturating_add(1),
            flag.clusters.clone(),
        ),
        _ => (observed, 1, Vec::new()),
    };
    if !clusters.iter().any(|c| c == cluster) {
        clusters.push(cluster.to_string());
        clusters.sort();
    }
    let last_seen = existing.map_or(observed, |f| f.last_seen.0.max(observed));
    let ttl = SignedDuration::from_secs(i64::try_from(FLAG_TTL.as_secs()).unwrap_or(1800));
    SpotRiskFlagSpec {
        region: key.region.clone(),
        zone: key.zone.clone(),
        instance_type: key.instance_type.clone(),
        reason,
        first_seen: Time(first_seen),
        last_seen: Time(last_seen),
        count,
        clusters,
        expires_at: Time(last_seen.checked_add(ttl).unwrap_or(last_seen)),
        source: FlagSource::Local,
    }
}

/// Server-side apply of the flag's spec (this controller owns every field it writes).
async fn write_flag(
    api: &Api<SpotRiskFlag>,
    name: &str,
    spec: &SpotRiskFlagSpec,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "cloudoptim.io/v1alpha1",
        "kind": "SpotRiskFlag",
        "metadata": {"name": name},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60;

    fn key() -> FlagKey {
        FlagKey {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            instance_type: "m5.large".into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn flag_seen(first: i64, last: i64, count: u32, clusters: &[&str]) -> SpotRiskFlagSpec {
        SpotRiskFlagSpec {
            first_seen: Time(at(first)),
            last_seen: Time(at(last)),
            count,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            expires_at: Time(at(last + 30 * MINUTE)),
            ..next_flag(
                &key(),
                None,
                RiskReason::SpotInterruption,
                at(first),
                at(first),
                "x",
            )
        }
    }

    #[test]
    fn a_first_notice_raises_a_flag_of_count_1_for_30_minutes() {
        let flag = next_flag(
            &key(),
            None,
            RiskReason::SpotInterruption,
            at(0),
            at(5),
            "prod",
        );

        assert_eq!(key().name(), "us-east-1.us-east-1a.m5.large");
        assert_eq!(
            (flag.zone.as_str(), flag.instance_type.as_str()),
            ("us-east-1a", "m5.large")
        );
        assert_eq!(flag.count, 1);
        assert_eq!((flag.first_seen.0, flag.last_seen.0), (at(0), at(0)));
        assert_eq!(flag.expires_at.0, at(30 * MINUTE));
        assert_eq!(flag.clusters, ["prod"]);
        assert_eq!(flag.source, FlagSource::Local);
    }

    #[test]
    fn a_notice_on_an_active_flag_counts_one_more_and_adds_this_cluster() {
        let active = flag_seen(0, 10 * MINUTE, 3, &["staging"]);

        let flag = next_flag(
            &key(),
            Some(&active),
            RiskReason::Rebalance,
            at(20 * MINUTE),
            at(20 * MINUTE),
            "prod",
        );

        assert_eq!(flag.count, 4);
        assert_eq!(flag.first_seen.0, at(0), "the first sighting is kept");
        assert_eq!(flag.last_seen.0, at(20 * MINUTE));
        assert_eq!(flag.expires_at.0, at(50 * MINUTE));
        assert_eq!(flag.clusters, ["prod", "staging"], "sorted, each once");
        assert_eq!(flag.reason, RiskReason::Rebalance);
    }

    #[test]
    fn a_late_notice_keeps_the_latest_sighting_and_moves_the_first_back() {
        let active = flag_seen(10 * MINUTE, 20 * MINUTE, 2, &["prod"]);

        let flag = next_flag(
            &key(),
            Some(&active),
            RiskReason::SpotInterruption,
            at(5 * MINUTE),
            at(21 * MINUTE),
            "prod",
        );

        assert_eq!(
            (flag.first_seen.0, flag.last_seen.0),
            (at(5 * MINUTE), at(20 * MINUTE))
        );
        assert_eq!(flag.clusters, ["prod"]);
    }

    #[test]
    fn a_notice_on_an_expired_flag_starts_the_count_over() {
        let expired = flag_seen(0, 10 * MINUTE, 7, &["staging"]);

        let flag = next_flag(
            &key(),
            Some(&expired),
            RiskReason::SpotInterruption,
            at(60 * MINUTE),
            at(60 * MINUTE),
            "prod",
        );

        assert_eq!(flag.count, 1);
        assert_eq!(flag.first_seen.0, at(60 * MINUTE));
        assert_eq!(
            flag.clusters,
            ["prod"],
            "the old sighting's clusters are gone"
        );
    }
}
