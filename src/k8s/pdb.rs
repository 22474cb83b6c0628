//! A PodDisruptionBudget in the engine's terms: its selector and how many disruptions it allows now.

use super::*;

pub(super) fn pdb_from(
    pdb: &PodDisruptionBudget,
    path: &str,
    pods: &[Pod],
) -> Result<Option<Pdb>, TranslateError> {
    let name = name_of(&pdb.metadata, path)?;
    let namespace = pdb
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = pdb.spec.as_ref();
    let Some(selector) = spec.and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let selector = label_selector(selector, &format!("{path}.spec.selector"))?;
    let mut out = Pdb {
        namespace,
        name,
        selector,
        disruptions_allowed: 0,
    };
    out.disruptions_allowed = match &pdb.status {
        Some(status) => u32::try_from(status.disruptions_allowed).unwrap_or(0),
        None => {
            let expected = pods.iter().filter(|p| out.covers(p)).count() as u64;
            let scaled = |v: &IntOrString, field: &str| -> Result<u64, TranslateError> {
                match v {
                    IntOrString::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
                    IntOrString::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<u64>().ok())
                        .map(|p| (expected * p).div_ceil(100))
                        .ok_or_else(|| {
                            error(
                                format!("{path}.spec.{field}"),
                                format!("{s:?} is not a count or a percentage"),
                            )
                        }),
                }
            };
            let allowed = match (
                spec.and_then(|s| s.max_unavailable.as_ref()),
                spec.and_then(|s| s.min_available.as_ref()),
            ) {
                (Some(max), _) => scaled(max, "maxUnavailable")?,
                (None, Some(min)) => expected.saturating_sub(scaled(min, "minAvailable")?),
                (None, None) => expected,
            };
            u32::try_from(allowed).unwrap_or(u32::MAX)
        }
    };
    Ok(Some(out))
}
