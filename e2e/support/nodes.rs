//! Realistic fake nodes: kwok-managed Nodes labelled like EKS nodes, with an AWS providerID.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

/// What a fake node looks like.
#[derive(Clone, Debug)]
pub struct FakeNode {
    /// Node name, e.g. `ip-10-0-1-5.ec2.internal`.
    pub name: String,
    /// EC2 instance type label.
    pub instance_type: String,
    /// Zone label.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// EC2 instance id for the providerID `aws:///<zone>/<instance-id>`.
    pub instance_id: String,
    /// Allocatable CPU (quantity).
    pub cpu: String,
    /// Allocatable memory (quantity).
    pub memory: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
}

impl FakeNode {
    /// A 2-vCPU, 8 GiB m5.large-like node in `zone` backed by `instance_id`.
    pub fn new(name: &str, zone: &str, instance_id: &str) -> FakeNode {
        FakeNode {
            name: name.to_string(),
            instance_type: "m5.large".into(),
            zone: zone.to_string(),
            capacity_type: "spot".into(),
            instance_id: instance_id.to_string(),
            cpu: "2".into(),
            memory: "8Gi".into(),
            labels: BTreeMap::new(),
        }
    }

    /// The Node object kwok will manage (annotation `kwok.x-k8s.io/node: fake`).
    pub fn to_node(&self) -> Node {
        let region = self
            .zone
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .to_string();
        let mut labels = self.labels.clone();
        labels.extend([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            (
                "node.kubernetes.io/instance-type".to_string(),
                self.instance_type.clone(),
            ),
            ("topology.kubernetes.io/zone".to_string(), self.zone.clone()),
            ("topology.kubernetes.io/region".to_string(), region),
            (
                "karpenter.sh/capacity-type".to_string(),
                self.capacity_type.clone(),
            ),
            ("type".to_string(), "kwok".to_string()),
        ]);
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", self.cpu.clone()),
            ("memory", self.memory.clone()),
            ("pods", "110".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some([("kwok.x-k8s.io/node".to_string(), "fake".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("aws:///{}/{}", self.zone, self.instance_id)),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(resources.clone()),
                capacity: Some(resources),
                ..NodeStatus::default()
            }),
        }
    }

    /// Create the Node; kwok then marks it Ready and runs the pods scheduled onto it.
    pub async fn create(&self, client: &Client) -> Node {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .create(&PostParams::default(), &self.to_node())
            .await
            .unwrap_or_else(|e| panic!("creating node {}: {e}", self.name))
    }
}

/// Watch the Nodes labelled `selector` for as long as the task runs and keep in the counter the most
/// of them for which `disrupted` held at once (e.g. cordoned or tainted: a disruption budget's check
/// from outside the operator).
pub fn watch_most(
    client: &Client,
    selector: &str,
    disrupted: fn(&Node) -> bool,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = most.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = selector.to_string();
    let task = tokio::spawn(async move {
        let mut state: BTreeMap<String, bool> = BTreeMap::new();
        let stream =
            watcher::watcher(nodes, watcher::Config::default().labels(&selector)).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n)) => {
                    state.insert(n.name_any(), disrupted(&n));
                }
                Ok(watcher::Event::Delete(n)) => {
                    state.remove(&n.name_any());
                }
                _ => continue,
            }
            let now = state.values().filter(|d| **d).count();
            seen.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (most, task)
}
