//! A Node in the engine's terms: type, zone, region, capacity type, allocatable, taints; and the EC2 instance id behind a Node.

use super::*;

pub(super) const CAPACITY_LABELS: [&str; 3] = [
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    crate::names::CAPACITY_TYPE_LABEL,
];

pub(super) fn node_from(node: &core::Node, path: &str) -> Result<Node, TranslateError> {
    let name = name_of(&node.metadata, path)?;
    let labels: Labels = node.metadata.labels.clone().unwrap_or_default();
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let zone = first(&[
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    ]);
    let region = first(&[
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    ])
    .or_else(|| zone.as_deref().and_then(region_of_zone));
    let mut capacity_type = CapacityType::OnDemand;
    if let Some((key, value)) = CAPACITY_LABELS
        .iter()
        .find_map(|k| labels.get(*k).map(|v| (*k, v)))
    {
        capacity_type = match value.to_ascii_lowercase().replace('_', "-").as_str() {
            "spot" => CapacityType::Spot,
            "on-demand" | "ondemand" | "reserved" | "capacity-block" => CapacityType::OnDemand,
            _ => {
                return Err(error(
                    label_path(path, key),
                    format!("{value:?} is not a capacity type (expected spot or on-demand)"),
                ));
            }
        };
    }
    let status = node.status.as_ref();
    let (resources, field) = match status.and_then(|s| s.allocatable.as_ref()) {
        Some(a) => (Some(a), "allocatable"),
        None => (status.and_then(|s| s.capacity.as_ref()), "capacity"),
    };
    let Some(resources) = resources else {
        return Err(error(
            format!("{path}.status.allocatable"),
            "missing (expected cpu, memory and pods)",
        ));
    };
    let at = format!("{path}.status.{field}");
    let required = |key: &str, parse: Parse| -> Result<u64, TranslateError> {
        quantity(Some(resources), key, &at, parse)?
            .ok_or_else(|| error(format!("{at}.{key}"), "missing"))
    };
    let pods = quantity(Some(resources), "pods", &at, parse_count)?.unwrap_or(110);
    let allocatable = Resources {
        cpu_millis: required("cpu", parse_cpu_millis)?,
        memory_bytes: required("memory", parse_memory_bytes)?,
        pods: u32::try_from(pods).unwrap_or(u32::MAX),
    };
    let spec = node.spec.as_ref();
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let effect = taint_effect(&t.effect).ok_or_else(|| {
                        error(
                            format!("{path}.spec.taints[{i}].effect"),
                            effect_expected(&t.effect),
                        )
                    })?;
                    Ok(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect,
                    })
                })
                .collect::<Result<Vec<_>, TranslateError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut out = Node::new(name, allocatable);
    // Keep the node's own hostname label when it has one; Node::new set it to the name.
    out.labels.extend(labels.clone());
    if !labels.contains_key(LABEL_HOSTNAME) {
        out.labels
            .insert(LABEL_HOSTNAME.to_owned(), out.name.clone());
    }
    out.instance_type = first(&[
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/instance-type",
    ]);
    out.zone = zone;
    out.region = region;
    out.capacity_type = capacity_type;
    out.taints = taints;
    out.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    out.do_not_disrupt = annotated_true(&node.metadata, DO_NOT_DISRUPT)
        || annotated_true(&node.metadata, KARPENTER_DO_NOT_DISRUPT);
    Ok(out)
}

/// `us-east-1a` -> `us-east-1`: an AWS availability zone is its region plus one letter.
pub fn region_of_zone(zone: &str) -> Option<String> {
    let mut chars = zone.chars();
    let last = chars.next_back()?;
    let before = chars.clone().next_back()?;
    (last.is_ascii_lowercase() && before.is_ascii_digit()).then(|| chars.as_str().to_owned())
}

pub(super) fn taint_effect(text: &str) -> Option<TaintEffect> {
    match text {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

pub(super) fn effect_expected(text: &str) -> String {
    format!("{text:?} is not a taint effect (expected NoSchedule, PreferNoSchedule or NoExecute)")
}

/// The EC2 instance id in a providerID such as `aws:///us-east-1a/i-0abc`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    provider_id
        .rsplit('/')
        .next()
        .filter(|id| id.starts_with("i-"))
}

/// The EC2 instance id behind a Node (from its `spec.providerID`); `None` for a Node not on EC2.
pub fn node_instance_id(node: &core::Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(instance_id)
}
