//! status: what a schedule is refused for before anything is done (pure), the Events of a pass and
//! its Ready message (pure).

use super::*;
use crate::controllers::RunConfig;

/// Refuse a schedule whose spec names what CloudOptim never hibernates, or whose name cannot be a
/// label value.
pub(super) fn validate(schedule: &HibernationSchedule, config: &RunConfig) -> Result<(), Error> {
    let name = schedule.name_any();
    if name.len() > 63 {
        return Err(Error::NameTooLong(name));
    }
    let named = &schedule.spec.targets.namespaces;
    if let Some(own) = config
        .own_namespace
        .as_ref()
        .filter(|own| named.contains(own))
    {
        return Err(Error::TargetsOperator(own.clone()));
    }
    if let Some(p) = config
        .protected_namespaces
        .iter()
        .find(|p| named.contains(p))
    {
        return Err(Error::TargetsProtected(p.clone()));
    }
    Ok(())
}

/// Events `Hibernated` and `Woke` for what this pass put to sleep or woke.
pub(super) async fn events<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    wanted: &Wanted,
    done: &Done,
) {
    let reference = schedule.object_ref(&());
    let dry = if ctx.config.dry_run { "(dry run) " } else { "" };
    if !done.slept_workloads.is_empty() || !done.slept_groups.is_empty() {
        let note = format!(
            "{dry}{:?}: scaled to 0 {} workloads [{}] and {} node groups [{}]",
            wanted.state,
            done.slept_workloads.len(),
            done.slept_workloads.join(", "),
            done.slept_groups.len(),
            done.slept_groups.join(", ")
        );
        ctx.event(&reference, false, "Hibernated", note).await;
    }
    if !done.woke_workloads.is_empty() || !done.woke_groups.is_empty() {
        let note = format!(
            "{dry}{:?}: restored {} node groups [{}] and {} workloads [{}]",
            wanted.state,
            done.woke_groups.len(),
            done.woke_groups.join(", "),
            done.woke_workloads.len(),
            done.woke_workloads.join(", ")
        );
        ctx.event(&reference, false, "Woke", note).await;
    }
}

/// The Ready message: the state until the next transition, and what was left awake and why.
pub(super) fn ready_message(
    schedule: &HibernationSchedule,
    config: &RunConfig,
    wanted: &Wanted,
    done: &Done,
) -> String {
    let mut message = match &wanted.next {
        Some((at, state)) => format!("{:?} until {at} ({state:?} next)", wanted.state),
        None => format!("{:?}, no transition ahead", wanted.state),
    };
    if !done.hosting_operator.is_empty() {
        message.push_str(&format!(
            "; Auto Scaling group {} runs CloudOptim itself and never sleeps",
            done.hosting_operator.join(", ")
        ));
    }
    if !done.held_by_other.is_empty() {
        message.push_str(&format!(
            "; left alone, another schedule holds them: {}",
            done.held_by_other.join(", ")
        ));
    }
    if let Some(own) = &config.own_namespace
        && schedule.spec.targets.namespace_selector.is_some()
    {
        message.push_str(&format!(
            "; namespace {own} (CloudOptim itself) never sleeps"
        ));
    }
    if config.dry_run {
        message.push_str("; dry run: nothing changed");
    }
    message
}
