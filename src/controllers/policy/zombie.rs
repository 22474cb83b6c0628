//! Zombies: tagged instances without a Node and tagged, unreferenced, available volumes, past their
//! grace period; reported, or (mode Delete) snapshotted and deleted.

use super::read::Inputs;
use super::*;

fn previous_zombies(status: &OptimizationPolicyStatus) -> BTreeMap<(ZombieKind, String), i64> {
    status
        .zombies
        .iter()
        .map(|z| {
            let kind = if z.kind == "Volume" {
                ZombieKind::Volume
            } else {
                ZombieKind::Instance
            };
            ((kind, z.id.clone()), z.since.0.as_second())
        })
        .collect()
}

pub(super) async fn handle_zombies<C: Cloud>(
    pctx: &PolicyContext<C>,
    policy: &OptimizationPolicy,
    dry_run: bool,
    settings: &Settings,
    inputs: &Inputs,
    previous: &OptimizationPolicyStatus,
) -> Result<(Vec<ZombieStatus>, Vec<String>), Error> {
    let ctx = &pctx.base;
    let spec = &policy.spec.zombies;
    if spec.mode == ZombieMode::Off {
        return Ok((Vec::new(), Vec::new()));
    }
    let (facts, volumes, referenced) = read_candidates(ctx, spec.volumes, inputs).await?;
    let seen = previous_zombies(previous);
    let now = Utc::now().timestamp();
    let grace = zombies::Grace::with_floors(
        i64::try_from(settings.zombie_grace.as_secs()).unwrap_or(i64::MAX),
        ctx.config.zombie_grace_floors,
    );
    let found = zombies::find(
        &facts,
        &inputs.all_node_ids,
        &volumes,
        &referenced,
        &seen,
        now,
        grace,
    );
    for kind in [ZombieKind::Instance, ZombieKind::Volume] {
        let count = found.iter().filter(|z| z.kind == kind && z.due).count();
        ctx.metrics
            .zombies
            .with_label_values(&[kind.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    let reference = policy.object_ref(&());
    let deleting = spec.mode == ZombieMode::Delete && !dry_run;
    let mut notes = Vec::new();
    let mut kept = Vec::new();
    for zombie in &found {
        let kind_grace = match zombie.kind {
            ZombieKind::Instance => grace.instances,
            ZombieKind::Volume => grace.volumes,
        };
        let was_due = seen
            .get(&(zombie.kind, zombie.id.clone()))
            .is_some_and(|since| now - since >= kind_grace);
        if zombie.due && !was_due {
            let note = found_note(zombie, &ctx.config.cluster_name, now, spec.mode, dry_run);
            ctx.event(&reference, true, "ZombieFound", note).await;
        }
        let gone = zombie.due
            && deleting
            && delete(
                ctx,
                &reference,
                zombie,
                spec.snapshot_before_delete,
                &mut notes,
            )
            .await;
        if !gone {
            kept.push(ZombieStatus {
                kind: zombie.kind.as_str().to_string(),
                id: zombie.id.clone(),
                since: Time(
                    k8s_openapi::jiff::Timestamp::from_second(zombie.since)
                        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
                ),
                hourly_cost: zombie.hourly,
            });
        }
    }
    Ok((kept, notes))
}

/// This cluster's tagged instances (read once per pass, in `inputs`, with their on-demand price), its
/// available tagged volumes, and the volume ids PersistentVolumes and VolumeSnapshotContents name (read
/// before anything is judged: if they cannot be read, nothing is deleted).
async fn read_candidates<C: Cloud>(
    ctx: &Context<C>,
    with_volumes: bool,
    inputs: &Inputs,
) -> Result<(Vec<InstanceFacts>, Vec<String>, BTreeSet<String>), Error> {
    let cluster = &ctx.config.cluster_name;
    let region = &ctx.config.region;
    let facts = inputs
        .instances
        .iter()
        .filter(|i| !in_flight_replacement(&i.tags, &inputs.policies))
        .map(|i| InstanceFacts {
            id: i.id.clone(),
            state: i.state.clone(),
            hourly: inputs.catalog.on_demand_price(region, &i.instance_type),
        })
        .collect();
    if !with_volumes {
        return Ok((facts, Vec::new(), BTreeSet::new()));
    }
    let volumes = ctx
        .cloud
        .available_volumes(CLUSTER_TAG, cluster)
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect();
    Ok((facts, volumes, referenced_volumes(&ctx.client).await?))
}

/// The ZombieFound Event's note.
fn found_note(
    zombie: &zombies::Zombie,
    cluster: &str,
    now: i64,
    mode: ZombieMode,
    dry_run: bool,
) -> String {
    let what = match (mode, dry_run) {
        (ZombieMode::Delete, true) => "; dry run: not deleted",
        (ZombieMode::Delete, false) => "; deleting it",
        _ => "; zombies.mode is Report: not deleted",
    };
    format!(
        "{} {} carries {CLUSTER_TAG}={cluster} and has had no Node for {}s{what}",
        zombie.kind.as_str(),
        zombie.id,
        now - zombie.since,
    )
}

/// Terminate a zombie instance, or snapshot and delete a zombie volume; counted, noted, and an Event
/// on success. Whether it is gone.
async fn delete<C: Cloud>(
    ctx: &Context<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    zombie: &zombies::Zombie,
    snapshot: bool,
    notes: &mut Vec<String>,
) -> bool {
    let (action, result) = match zombie.kind {
        ZombieKind::Instance => (
            "zombie_terminate",
            ctx.cloud
                .terminate_instances(std::slice::from_ref(&zombie.id))
                .await,
        ),
        ZombieKind::Volume => (
            "zombie_delete_volume",
            snapshot_then_delete(ctx, &zombie.id, snapshot, notes).await,
        ),
    };
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .consolidation_actions
        .with_label_values(&[action, label])
        .inc();
    match result {
        Ok(()) => {
            notes.push(format!("deleted zombie {}", zombie.id));
            let note = format!("{} {} deleted", zombie.kind.as_str(), zombie.id);
            ctx.event(reference, false, "ZombieDeleted", note).await;
            true
        }
        Err(e) => {
            notes.push(format!("could not delete zombie {}: {e}", zombie.id));
            false
        }
    }
}

/// EBS volume ids named by a PersistentVolume (in-tree `awsElasticBlockStore` or CSI
/// `volumeHandle`, any phase) or a VolumeSnapshotContent (`source.volumeHandle`; none when the
/// snapshot CRDs are not installed). An error (the list failed) means no volume may be deleted.
async fn referenced_volumes(client: &kube::Client) -> Result<BTreeSet<String>, Error> {
    let mut ids = BTreeSet::new();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for pv in &pvs.items {
        let Some(spec) = &pv.spec else { continue };
        let handles = [
            spec.csi.as_ref().map(|c| c.volume_handle.as_str()),
            spec.aws_elastic_block_store
                .as_ref()
                .map(|e| e.volume_id.as_str()),
        ];
        ids.extend(
            handles
                .into_iter()
                .flatten()
                .filter_map(zombies::ebs_volume_id)
                .map(str::to_string),
        );
    }
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotContent",
        ),
        "volumesnapshotcontents",
    );
    match Api::<kube::core::DynamicObject>::all_with(client.clone(), &resource)
        .list(&ListParams::default())
        .await
    {
        Ok(contents) => ids.extend(contents.items.iter().filter_map(|c| {
            c.data["spec"]["source"]["volumeHandle"]
                .as_str()
                .and_then(zombies::ebs_volume_id)
                .map(str::to_string)
        })),
        // The snapshot CRDs are not installed: no snapshot content can name a volume.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(ids)
}

/// Delete a zombie volume, after a snapshot of it when `snapshot` (the volume stays if the snapshot
/// is refused).
async fn snapshot_then_delete<C: Cloud>(
    ctx: &Context<C>,
    volume: &str,
    snapshot: bool,
    notes: &mut Vec<String>,
) -> Result<(), CloudError> {
    if snapshot {
        let tags = BTreeMap::from([
            (CLUSTER_TAG.to_string(), ctx.config.cluster_name.clone()),
            (
                crate::names::ZOMBIE_VOLUME_TAG.to_string(),
                volume.to_string(),
            ),
        ]);
        let description = format!("CloudOptim: last copy of zombie volume {volume}");
        let id = ctx
            .cloud
            .create_snapshot(volume, &description, &tags)
            .await?;
        notes.push(format!("snapshot {id} of zombie {volume}"));
    }
    ctx.cloud.delete_volume(volume).await
}

/// A replacement in flight has no Node yet by design, and its own policy's deadline terminates it:
/// not a zombie. One whose policy is gone has no one to finish it, so it is judged like any instance.
fn in_flight_replacement(tags: &BTreeMap<String, String>, policies: &BTreeSet<String>) -> bool {
    tags.contains_key(crate::names::REPLACES_TAG)
        && tags
            .get(crate::names::REPLACEMENT_POLICY_TAG)
            .is_some_and(|p| policies.contains(p))
}

#[cfg(test)]
mod replacement_tests {
    use super::*;

    #[test]
    fn a_replacement_is_left_alone_only_while_its_policy_exists() {
        let tags: BTreeMap<String, String> = [
            (crate::names::REPLACES_TAG.to_string(), "i-1".to_string()),
            (
                crate::names::REPLACEMENT_POLICY_TAG.to_string(),
                "cluster".to_string(),
            ),
        ]
        .into();
        let live = BTreeSet::from(["cluster".to_string()]);
        assert!(in_flight_replacement(&tags, &live));
        assert!(!in_flight_replacement(&tags, &BTreeSet::new()));
        assert!(!in_flight_replacement(&BTreeMap::new(), &live));
    }
}
