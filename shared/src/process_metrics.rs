//! The process' own CPU, memory, file descriptors and threads as Prometheus metrics, under the
//! names every Prometheus client library exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), which seed 003's `HighMemoryUsage` alert and
//! common dashboards query. Read from `/proc/self` when scraped, so they cost nothing between
//! scrapes; on a system without `/proc` they are simply absent.
//!
//! Why not the `prometheus` crate's own `process` feature: it reads `/proc` through the
//! `procfs` crate, a dependency tree this workspace does not otherwise build, for the seven
//! numbers below; `libc` (already built for tokio) answers the two `sysconf` questions
//! (clock ticks per second, page size).

use prometheus::core::{Collector, Desc};
use prometheus::{proto, Counter, Gauge, IntGauge, Opts, Registry};

/// The process' figures, as `/proc/self` reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub threads: i64,
    /// Unix time the process started.
    pub start_time_seconds: f64,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where there is no `/proc` (or it cannot be parsed).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text))
            .unwrap_or(0.0);
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut stats = parse_stat(&stat, ticks.max(1) as f64, page.max(1), boot_time)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as i64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        Some(stats)
    }
}

/// `/proc/<pid>/stat`: the fields after the command name (which may hold spaces and
/// parentheses, so the split is at the last `)`), see proc(5).
fn parse_stat(
    stat: &str,
    ticks_per_second: f64,
    page_size: i64,
    boot_time: f64,
) -> Option<ProcessStats> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        threads: field(20)?,
        start_time_seconds: boot_time + field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
        open_fds: None,
        max_fds: None,
    })
}

/// `btime` of `/proc/stat`: when the system booted, in Unix seconds.
fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_fds(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// The collector: registers the `process_*` metrics and refreshes them at each scrape.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let opts = |name: &str, help: &str| Opts::new(name, help);
        let cpu = Counter::with_opts(opts(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("valid metric");
        let gauge =
            |name: &str, help: &str| IntGauge::with_opts(opts(name, help)).expect("valid metric");
        let collector = ProcessCollector {
            descs: Vec::new(),
            cpu,
            resident: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            threads: gauge("process_threads", "Number of OS threads in the process."),
            start_time: Gauge::with_opts(opts(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ))
            .expect("valid metric"),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
        };
        let descs = collector
            .metrics()
            .iter()
            .flat_map(|metric| metric.desc().into_iter().cloned())
            .collect();
        ProcessCollector { descs, ..collector }
    }

    fn metrics(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.resident,
            &self.virtual_memory,
            &self.threads,
            &self.start_time,
            &self.open_fds,
            &self.max_fds,
        ]
    }

    fn update(&self, stats: &ProcessStats) {
        let more_cpu = stats.cpu_seconds - self.cpu.get();
        if more_cpu > 0.0 {
            self.cpu.inc_by(more_cpu);
        }
        self.resident.set(stats.resident_bytes);
        self.virtual_memory.set(stats.virtual_bytes);
        self.threads.set(stats.threads);
        self.start_time.set(stats.start_time_seconds);
        self.open_fds.set(stats.open_fds.unwrap_or(0));
        self.max_fds.set(stats.max_fds.unwrap_or(0));
    }
}

impl Default for ProcessCollector {
    fn default() -> ProcessCollector {
        ProcessCollector::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let Some(stats) = ProcessStats::read() else {
            return Vec::new();
        };
        self.update(&stats);
        let mut families: Vec<proto::MetricFamily> =
            self.metrics().iter().flat_map(|m| m.collect()).collect();
        if stats.open_fds.is_none() || stats.max_fds.is_none() {
            families.retain(|family| {
                (family.name() != "process_open_fds" || stats.open_fds.is_some())
                    && (family.name() != "process_max_fds" || stats.max_fds.is_some())
            });
        }
        families
    }
}

/// Registers the `process_*` metrics in `registry`.
pub fn register(registry: &Registry) {
    registry
        .register(Box::new(ProcessCollector::new()))
        .expect("the process metrics are registered once per registry");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    9 0 1000 123456789 300 18446744073709551615";
        let stats = parse_stat(stat, 100.0, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.threads, 9);
        assert_eq!(stats.start_time_seconds, 1_700_000_010.0);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.resident_bytes, 300 * 4096);
    }

    #[test]
    fn reads_boot_time_and_the_soft_fd_limit() {
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1796548694\n"),
            Some(1_796_548_694.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(parse_max_fds(limits), Some(20000));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn this_process_reports_memory_cpu_and_descriptors() {
        let registry = Registry::new();
        register(&registry);
        let text = crate::metrics::encode(&registry);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_threads",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        let stats = ProcessStats::read().expect("tests run on Linux");
        assert!(stats.resident_bytes > 0 && stats.threads >= 1, "{stats:?}");
    }
}
