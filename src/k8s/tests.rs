//! Tests of the Kubernetes -> snapshot translation.

use super::*;

const GIB: u64 = 1 << 30;

#[test]
fn cpu_quantities_become_millicores_rounded_up() {
    for (text, millis) in [
        ("250m", 250),
        ("2", 2000),
        ("0.5", 500),
        ("+1", 1000),
        ("1n", 1),
        ("1500u", 2),
        ("1e3", 1_000_000),
        ("1E-3", 1),
        ("0", 0),
        ("1k", 1_000_000),
        (".5", 500),
    ] {
        assert_eq!(parse_cpu_millis(text), Ok(millis), "{text}");
    }
}

#[test]
fn memory_quantities_become_bytes() {
    for (text, bytes) in [
        ("512Mi", 512 << 20),
        ("1G", 1_000_000_000),
        ("1e3", 1000),
        ("1.5Gi", 3 << 29),
        ("129e6", 129_000_000),
        ("128974848", 128_974_848),
        ("100m", 1),
        ("1Ki", 1024),
        ("2Ei", 2 << 60),
    ] {
        assert_eq!(parse_memory_bytes(text), Ok(bytes), "{text}");
    }
}

#[test]
fn malformed_quantities_say_what_was_expected() {
    for text in [
        "abc", "", "1.2.3", "1Qi", "1e", "1e+", "1e+-2", " 1", "1 ", "Mi", "--1", "1ee3",
    ] {
        let message = parse_memory_bytes(text).unwrap_err();
        assert!(message.contains("is not a quantity"), "{text:?}: {message}");
    }
    assert!(
        parse_cpu_millis("-1")
            .unwrap_err()
            .contains("must not be negative")
    );
    assert!(
        parse_memory_bytes("100Ei")
            .unwrap_err()
            .contains("too large")
    );
    assert!(
        parse_memory_bytes("1e99")
            .unwrap_err()
            .contains("too large")
    );
}

#[test]
fn region_is_the_zone_minus_its_letter() {
    assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
    assert_eq!(region_of_zone("eu-west-3c").as_deref(), Some("eu-west-3"));
    assert_eq!(region_of_zone("local"), None);
}

const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: ip-10-0-1-1.ec2.internal
    labels:
      node.kubernetes.io/instance-type: m5.xlarge
      topology.kubernetes.io/zone: us-east-1a
      eks.amazonaws.com/capacityType: SPOT
    annotations:
      cloudoptim.io/do-not-disrupt: "true"
  spec:
    taints:
    - {key: dedicated, value: db, effect: NoSchedule}
  status:
    allocatable: {cpu: 3920m, memory: 15076868Ki, pods: "58"}
- apiVersion: v1
  kind: Node
  metadata:
    name: n2
    labels:
      topology.kubernetes.io/zone: us-east-1b
      topology.kubernetes.io/region: us-east-1
  spec:
    unschedulable: true
  status:
    capacity: {cpu: 2, memory: 8Gi}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-1
    namespace: shop
    labels: {app: web, pod-template-hash: abc}
    ownerReferences:
    - {apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: u1, controller: true}
  spec:
    nodeName: ip-10-0-1-1.ec2.internal
    initContainers:
    - name: setup
      resources: {requests: {cpu: "2", memory: 1Gi}}
    - name: proxy
      restartPolicy: Always
      resources: {requests: {cpu: 100m, memory: 64Mi}}
    containers:
    - name: app
      resources:
        requests: {cpu: 500m}
        limits: {cpu: "1", memory: 512Mi}
    - name: sidecar
      resources: {requests: {cpu: 50m, memory: 32Mi}}
    overhead: {cpu: 10m}
    nodeSelector: {kubernetes.io/arch: amd64}
    tolerations:
    - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}
    - {operator: Exists}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions:
            - {key: topology.kubernetes.io/zone, operator: In, values: [us-east-1a, us-east-1b]}
      podAntiAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app: web}}
          matchLabelKeys: [pod-template-hash]
        - topologyKey: topology.kubernetes.io/zone
          labelSelector: {matchLabels: {app: web}}
    topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}, minDomains: 3, nodeTaintsPolicy: Honor}
    - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
    volumes:
    - {name: cache, emptyDir: {}}
  status: {phase: Running}
- apiVersion: v1
  kind: Pod
  metadata:
    name: db-0
    namespace: shop
    labels: {app: db}
    annotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: "false"}
    ownerReferences:
    - {apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u2, controller: true}
  spec:
    nodeName: n2
    containers: [{name: db}]
    affinity:
      podAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app: web}}
    volumes:
    - {name: data, persistentVolumeClaim: {claimName: data-db-0}}
    - {name: logs, hostPath: {path: /var/log}}
- apiVersion: v1
  kind: Pod
  metadata: {name: kube-proxy-x, namespace: kube-system, annotations: {kubernetes.io/config.mirror: abc}}
  spec: {nodeName: n2, containers: [{name: p}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: pending, namespace: shop}
  spec: {containers: [{name: p}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: done, namespace: shop}
  spec: {nodeName: n2, containers: [{name: p}]}
  status: {phase: Succeeded}
- apiVersion: v1
  kind: Pod
  metadata: {name: elsewhere, namespace: shop}
  spec: {nodeName: gone, containers: [{name: p}]}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
- apiVersion: policy/v1
  kind: PodDisruptionBudget
  metadata: {name: web, namespace: shop}
  spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
  status: {disruptionsAllowed: 0, currentHealthy: 1, desiredHealthy: 1, expectedPods: 1}
- apiVersion: policy/v1
  kind: PodDisruptionBudget
  metadata: {name: db, namespace: shop}
  spec: {minAvailable: "50%", selector: {matchExpressions: [{key: app, operator: In, values: [db]}]}}
- apiVersion: policy/v1
  kind: PodDisruptionBudget
  metadata: {name: nothing, namespace: shop}
  spec: {maxUnavailable: 1}
"#;

#[test]
fn nodes_carry_type_zone_region_capacity_allocatable_taints_and_flags() {
    let t = from_list_text(LIST).unwrap();
    let n = &t.snapshot.nodes[0];
    assert_eq!(n.instance_type.as_deref(), Some("m5.xlarge"));
    assert_eq!(n.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(n.region.as_deref(), Some("us-east-1"));
    assert_eq!(n.capacity_type, CapacityType::Spot);
    assert_eq!(
        n.allocatable,
        Resources {
            cpu_millis: 3920,
            memory_bytes: 15_076_868 * 1024,
            pods: 58
        }
    );
    assert_eq!(
        n.taints,
        [Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: TaintEffect::NoSchedule
        }]
    );
    assert!(n.do_not_disrupt && !n.unschedulable);
    assert_eq!(n.labels[LABEL_HOSTNAME], n.name);
    let n2 = &t.snapshot.nodes[1];
    assert_eq!(n2.capacity_type, CapacityType::OnDemand);
    assert_eq!(
        n2.allocatable,
        Resources {
            cpu_millis: 2000,
            memory_bytes: 8 * GIB,
            pods: 110
        }
    );
    assert!(n2.unschedulable);
}

#[test]
fn pod_requests_follow_the_scheduler_formula() {
    let t = from_list_text(LIST).unwrap();
    let web = &t.snapshot.pods[0];
    // containers: 500m + 50m, 512Mi (limit) + 32Mi; sidecar proxy adds 100m/64Mi; the init container
    // `setup` needs 2 CPU / 1Gi on top of nothing (the proxy starts after it); overhead 10m.
    assert_eq!(web.requests.cpu_millis, 2000 + 10);
    assert_eq!(web.requests.memory_bytes, GIB);
    assert_eq!(web.requests.pods, 1);
}

#[test]
fn pod_constraints_are_modelled_or_pin_with_a_reason() {
    let t = from_list_text(LIST).unwrap();
    let web = &t.snapshot.pods[0];
    assert_eq!(web.owner, OwnerKind::ReplicaSet);
    assert_eq!(web.node_selector["kubernetes.io/arch"], "amd64");
    assert_eq!(web.tolerations.len(), 2);
    assert_eq!(web.tolerations[1].operator, TolerationOperator::Exists);
    assert_eq!(web.node_affinity.as_ref().map(Vec::len), Some(1));
    assert_eq!(web.anti_affinity.len(), 1);
    assert_eq!(
        web.anti_affinity[0].selector.match_expressions[0].values,
        ["abc"],
        "matchLabelKeys folded in"
    );
    assert_eq!(web.topology_anti_affinity.len(), 1);
    assert_eq!(
        web.topology_anti_affinity[0].topology_key,
        "topology.kubernetes.io/zone"
    );
    assert!(web.unmodelled.is_empty(), "{:?}", web.unmodelled);
    assert_eq!(web.topology_spread.len(), 1, "ScheduleAnyway is ignored");
    let spread = &web.topology_spread[0];
    assert_eq!(
        (spread.key, spread.min_domains, spread.honor_node_taints),
        (TopologyKey::Zone, Some(3), true)
    );

    let db = &t.snapshot.pods[1];
    assert_eq!(db.owner, OwnerKind::StatefulSet);
    assert!(db.do_not_disrupt, "safe-to-evict: false");
    assert_eq!(db.pod_affinity.len(), 1);
    assert_eq!(db.pod_affinity[0].topology_key, LABEL_HOSTNAME);
    assert_eq!(db.unmodelled.len(), 2);
    assert!(db.unmodelled[0].starts_with("persistent volume claim data-db-0"));
    assert_eq!(db.unmodelled[1], "hostPath volume logs");
    assert_eq!(t.snapshot.pods[2].owner, OwnerKind::Static);
}

/// The engine form of a pod on node `n` with `affinity` (JSON) as its `spec.affinity`.
fn pod_with_affinity(affinity: serde_json::Value) -> Pod {
    let pod: core::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "web", "hash": "h1"}},
        "spec": {"nodeName": "n", "containers": [{"name": "c"}], "affinity": affinity},
    }))
    .unwrap();
    engine_pod(&pod).unwrap().unwrap().1
}

#[test]
fn required_pod_affinity_on_any_node_label_is_modelled() {
    let p = pod_with_affinity(serde_json::json!({"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "db"}},
             "namespaces": ["data"], "matchLabelKeys": ["hash"]},
            {"topologyKey": "example.com/rack", "labelSelector": {}},
        ],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}}},
        ],
    }}));
    assert!(p.unmodelled.is_empty(), "{:?}", p.unmodelled);
    assert_eq!(p.pod_affinity.len(), 2, "preferred terms are ignored");
    let zone = &p.pod_affinity[0];
    assert_eq!(zone.topology_key, "topology.kubernetes.io/zone");
    assert_eq!(zone.namespaces, ["data"]);
    assert_eq!(zone.selector.match_labels["app"], "db");
    assert_eq!(
        zone.selector.match_expressions,
        [SelectorRequirement {
            key: "hash".into(),
            operator: SelectorOperator::In,
            values: vec!["h1".into()],
        }],
        "matchLabelKeys folded in"
    );
    assert_eq!(p.pod_affinity[1].topology_key, "example.com/rack");
    assert_eq!(p.pod_affinity[1].selector, LabelSelector::default());
}

#[test]
fn required_pod_anti_affinity_splits_hostname_from_other_keys() {
    let p = pod_with_affinity(serde_json::json!({"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}},
            {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "web"}},
             "mismatchLabelKeys": ["hash"]},
            {"topologyKey": "example.com/rack"},
        ],
    }}));
    assert!(p.unmodelled.is_empty(), "{:?}", p.unmodelled);
    assert_eq!(p.anti_affinity.len(), 1);
    assert_eq!(
        p.topology_anti_affinity.len(),
        1,
        "a null selector repels nothing"
    );
    let zone = &p.topology_anti_affinity[0];
    assert_eq!(zone.topology_key, "topology.kubernetes.io/zone");
    assert_eq!(
        zone.selector.match_expressions[0].operator,
        SelectorOperator::NotIn
    );
}

#[test]
fn pod_affinity_that_cannot_be_modelled_pins_the_pod() {
    let p = pod_with_affinity(serde_json::json!({
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname"},
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}, "namespaceSelector": {}},
        ]},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}, "namespaceSelector": {}},
        ]},
    }));
    assert_eq!(
        p.unmodelled,
        [
            "required pod affinity selecting no pod",
            "required pod affinity with a namespaceSelector",
            "required pod anti-affinity with a namespaceSelector",
        ]
    );
    assert!(p.pod_affinity.is_empty() && p.anti_affinity.is_empty());
}

#[test]
fn pending_finished_and_orphan_pods_and_other_kinds_are_counted_not_kept() {
    let t = from_list_text(LIST).unwrap();
    assert_eq!(t.snapshot.pods.len(), 3);
    assert_eq!(t.skipped.pending_pods, 1);
    assert_eq!(t.skipped.finished_pods, 1);
    assert_eq!(t.skipped.pods_on_unknown_nodes, 1);
    assert_eq!(t.skipped.other_kinds.get("Service"), Some(&1));
    assert_eq!(t.skipped.pdbs_without_selector, 1);
}

#[test]
fn pdb_allowance_comes_from_status_or_is_computed_from_the_spec() {
    let t = from_list_text(LIST).unwrap();
    assert_eq!(t.snapshot.pdbs.len(), 2);
    assert_eq!(t.snapshot.pdbs[0].disruptions_allowed, 0);
    // db: 1 pod, minAvailable 50% rounds up to 1 -> 0 allowed.
    assert_eq!(t.snapshot.pdbs[1].disruptions_allowed, 0);
    assert!(t.snapshot.pdbs[1].covers(&t.snapshot.pods[1]));
}

#[test]
fn json_lists_and_document_streams_work_too() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node",
        "metadata":{"name":"a","labels":{"karpenter.sh/capacity-type":"on-demand"}},
        "status":{"allocatable":{"cpu":"4","memory":"16Gi","pods":"110"}}}]}"#;
    let t = from_list_text(json).unwrap();
    assert_eq!(t.snapshot.nodes[0].allocatable.cpu_millis, 4000);
    let stream = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\nstatus: {allocatable: {cpu: 1, memory: 1Gi}}\n---\n\
                  apiVersion: v1\nkind: List\nitems: []\n";
    assert_eq!(from_list_text(stream).unwrap().snapshot.nodes.len(), 1);
}

fn bad(text: &str) -> String {
    from_list_text(text).unwrap_err().to_string()
}

const NODE: &str = "- apiVersion: v1\n  kind: Node\n  metadata: {name: n}\n  status: {allocatable: {cpu: '1', memory: 1Gi}}\n";

#[test]
fn bad_quantities_name_the_item_path_and_what_was_expected() {
    let text = format!(
        "kind: List\nitems:\n{NODE}- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p, namespace: x}}\n  spec:\n    nodeName: n\n    containers:\n    - name: c\n      resources: {{requests: {{cpu: abc}}}}\n"
    );
    assert_eq!(
        bad(&text),
        r#"items[1].spec.containers[0].resources.requests.cpu: "abc" is not a quantity (expected e.g. "250m", "2", "512Mi", "1G" or "1e3")"#
    );
}

#[test]
fn type_errors_name_the_field_inside_the_item() {
    let text = format!(
        "kind: List\nitems:\n{NODE}- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p, labels: [a]}}\n  spec: {{nodeName: n, containers: []}}\n"
    );
    let message = bad(&text);
    assert!(
        message.starts_with("items[1].metadata.labels: invalid type: sequence"),
        "{message}"
    );
}

#[test]
fn structural_errors_are_precise() {
    assert!(bad("kind: List\nitems: {}\n").starts_with("items: expected a list"));
    assert!(
        bad("kind: List\nitems:\n- metadata: {name: x}\n").starts_with("items[0].kind: missing")
    );
    assert!(bad("a: [1, 2\nb: 3").starts_with("not valid YAML"));
    assert!(bad("{\"items\": [}").starts_with("not valid JSON"));
    let no_allocatable =
        "kind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n}}\n";
    assert_eq!(
        bad(no_allocatable),
        "items[0].status.allocatable: missing (expected cpu, memory and pods)"
    );
    let capacity = "kind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n, labels: {karpenter.sh/capacity-type: cheap}}\n  status: {allocatable: {cpu: '1', memory: 1Gi}}\n";
    assert_eq!(
        bad(capacity),
        r#"items[0].metadata.labels["karpenter.sh/capacity-type"]: "cheap" is not a capacity type (expected spot or on-demand)"#
    );
    let twice = format!("kind: List\nitems:\n{NODE}{NODE}");
    assert!(bad(&twice).contains("appears twice"));
}

struct Flat;

impl PriceBook for Flat {
    fn on_demand(&self, _: &str, instance_type: &str) -> Option<f64> {
        (instance_type == "m5.xlarge").then_some(0.192)
    }
    fn spot(&self, _: &str, zone: &str, _: &str) -> Option<f64> {
        (zone == "us-east-1a").then_some(0.07)
    }
}

#[test]
fn prices_are_filled_by_capacity_type() {
    let mut t = from_list_text(LIST).unwrap();
    apply_prices(&mut t.snapshot, &Flat);
    let n = &t.snapshot.nodes[0];
    assert_eq!(
        (n.hourly_price, n.on_demand_price, n.spot_price),
        (Some(0.07), Some(0.192), Some(0.07))
    );
    assert_eq!(
        t.snapshot.nodes[1].hourly_price, None,
        "no instance type, no price"
    );
}

#[test]
fn objects_in_memory_translate_with_object_names_in_errors() {
    let mut node: core::Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
        "status": {"allocatable": {"cpu": "x", "memory": "1Gi"}}
    }))
    .unwrap();
    let err = assemble(
        std::slice::from_ref(&node),
        std::iter::empty(),
        std::iter::empty(),
    )
    .unwrap_err();
    assert_eq!(err.path, "Node n.status.allocatable.cpu");
    node.status =
        serde_json::from_value(serde_json::json!({"allocatable": {"cpu": "1", "memory": "1Gi"}}))
            .unwrap();
    assert_eq!(
        assemble([&node], std::iter::empty(), std::iter::empty())
            .unwrap()
            .snapshot
            .nodes
            .len(),
        1
    );
}
