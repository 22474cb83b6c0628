//! A whole snapshot: parsed from a List (`kubectl get ... -o yaml`) or assembled from objects in memory.

use super::*;

/// One object and the path that names it in error messages.
pub(super) enum Object {
    Node(Box<core::Node>),
    Pod(Box<core::Pod>),
    Pdb(Box<PodDisruptionBudget>),
}

/// Parse a List (YAML or JSON; a multi-document stream of Lists or objects also works).
pub fn from_list_text(text: &str) -> Result<Translated, TranslateError> {
    let documents = documents(text)?;
    let many = documents.len() > 1;
    let mut objects = Vec::new();
    let mut skipped = Skipped::default();
    for (d, document) in documents.into_iter().enumerate() {
        let root = if many {
            format!("documents[{d}]")
        } else {
            String::new()
        };
        collect(document, &root, &mut objects, &mut skipped)?;
    }
    translate(objects, skipped)
}

pub(super) fn documents(text: &str) -> Result<Vec<Value>, TranslateError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| error("", format!("not valid JSON: {e}")));
    }
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            Value::deserialize(document).map_err(|e| error("", format!("not valid YAML: {e}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

pub(super) fn join(root: &str, field: &str) -> String {
    if root.is_empty() {
        field.to_owned()
    } else {
        format!("{root}.{field}")
    }
}

/// Turn one document (a List or a single object) into typed objects.
pub(super) fn collect(
    document: Value,
    root: &str,
    objects: &mut Vec<(String, Object)>,
    skipped: &mut Skipped,
) -> Result<(), TranslateError> {
    let Value::Object(mut map) = document else {
        return Err(error(
            root,
            "expected a Kubernetes List (kind: List, items: [...]) or object",
        ));
    };
    match map.remove("items") {
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = join(root, &format!("items[{i}]"));
                if let Some(object) = typed(item, &path, skipped)? {
                    objects.push((path, object));
                }
            }
            Ok(())
        }
        Some(Value::Null) => Ok(()),
        Some(_) => Err(error(join(root, "items"), "expected a list of objects")),
        None if map.contains_key("kind") => {
            let path = if root.is_empty() {
                "(document)".to_owned()
            } else {
                root.to_owned()
            };
            if let Some(object) = typed(Value::Object(map), &path, skipped)? {
                objects.push((path, object));
            }
            Ok(())
        }
        None => Err(error(
            root,
            "expected a Kubernetes List (kind: List, items: [...]) or object",
        )),
    }
}

/// Deserialize one item by its kind; `None` for kinds we ignore.
pub(super) fn typed(
    mut item: Value,
    path: &str,
    skipped: &mut Skipped,
) -> Result<Option<Object>, TranslateError> {
    let kind = match item.get("kind") {
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            return Err(error(
                format!("{path}.kind"),
                "missing; expected Node, Pod or PodDisruptionBudget",
            ));
        }
    };
    quantities_to_strings(&mut item, &kind);
    let object = match kind.as_str() {
        "Node" => Object::Node(Box::new(decode(item, path)?)),
        "Pod" => Object::Pod(Box::new(decode(item, path)?)),
        "PodDisruptionBudget" => {
            // policy/v1beta1 has the same fields we read.
            if let Some(version) = item.get_mut("apiVersion") {
                *version = Value::String("policy/v1".to_owned());
            }
            Object::Pdb(Box::new(decode(item, path)?))
        }
        other => {
            *skipped.other_kinds.entry(other.to_owned()).or_insert(0) += 1;
            return Ok(None);
        }
    };
    Ok(Some(object))
}

/// Deserialize `item` as `T`; on failure, re-read it through serde_yaml, which names the failing field.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    item: Value,
    path: &str,
) -> Result<T, TranslateError> {
    match serde_json::from_value::<T>(item.clone()) {
        Ok(value) => Ok(value),
        Err(first) => {
            let detail = serde_yaml::to_string(&item)
                .ok()
                .and_then(|text| serde_yaml::from_str::<T>(&text).err())
                .map(|e| strip_location(&e.to_string()))
                .unwrap_or_else(|| first.to_string());
            match detail.split_once(": ") {
                Some((field, message)) if !field.contains(' ') => {
                    Err(error(format!("{path}.{field}"), message))
                }
                _ => Err(error(path, detail)),
            }
        }
    }
}

/// Drop serde_yaml's " at line L column C" (it refers to the re-serialized item, not the user's file).
pub(super) fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Hand-written Lists often say `cpu: 2`; Kubernetes quantities are strings. Convert numbers found
/// where quantities live so they parse (kubectl itself always quotes them).
pub(super) fn quantities_to_strings(item: &mut Value, kind: &str) {
    fn fix_map(map: Option<&mut Value>) {
        if let Some(Value::Object(map)) = map {
            for value in map.values_mut() {
                if let Value::Number(n) = value {
                    *value = Value::String(n.to_string());
                }
            }
        }
    }
    fn fix_containers(list: Option<&mut Value>) {
        if let Some(Value::Array(containers)) = list {
            for c in containers {
                if let Some(resources) = c.get_mut("resources") {
                    fix_map(resources.get_mut("requests"));
                    fix_map(resources.get_mut("limits"));
                }
            }
        }
    }
    match kind {
        "Node" => {
            if let Some(status) = item.get_mut("status") {
                fix_map(status.get_mut("allocatable"));
                fix_map(status.get_mut("capacity"));
            }
        }
        "Pod" => {
            if let Some(spec) = item.get_mut("spec") {
                fix_containers(spec.get_mut("containers"));
                fix_containers(spec.get_mut("initContainers"));
                fix_map(spec.get_mut("overhead"));
                if let Some(resources) = spec.get_mut("resources") {
                    fix_map(resources.get_mut("requests"));
                    fix_map(resources.get_mut("limits"));
                }
            }
        }
        _ => {}
    }
}

pub(super) fn translate(
    objects: Vec<(String, Object)>,
    mut skipped: Skipped,
) -> Result<Translated, TranslateError> {
    let mut snapshot = Snapshot::default();
    let mut node_ids: HashMap<String, NodeId> = HashMap::new();
    for (path, object) in &objects {
        if let Object::Node(node) = object {
            push_node(&mut snapshot, &mut node_ids, node, path)?;
        }
    }
    for (path, object) in &objects {
        if let Object::Pod(pod) = object
            && let Some(pod) = pod_from(pod, path, &node_ids, &mut skipped)?
        {
            snapshot.pods.push(pod);
        }
    }
    for (path, object) in &objects {
        if let Object::Pdb(pdb) = object {
            push_pdb(&mut snapshot, &mut skipped, pdb, path)?;
        }
    }
    Ok(Translated { snapshot, skipped })
}

/// Add a Node to the snapshot (a name seen twice is an error naming the path).
pub(super) fn push_node(
    snapshot: &mut Snapshot,
    node_ids: &mut HashMap<String, NodeId>,
    node: &core::Node,
    path: &str,
) -> Result<(), TranslateError> {
    let node = node_from(node, path)?;
    if node_ids.contains_key(&node.name) {
        return Err(error(
            format!("{path}.metadata.name"),
            format!("node {:?} appears twice", node.name),
        ));
    }
    node_ids.insert(node.name.clone(), NodeId(snapshot.nodes.len() as u32));
    snapshot.nodes.push(node);
    Ok(())
}

/// Add a PDB to the snapshot (after its pods); one without a selector is counted and left out.
pub(super) fn push_pdb(
    snapshot: &mut Snapshot,
    skipped: &mut Skipped,
    pdb: &PodDisruptionBudget,
    path: &str,
) -> Result<(), TranslateError> {
    match pdb_from(pdb, path, &snapshot.pods)? {
        Some(pdb) => snapshot.pdbs.push(pdb),
        None => skipped.pdbs_without_selector += 1,
    }
    Ok(())
}

/// A snapshot from Nodes, pods already in the engine's form (with their node names, from
/// [`engine_pod`]) and PDBs, without copying the Kubernetes objects. Pods on nodes not in `nodes` are
/// left out and counted.
/// Snapshot nodes are in the order of `nodes`.
pub fn assemble<'a>(
    nodes: impl IntoIterator<Item = &'a core::Node>,
    pods: impl IntoIterator<Item = (&'a str, &'a Pod)>,
    pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
) -> Result<Translated, TranslateError> {
    let mut snapshot = Snapshot::default();
    let mut skipped = Skipped::default();
    let mut node_ids: HashMap<String, NodeId> = HashMap::new();
    for node in nodes {
        let path = format!("Node {}", node.metadata.name.as_deref().unwrap_or("?"));
        push_node(&mut snapshot, &mut node_ids, node, &path)?;
    }
    for (node, pod) in pods {
        match node_ids.get(node) {
            Some(&id) => {
                let mut pod = pod.clone();
                pod.node = id;
                snapshot.pods.push(pod);
            }
            None => skipped.pods_on_unknown_nodes += 1,
        }
    }
    for pdb in pdbs {
        let path = format!(
            "PodDisruptionBudget {}/{}",
            pdb.metadata.namespace.as_deref().unwrap_or("default"),
            pdb.metadata.name.as_deref().unwrap_or("?")
        );
        push_pdb(&mut snapshot, &mut skipped, pdb, &path)?;
    }
    Ok(Translated { snapshot, skipped })
}
