//! Custom resources read from a file (the CLI's `--policy`, `--template`, `--schedule`): into the
//! CRD's own spec type, so a file takes the same defaults as an object on the API server, after the
//! checks the API server makes first: the kind and group, and no field the CRD's schema does not know
//! (what `kubectl apply`'s strict field validation refuses). The controllers' validate steps then
//! check the spec, so the CLI and the operator refuse the same objects.

use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A custom resource's name and spec, read from a YAML or JSON document.
#[derive(Debug, Clone)]
pub struct FromFile<S> {
    /// `metadata.name`, or the kind in lower case when the file has none.
    pub name: String,
    /// The spec, CRD defaults applied.
    pub spec: S,
}

/// Read `text` as a `K` object. `fill` may add fields the command does not need but the schema
/// requires (e.g. a NodeTemplate's `autoScalingGroups` for `rank`). Errors name the field.
pub fn read<K: CustomResourceExt, S: DeserializeOwned>(
    text: &str,
    fill: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Result<FromFile<S>, String> {
    let crd = K::crd();
    let kind = crd.spec.names.kind.as_str();
    let document: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    match document.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(other) => return Err(format!("kind: expected {kind}, found {other}")),
        None => return Err(format!("kind: missing; expected {kind}")),
    }
    let group = format!("{}/", crd.spec.group);
    if let Some(api_version) = document
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.starts_with(&group))
    {
        return Err(format!(
            "apiVersion: expected {}, found {api_version}",
            K::api_resource().api_version
        ));
    }
    let name = document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let mut spec = match document.get("spec") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("spec: expected a mapping".into()),
    };
    fill(&mut spec);
    let spec = Value::Object(spec);
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"))
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| e.to_string())?;
    if let Some(schema) = schema {
        unknown_field(&spec, &schema, "spec")?;
    }
    let spec = serde_path_to_error::deserialize(spec)
        .map_err(|e| format!("spec.{}: {}", e.path(), e.inner()))?;
    Ok(FromFile { name, spec })
}

/// The first field of `value` the structural schema does not declare, as the API server's strict
/// field validation reports it.
fn unknown_field(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, item) in map {
                let field = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => unknown_field(item, s, &field)?,
                    (None, None) if properties.is_some() => {
                        return Err(format!("{field}: unknown field `{key}`"));
                    }
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_field(item, s, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{OptimizationPolicy, OptimizationPolicySpec};

    fn policy(text: &str) -> Result<FromFile<OptimizationPolicySpec>, String> {
        read::<OptimizationPolicy, _>(text, |_| {})
    }

    #[test]
    fn an_empty_spec_takes_the_crd_defaults() {
        let p = policy("kind: OptimizationPolicy\nmetadata: {name: p}\n").unwrap();
        assert_eq!(p.name, "p");
        assert_eq!(p.spec.spot.percentage, 70);
        assert_eq!(p.spec.disruption.budgets[0].nodes, "10%");
    }

    #[test]
    fn kind_group_and_unknown_fields_are_refused_with_the_field() {
        for (text, expected) in [
            (
                "kind: NodeTemplate",
                "kind: expected OptimizationPolicy, found NodeTemplate",
            ),
            ("spec: {}", "kind: missing"),
            (
                "apiVersion: example.com/v1\nkind: OptimizationPolicy",
                "apiVersion: expected cloudoptim.io/",
            ),
            (
                "kind: OptimizationPolicy\nspec: {spot: {percentage: 50, onDemandBAse: 2}}",
                "spec.spot.onDemandBAse: unknown field",
            ),
            (
                "kind: OptimizationPolicy\nspec: {disruption: {budgets: [{nodes: '1', when: x}]}}",
                "spec.disruption.budgets[0].when: unknown field",
            ),
            (
                "kind: OptimizationPolicy\nspec: {spot: {percentage: lots}}",
                "spec.spot.percentage: invalid type",
            ),
        ] {
            let err = policy(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
