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

    pub(super) async fn raise_flag(
        &self,
        notice: &Notice,
        node: &Node,
        reason: RiskReason,
    ) -> Result<(), kube::Error> {
        let labels = node.labels();
        let (Some(zone), Some(instance_type)) = (
            labels.get("topology.kubernetes.io/zone"),
            labels.get("node.kubernetes.io/instance-type"),
        ) else {
            tracing::info!(node = %node.name_any(), "no zone or instance-type label: no SpotRiskFlag");
            return Ok(());
        };
        let ctx = &self.ctx;
        let region = ctx.config.region.clone();
        let name = format!("{region}.{zone}.{instance_type}");
        let observed = notice
            .time_millis
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or_else(Timestamp::now);
        let _serial = self.flags.lock().await;
        let api: Api<SpotRiskFlag> = Api::all(ctx.client.clone());
        let existing = api.get_opt(&name).await?;
        let (first_seen, count, mut clusters) = match &existing {
            Some(flag) if flag.spec.expires_at.0 > Timestamp::now() => (
                flag.spec.first_seen.0.min(observed),
                flag.spec.count.saturating_add(1),
                flag.spec.clusters.clone(),
            ),
            _ => (observed, 1, Vec::new()),
        };
        if !clusters.contains(&ctx.config.cluster_name) {
            clusters.push(ctx.config.cluster_name.clone());
            clusters.sort();
        }
        let last_seen = existing
            .as_ref()
            .map_or(observed, |f| f.spec.last_seen.0.max(observed));
        let ttl = SignedDuration::from_secs(i64::try_from(FLAG_TTL.as_secs()).unwrap_or(1800));
        let spec = SpotRiskFlagSpec {
            region: region.clone(),
            zone: zone.clone(),
            instance_type: instance_type.clone(),
            reason,
            first_seen: Time(first_seen),
            last_seen: Time(last_seen),
            count,
            clusters,
            expires_at: Time(last_seen.checked_add(ttl).unwrap_or(last_seen)),
            source: FlagSource::Local,
        };
        let patch = json!({
            "apiVersion": "cloudoptim.io/v1alpha1",
            "kind": "SpotRiskFlag",
            "metadata": {"name": name},
            "spec": spec,
        });
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        drop(_serial);
        ctx.event(
            &node.object_ref(&()),
            true,
            "RiskFlagRaised",
            format!(
                "{:?} for {instance_type} in {zone}: SpotRiskFlag {name} (count {count}); ranking avoids it for 30 minutes",
                reason
            ),
        )
        .await;
        if let Some(hub) = &self.hub {
            hub.report(LocalReport {
                region,
                zone: zone.clone(),
                instance_type: instance_type.clone(),
                reason,
                observed_at: observed,
            });
        }
        Ok(())
    }
}
