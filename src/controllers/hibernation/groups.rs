//! Auto Scaling groups: the ones the schedule targets or holds, the ones CloudOptim runs on (never
//! asleep), and their sleep and wake steps (sizes saved in tags first).

use super::*;

/// The Auto Scaling groups the operator's replicas run on: its own pod (`--identity`, the pod name)
/// and the pods of the same release in its namespace, their Nodes' instances, and those instances'
/// `aws:autoscaling:groupName` tag. Empty when any of it cannot be found (not running in a pod).
async fn operator_groups<C: Cloud>(ctx: &Context<C>) -> BTreeSet<String> {
    let (Some(namespace), Some(pod)) = (&ctx.config.own_namespace, &ctx.config.own_pod) else {
        return BTreeSet::new();
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let Ok(Some(me)) = pods.get_opt(pod).await else {
        return BTreeSet::new();
    };
    let mut node_names: BTreeSet<String> = me
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .into_iter()
        .collect();
    if let Some(instance) = me.labels().get("app.kubernetes.io/instance")
        && let Ok(peers) = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
            .await
    {
        node_names.extend(
            peers
                .items
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone()),
        );
    }
    let nodes = Api::<Node>::all(ctx.client.clone());
    let mut instances = BTreeSet::new();
    for name in &node_names {
        if let Ok(Some(node)) = nodes.get_opt(name).await
            && let Some(id) = crate::k8s::node_instance_id(&node)
        {
            instances.insert(id.to_string());
        }
    }
    if instances.is_empty() {
        return BTreeSet::new();
    }
    match ctx
        .cloud
        .instances(crate::cloud::CLUSTER_TAG, &ctx.config.cluster_name)
        .await
    {
        Ok(list) => list
            .into_iter()
            .filter(|i| instances.contains(&i.id))
            .filter_map(|i| i.tags.get("aws:autoscaling:groupName").cloned())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "describing the instances CloudOptim runs on");
            BTreeSet::new()
        }
    }
}

/// Every group the schedule targets now (`true`) or still holds from before (`false`), by name.
pub(super) async fn groups_in_scope<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
) -> Result<BTreeMap<String, (AutoScalingGroup, bool)>, Error> {
    let mut groups = BTreeMap::new();
    let held = ctx
        .cloud
        .groups(&GroupSelector::Tags(
            [(HIBERNATING_FOR_TAG.to_string(), schedule.name_any())].into(),
        ))
        .await?;
    for group in held {
        groups.insert(group.name.clone(), (group, false));
    }
    if let Some(selector) = &schedule.spec.targets.node_template_selector {
        let selector = Selector::try_from(selector.clone())
            .map_err(|e| Error::BadSelector("nodeTemplateSelector", e.to_string()))?;
        let templates = Api::<NodeTemplate>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?;
        for template in templates
            .items
            .iter()
            .filter(|t| selector.matches(&labels_of(&t.metadata)))
        {
            let selector = group_selector(template);
            if matches!(&selector, GroupSelector::Names(n) if n.is_empty()) {
                continue;
            }
            for group in ctx.cloud.groups(&selector).await? {
                groups.insert(group.name.clone(), (group, true));
            }
        }
    }
    Ok(groups)
}

fn view_of(group: &AutoScalingGroup, targeted: bool) -> GroupView {
    GroupView {
        sizes: Sizes {
            min: group.min,
            max: group.max,
            desired: group.desired,
        },
        marks: GroupMarks {
            saving_for: group.tags.get(HIBERNATING_FOR_TAG).cloned(),
            saved: group
                .tags
                .get(ORIGINAL_SIZE_TAG)
                .and_then(|v| Sizes::from_tag(v)),
            held_by: group.tags.get(HIBERNATED_BY_TAG).cloned(),
        },
        targeted,
    }
}

fn unmark_tags() -> BTreeMap<String, Option<String>> {
    [HIBERNATING_FOR_TAG, ORIGINAL_SIZE_TAG, HIBERNATED_BY_TAG]
        .into_iter()
        .map(|k| (k.to_string(), None))
        .collect()
}

async fn apply_group_step<C: Cloud>(
    ctx: &Context<C>,
    name: &str,
    schedule: &str,
    step: &GroupStep,
) -> Result<(), Error> {
    let zero = |name: &str| GroupUpdate {
        name: name.to_string(),
        min: Some(0),
        max: Some(0),
        desired: Some(0),
        ..GroupUpdate::default()
    };
    let held = [(HIBERNATED_BY_TAG.to_string(), Some(schedule.to_string()))].into();
    match step {
        GroupStep::Nothing | GroupStep::HeldByOther(_) => {}
        GroupStep::Sleep { sizes } => {
            let saving = [
                (HIBERNATING_FOR_TAG.to_string(), Some(schedule.to_string())),
                (ORIGINAL_SIZE_TAG.to_string(), Some(sizes.to_tag())),
            ]
            .into();
            ctx.cloud.tag_group(name, &saving).await?;
            ctx.cloud.update_group(&zero(name)).await?;
            ctx.cloud.tag_group(name, &held).await?;
        }
        GroupStep::FinishSleep => {
            ctx.cloud.update_group(&zero(name)).await?;
            ctx.cloud.tag_group(name, &held).await?;
        }
        GroupStep::Restore { sizes } => {
            ctx.cloud
                .update_group(&GroupUpdate {
                    name: name.to_string(),
                    min: Some(sizes.min),
                    max: Some(sizes.max),
                    desired: Some(sizes.desired),
                    ..GroupUpdate::default()
                })
                .await?;
            ctx.cloud.tag_group(name, &unmark_tags()).await?;
        }
        GroupStep::Unmark { .. } => ctx.cloud.tag_group(name, &unmark_tags()).await?,
    }
    Ok(())
}

pub(super) async fn step_groups<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    asleep: bool,
    done: &mut Done,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let in_scope = groups_in_scope(ctx, schedule).await?;
    let own = if in_scope.values().any(|(_, targeted)| *targeted) {
        operator_groups(ctx).await
    } else {
        BTreeSet::new()
    };
    for (group, targeted) in in_scope.values() {
        // The groups CloudOptim's own pods run on never sleep: it would not wake anything up again.
        let targeted = if *targeted && own.contains(&group.name) {
            done.hosting_operator.push(group.name.clone());
            &false
        } else {
            targeted
        };
        let view = view_of(group, *targeted);
        let step = group_step(&name, asleep, &view);
        if !ctx.config.dry_run {
            apply_group_step(ctx, &group.name, &name, &step).await?;
        }
        let saved = match &step {
            GroupStep::Sleep { sizes } => {
                done.slept_groups.push(group.name.clone());
                Some(*sizes)
            }
            GroupStep::FinishSleep => {
                done.slept_groups.push(group.name.clone());
                view.marks.saved
            }
            GroupStep::Restore { .. } => {
                done.woke_groups.push(group.name.clone());
                None
            }
            GroupStep::Unmark { changed } => {
                if *changed {
                    let note = format!(
                        "Auto Scaling group {} was resized to {}/{}/{} (min/max/desired) while asleep; keeping the sizes it was given",
                        group.name, group.min, group.max, group.desired
                    );
                    ctx.event(&schedule.object_ref(&()), false, "ManualChangeKept", note)
                        .await;
                }
                None
            }
            GroupStep::HeldByOther(other) => {
                done.held_by_other
                    .push(format!("{} (held by {other})", group.name));
                None
            }
            GroupStep::Nothing => view.marks.saved.filter(|_| view.marks.held_by.is_some()),
        };
        if let Some(sizes) = saved {
            done.saved_groups.push(SavedGroup {
                name: group.name.clone(),
                min: sizes.min,
                max: sizes.max,
                desired: sizes.desired,
            });
        }
    }
    Ok(())
}
