//! What the gateway scenarios measure with: a lock-free latency histogram that thousands of
//! receiving tasks record into, a shared clock in microseconds, and the CPU time and memory of
//! processes read from /proc (to report how the machine's cores were split).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Microseconds since the Unix epoch: Postgres' clock too (one machine), for times stored in
/// rows or sent in frames.
pub fn wall_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_micros() as u64)
}

/// A latency for the tables; the histograms put everything from 10 s up in their last bucket.
pub fn ms(value: f64) -> String {
    if value >= 10_000.0 {
        "≥ 10 s".into()
    } else {
        format!("{value:.1} ms")
    }
}

/// Microseconds since the first call, the same clock for every task of the process.
pub fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Bucket width: 50 µs; the last bucket holds everything from 10 s up.
const BUCKET_MICROS: u64 = 50;
const BUCKETS: usize = 200_000;

/// Latencies in 50 µs buckets.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record(&self, micros: u64) {
        let bucket = ((micros / BUCKET_MICROS) as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency below which `q` (0..1) of the samples fall, in milliseconds (bucket upper
    /// bound).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_MICROS) as f64 / 1000.0;
            }
        }
        f64::INFINITY
    }
}

/// How many copies of each message each of its subscribers got, to check delivery is exactly
/// once: one counter per (message, subscriber) pair, indexed as the scenario lays them out.
pub struct Copies(Vec<AtomicU8>);

impl Copies {
    pub fn new(pairs: usize) -> Copies {
        Copies((0..pairs).map(|_| AtomicU8::new(0)).collect())
    }

    /// One more copy for pair `at`.
    pub fn add(&self, at: usize) {
        self.0[at].fetch_add(1, Ordering::Relaxed);
    }

    /// (pairs with no copy, extra copies).
    pub fn missing_and_duplicates(&self) -> (u64, u64) {
        self.0.iter().fold((0, 0), |(missing, extra), c| {
            match c.load(Ordering::Relaxed) {
                0 => (missing + 1, extra),
                n => (missing, extra + n as u64 - 1),
            }
        })
    }
}

/// When a run of rising rates stops: after two unsustained rates in a row, unless every rate
/// is asked for.
pub struct RisingRates {
    all: bool,
    misses: u32,
}

impl RisingRates {
    pub fn new(all: bool) -> RisingRates {
        RisingRates { all, misses: 0 }
    }

    /// Notes whether the rate just measured was sustained; false when the run should stop.
    pub fn go_on(&mut self, sustained: bool) -> bool {
        self.misses = if sustained { 0 } else { self.misses + 1 };
        if self.misses >= 2 && !self.all {
            println!("  two unsustained rates in a row: stopping (--all-rates runs them all)");
            return false;
        }
        true
    }
}

/// Clock ticks per second of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU seconds (user + system) a process has used so far; 0 when it is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / ticks_per_second()
}

/// CPU seconds the whole machine has been busy (everything but idle and iowait).
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / ticks_per_second()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU use of groups of processes over a window, as shares of one core; this process is added
/// as "load generator", the rest of the machine's busy time as "other".
pub struct CpuSplit {
    wall: Instant,
    machine: f64,
    /// (label, [(pid, CPU seconds at the start)]).
    groups: Vec<(String, Vec<(u32, f64)>)>,
}

impl CpuSplit {
    /// Starts a window over `groups` of processes (label, pids).
    pub fn start(groups: impl IntoIterator<Item = (String, Vec<u32>)>) -> CpuSplit {
        let with_start = |pids: Vec<u32>| -> Vec<(u32, f64)> {
            pids.into_iter()
                .map(|pid| (pid, process_cpu_seconds(pid)))
                .collect()
        };
        let me = ("load generator".to_string(), vec![std::process::id()]);
        CpuSplit {
            wall: Instant::now(),
            machine: machine_busy_seconds(),
            groups: (groups.into_iter().chain([me]))
                .map(|(label, pids)| (label, with_start(pids)))
                .collect(),
        }
    }

    /// Starts a window over single processes (label, pid).
    pub fn of_processes(processes: impl IntoIterator<Item = (String, u32)>) -> CpuSplit {
        CpuSplit::start(processes.into_iter().map(|(label, pid)| (label, vec![pid])))
    }

    /// `gateway 0 40 %, gateway 1 41 %, CDC 9 %, ..., load generator 30 %, other 5 %,
    /// machine 164 % of 200 %`.
    pub fn report(&self) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let machine = machine_busy_seconds() - self.machine;
        let mut named = 0.0;
        let mut parts: Vec<String> = (self.groups.iter())
            .map(|(label, pids)| {
                // A process that exited meanwhile (a Postgres backend) counts as "other".
                let used: f64 = (pids.iter())
                    .map(|&(pid, start)| (process_cpu_seconds(pid) - start).max(0.0))
                    .sum();
                named += used;
                format!("{label} {:.0} %", 100.0 * used / wall)
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        parts.push(format!(
            "other {:.0} %",
            100.0 * (machine - named).max(0.0) / wall
        ));
        parts.push(format!(
            "machine {:.0} % of {} %",
            100.0 * machine / wall,
            cores * 100
        ));
        parts.join(", ")
    }
}
