//! Unit tests of the planner, one rule each.

use super::*;
use crate::engine::snapshot::{
    AntiAffinityTerm, CapacityType, LABEL_HOSTNAME, LABEL_ZONE, LabelSelector, Labels, Node,
    NodeId, OwnerKind, Pdb, Pod, PodAffinityTerm, PodId, Resources, Taint, TaintEffect, Toleration,
    TolerationOperator, TopologyKey, TopologySpread,
};

const GIB: u64 = 1 << 30;

/// A 4 vCPU / 16 GiB node in zone `a` costing $0.20/h.
fn node(name: &str) -> Node {
    sized_node(name, 4000, 16)
}

fn sized_node(name: &str, cpu_millis: u64, memory_gib: u64) -> Node {
    let mut n = Node::new(
        name,
        Resources {
            cpu_millis,
            memory_bytes: memory_gib * GIB,
            pods: 110,
        },
    );
    n.hourly_price = Some(0.2);
    n.zone = Some("a".into());
    n.labels.insert(LABEL_ZONE.into(), "a".into());
    n
}

fn in_zone(mut n: Node, zone: &str) -> Node {
    n.zone = Some(zone.into());
    n.labels.insert(LABEL_ZONE.into(), zone.into());
    n
}

fn pod(name: &str, node: u32, cpu_millis: u64, memory_gib: u64) -> Pod {
    let mut p = Pod::new(
        "app",
        name,
        NodeId(node),
        Resources::pod(cpu_millis, memory_gib * GIB),
    );
    std::sync::Arc::make_mut(&mut p.labels)
        .insert("app".into(), name.trim_end_matches(char::is_numeric).into());
    p
}

fn daemon(name: &str, node: u32) -> Pod {
    let mut p = Pod::new(
        "kube-system",
        name,
        NodeId(node),
        Resources::pod(500, 2 * GIB),
    );
    p.owner = OwnerKind::DaemonSet;
    p
}

fn snapshot(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
    Snapshot {
        nodes,
        pods,
        pdbs: vec![],
    }
}

fn options() -> Options {
    Options {
        budget: Some(10),
        ..Options::default()
    }
}

fn run(s: &Snapshot, o: &Options) -> Plan {
    let fast = plan(s, o).unwrap();
    let slow = plan_naive(s, o).unwrap();
    assert_eq!(fast, slow, "indexed and naive planners disagree");
    fast
}

fn removed(p: &Plan, s: &Snapshot) -> Vec<String> {
    p.removals
        .iter()
        .map(|r| s.nodes[r.node.index()].name.clone())
        .collect()
}

fn reason(p: &Plan, s: &Snapshot, name: &str) -> String {
    let id = s.node_named(name).unwrap();
    let kept = p
        .kept
        .iter()
        .find(|k| k.node == id)
        .unwrap_or_else(|| panic!("{name} was removed"));
    kept.reason.describe(s)
}

fn pod_id(s: &Snapshot, name: &str) -> PodId {
    s.pods
        .iter()
        .position(|p| p.name == name)
        .map(|i| PodId(i as u32))
        .unwrap()
}

#[test]
fn empty_node_is_removed_and_saves_its_price() {
    let s = snapshot(
        vec![node("busy"), node("idle")],
        vec![pod("web1", 0, 3000, 4), daemon("ds0", 0), daemon("ds1", 1)],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["idle"]);
    assert!(p.moves.is_empty());
    assert!((p.savings_hourly - 0.2).abs() < 1e-9);
    assert_eq!(
        p.removals[0].describe(),
        "empty (only DaemonSet or static pods)"
    );
}

#[test]
fn underutilized_node_moves_its_pods_to_a_fuller_node() {
    let s = snapshot(
        vec![node("full"), node("light")],
        vec![
            pod("a1", 0, 2500, 4),
            pod("b1", 1, 500, 1),
            pod("c1", 1, 300, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["light"]);
    assert_eq!(p.moves.len(), 2);
    assert!(
        p.moves
            .iter()
            .all(|m| m.from == NodeId(1) && m.to == NodeId(0))
    );
    assert_eq!(
        reason(&p, &s, "full"),
        "utilization 0.62 above threshold 0.50"
    );
}

#[test]
fn a_candidate_that_receives_pods_is_kept_as_destination() {
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 1200, 1), pod("b1", 1, 400, 1)],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(reason(&p, &s, "n0"), "receives 1 pod from removed nodes");
}

#[test]
fn never_overcommits_a_destination() {
    // 3.4 vCPU on the destination; the mover needs 0.8: 4.2 > 4.0 allocatable.
    let s = snapshot(
        vec![node("full"), node("light")],
        vec![pod("a1", 0, 3400, 1), pod("b1", 1, 800, 1)],
    );
    let p = run(
        &s,
        &Options {
            utilization_threshold: 0.9,
            aggressiveness: 100,
            ..options()
        },
    );
    assert!(p.removals.is_empty());
    assert_eq!(reason(&p, &s, "light"), "no room for pod app/b1 elsewhere");
}

#[test]
fn pod_slots_count_as_capacity() {
    let mut full = node("full");
    full.allocatable.pods = 1;
    let s = snapshot(
        vec![full, node("light")],
        vec![pod("a1", 0, 100, 1), pod("b1", 1, 100, 1)],
    );
    let p = run(&s, &options());
    assert_eq!(
        p.removals.len(),
        1,
        "light cannot move to full (1 pod slot), but full can move to light"
    );
    assert_eq!(removed(&p, &s), ["full"]);
}

#[test]
fn aggressiveness_sets_destination_headroom() {
    // Destination at 3000m of 4000m; mover 500m -> 87.5% fits under 88% (aggressiveness 40) ...
    let s = snapshot(
        vec![node("full"), node("light")],
        vec![pod("a1", 0, 3000, 1), pod("b1", 1, 500, 1)],
    );
    assert_eq!(run(&s, &options()).removals.len(), 1);
    // ... but not under 80% (aggressiveness 0).
    let p = run(
        &s,
        &Options {
            aggressiveness: 0,
            ..options()
        },
    );
    assert!(p.removals.is_empty());
}

#[test]
fn nodes_above_the_threshold_are_kept() {
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 3280, 1), pod("b1", 1, 3000, 1)],
    );
    let p = run(&s, &options());
    assert!(p.removals.is_empty());
    assert_eq!(
        reason(&p, &s, "n0"),
        "utilization 0.82 above threshold 0.50"
    );
}

#[test]
fn when_empty_mode_removes_only_empty_nodes() {
    let s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![pod("a1", 0, 1000, 1), pod("b1", 1, 100, 1), daemon("ds", 2)],
    );
    let p = run(
        &s,
        &Options {
            mode: Mode::WhenEmpty,
            ..options()
        },
    );
    assert_eq!(removed(&p, &s), ["n2"]);
    assert_eq!(
        reason(&p, &s, "n1"),
        "not empty (1 movable pod; mode WhenEmpty)"
    );
}

#[test]
fn mode_off_keeps_every_node() {
    let s = snapshot(vec![node("n0"), node("n1")], vec![]);
    let p = run(
        &s,
        &Options {
            mode: Mode::Off,
            ..options()
        },
    );
    assert!(p.removals.is_empty());
    assert_eq!(reason(&p, &s, "n1"), "consolidation mode is Off");
}

#[test]
fn node_selector_limits_destinations() {
    let mut arm = node("arm");
    arm.labels
        .insert("kubernetes.io/arch".into(), "arm64".into());
    let mut mover = pod("b1", 1, 100, 1);
    mover
        .node_selector
        .insert("kubernetes.io/arch".into(), "arm64".into());
    let s = snapshot(
        vec![node("amd"), arm, node("other")],
        vec![pod("a1", 0, 3000, 1), mover, pod("c1", 2, 3000, 1)],
    );
    let p = run(&s, &options());
    assert!(p.removals.is_empty());
    assert_eq!(
        reason(&p, &s, "arm"),
        "no other node accepts pod app/b1 (node selector, affinity or taints)"
    );
}

#[test]
fn taints_repel_pods_without_tolerations() {
    let mut tainted = node("tainted");
    tainted.taints.push(Taint {
        key: "dedicated".into(),
        value: "db".into(),
        effect: TaintEffect::NoSchedule,
    });
    let s = snapshot(
        vec![tainted.clone(), node("light")],
        vec![pod("a1", 0, 1500, 1), pod("b1", 1, 100, 1)],
    );
    let p = run(&s, &options());
    assert_eq!(
        removed(&p, &s),
        ["tainted"],
        "a1 may go to light, b1 may not go to tainted"
    );

    let mut tolerant = pod("b1", 1, 100, 1);
    std::sync::Arc::make_mut(&mut tolerant.tolerations).push(Toleration {
        key: String::new(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: None,
    });
    let s = snapshot(
        vec![tainted, node("light")],
        vec![pod("a1", 0, 3000, 1), tolerant],
    );
    let p = run(&s, &options());
    assert_eq!(
        removed(&p, &s),
        ["light"],
        "an empty-key Exists toleration tolerates everything"
    );
}

#[test]
fn cordoned_nodes_are_kept_and_never_destinations() {
    let mut cordoned = node("cordoned");
    cordoned.unschedulable = true;
    let s = snapshot(
        vec![cordoned, node("light")],
        vec![pod("a1", 0, 2000, 1), pod("b1", 1, 100, 1)],
    );
    let p = run(&s, &options());
    assert!(p.removals.is_empty());
    assert_eq!(
        reason(&p, &s, "cordoned"),
        "cordoned (unschedulable); left to whoever cordoned it"
    );
    assert_eq!(
        reason(&p, &s, "light"),
        "no other node accepts pod app/b1 (node selector, affinity or taints)"
    );
}

#[test]
fn do_not_disrupt_nodes_and_pods_are_kept() {
    let mut protected = node("protected");
    protected.do_not_disrupt = true;
    let mut precious = pod("b1", 1, 100, 1);
    precious.do_not_disrupt = true;
    let s = snapshot(
        vec![protected, node("n1"), node("big")],
        vec![precious, pod("c1", 2, 2500, 1)],
    );
    let p = run(&s, &options());
    assert_eq!(reason(&p, &s, "protected"), "node annotated do-not-disrupt");
    assert_eq!(reason(&p, &s, "n1"), "do-not-disrupt pod app/b1");
}

#[test]
fn daemonset_pods_never_move_never_block_and_do_not_use_destination_capacity() {
    // Destination has 3.4 vCPU used; light's DaemonSet pod (500m) would not fit, its app pod (400m) does.
    let s = snapshot(
        vec![node("full"), node("light")],
        vec![
            pod("a1", 0, 3000, 1),
            daemon("ds0", 0),
            pod("b1", 1, 400, 1),
            daemon("ds1", 1),
        ],
    );
    let p = run(
        &s,
        &Options {
            aggressiveness: 100,
            ..options()
        },
    );
    assert_eq!(removed(&p, &s), ["light"]);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].pod, pod_id(&s, "b1"));
}

#[test]
fn static_pods_are_ignored() {
    let mut mirror = pod("etcd1", 1, 100, 1);
    mirror.owner = OwnerKind::Static;
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 2000, 1), mirror],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert!(p.moves.is_empty());
}

#[test]
fn unmodelled_constraints_pin_their_node_with_the_reason() {
    let mut affine = pod("b1", 1, 100, 1);
    affine
        .unmodelled
        .push("required pod affinity with a namespaceSelector".into());
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 2000, 1), affine],
    );
    let p = run(&s, &options());
    assert_eq!(
        reason(&p, &s, "n1"),
        "pinned: pod app/b1 has required pod affinity with a namespaceSelector (not modelled)"
    );
}

#[test]
fn pods_without_controller_pin_their_node() {
    let mut bare = pod("b1", 1, 100, 1);
    bare.owner = OwnerKind::None;
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 2000, 1), bare],
    );
    let p = run(&s, &options());
    assert!(reason(&p, &s, "n1").starts_with("pinned: pod app/b1 has no controller"));
}

#[test]
fn pods_in_excluded_namespaces_keep_their_node_but_daemonsets_there_do_not() {
    let mut coredns = pod("coredns1", 1, 100, 1);
    coredns.namespace = "kube-system".into();
    let s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![pod("a1", 0, 3000, 1), coredns, daemon("kube-proxy", 2)],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n2"]);
    assert_eq!(
        reason(&p, &s, "n1"),
        "pod kube-system/coredns1 is in excluded namespace kube-system"
    );
}

fn pdb(name: &str, app: &str, allowed: u32) -> Pdb {
    Pdb {
        namespace: "app".into(),
        name: name.into(),
        selector: LabelSelector::labels([("app", app)]),
        disruptions_allowed: allowed,
    }
}

#[test]
fn pdb_with_no_allowed_disruption_keeps_the_node() {
    let mut s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 3000, 1), pod("web1", 1, 100, 1)],
    );
    s.pdbs.push(pdb("web", "web", 0));
    let p = run(&s, &options());
    assert!(p.removals.is_empty());
    assert_eq!(reason(&p, &s, "n1"), "PDB app/web allows 0 disruptions");
}

#[test]
fn a_daemonset_pod_under_a_pdb_allowing_nothing_pins_its_empty_node() {
    let mut agent = daemon("agent0", 1);
    agent.namespace = "app".into();
    std::sync::Arc::make_mut(&mut agent.labels).insert("app".into(), "agent".into());
    let mut s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![pod("a1", 0, 3000, 1), agent, daemon("ds2", 2)],
    );
    s.pdbs.push(pdb("agent", "agent", 0));
    let p = run(&s, &options());
    let removed: Vec<&str> = p
        .removals
        .iter()
        .map(|r| s.nodes[r.node.index()].name.as_str())
        .collect();
    assert_eq!(
        removed,
        ["n2"],
        "only the node without a protected pod goes"
    );
    assert_eq!(
        reason(&p, &s, "n1"),
        "pinned: DaemonSet pod app/agent0 is covered by PDB app/agent, which allows 0 disruptions \
         (removing the node would kill it without asking the PDB)"
    );
    // With an allowance left, the DaemonSet pod does not pin the node.
    s.pdbs[0].disruptions_allowed = 1;
    assert_eq!(run(&s, &options()).removals.len(), 2);
}

#[test]
fn pdb_allowance_is_consumed_across_the_whole_plan() {
    let mut s = snapshot(
        vec![node("big"), node("n1"), node("n2")],
        vec![
            pod("a1", 0, 2000, 1),
            pod("web1", 1, 100, 1),
            pod("web2", 2, 200, 1),
        ],
    );
    s.pdbs.push(pdb("web", "web", 1));
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(
        reason(&p, &s, "n2"),
        "PDB app/web allows 1 disruption, 1 already used by this plan"
    );
}

#[test]
fn pods_under_two_pdbs_keep_their_node() {
    let mut s = snapshot(
        vec![node("n0"), node("n1")],
        vec![pod("a1", 0, 2000, 1), pod("web1", 1, 100, 1)],
    );
    s.pdbs.push(pdb("web", "web", 5));
    s.pdbs.push(Pdb {
        selector: LabelSelector::default(),
        ..pdb("all", "", 5)
    });
    let p = run(&s, &options());
    assert!(reason(&p, &s, "n1").contains("more than one PDB"));
}

#[test]
fn nodes_min_stops_removals() {
    let s = snapshot(vec![node("n0"), node("n1"), node("n2")], vec![]);
    let p = run(
        &s,
        &Options {
            min_nodes: 2,
            ..options()
        },
    );
    assert_eq!(p.removals.len(), 1);
    assert_eq!(
        p.kept
            .iter()
            .filter(|k| k.reason == KeepReason::NodesMin(2))
            .count(),
        2
    );
    assert_eq!(reason(&p, &s, "n2"), "nodes.min 2 reached");
}

#[test]
fn budget_zero_removes_nothing_and_budget_sets_the_batch_size() {
    let nodes: Vec<Node> = (0..5).map(|i| node(&format!("n{i}"))).collect();
    let s = snapshot(nodes, vec![]);
    let p = run(
        &s,
        &Options {
            budget: Some(0),
            ..options()
        },
    );
    assert!(p.removals.is_empty());
    assert_eq!(
        reason(&p, &s, "n0"),
        "budget exhausted: the disruption budget allows 0 nodes now"
    );
    let p = run(
        &s,
        &Options {
            budget: Some(2),
            ..options()
        },
    );
    assert_eq!(p.removals.len(), 5);
    assert_eq!(
        p.batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    let p = run(
        &s,
        &Options {
            budget: None,
            ..options()
        },
    );
    assert_eq!(
        p.budget, 1,
        "the default budget is 10% of 5 nodes, rounded up"
    );
}

fn anti(mut p: Pod, app: &str) -> Pod {
    p.anti_affinity.push(AntiAffinityTerm {
        selector: LabelSelector::labels([("app", app)]),
        namespaces: vec![],
    });
    p
}

#[test]
fn hostname_anti_affinity_keeps_replicas_apart() {
    let s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![
            anti(pod("web1", 0, 2000, 1), "web"),
            anti(pod("web2", 1, 100, 1), "web"),
            pod("x1", 2, 2000, 1),
        ],
    );
    let p = run(&s, &options());
    // web2 cannot join web1 on n0 but can go to n2.
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(p.moves[0].to, NodeId(2));
}

#[test]
fn a_residents_anti_affinity_repels_the_mover_too() {
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![
            anti(pod("guard1", 0, 2000, 1), "web"),
            pod("web1", 1, 100, 1),
        ],
    );
    let p = run(&s, &options());
    assert!(p.removals.is_empty());
    assert_eq!(
        reason(&p, &s, "n1"),
        "no room for pod app/web1 elsewhere without breaking pod anti-affinity"
    );
}

fn term(key: &str, app: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        topology_key: key.into(),
        selector: LabelSelector::labels([("app", app)]),
        namespaces: vec![],
    }
}

/// `p` must run in a `key` domain that runs an `app` pod.
fn attracted(mut p: Pod, key: &str, app: &str) -> Pod {
    p.pod_affinity.push(term(key, app));
    p
}

/// `p` must not run in a `key` domain that runs an `app` pod.
fn repelled(mut p: Pod, key: &str, app: &str) -> Pod {
    p.topology_anti_affinity.push(term(key, app));
    p
}

#[test]
fn zone_pod_affinity_moves_a_pod_only_into_a_zone_running_its_target() {
    // Without affinity api1 would land on n2, the fullest; db runs in zone a only.
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "b"),
        ],
        vec![
            pod("db1", 0, 2500, 1),
            attracted(pod("api1", 1, 100, 1), LABEL_ZONE, "db"),
            pod("x1", 2, 3000, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(p.moves[0].to, NodeId(0));
}

#[test]
fn pod_affinity_without_room_next_to_its_target_keeps_the_node() {
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "b"),
        ],
        vec![
            pod("db1", 0, 3900, 1),
            attracted(pod("api1", 1, 500, 1), LABEL_ZONE, "db"),
            pod("x1", 2, 2100, 1),
        ],
    );
    let p = run(&s, &options());
    assert!(p.removals.is_empty(), "{:?}", removed(&p, &s));
    assert_eq!(
        reason(&p, &s, "n1"),
        "no room for pod app/api1 elsewhere next to the pods its pod affinity requires"
    );
}

#[test]
fn the_first_pod_of_a_self_attracting_group_may_go_anywhere_and_the_rest_follow() {
    // web1 and web2 attract each other by zone and both leave n1: nothing matches them elsewhere, so
    // the first may land on the fullest node (zone a) and the second must join it there.
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "c"),
        ],
        vec![
            pod("x1", 0, 2600, 1),
            attracted(pod("web1", 1, 600, 1), LABEL_ZONE, "web"),
            attracted(pod("web2", 1, 300, 1), LABEL_ZONE, "web"),
            pod("y1", 2, 2200, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert!(
        p.moves.iter().all(|m| m.to == NodeId(0)),
        "both in zone a: {:?}",
        p.moves
    );
}

#[test]
fn hostname_pod_affinity_keeps_a_pod_next_to_its_target() {
    let s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![
            pod("leader1", 0, 2100, 1),
            attracted(pod("follower1", 1, 100, 1), LABEL_HOSTNAME, "leader"),
            pod("x1", 2, 3000, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(p.moves[0].to, NodeId(0), "next to leader1, not on n2");
}

#[test]
fn any_node_label_is_a_topology_key_and_nodes_without_it_are_in_no_domain() {
    let rack = |n: Node, r: &str| {
        let mut n = n;
        n.labels.insert("example.com/rack".into(), r.into());
        n
    };
    // n2 is the fullest and runs db too, but has no rack label: api1 must go to n0 (rack r1, db).
    let s = snapshot(
        vec![rack(node("n0"), "r1"), rack(node("n1"), "r2"), node("n2")],
        vec![
            pod("db1", 0, 2100, 1),
            attracted(pod("api1", 1, 100, 1), "example.com/rack", "db"),
            pod("db2", 2, 3000, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(p.moves[0].to, NodeId(0));
    // Anti-affinity on the rack: n2 (no rack) is no domain, so nothing there repels.
    let s = snapshot(
        vec![rack(node("n0"), "r1"), rack(node("n1"), "r2"), node("n2")],
        vec![
            pod("db1", 0, 3000, 1),
            repelled(pod("db2", 1, 100, 1), "example.com/rack", "db"),
            pod("db3", 2, 2100, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(p.moves[0].to, NodeId(2));
}

#[test]
fn zone_anti_affinity_keeps_a_pod_out_of_zones_running_what_it_repels() {
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "a"),
            in_zone(node("n3"), "c"),
        ],
        vec![
            pod("web1", 0, 2500, 1),
            repelled(pod("web2", 1, 100, 1), LABEL_ZONE, "web"),
            pod("x1", 2, 3000, 1),
            pod("y1", 3, 2600, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(p.moves[0].to, NodeId(3), "zone a runs web1");
}

#[test]
fn a_placed_pods_zone_anti_affinity_repels_the_mover_too() {
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "a"),
            in_zone(node("n3"), "c"),
        ],
        vec![
            repelled(pod("guard1", 0, 2500, 1), LABEL_ZONE, "web"),
            pod("web1", 1, 100, 1),
            pod("x1", 2, 3000, 1),
            pod("y1", 3, 2600, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(removed(&p, &s), ["n1"]);
    assert_eq!(
        p.moves[0].to,
        NodeId(3),
        "guard1 repels web pods from zone a"
    );
}

/// Three 16 vCPU nodes at $0.768/h, six 1.5 vCPU web pods each, and one offer that holds two nodes' pods.
fn replaceable() -> (Snapshot, ReplaceOptions) {
    let mut s = Snapshot::default();
    for i in 0..3u32 {
        let mut n = in_zone(sized_node(&format!("n{i}"), 16_000, 64), "a");
        n.hourly_price = Some(0.768);
        s.nodes.push(n);
        for k in 0..6 {
            s.pods.push(pod(&format!("web{}", i * 10 + k), i, 1500, 2));
        }
    }
    let offer = Offer {
        instance_type: "c6i.8xlarge".into(),
        zone: "a".into(),
        capacity_type: CapacityType::OnDemand,
        hourly: 1.36,
        allocatable: kubelet_allocatable(32, 64 * 1024, 110),
        labels: Labels::from([(LABEL_ZONE.to_owned(), "a".to_owned())]),
        taints: vec![],
    };
    (s, ReplaceOptions::with_offers(vec![offer]))
}

fn replaced(s: &Snapshot, replace: &ReplaceOptions) -> Vec<NodeId> {
    let p = run(s, &options());
    plan_replacements(s, &p, &options(), replace)
        .into_iter()
        .flat_map(|r| r.replace)
        .collect()
}

/// `replaceable()` with its one offer moved to `zone`.
fn offered_in(zone: &str) -> ReplaceOptions {
    let (_, mut replace) = replaceable();
    for offer in &mut replace.offers {
        offer.zone = zone.into();
        offer.labels.insert(LABEL_ZONE.into(), zone.into());
    }
    replace
}

/// `replaceable()` plus n3, a do-not-disrupt node in zone a (never replaced) running `resident`.
fn with_pinned_resident(resident: Pod) -> Snapshot {
    let (mut s, _) = replaceable();
    let mut n3 = in_zone(sized_node("n3", 16_000, 64), "a");
    n3.do_not_disrupt = true;
    s.nodes.push(n3);
    s.pods.push(Pod {
        node: NodeId(3),
        ..resident
    });
    s
}

#[test]
fn replacement_into_the_zone_its_pod_affinity_wants_is_planned() {
    let mut s = with_pinned_resident(pod("db1", 3, 500, 1));
    s.pods[0] = attracted(s.pods[0].clone(), LABEL_ZONE, "db");
    assert!(replaced(&s, &offered_in("a")).contains(&NodeId(0)));
}

#[test]
fn replacement_into_another_zone_than_its_pod_affinity_wants_is_refused() {
    let mut s = with_pinned_resident(pod("db1", 3, 500, 1));
    s.pods[0] = attracted(s.pods[0].clone(), LABEL_ZONE, "db");
    let r = replaced(&s, &offered_in("b"));
    assert!(
        !r.contains(&NodeId(0)),
        "web0 needs a db pod in its zone: {r:?}"
    );
    assert!(r.contains(&NodeId(1)), "n1's pods have no terms: {r:?}");
}

#[test]
fn replacement_respects_zone_anti_affinity_of_a_resident_in_both_zones() {
    // guard1 (zone a) repels web0: a new node in zone a may not take it, one in zone b may.
    let mut guard = pod("guard1", 3, 100, 1);
    guard = repelled(guard, LABEL_ZONE, "web0");
    let mut s = with_pinned_resident(guard);
    std::sync::Arc::make_mut(&mut s.pods[0].labels).insert("app".into(), "web0".into());
    assert!(!replaced(&s, &offered_in("a")).contains(&NodeId(0)));
    assert!(replaced(&s, &offered_in("b")).contains(&NodeId(0)));
}

#[test]
fn replacement_refuses_pod_affinity_on_a_key_the_offer_does_not_model() {
    let rack = "example.com/rack";
    let mut s = with_pinned_resident(pod("db1", 3, 500, 1));
    for n in &mut s.nodes {
        n.labels.insert(rack.into(), "r1".into());
    }
    s.pods[0] = attracted(s.pods[0].clone(), rack, "db");
    assert!(!replaced(&s, &offered_in("a")).contains(&NodeId(0)));
    // With the rack among the offer's labels the new node's domain is known.
    let mut replace = offered_in("a");
    replace.offers[0].labels.insert(rack.into(), "r1".into());
    assert!(replaced(&s, &replace).contains(&NodeId(0)));
}

#[test]
fn replacement_refuses_hostname_anti_affinity_between_pods_moving_onto_one_new_node() {
    let (mut s, replace) = replaceable();
    // web0 (n0) repels web10 (n1) on the hostname: n0 and n1 may not share a new node.
    std::sync::Arc::make_mut(&mut s.pods[6].labels).insert("app".into(), "lonely".into());
    s.pods[0].anti_affinity = vec![AntiAffinityTerm {
        selector: LabelSelector::labels([("app", "lonely")]),
        namespaces: Vec::new(),
    }];
    let p = run(&s, &options());
    let r = plan_replacements(&s, &p, &options(), &replace);
    assert!(
        r.iter()
            .all(|r| !(r.replace.contains(&NodeId(0)) && r.replace.contains(&NodeId(1)))),
        "{r:?}"
    );
    assert!(!r.is_empty(), "n1 and n2 still merge: {r:?}");
}

#[test]
fn replacement_lands_a_pod_after_the_moving_pod_its_hostname_affinity_wants() {
    // web0 must share a host with a cache pod; the only one moves from n2 onto the same new node.
    let (mut s, replace) = replaceable();
    s.pods[0] = attracted(s.pods[0].clone(), LABEL_HOSTNAME, "cache");
    std::sync::Arc::make_mut(&mut s.pods[12].labels).insert("app".into(), "cache".into());
    let p = run(&s, &options());
    let r = plan_replacements(&s, &p, &options(), &replace);
    let with_web0 = r.iter().find(|r| r.pods.contains(&PodId(0)));
    let order = &with_web0.expect("web0 moves with the cache pod").pods;
    let position = |id: u32| order.iter().position(|p| *p == PodId(id));
    assert!(position(12) < position(0), "cache lands first: {order:?}");
}

fn spread(mut p: Pod, key: TopologyKey, max_skew: u32) -> Pod {
    let app = p.labels["app"].clone();
    p.topology_spread.push(TopologySpread {
        max_skew,
        key,
        selector: LabelSelector::labels([("app", app.as_str())]),
        min_domains: None,
        honor_node_affinity: true,
        honor_node_taints: false,
    });
    p
}

#[test]
fn zone_spread_refuses_moves_that_skew_zones() {
    // web: one replica in zone a (n0), one in zone b (n1, light). Moving web2 to zone a -> a:2, b:0 on n2.
    let s = snapshot(
        vec![
            in_zone(node("n0"), "a"),
            in_zone(node("n1"), "b"),
            in_zone(node("n2"), "b"),
        ],
        vec![
            spread(pod("web1", 0, 2000, 1), TopologyKey::Zone, 1),
            spread(pod("web2", 1, 100, 1), TopologyKey::Zone, 1),
            pod("x1", 2, 2000, 1),
        ],
    );
    let p = run(&s, &options());
    assert_eq!(
        removed(&p, &s),
        ["n1"],
        "web2 must stay in zone b: it lands on n2"
    );
    assert_eq!(p.moves[0].to, NodeId(2));

    // Without another node in zone b, zone b stops being a domain: a:1 -> 2 is skew 0 over the only domain.
    let s = snapshot(
        vec![in_zone(node("n0"), "a"), in_zone(node("n1"), "b")],
        vec![
            spread(pod("web1", 0, 2000, 1), TopologyKey::Zone, 1),
            spread(pod("web2", 1, 100, 1), TopologyKey::Zone, 1),
        ],
    );
    assert_eq!(run(&s, &options()).removals.len(), 1);
}

#[test]
fn zone_spread_counts_zones_with_eligible_nodes_only() {
    // Zone c has a node the pod cannot use (no arm64 label): it is no domain under nodeAffinityPolicy Honor.
    let arm = |n: Node| {
        let mut n = n;
        n.labels.insert("arch".into(), "arm64".into());
        n
    };
    let mut mover = spread(pod("web2", 1, 100, 1), TopologyKey::Zone, 1);
    mover.node_selector.insert("arch".into(), "arm64".into());
    let mut anchor = spread(pod("web1", 0, 1000, 1), TopologyKey::Zone, 1);
    anchor.node_selector.insert("arch".into(), "arm64".into());
    let s = snapshot(
        vec![
            arm(in_zone(node("n0"), "a")),
            arm(in_zone(node("n1"), "b")),
            arm(in_zone(node("n2"), "b")),
            in_zone(node("x"), "c"),
        ],
        vec![anchor, mover, pod("y1", 2, 2500, 1), pod("z1", 3, 3000, 1)],
    );
    let p = run(&s, &options());
    assert!(removed(&p, &s).contains(&"n1".to_string()));
}

#[test]
fn hostname_spread_limits_replicas_per_node() {
    let s = snapshot(
        vec![node("n0"), node("n1")],
        vec![
            spread(pod("web1", 0, 2000, 1), TopologyKey::Hostname, 1),
            spread(pod("web2", 1, 100, 1), TopologyKey::Hostname, 1),
        ],
    );
    // After n1 leaves, n0 is the only domain: 1 + 1 - 2 = 0 <= 1, the move is allowed.
    assert_eq!(run(&s, &options()).removals.len(), 1);
    let s = snapshot(
        vec![node("n0"), node("n1"), node("n2")],
        vec![
            spread(pod("web1", 0, 2000, 1), TopologyKey::Hostname, 1),
            spread(pod("web2", 1, 100, 1), TopologyKey::Hostname, 1),
            pod("x1", 2, 3500, 1),
        ],
    );
    // n2 has no room; n0 would hold 2 web pods while n2 holds 0: skew 2 > 1.
    let p = run(&s, &options());
    assert_eq!(
        reason(&p, &s, "n1"),
        "no room for pod app/web2 elsewhere without breaking its hostname spread"
    );
}

#[test]
fn emptiest_nodes_go_first_and_dearer_ones_break_ties() {
    let mut cheap = node("cheap");
    cheap.hourly_price = Some(0.1);
    let mut dear = node("dear");
    dear.hourly_price = Some(0.5);
    let s = snapshot(
        vec![node("big"), cheap, dear],
        vec![
            pod("a1", 0, 2000, 1),
            pod("b1", 1, 1000, 1),
            pod("c1", 2, 1000, 1),
        ],
    );
    let p = run(
        &s,
        &Options {
            budget: Some(10),
            ..options()
        },
    );
    assert_eq!(removed(&p, &s)[0], "dear");
    assert!((p.savings_hourly - 0.5).abs() < 1e-9 || (p.savings_hourly - 0.6).abs() < 1e-9);
}

#[test]
fn scenario_plans_agree_between_indexed_and_naive() {
    let s = scenario::generate(11, 40, 700);
    let p = run(&s, &options());
    assert!(
        !p.removals.is_empty(),
        "the scenario has underutilized nodes"
    );
}

#[test]
fn invalid_snapshots_are_rejected() {
    let s = snapshot(vec![node("n0")], vec![pod("a1", 3, 1, 1)]);
    assert!(plan(&s, &options()).is_err());
}
