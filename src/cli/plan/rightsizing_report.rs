//! The right-sizing section of the plan, as a table and as JSON.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::engine::rightsizing::{Confidence, MIB, Recommendation, Requests, Settings, apply};
use crate::engine::savings::HOURS_PER_MONTH;

use super::RightsizingSection;
use super::report::dollars;

/// Recommendations listed in the table before "-o json for all".
const TABLE_ROWS: usize = 30;

/// `250m`, `2`, or `-` when not set (the quantity text Apply writes).
fn cpu_text(millis: Option<u64>) -> String {
    millis.map_or_else(|| "-".to_owned(), apply::cpu_text)
}

/// Whole GiB as `2Gi` (easier to read in a table), the rest as Apply writes it (`360Mi`), `-` when
/// not set.
fn memory_text(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b > 0 && b.is_multiple_of(1024 * MIB) => {
            format!("{}Gi", b / MIB / 1024)
        }
        Some(b) => apply::memory_text(b),
        None => "-".to_owned(),
    }
}

fn change(now: String, new: String) -> String {
    format!("{now} -> {new}")
}

fn settings_text(s: &Settings) -> String {
    format!(
        "CPU p{}, memory p{}, buffer {:.0}%, floors {} / {}, OOM bump x{}",
        s.cpu_percentile,
        s.memory_percentile,
        s.buffer * 100.0,
        cpu_text(Some(s.min_cpu_millis)),
        memory_text(Some(s.min_memory_bytes)),
        s.oom_factor
    )
}

/// The table section.
pub(super) fn write_table(
    r: &RightsizingSection,
    settings: &Settings,
    optimized_hourly: f64,
    removed: usize,
    out: &mut impl Write,
) -> io::Result<()> {
    let found = &r.found;
    writeln!(out)?;
    writeln!(
        out,
        "RIGHT-SIZING from {} ({})",
        r.source,
        settings_text(settings)
    )?;
    writeln!(
        out,
        "  {:<40} {:<12} {:>4}  {:<18} {:<20} {:<10} {:>10}",
        "WORKLOAD", "CONTAINER", "PODS", "CPU", "MEMORY", "CONFIDENCE", "$/MONTH"
    )?;
    for rec in found.recommendations.iter().take(TABLE_ROWS) {
        let target = rec.target();
        let note = if rec.oom_bumped {
            "  OOMKilled: bumped"
        } else {
            ""
        };
        writeln!(
            out,
            "  {:<40} {:<12} {:>4}  {:<18} {:<20} {:<10} {:>10}{note}",
            rec.workload.to_string(),
            rec.container,
            rec.replicas,
            change(
                cpu_text(rec.current.cpu_millis),
                cpu_text(target.cpu_millis)
            ),
            change(
                memory_text(rec.current.memory_bytes),
                memory_text(target.memory_bytes)
            ),
            rec.confidence.as_str(),
            dollars(rec.monthly_savings, 2)
        )?;
    }
    if found.recommendations.len() > TABLE_ROWS {
        writeln!(
            out,
            "  ... {} more (-o json for all)",
            found.recommendations.len() - TABLE_ROWS
        )?;
    }
    let too_new = found
        .recommendations
        .iter()
        .filter(|r| r.confidence == Confidence::None)
        .count();
    if too_new + found.gone + found.unresolved > 0 {
        writeln!(
            out,
            "  not sized: {too_new} with under 24 h of data, {} not running now, {} pods without a workload",
            found.gone, found.unresolved
        )?;
    }
    match &found.prices {
        Some(p) => writeln!(
            out,
            "  requests freed: {}/month at {}/vCPU-hour and {}/GiB-hour (the nodes' prices split per vCPU and GiB)",
            dollars(found.monthly_savings(), 2),
            dollars(p.per_vcpu_hour, 4),
            dollars(p.per_gib_hour, 4)
        )?,
        None => writeln!(out, "  requests freed: not priced (no node has a price)")?,
    }
    writeln!(
        out,
        "  consolidation after right-sizing: remove {} nodes (instead of {removed}), optimised {}/h (instead of {}/h): a further {}/month",
        r.plan.removals.len(),
        dollars(r.cost.optimized_hourly, 4),
        dollars(optimized_hourly, 4),
        dollars(
            (optimized_hourly - r.cost.optimized_hourly) * HOURS_PER_MONTH,
            2
        )
    )
}

fn requests_json(r: &Requests) -> Value {
    json!({"cpuMillis": r.cpu_millis, "memoryBytes": r.memory_bytes})
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn recommendation_json(rec: &Recommendation) -> Value {
    json!({
        "namespace": rec.workload.namespace,
        "kind": rec.workload.kind.as_str(),
        "name": rec.workload.name,
        "container": rec.container,
        "replicas": rec.replicas,
        "current": requests_json(&rec.current),
        "recommended": requests_json(&rec.target()),
        "confidence": rec.confidence.as_str(),
        "dataHours": round(rec.span_seconds as f64 / 3600.0, 1),
        "oomBumped": rec.oom_bumped,
        "savingsMonthly": round(rec.monthly_savings, 2),
    })
}

/// The JSON section.
pub(super) fn json(r: &RightsizingSection, optimized_hourly: f64) -> Value {
    let found = &r.found;
    json!({
        "usage": r.source,
        "recommendations": found.recommendations.iter().map(recommendation_json).collect::<Vec<_>>(),
        "requestsSavingsMonthly": round(found.monthly_savings(), 2),
        "perVcpuHour": found.prices.map(|p| round(p.per_vcpu_hour, 6)),
        "perGibHour": found.prices.map(|p| round(p.per_gib_hour, 6)),
        "notRunning": found.gone,
        "podsWithoutWorkload": found.unresolved,
        "consolidationAfter": {
            "removeNodes": r.plan.removals.len(),
            "optimizedHourly": round(r.cost.optimized_hourly, 4),
            "furtherSavingsHourly": round(optimized_hourly - r.cost.optimized_hourly, 4),
            "furtherSavingsMonthly": round((optimized_hourly - r.cost.optimized_hourly) * HOURS_PER_MONTH, 2),
        },
    })
}
