//! Scheduling constraints of a pod in the engine's terms: tolerations, required node affinity, required pod affinity and anti-affinity and topology spreads; what the planner does not model pins the pod's node.

use super::*;

pub(super) fn tolerations(
    spec: &core::PodSpec,
    path: &str,
) -> Result<Vec<Toleration>, TranslateError> {
    spec.tolerations
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("{path}.spec.tolerations[{i}]");
            let operator = match t.operator.as_deref() {
                None | Some("") | Some("Equal") => TolerationOperator::Equal,
                Some("Exists") => TolerationOperator::Exists,
                Some(other) => {
                    return Err(error(
                        format!("{at}.operator"),
                        format!("{other:?} is not Equal or Exists"),
                    ));
                }
            };
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(e) => Some(
                    taint_effect(e)
                        .ok_or_else(|| error(format!("{at}.effect"), effect_expected(e)))?,
                ),
            };
            Ok(Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator,
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect()
}

pub(super) fn node_affinity(
    affinity: &core::Affinity,
    at: &str,
    unmodelled: &mut Vec<String>,
) -> Result<Option<Vec<NodeSelectorTerm>>, TranslateError> {
    let Some(selector) = affinity.node_affinity.as_ref().and_then(|n| {
        n.required_during_scheduling_ignored_during_execution
            .as_ref()
    }) else {
        return Ok(None);
    };
    let mut terms = Vec::new();
    for (t, term) in selector.node_selector_terms.iter().enumerate() {
        let term_at = format!(
            "{at}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{t}]"
        );
        if term.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
            unmodelled.push("required node affinity on fields (matchFields)".to_owned());
        }
        let mut expressions = Vec::new();
        for (e, r) in term.match_expressions.iter().flatten().enumerate() {
            let operator = match r.operator.as_str() {
                "In" => NodeOperator::In,
                "NotIn" => NodeOperator::NotIn,
                "Exists" => NodeOperator::Exists,
                "DoesNotExist" => NodeOperator::DoesNotExist,
                "Gt" => NodeOperator::Gt,
                "Lt" => NodeOperator::Lt,
                other => {
                    return Err(error(
                        format!("{term_at}.matchExpressions[{e}].operator"),
                        format!("{other:?} is not In, NotIn, Exists, DoesNotExist, Gt or Lt"),
                    ));
                }
            };
            expressions.push(NodeRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone().unwrap_or_default(),
            });
        }
        terms.push(NodeSelectorTerm {
            match_expressions: expressions,
        });
    }
    Ok(Some(terms))
}

pub(super) fn label_selector(
    selector: &meta::LabelSelector,
    at: &str,
) -> Result<LabelSelector, TranslateError> {
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let operator = match r.operator.as_str() {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                other => {
                    return Err(error(
                        format!("{at}.matchExpressions[{i}].operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            Ok(SelectorRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// `matchLabelKeys` / `mismatchLabelKeys`: the pod's own value of each key, ANDed into the selector.
pub(super) fn add_label_keys(
    selector: &mut LabelSelector,
    keys: Option<&Vec<String>>,
    labels: &Labels,
    operator: SelectorOperator,
) {
    for key in keys.into_iter().flatten() {
        if let Some(value) = labels.get(key) {
            selector.match_expressions.push(SelectorRequirement {
                key: key.clone(),
                operator,
                values: vec![value.clone()],
            });
        }
    }
}

/// Required pod affinity and anti-affinity of a pod, in the engine's terms.
#[derive(Debug, Default)]
pub(super) struct PodAffinities {
    /// Anti-affinity on `kubernetes.io/hostname`.
    pub(super) hostname_anti: Vec<AntiAffinityTerm>,
    /// Anti-affinity on every other topology key.
    pub(super) topology_anti: Vec<PodAffinityTerm>,
    /// Affinity, any topology key.
    pub(super) affinity: Vec<PodAffinityTerm>,
}

/// `spec.affinity.podAffinity` and `podAntiAffinity` (required terms only; preferred terms cannot
/// refuse a node). Terms with a `namespaceSelector` pin the pod's node instead (not modelled).
pub(super) fn pod_affinities(
    affinity: &core::Affinity,
    at: &str,
    labels: &Labels,
    unmodelled: &mut Vec<String>,
) -> Result<PodAffinities, TranslateError> {
    let mut out = PodAffinities::default();
    let required = affinity.pod_affinity.as_ref().and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    });
    for (i, term) in required.into_iter().flatten().enumerate() {
        let term_at =
            format!("{at}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
        match affinity_term(term, &term_at, labels)? {
            Term::Modelled(t) => out.affinity.push(t),
            // A null labelSelector selects no pod: no node can ever satisfy the term.
            Term::SelectsNothing => {
                unmodelled.push("required pod affinity selecting no pod".to_owned());
            }
            Term::NamespaceSelector => {
                unmodelled.push("required pod affinity with a namespaceSelector".to_owned());
            }
        }
    }
    let required = affinity.pod_anti_affinity.as_ref().and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    });
    for (i, term) in required.into_iter().flatten().enumerate() {
        let term_at =
            format!("{at}.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
        match affinity_term(term, &term_at, labels)? {
            Term::Modelled(t) if t.topology_key == LABEL_HOSTNAME => {
                out.hostname_anti.push(AntiAffinityTerm {
                    selector: t.selector,
                    namespaces: t.namespaces,
                });
            }
            Term::Modelled(t) => out.topology_anti.push(t),
            // A null labelSelector repels no pod: the term constrains nothing.
            Term::SelectsNothing => {}
            Term::NamespaceSelector => {
                unmodelled.push("required pod anti-affinity with a namespaceSelector".to_owned());
            }
        }
    }
    Ok(out)
}

enum Term {
    Modelled(PodAffinityTerm),
    SelectsNothing,
    NamespaceSelector,
}

fn affinity_term(
    term: &core::PodAffinityTerm,
    at: &str,
    labels: &Labels,
) -> Result<Term, TranslateError> {
    if term.namespace_selector.is_some() {
        return Ok(Term::NamespaceSelector);
    }
    let Some(selector) = &term.label_selector else {
        return Ok(Term::SelectsNothing);
    };
    if term.topology_key.is_empty() {
        return Err(error(format!("{at}.topologyKey"), "empty"));
    }
    let mut selector = label_selector(selector, &format!("{at}.labelSelector"))?;
    add_label_keys(
        &mut selector,
        term.match_label_keys.as_ref(),
        labels,
        SelectorOperator::In,
    );
    add_label_keys(
        &mut selector,
        term.mismatch_label_keys.as_ref(),
        labels,
        SelectorOperator::NotIn,
    );
    Ok(Term::Modelled(PodAffinityTerm {
        topology_key: term.topology_key.clone(),
        selector,
        namespaces: term.namespaces.clone().unwrap_or_default(),
    }))
}

pub(super) fn spreads(
    spec: &core::PodSpec,
    path: &str,
    labels: &Labels,
    unmodelled: &mut Vec<String>,
) -> Result<Vec<TopologySpread>, TranslateError> {
    let mut out = Vec::new();
    for (i, c) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.spec.topologySpreadConstraints[{i}]");
        if c.when_unsatisfiable != "DoNotSchedule" {
            continue;
        }
        let key = match c.topology_key.as_str() {
            "topology.kubernetes.io/zone" => TopologyKey::Zone,
            LABEL_HOSTNAME => TopologyKey::Hostname,
            other => {
                unmodelled.push(format!("topology spread on {other}"));
                continue;
            }
        };
        let Some(selector) = &c.label_selector else {
            continue;
        };
        let mut selector = label_selector(selector, &format!("{at}.labelSelector"))?;
        add_label_keys(
            &mut selector,
            c.match_label_keys.as_ref(),
            labels,
            SelectorOperator::In,
        );
        let max_skew = u32::try_from(c.max_skew)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| {
                error(
                    format!("{at}.maxSkew"),
                    format!("{} is not a positive integer", c.max_skew),
                )
            })?;
        out.push(TopologySpread {
            max_skew,
            key,
            selector,
            min_domains: c.min_domains.and_then(|m| u32::try_from(m).ok()),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}
