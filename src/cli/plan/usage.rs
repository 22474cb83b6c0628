//! `--usage FILE`: container usage for the right-sizing section, in one of two forms.
//!
//! - JSON: an object whose keys hold Prometheus HTTP API answers, verbatim (what `curl
//!   .../api/v1/query_range?query=...` prints): `cpu` and `memory` (required: the range queries of
//!   [`crate::prometheus::queries::cpu`] and [`crate::prometheus::queries::memory`]), and optionally
//!   `oomKilled`, `memoryLimits`, `podOwners`, `replicasetOwners`, `jobOwners`. Every series carries
//!   `namespace`, `pod` and `container` labels (the owner queries their own).
//! - CSV: a header naming `timestamp,namespace,pod,container,cpu,memory` (any order; `oom_killed`
//!   optional), then one row per sample: Unix seconds or RFC 3339, CPU as a quantity of cores (`0.25`,
//!   `250m`), memory as a quantity (`512Mi`, `536870912`), `oom_killed` 0 or 1. An empty cell is no sample.

use std::collections::BTreeMap;

use crate::engine::rightsizing::Sample;
use crate::k8s::{parse_cpu_millis, parse_memory_bytes};
use crate::prometheus::response::{self, Series};
use crate::prometheus::usage::{Observed, Owners};

/// What a usage file holds.
#[derive(Debug, Clone, Default)]
pub(super) struct UsageFile {
    /// The usage series.
    pub(super) observed: Observed,
    /// Owners, when the file has the owner queries.
    pub(super) owners: Option<Owners>,
}

/// Parse a usage file's text; errors name the key or line and the field.
pub(super) fn parse(text: &str) -> Result<UsageFile, String> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_csv(text)
    }
}

fn parse_json(text: &str) -> Result<UsageFile, String> {
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let answer = |key: &str, required: bool| -> Result<Vec<Series>, String> {
        match root.get(key) {
            Some(value) => response::parse(value).map_err(|e| format!("{key}.{e}")),
            None if required => Err(format!(
                "{key}: missing; expected the Prometheus answer to the {key} range query \
                 (keys: cpu, memory, and optionally oomKilled, memoryLimits, podOwners, replicasetOwners, jobOwners)"
            )),
            None => Ok(Vec::new()),
        }
    };
    let observed = Observed {
        cpu: answer("cpu", true)?,
        memory: answer("memory", true)?,
        oom_killed: answer("oomKilled", false)?,
        memory_limits: answer("memoryLimits", false)?,
    };
    let owners = match root.get("podOwners") {
        Some(_) => Some(Owners::from_series(
            &answer("podOwners", true)?,
            &answer("replicasetOwners", false)?,
            &answer("jobOwners", false)?,
        )),
        None => None,
    };
    Ok(UsageFile { observed, owners })
}

const COLUMNS: [&str; 6] = [
    "timestamp",
    "namespace",
    "pod",
    "container",
    "cpu",
    "memory",
];

fn parse_csv(text: &str) -> Result<UsageFile, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or("empty; expected a CSV header timestamp,namespace,pod,container,cpu,memory")?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| names.iter().position(|n| *n == name);
    let mut at = [0usize; 6];
    for (slot, name) in at.iter_mut().zip(COLUMNS) {
        *slot = column(name).ok_or_else(|| {
            format!(
                "line 1: no column {name:?}; the header must name {}",
                COLUMNS.join(",")
            )
        })?;
    }
    let oom = column("oom_killed");
    type Key = (String, String, String);
    let mut series: [BTreeMap<Key, Vec<Sample>>; 3] = Default::default();
    for (index, line) in lines {
        let number = index + 1;
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let cell = |i: usize| cells.get(i).copied().unwrap_or("");
        let bad = |name: &str, message: String| format!("line {number}: {name}: {message}");
        let time = timestamp(cell(at[0])).map_err(|m| bad("timestamp", m))?;
        let key = (
            cell(at[1]).to_owned(),
            cell(at[2]).to_owned(),
            cell(at[3]).to_owned(),
        );
        if key.0.is_empty() || key.1.is_empty() || key.2.is_empty() {
            return Err(format!(
                "line {number}: namespace, pod and container must not be empty"
            ));
        }
        let values = [
            (
                cell(at[4]),
                "cpu",
                parse_cpu_millis as fn(&str) -> Result<u64, String>,
                1000.0,
            ),
            (cell(at[5]), "memory", parse_memory_bytes, 1.0),
            (
                oom.map(cell).unwrap_or(""),
                "oom_killed",
                parse_memory_bytes,
                1.0,
            ),
        ];
        for (slot, (text, name, parse, per_unit)) in series.iter_mut().zip(values) {
            if text.is_empty() {
                continue;
            }
            let value = parse(text).map_err(|m| bad(name, m))? as f64 / per_unit;
            slot.entry(key.clone())
                .or_default()
                .push(Sample { at: time, value });
        }
    }
    let [cpu, memory, oom_killed] = series.map(|map| {
        map.into_iter()
            .map(|((namespace, pod, container), samples)| Series {
                labels: [
                    ("namespace", namespace),
                    ("pod", pod),
                    ("container", container),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                samples,
            })
            .collect()
    });
    Ok(UsageFile {
        observed: Observed {
            cpu,
            memory,
            oom_killed,
            memory_limits: Vec::new(),
        },
        owners: None,
    })
}

fn timestamp(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds.floor() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| {
            format!("{text:?} is neither Unix seconds nor RFC 3339 (2026-11-30T12:00:00Z)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_becomes_cpu_memory_and_oom_series() {
        let file = parse(
            "timestamp,namespace,pod,container,cpu,memory,oom_killed\n\
             1700000000,shop,web-1,app,250m,512Mi,0\n\
             2023-11-14T22:14:20Z,shop,web-1,app,0.5,,1\n",
        )
        .expect("parsed");
        let cpu = &file.observed.cpu[0];
        assert_eq!(cpu.label("pod"), "web-1");
        let values: Vec<f64> = cpu.samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [0.25, 0.5]);
        assert_eq!(cpu.samples[1].at, 1_700_000_060);
        assert_eq!(
            file.observed.memory[0].samples.len(),
            1,
            "empty cell: no sample"
        );
        assert_eq!(file.observed.oom_killed[0].samples[1].value, 1.0);
    }

    #[test]
    fn csv_errors_name_the_line_and_the_column() {
        let missing = parse("time,namespace,pod,container,cpu,memory\n").expect_err("refused");
        assert!(missing.contains("no column \"timestamp\""), "{missing}");
        let bad = parse("timestamp,namespace,pod,container,cpu,memory\n1,a,b,c,lots,1Mi\n")
            .expect_err("refused");
        assert!(bad.starts_with("line 2: cpu:"), "{bad}");
    }

    #[test]
    fn a_json_export_needs_cpu_and_memory_answers() {
        let answer = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"namespace":"shop","pod":"web-1","container":"app"},"values":[[1700000000,"0.1"]]}]}}"#;
        let file = parse(&format!(r#"{{"cpu": {answer}, "memory": {answer}}}"#)).expect("parsed");
        assert_eq!(file.observed.memory.len(), 1);
        assert!(file.owners.is_none());
        let missing = parse(&format!(r#"{{"cpu": {answer}}}"#)).expect_err("refused");
        assert!(missing.starts_with("memory: missing"), "{missing}");
    }
}
