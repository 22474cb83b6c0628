//! The Prometheus HTTP API's answers as plain series: `{"status":"success","data":{"resultType":
//! "matrix"|"vector","result":[{"metric":{..},"values":[[t,"v"],..]}|{"metric":{..},"value":[t,"v"]}]}}`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::engine::rightsizing::Sample;

/// One series: its labels and samples (seconds since the epoch, value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Labels (`__name__` included when the query kept it).
    pub labels: BTreeMap<String, String>,
    /// Samples in time order.
    pub samples: Vec<Sample>,
}

impl Series {
    /// The label's value, or "" when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Why an answer is not a usable result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponseError {
    /// `status: error`: Prometheus refused the query (`errorType` `bad_data` for a PromQL error).
    #[error("{error_type}: {message}")]
    Refused {
        /// `errorType`.
        error_type: String,
        /// `error`.
        message: String,
    },
    /// Not the API's shape; `at` is the JSON path.
    #[error("{at}: {message}")]
    Shape {
        /// Where.
        at: String,
        /// What was expected.
        message: String,
    },
}

/// The series of a `query` or `query_range` answer (scalar and string results are refused).
pub fn parse(body: &Value) -> Result<Vec<Series>, ResponseError> {
    let shape = |at: &str, message: &str| ResponseError::Shape {
        at: at.into(),
        message: message.into(),
    };
    match body.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(ResponseError::Refused {
                error_type: text(body.get("errorType")),
                message: text(body.get("error")),
            });
        }
        _ => return Err(shape("status", "expected \"success\" or \"error\"")),
    }
    let data = body.get("data").ok_or_else(|| shape("data", "missing"))?;
    let kind = data.get("resultType").and_then(Value::as_str);
    let result = data
        .get("result")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("data.result", "expected a list"))?;
    let key = match kind {
        Some("matrix") => "values",
        Some("vector") => "value",
        _ => {
            return Err(shape(
                "data.resultType",
                "expected \"matrix\" or \"vector\" (a range or instant vector query)",
            ));
        }
    };
    result
        .iter()
        .enumerate()
        .map(|(i, item)| series(item, key, &format!("data.result[{i}]")))
        .collect()
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or("").to_owned()
}

fn series(item: &Value, key: &str, at: &str) -> Result<Series, ResponseError> {
    let shape = |field: &str, message: &str| ResponseError::Shape {
        at: format!("{at}.{field}"),
        message: message.into(),
    };
    let labels = match item.get("metric") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
            .collect(),
        _ => return Err(shape("metric", "expected an object of labels")),
    };
    let points: Vec<&Value> = match (key, item.get(key)) {
        ("values", Some(Value::Array(points))) => points.iter().collect(),
        ("value", Some(point)) => vec![point],
        _ => return Err(shape(key, "missing")),
    };
    let mut samples = Vec::with_capacity(points.len());
    for (j, point) in points.into_iter().enumerate() {
        samples.push(sample(point).ok_or_else(|| {
            shape(
                &format!("{key}[{j}]"),
                "expected [<unix time>, \"<number>\"]",
            )
        })?);
    }
    Ok(Series { labels, samples })
}

fn sample(point: &Value) -> Option<Sample> {
    let pair = point.as_array().filter(|p| p.len() == 2)?;
    let at = pair[0].as_f64()?;
    let value = match &pair[1] {
        Value::String(s) => s.parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    Some(Sample {
        at: at.floor() as i64,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_becomes_series_with_labels_and_samples() {
        let body = serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"namespace": "shop", "pod": "web-1", "container": "app"},
             "values": [[1700000000, "0.25"], [1700000060.5, "NaN"]]}
        ]}});
        let series = parse(&body).expect("parsed");
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].label("pod"), "web-1");
        assert_eq!(series[0].samples[0].value, 0.25);
        assert_eq!(series[0].samples[1].at, 1_700_000_060);
        assert!(series[0].samples[1].value.is_nan());
    }

    #[test]
    fn a_vector_gives_one_sample_per_series() {
        let body = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"pod": "a"}, "value": [1700000000, "3"]}
        ]}});
        assert_eq!(parse(&body).expect("parsed")[0].samples.len(), 1);
    }

    #[test]
    fn an_error_answer_is_refused_with_prometheus_words() {
        let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"});
        let refused = parse(&body).expect_err("refused");
        assert_eq!(refused.to_string(), "bad_data: parse error at char 5");
    }

    #[test]
    fn a_broken_point_names_its_path() {
        let body = serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1700000000, "x"]]}
        ]}});
        let refused = parse(&body).expect_err("refused").to_string();
        assert!(
            refused.starts_with("data.result[0].values[0]:"),
            "{refused}"
        );
    }
}
