//! Schema tests: every CRD accepts its example and rejects malformed objects.
//!
//! The structural part of the OpenAPI schema (types, required fields, ranges, lengths, patterns,
//! enums) is checked by a small walker below; the CEL rules (`x-kubernetes-validations`) are
//! evaluated by `kube-cel`, the client-side implementation of the Kubernetes CEL libraries. The
//! end-to-end suite applies the same objects to a real API server.

use kube::CustomResourceExt;
use serde_json::Value;

use super::*;

/// Errors the API server would report for `object` under the CRD of kind `kind`.
fn admission_errors(crd: &CustomResourceDefinition, yaml: &str) -> Vec<String> {
    let object: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("CRD has a schema"),
    )
    .expect("schema serialises");
    let mut errors = Vec::new();
    structural(&schema, &object, "", &mut errors);
    if errors.is_empty()
        && let Err(cel) = kube_cel::Validator::new().validate(&schema, &object, None)
    {
        errors.extend(cel.iter().map(|e| e.message.clone()));
    }
    errors
}

/// A minimal structural-schema validator: the checks the API server makes before CEL.
fn structural(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: must not be null"));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{path}: expected {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: unsupported value {value}"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(n) = value.as_f64()
        && (bound("minimum").is_some_and(|min| n < min)
            || bound("maximum").is_some_and(|max| n > max))
    {
        errors.push(format!("{path}: {n} out of range"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as f64;
        if bound("minLength").is_some_and(|m| len < m)
            || bound("maxLength").is_some_and(|m| len > m)
        {
            errors.push(format!("{path}: length {len} out of range"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(pattern)
                .expect("pattern compiles")
                .is_match(s)
        {
            errors.push(format!("{path}: {s:?} does not match {pattern}"));
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as f64;
        if bound("minItems").is_some_and(|m| len < m) || bound("maxItems").is_some_and(|m| len > m)
        {
            errors.push(format!("{path}: {len} items out of range"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                structural(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(map) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap_or_default();
            if !map.contains_key(key) {
                errors.push(format!("{path}.{key}: required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, child) in map {
            let child_schema = properties
                .and_then(|p| p.get(key))
                .or_else(|| schema.get("additionalProperties").filter(|v| v.is_object()));
            if let Some(child_schema) = child_schema {
                structural(child_schema, child, &format!("{path}.{key}"), errors);
            }
        }
    }
}

fn assert_accepted(crd: &CustomResourceDefinition, yaml: &str) {
    let errors = admission_errors(crd, yaml);
    assert!(errors.is_empty(), "expected acceptance, got {errors:?}");
}

fn assert_rejected(crd: &CustomResourceDefinition, yaml: &str, expected: &str) {
    let errors = admission_errors(crd, yaml);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:?}"
    );
}

const NODE_TEMPLATE: &str = include_str!("../../examples/nodetemplate.yaml");
const POLICY: &str = include_str!("../../examples/optimizationpolicy.yaml");
const SCHEDULE: &str = include_str!("../../examples/hibernationschedule.yaml");
const FLAG: &str = include_str!("../../examples/spotriskflag.yaml");

/// A copy of an example with one top-level spec line replaced or the spec extended.
fn with_spec(example: &str, extra: &str) -> String {
    let mut value: Value = serde_yaml::from_str(example).expect("example parses");
    let patch: Value = serde_yaml::from_str(extra).expect("patch parses");
    let spec = value["spec"].as_object_mut().expect("spec is a map");
    for (k, v) in patch.as_object().expect("patch is a map") {
        if v.is_null() {
            spec.remove(k);
        } else {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_yaml::to_string(&value).expect("serialises")
}

#[test]
fn examples_are_accepted_and_deserialise() {
    assert_accepted(&NodeTemplate::crd(), NODE_TEMPLATE);
    assert_accepted(&OptimizationPolicy::crd(), POLICY);
    assert_accepted(&HibernationSchedule::crd(), SCHEDULE);
    assert_accepted(&SpotRiskFlag::crd(), FLAG);
    let _: NodeTemplate = serde_yaml::from_str(NODE_TEMPLATE).expect("NodeTemplate example");
    let _: OptimizationPolicy = serde_yaml::from_str(POLICY).expect("policy example");
    let _: HibernationSchedule = serde_yaml::from_str(SCHEDULE).expect("schedule example");
    let _: SpotRiskFlag = serde_yaml::from_str(FLAG).expect("flag example");
}

#[test]
fn node_template_rejects_both_or_neither_asg_binding() {
    let crd = NodeTemplate::crd();
    let both = with_spec(
        NODE_TEMPLATE,
        "autoScalingGroups: {names: [a], tagSelector: {k: v}}",
    );
    assert_rejected(&crd, &both, "exactly one of names or tagSelector");
    let neither = with_spec(NODE_TEMPLATE, "autoScalingGroups: {}");
    assert_rejected(&crd, &neither, "exactly one of names or tagSelector");
}

#[test]
fn node_template_rejects_weights_not_summing_to_one() {
    let bad = with_spec(NODE_TEMPLATE, "weights: {price: 0.7, risk: 0.7}");
    assert_rejected(&NodeTemplate::crd(), &bad, "price + risk must sum to 1");
    let good = with_spec(NODE_TEMPLATE, "weights: {price: 0.25, risk: 0.75}");
    assert_accepted(&NodeTemplate::crd(), &good);
}

#[test]
fn node_template_rejects_inverted_vcpu_range_and_bad_fields() {
    let crd = NodeTemplate::crd();
    let inverted = with_spec(NODE_TEMPLATE, "requirements: {minVcpu: 16, maxVcpu: 2}");
    assert_rejected(&crd, &inverted, "minVcpu must be <= maxVcpu");
    let too_many = with_spec(NODE_TEMPLATE, "requirements: {maxTypes: 41}");
    assert_rejected(&crd, &too_many, ".spec.requirements.maxTypes");
    let bad_arch = with_spec(NODE_TEMPLATE, "requirements: {architectures: [i386]}");
    assert_rejected(&crd, &bad_arch, "unsupported value");
    let bad_strategy = with_spec(NODE_TEMPLATE, "strategy: Greedy");
    assert_rejected(&crd, &bad_strategy, ".spec.strategy");
}

#[test]
fn policy_rejects_min_above_max_and_out_of_range_fields() {
    let crd = OptimizationPolicy::crd();
    assert_rejected(
        &crd,
        &with_spec(POLICY, "nodes: {min: 10, max: 3}"),
        "min must be <= max",
    );
    assert_rejected(
        &crd,
        &with_spec(POLICY, "spot: {percentage: 101}"),
        ".spec.spot.percentage",
    );
    let threshold = with_spec(POLICY, "consolidation: {utilizationThreshold: 1.5}");
    assert_rejected(&crd, &threshold, "utilizationThreshold");
    let budget = with_spec(POLICY, "disruption: {budgets: [{nodes: \"ten\"}]}");
    assert_rejected(&crd, &budget, "does not match");
    let window = with_spec(
        POLICY,
        "disruption: {budgets: [{nodes: \"1\", schedule: \"0 9 * * *\"}]}",
    );
    assert_rejected(&crd, &window, "schedule and duration must be set together");
    let no_url = with_spec(POLICY, "rightsizing: {mode: Recommend}");
    assert_rejected(
        &crd,
        &no_url,
        "modes Recommend and Apply need prometheusUrl",
    );
    let apply = with_spec(
        POLICY,
        "rightsizing: {mode: Apply, prometheusUrl: \"http://p:9090\"}",
    );
    assert_accepted(&crd, &apply);
    let recommend = with_spec(
        POLICY,
        "rightsizing: {mode: Recommend, prometheusUrl: \"http://p:9090\"}",
    );
    assert_accepted(&crd, &recommend);
}

#[test]
fn policy_defaults_fill_an_empty_spec() {
    let policy: OptimizationPolicy =
        serde_yaml::from_str("apiVersion: cloudoptim.io/v1alpha1\nkind: OptimizationPolicy\nmetadata: {name: p}\nspec: {}")
            .expect("empty spec deserialises");
    let spec = policy.spec;
    assert_eq!(spec.spot.percentage, 70);
    assert_eq!(spec.disruption.budgets.len(), 1);
    assert_eq!(spec.disruption.budgets[0].nodes, "10%");
    assert_eq!(
        spec.disruption.exclude_namespaces,
        ["kube-system", "kube-public", "kube-node-lease"]
    );
    assert_eq!(spec.consolidation.utilization_threshold, 0.5);
    assert_eq!(spec.interruptions.drain_deadline, "90s");
    assert!(!spec.dry_run);
}

#[test]
fn schedule_rejects_both_forms_bad_matrix_and_prewarm() {
    let crd = HibernationSchedule::crd();
    let mut matrix = vec![1u8; 168];
    let both = with_spec(SCHEDULE, &format!("weeklyMatrix: {matrix:?}"));
    assert_rejected(&crd, &both, "exactly one of weeklyMatrix or awake");
    let neither = with_spec(SCHEDULE, "awake: null");
    assert_rejected(&crd, &neither, "exactly one of weeklyMatrix or awake");
    let short = with_spec(
        SCHEDULE,
        &format!("awake: null\nweeklyMatrix: {:?}", &matrix[..167]),
    );
    assert_rejected(&crd, &short, "167 items out of range");
    matrix[5] = 2;
    let two = with_spec(SCHEDULE, &format!("awake: null\nweeklyMatrix: {matrix:?}"));
    assert_rejected(
        &crd,
        &two,
        "every entry must be 0 (hibernating) or 1 (awake)",
    );
    assert_rejected(
        &crd,
        &with_spec(SCHEDULE, "prewarmMinutes: 61"),
        ".spec.prewarmMinutes",
    );
    matrix[5] = 0;
    assert_accepted(
        &crd,
        &with_spec(SCHEDULE, &format!("awake: null\nweeklyMatrix: {matrix:?}")),
    );
}

#[test]
fn risk_flag_rejects_missing_fields_bad_reason_and_foreign_zone() {
    let crd = SpotRiskFlag::crd();
    assert_rejected(
        &crd,
        &with_spec(FLAG, "instanceType: null"),
        ".spec.instanceType: required",
    );
    assert_rejected(
        &crd,
        &with_spec(FLAG, "reason: Boredom"),
        "unsupported value",
    );
    assert_rejected(&crd, &with_spec(FLAG, "count: 0"), ".spec.count");
    assert_rejected(
        &crd,
        &with_spec(FLAG, "zone: eu-west-1a"),
        "spec.zone must be a zone of spec.region",
    );
}

#[test]
fn every_crd_has_status_conditions_as_a_list_map_and_printer_columns() {
    for crd in crds() {
        let version = &crd.spec.versions[0];
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}: status subresource"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 4),
            "{name}: printer columns"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{name}: short name"
        );
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("schema");
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"][0], "type",
            "{name}"
        );
        assert!(
            schema["properties"]["status"]["properties"]["observedGeneration"].is_object(),
            "{name}"
        );
    }
}

#[test]
fn committed_crd_files_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let committed = std::fs::read_to_string(dir.join(format!("{name}.yaml")))
            .unwrap_or_else(|e| panic!("crds/{name}.yaml: {e}; run scripts/update-crds.sh"));
        let generated = format!("---\n{}", serde_yaml::to_string(&crd).expect("serialises"));
        assert!(
            committed == generated,
            "crds/{name}.yaml drifted from the code; run scripts/update-crds.sh"
        );
    }
}
