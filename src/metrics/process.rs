//! The standard `process_*` metrics (what client_golang's process collector exports), read from
//! `/proc/self` at each scrape: CPU time, resident and virtual memory, open and maximum file
//! descriptors, start time. On a system without `/proc` they are simply absent.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge};

/// Collects `process_*` from `/proc/self` when scraped.
pub struct ProcessCollector {
    cpu: Counter,
    /// CPU seconds already added to `cpu` (a counter only goes up by deltas).
    cpu_seen: Mutex<f64>,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

impl ProcessCollector {
    /// The collector; `start_time` is this process's start, Unix seconds.
    pub fn new(start_time: f64) -> Result<ProcessCollector, prometheus::Error> {
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )?;
        let resident = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_memory = IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = IntGauge::new("process_open_fds", "Number of open file descriptors.")?;
        let max_fds = IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )?;
        let start = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        start.set(start_time);
        let mut descs = Vec::new();
        for c in [
            cpu.desc(),
            resident.desc(),
            virtual_memory.desc(),
            open_fds.desc(),
            max_fds.desc(),
            start.desc(),
        ] {
            descs.extend(c.into_iter().cloned());
        }
        Ok(ProcessCollector {
            cpu,
            cpu_seen: Mutex::new(0.0),
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time: start,
            descs,
        })
    }

    fn refresh(&self) -> Option<()> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = clock_ticks();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let cpu = (field(14)? + field(15)?) / ticks;
        if let Ok(mut seen) = self.cpu_seen.lock()
            && cpu > *seen
        {
            self.cpu.inc_by(cpu - *seen);
            *seen = cpu;
        }
        self.virtual_memory.set(field(23)? as i64);
        self.resident.set(field(24)? as i64 * page_size());
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
        {
            self.max_fds.set(max);
        }
        Some(())
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> i64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as i64 } else { 4096 }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if self.refresh().is_none() {
            return Vec::new();
        }
        let mut families = Vec::new();
        families.extend(self.cpu.collect());
        families.extend(self.resident.collect());
        families.extend(self.virtual_memory.collect());
        families.extend(self.open_fds.collect());
        families.extend(self.max_fds.collect());
        families.extend(self.start_time.collect());
        families
    }
}
