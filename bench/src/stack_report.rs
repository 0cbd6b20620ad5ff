//! What the running stack tells about itself, for the scenarios' reports: its processes by
//! role (for a [`crate::measure::CpuSplit`] that names the gateways, the CDC, NATS and
//! Postgres), the gateways' relay latency and the CDC's published events from their
//! `/metrics`, and the tails of its logs (to tell why a run failed).

use crate::stack::gateway_pids;
use realtime_tests::{http_get, Stack};

/// The gateways' histogram of commit timestamp → fan-out start on that gateway.
const RELAY_METRIC: &str = "realtime_message_latency_seconds";

/// The gateways' `realtime_message_latency_seconds` histograms summed: cumulative counts per
/// bucket upper bound (seconds), and the sum of the observations (seconds).
#[derive(Default)]
pub struct RelayLatency {
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

pub async fn relay_latency(stack: &Stack) -> RelayLatency {
    let mut total = RelayLatency::default();
    for gateway in &stack.gateways {
        let Some((_, body)) = http_get(gateway.port, "/metrics").await else {
            continue;
        };
        let mut bucket = 0;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(RELAY_METRIC) else {
                continue;
            };
            let value = |text: &str| text.trim().parse::<f64>().unwrap_or(0.0);
            if let Some((le, count)) = rest
                .strip_prefix("_bucket{le=\"")
                .and_then(|rest| rest.split_once("\"}"))
            {
                let le = le.parse().unwrap_or(f64::INFINITY);
                if total.buckets.len() <= bucket {
                    total.buckets.push((le, 0.0));
                }
                total.buckets[bucket].1 += value(count);
                bucket += 1;
            } else if let Some(sum) = rest.strip_prefix("_sum ") {
                total.sum += value(sum);
            }
        }
    }
    total
}

impl RelayLatency {
    /// The observations since `before`.
    pub fn since(&self, before: &RelayLatency) -> RelayLatency {
        let earlier = |i: usize| before.buckets.get(i).map_or(0.0, |b| b.1);
        RelayLatency {
            buckets: (self.buckets.iter().enumerate())
                .map(|(i, &(le, count))| (le, count - earlier(i)))
                .collect(),
            sum: self.sum - before.sum,
        }
    }

    /// `mean 3.1 ms, p50 ≤ 5 ms, p99 ≤ 50 ms (n = 2,000)`.
    pub fn describe(&self) -> String {
        let count = self.buckets.last().map_or(0.0, |b| b.1);
        if count == 0.0 {
            return "no observations".into();
        }
        let bound = |q: f64| match self.buckets.iter().find(|b| b.1 >= q * count) {
            Some(&(le, _)) if le.is_finite() => format!("≤ {} ms", le * 1000.0),
            _ => {
                let top = self.buckets.iter().rev().find(|b| b.0.is_finite());
                format!("> {} ms", top.map_or(0.0, |b| b.0 * 1000.0))
            }
        };
        format!(
            "mean {:.1} ms, p50 {}, p99 {} (n = {count})",
            self.sum / count * 1000.0,
            bound(0.5),
            bound(0.99)
        )
    }
}

/// The CDC's `realtime_cdc_events_published_total`.
pub async fn cdc_events(stack: &Stack) -> f64 {
    let Some((_, body)) = http_get(stack.cdc.http_port, "/metrics").await else {
        return f64::NAN;
    };
    body.lines()
        .find_map(|line| line.strip_prefix("realtime_cdc_events_published_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// (pid, parent pid, command line) of every process.
fn processes() -> Vec<(u32, u32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .map(str::to_string)
                .collect();
            Some((pid, parent, argv))
        })
        .collect()
}

/// The stack's processes by role: each gateway; the CDC and nats-server (children of this
/// process); Postgres (its postmaster, from `postmaster.pid`, and the postmaster's children).
pub async fn process_groups(stack: &Stack) -> Vec<(String, Vec<u32>)> {
    let mut groups: Vec<(String, Vec<u32>)> = gateway_pids(stack)
        .into_iter()
        .map(|(label, pid)| (label, vec![pid]))
        .collect();
    let all = processes();
    let me = std::process::id();
    let children = |matches: &dyn Fn(&[String]) -> bool| -> Vec<u32> {
        (all.iter())
            .filter(|(_, parent, argv)| *parent == me && matches(argv))
            .map(|(pid, _, _)| *pid)
            .collect()
    };
    groups.push((
        "CDC".into(),
        children(&|argv| {
            argv[0].ends_with("nself-realtime") && argv.get(1).is_some_and(|a| a == "cdc")
        }),
    ));
    groups.push((
        "NATS".into(),
        children(&|argv| argv[0].ends_with("nats-server")),
    ));
    let data_directory: Option<String> = match stack
        .db
        .connect()
        .await
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
            &[],
        )
        .await
    {
        Ok(row) => Some(row.get(0)),
        Err(_) => None,
    };
    let postmaster: Option<u32> = data_directory
        .and_then(|dir| std::fs::read_to_string(format!("{dir}/postmaster.pid")).ok())
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    if let Some(postmaster) = postmaster {
        let mut pids = vec![postmaster];
        pids.extend(
            (all.iter())
                .filter(|(_, parent, _)| *parent == postmaster)
                .map(|(pid, _, _)| *pid),
        );
        groups.push(("Postgres".into(), pids));
    }
    groups.retain(|(_, pids)| !pids.is_empty());
    groups
}

/// The last lines of each gateway's and the CDC's log, to tell why something failed.
pub fn print_logs(stack: &Stack) {
    let logs = (stack.gateways.iter().enumerate())
        .map(|(i, g)| (format!("gateway {i}"), g.log()))
        .chain([("CDC".to_string(), stack.cdc.log())]);
    for (label, log) in logs {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        for line in tail.into_iter().rev() {
            println!("  {label} log: {line}");
        }
    }
}
