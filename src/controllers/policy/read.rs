//! read: everything one pass plans from, gathered from the API server's reflectors and AWS.

use super::*;
use crate::engine::snapshot::Snapshot;

/// What one pass reads.
pub(super) struct Inputs {
    /// The NodeTemplates this policy acts on (count, for the status message).
    pub(super) templates: usize,
    /// Instance id -> (NodeTemplate, Auto Scaling group) of every instance in the selected groups.
    pub(super) owners: BTreeMap<String, (String, String)>,
    /// The Nodes in scope, in snapshot order: `snapshot.nodes[i]` is `scope[i]`.
    pub(super) scope: Vec<Arc<Node>>,
    /// Instance ids of every Node of the cluster (zombie detection).
    pub(super) all_node_ids: BTreeSet<String>,
    /// The cluster model of the scope, priced.
    pub(super) snapshot: Snapshot,
    /// The price catalog the snapshot was priced with.
    pub(super) catalog: Arc<crate::engine::catalog::Catalog>,
    /// The 30-day average Spot prices of the scope's instance types, for the savings estimate.
    pub(super) spot_averages: crate::controllers::catalog::Averages,
    /// Nodes a previous run (or a crash) left marked for consolidation.
    pub(super) marked: Vec<String>,
    /// What a replacement may launch: the selected templates' rankings, best first.
    pub(super) offers: Vec<consolidation::Offer>,
    /// The selected templates' groups by name.
    pub(super) groups: BTreeMap<String, crate::cloud::AutoScalingGroup>,
    /// Instance id -> Node name, every Node of the cluster.
    pub(super) nodes_by_instance: BTreeMap<String, String>,
    /// This policy's replacements in flight.
    pub(super) replacements: Vec<super::replace::InFlight>,
    /// Every instance tagged with this cluster (one DescribeInstances per pass: the replacements in
    /// flight and the zombie sweep both read it).
    pub(super) instances: Vec<crate::cloud::Instance>,
    /// The names of every OptimizationPolicy of the cluster (one list per pass).
    pub(super) policies: BTreeSet<String>,
    /// The cluster's name (the `cloudoptim.io/cluster` tag value).
    pub(super) cluster: String,
    /// The policy's name.
    pub(super) policy: String,
}

impl Inputs {
    /// The instance id of a Node in scope.
    pub(super) fn instance_of(&self, name: &str) -> Option<String> {
        self.scope
            .iter()
            .find(|n| n.name_any() == name)
            .and_then(node_instance)
            .map(str::to_string)
    }
}

/// The instance id of a Node (its providerID).
pub(super) fn node_instance(node: &Arc<Node>) -> Option<&str> {
    crate::k8s::node_instance_id(node)
}

/// The templates this policy acts on, or a conflict with another policy.
pub(super) fn selected_templates<'t>(
    policy: &OptimizationPolicy,
    policies: &[OptimizationPolicy],
    templates: &'t [NodeTemplate],
) -> Result<Vec<&'t NodeTemplate>, Error> {
    let selector_of = |p: &OptimizationPolicy| {
        Selector::try_from(p.spec.node_template_selector.clone().unwrap_or_default()).map_err(|e| {
            Error::Invalid {
                field: "nodeTemplateSelector".into(),
                message: e.to_string(),
            }
        })
    };
    let mine = selector_of(policy)?;
    let mut selected = Vec::new();
    for template in templates {
        let labels = labels_of(&template.metadata);
        if !mine.matches(&labels) {
            continue;
        }
        for other in policies
            .iter()
            .filter(|p| p.name_any() != policy.name_any())
        {
            if selector_of(other).is_ok_and(|s| s.matches(&labels)) {
                return Err(Error::Conflict {
                    template: template.name_any(),
                    other: other.name_any(),
                });
            }
        }
        selected.push(template);
    }
    Ok(selected)
}

/// Right-sizing reads and changes every workload of the cluster, so one policy owns it: of the
/// policies with `rightsizing.mode` Recommend or Apply (and not being deleted), the oldest (then the
/// first by name). Any other one with right-sizing on is refused as a whole, naming the owner.
pub(super) fn rightsizing_owner(
    policy: &OptimizationPolicy,
    policies: &[OptimizationPolicy],
) -> Result<(), Error> {
    let on = |p: &OptimizationPolicy| {
        p.spec.rightsizing.mode != crate::api::policy::RightsizingMode::Off
            && p.metadata.deletion_timestamp.is_none()
    };
    if !on(policy) {
        return Ok(());
    }
    let key = |p: &OptimizationPolicy| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    };
    let owner = policies
        .iter()
        .filter(|p| on(p) && p.name_any() != policy.name_any())
        .map(|p| (key(p), p.name_any()))
        .min();
    match owner {
        Some((theirs, other)) if theirs < key(policy) => Err(Error::RightsizingConflict { other }),
        _ => Ok(()),
    }
}

/// Read the selected templates, their groups' instances, the Nodes in scope with their pods and PDBs
/// (from the reflectors), and the price catalog.
pub(super) async fn read<C: Cloud>(
    policy: &OptimizationPolicy,
    pctx: &PolicyContext<C>,
) -> Result<Inputs, Error> {
    let ctx = &pctx.base;
    let policies = Api::<OptimizationPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let templates = Api::<NodeTemplate>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selected = selected_templates(policy, &policies, &templates)?;
    rightsizing_owner(policy, &policies)?;
    let mut owners: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for template in &selected {
        for group in ctx.cloud.groups(&group_selector(template)).await? {
            for instance in &group.instances {
                owners.insert(instance.clone(), (template.name_any(), group.name.clone()));
            }
            groups.insert(group.name.clone(), group);
        }
    }
    let all_nodes = pctx.stores.nodes.state();
    let nodes_by_instance: BTreeMap<String, String> = all_nodes
        .iter()
        .filter_map(|n| Some((node_instance(n)?.to_string(), n.name_any())))
        .collect();
    let all_node_ids = nodes_by_instance.keys().cloned().collect();
    let instances = ctx
        .cloud
        .instances(CLUSTER_TAG, &ctx.config.cluster_name)
        .await?;
    let replacements =
        super::replace::read_in_flight(ctx, &policy.name_any(), &nodes_by_instance, &instances)
            .await?;
    let scope: Vec<Arc<Node>> = all_nodes
        .into_iter()
        .filter(|n| node_instance(n).is_some_and(|id| owners.contains_key(id)))
        .collect();
    let mut snapshot = assemble(pctx, &scope)?;
    let catalog = ctx.catalog.view(&ctx.cloud).await?;
    k8s::apply_prices(&mut snapshot, &*catalog.catalog);
    let in_use: BTreeSet<String> = snapshot
        .nodes
        .iter()
        .filter_map(|n| n.instance_type.clone())
        .collect();
    let spot_averages = ctx.catalog.spot_averages(&ctx.cloud, &in_use).await;
    let marked = scope
        .iter()
        .filter_map(|n| crate::drain::marked(n, DISRUPTED_TAINT))
        .filter(|m| m.by == "consolidation")
        .map(|m| m.name)
        .collect();
    let offers = replacement_offers(&selected, &catalog.catalog, &ctx.config.region);
    Ok(Inputs {
        templates: selected.len(),
        owners,
        scope,
        all_node_ids,
        snapshot,
        catalog: catalog.catalog,
        spot_averages,
        marked,
        offers,
        groups,
        nodes_by_instance,
        replacements,
        instances,
        policies: policies.iter().map(|p| p.name_any()).collect(),
        cluster: ctx.config.cluster_name.clone(),
        policy: policy.name_any(),
    })
}

/// The offers of the selected templates (each ranked as its controller ranks it; flagged pairs are left
/// to the group's overrides), best first, each (type, zone, capacity type) once.
fn replacement_offers(
    templates: &[&NodeTemplate],
    catalog: &crate::engine::catalog::Catalog,
    region: &str,
) -> Vec<consolidation::Offer> {
    let mut seen = BTreeSet::new();
    let mut offers = Vec::new();
    for template in templates {
        let Ok((requirements, weights)) =
            crate::controllers::node_template::ranking_inputs(&template.spec)
        else {
            continue;
        };
        let Ok(ranked) = crate::engine::ranking::rank(catalog, region, &requirements, weights, &[])
        else {
            continue;
        };
        for offer in consolidation::offers(
            catalog,
            region,
            &ranked.candidates,
            consolidation::NEW_NODE_PODS,
        ) {
            if seen.insert((
                offer.instance_type.clone(),
                offer.zone.clone(),
                offer.capacity_type,
            )) {
                offers.push(offer);
            }
        }
    }
    offers
}

/// The scope's Nodes, their pods (from the pod cache) and the cluster's PDBs as one engine snapshot.
fn assemble<C: Cloud>(pctx: &PolicyContext<C>, scope: &[Arc<Node>]) -> Result<Snapshot, Error> {
    let names: BTreeSet<String> = scope.iter().map(|n| n.name_any()).collect();
    let pdbs = pctx.stores.pdbs.state();
    let cache = pctx
        .stores
        .pods
        .pods
        .read()
        .map_err(|_| Error::Snapshot("the pod cache is poisoned".into()))?;
    let mut pods = Vec::new();
    for (node, pod) in cache
        .values()
        .filter(|(node, _)| names.contains(node.as_ref()))
    {
        match pod {
            Ok(pod) => pods.push((node.as_ref(), pod)),
            Err(message) => return Err(Error::Snapshot(message.clone())),
        }
    }
    k8s::assemble(scope.iter().map(|n| &**n), pods, pdbs.iter().map(|p| &**p))
        .map(|t| t.snapshot)
        .map_err(|e| Error::Snapshot(e.to_string()))
}
