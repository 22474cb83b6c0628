//! Right-sizing (issue #17, DESIGN.md section 4): container requests from observed usage.
//!
//! Per container of a workload, over the usage window:
//! - CPU request = the `cpu_percentile` of the CPU usage samples (cores) x (1 + buffer), at least the
//!   CPU floor; memory request = the `memory_percentile` of the working-set samples x (1 + buffer), at
//!   least the memory floor. Percentiles are nearest-rank over the samples of every pod of the workload
//!   together; CPU is rounded up to a millicore, memory up to a MiB.
//! - After an OOMKill the memory request is never below the memory used at the kill x `oom_factor`
//!   (and never below that usage + `oom_minimum`): the bump applies at once, even when the window holds
//!   too little data for anything else.
//! - Confidence comes from the span of the samples: under 24 h there is no recommendation (except the
//!   OOM bump), under 3 days it is low, under 7 days medium, from 7 days on high.
//! - The monthly savings price the freed requests (current minus recommended, times the replicas) at the
//!   cluster's per-vCPU and per-GiB hourly cost ([`prices::UnitPrices`]); a request that grows costs
//!   money, so savings can be negative.
//!
//! The function is pure and deterministic: the same samples in any order give the same recommendation.

pub mod apply;
pub mod owners;
pub mod prices;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::engine::savings::HOURS_PER_MONTH;
pub use owners::{OwnerError, OwnerRef, Workload, WorkloadKind, resolve_owner};
pub use prices::UnitPrices;

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
/// Bytes in a GiB.
pub const GIB: u64 = 1 << 30;
/// Below this span of samples there is no recommendation.
pub const MIN_SPAN_SECONDS: i64 = 24 * 3600;

/// How a recommendation is computed; [`Settings::default`] holds the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// CPU usage percentile, 50-100.
    pub cpu_percentile: f64,
    /// Memory usage percentile, 50-100.
    pub memory_percentile: f64,
    /// Head-room on top of the percentile: 0.2 for 20%.
    pub buffer: f64,
    /// Smallest CPU request recommended, millicores.
    pub min_cpu_millis: u64,
    /// Smallest memory request recommended, bytes.
    pub min_memory_bytes: u64,
    /// After an OOMKill, memory is at least the usage at the kill times this.
    pub oom_factor: f64,
    /// After an OOMKill, memory is at least the usage at the kill plus this many bytes.
    pub oom_minimum_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cpu_percentile: 95.0,
            memory_percentile: 99.0,
            buffer: 0.2,
            min_cpu_millis: 10,
            min_memory_bytes: 32 * MIB,
            oom_factor: 1.2,
            oom_minimum_bytes: 100 * MIB,
        }
    }
}

/// Why settings cannot be used; each names the field and the accepted range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A percentile outside 50-100.
    #[error("{field}: {value} is not a percentile between 50 and 100")]
    Percentile {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A buffer below 0% or above 1000%.
    #[error("safetyBuffer: {0} is outside 0% to 1000%; use e.g. 20%")]
    Buffer(f64),
    /// An OOM factor below 1 or above 4.
    #[error("oomBump.factor: {0} is outside 1.0 to 4.0; use e.g. 1.2")]
    OomFactor(f64),
}

impl Settings {
    /// The settings if every field is in range.
    pub fn checked(self) -> Result<Settings, SettingsError> {
        for (field, value) in [
            ("cpuPercentile", self.cpu_percentile),
            ("memoryPercentile", self.memory_percentile),
        ] {
            if !(50.0..=100.0).contains(&value) {
                return Err(SettingsError::Percentile { field, value });
            }
        }
        if !(0.0..=10.0).contains(&self.buffer) {
            return Err(SettingsError::Buffer(self.buffer));
        }
        if !(1.0..=4.0).contains(&self.oom_factor) {
            return Err(SettingsError::OomFactor(self.oom_factor));
        }
        Ok(self)
    }
}

/// One usage sample: seconds since the epoch, value (cores for CPU, bytes for memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time, seconds.
    pub at: i64,
    /// Cores or bytes.
    pub value: f64,
}

/// An OOMKill of the container: when, and the memory it used then (its limit or last working set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OomKill {
    /// Unix time, seconds.
    pub at: i64,
    /// Bytes in use when it was killed.
    pub memory_bytes: u64,
}

/// CPU and memory of a container, as requests or a recommendation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requests {
    /// Millicores (`None`: not set).
    pub cpu_millis: Option<u64>,
    /// Bytes (`None`: not set).
    pub memory_bytes: Option<u64>,
}

/// What was observed of one container of one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// The workload.
    pub workload: Workload,
    /// The container's name.
    pub container: String,
    /// Replicas the requests are paid for (pods of the workload now; at least 1 is assumed).
    pub replicas: u32,
    /// Its requests now.
    pub current: Requests,
    /// CPU usage samples, cores.
    pub cpu: Vec<Sample>,
    /// Memory working-set samples, bytes.
    pub memory: Vec<Sample>,
    /// OOMKills in the window.
    pub oom_kills: Vec<OomKill>,
}

/// How far a recommendation can be trusted, from the span of its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// Under 24 hours of data: nothing recommended (except the OOM bump).
    None,
    /// 1 to 3 days.
    Low,
    /// 3 to 7 days.
    Medium,
    /// 7 days or more.
    High,
}

impl Confidence {
    /// The level for `span_seconds` of data.
    pub fn from_span(span_seconds: i64) -> Confidence {
        const DAY: i64 = 24 * 3600;
        match span_seconds {
            s if s < MIN_SPAN_SECONDS => Confidence::None,
            s if s < 3 * DAY => Confidence::Low,
            s if s < 7 * DAY => Confidence::Medium,
            _ => Confidence::High,
        }
    }

    /// `None`, `Low`, `Medium` or `High`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::None => "None",
            Confidence::Low => "Low",
            Confidence::Medium => "Medium",
            Confidence::High => "High",
        }
    }
}

/// The recommendation for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The workload.
    pub workload: Workload,
    /// The container.
    pub container: String,
    /// Replicas counted in the savings.
    pub replicas: u32,
    /// Requests now.
    pub current: Requests,
    /// Requests recommended; `None` in a field means leave it as it is (too little data).
    pub recommended: Requests,
    /// From the span of the data.
    pub confidence: Confidence,
    /// Seconds between the first and the last sample.
    pub span_seconds: i64,
    /// The memory recommendation was raised to the OOM bump.
    pub oom_bumped: bool,
    /// Dollars a month freed (negative when requests grow); 0 without prices.
    pub monthly_savings: f64,
}

/// The recommendation for `usage` under `settings`, priced at `prices` when known.
pub fn recommend(
    usage: &ContainerUsage,
    settings: &Settings,
    prices: Option<&UnitPrices>,
) -> Recommendation {
    let span_seconds = span(&usage.cpu, &usage.memory);
    let confidence = Confidence::from_span(span_seconds);
    let buffered = |value: f64| value * (1.0 + settings.buffer);
    let trusted = confidence != Confidence::None;
    let cpu_millis = percentile(&usage.cpu, settings.cpu_percentile)
        .filter(|_| trusted)
        .map(|cores| ceil_u64(buffered(cores) * 1000.0).max(settings.min_cpu_millis));
    let from_usage = percentile(&usage.memory, settings.memory_percentile)
        .filter(|_| trusted)
        .map(|bytes| round_up_mib(ceil_u64(buffered(bytes))).max(settings.min_memory_bytes));
    let bump = oom_bump(&usage.oom_kills, settings);
    let memory_bytes = match (from_usage, bump) {
        (Some(m), Some(b)) => Some(m.max(b)),
        (None, Some(b)) => Some(b.max(usage.current.memory_bytes.unwrap_or(0))),
        (m, None) => m,
    };
    let oom_bumped = bump.is_some_and(|b| Some(b) == memory_bytes && from_usage < Some(b));
    let recommended = Requests {
        cpu_millis,
        memory_bytes,
    };
    let replicas = usage.replicas.max(1);
    let monthly_savings = prices
        .map(|p| p.monthly(&usage.current, &recommended, replicas))
        .unwrap_or(0.0);
    Recommendation {
        workload: usage.workload.clone(),
        container: usage.container.clone(),
        replicas,
        current: usage.current,
        recommended,
        confidence,
        span_seconds,
        oom_bumped,
        monthly_savings,
    }
}

/// Every container's recommendation, the largest monthly savings first (then by workload and
/// container, so the order is stable).
pub fn recommend_all(
    usages: &[ContainerUsage],
    settings: &Settings,
    prices: Option<&UnitPrices>,
) -> Vec<Recommendation> {
    let mut all: Vec<Recommendation> = usages
        .iter()
        .map(|u| recommend(u, settings, prices))
        .collect();
    all.sort_by(|a, b| {
        b.monthly_savings
            .total_cmp(&a.monthly_savings)
            .then_with(|| a.workload.cmp(&b.workload))
            .then_with(|| a.container.cmp(&b.container))
    });
    all
}

impl Recommendation {
    /// The requests to set: the recommendation where there is one, the current value otherwise.
    pub fn target(&self) -> Requests {
        Requests {
            cpu_millis: self.recommended.cpu_millis.or(self.current.cpu_millis),
            memory_bytes: self.recommended.memory_bytes.or(self.current.memory_bytes),
        }
    }
}

/// Nearest-rank `p`-th percentile of the finite, non-negative values (`None` for no such value).
pub fn percentile(samples: &[Sample], p: f64) -> Option<f64> {
    let mut values: Vec<f64> = samples
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0 * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

/// Seconds between the earliest and the latest sample of either series.
fn span(cpu: &[Sample], memory: &[Sample]) -> i64 {
    let times = cpu.iter().chain(memory).map(|s| s.at);
    match (times.clone().min(), times.max()) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    }
}

/// The memory floor after the OOMKills: the largest usage at a kill x factor, and + minimum.
fn oom_bump(kills: &[OomKill], settings: &Settings) -> Option<u64> {
    kills
        .iter()
        .map(|k| {
            let scaled = ceil_u64(k.memory_bytes as f64 * settings.oom_factor);
            let added = k.memory_bytes.saturating_add(settings.oom_minimum_bytes);
            round_up_mib(scaled.max(added)).max(settings.min_memory_bytes)
        })
        .max()
}

fn ceil_u64(value: f64) -> u64 {
    // Rounded to a millionth first, so 0.1 x 1.2 x 1000 (120.00000000000001) is 120, not 121. `as`
    // saturates: NaN gives 0, values above u64::MAX give u64::MAX.
    ((value * 1e6).round() / 1e6).ceil() as u64
}

fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).saturating_mul(MIB)
}
