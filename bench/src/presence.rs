//! `realtime-bench presence`: how soon a member who tracks on one gateway appears on the other.
//!
//! Two gateways, one observer socket on each, `--members` member sockets alternating between
//! the gateways, all joined to one presence channel. The members then track at `--rate` per
//! second; for each track the latency is from sending it to the `presence_diff` announcing the
//! member on the observer of the *other* gateway (through NATS KV).

use crate::load_client::{raise_open_files_limit, LoadSocket};
use crate::measure::{now_micros, CpuSplit, Histogram};
use crate::stack::{gateway_pids, open_joined, start_stack};
use realtime_tests::token;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Members joining.
    #[arg(long, default_value_t = 1_000)]
    members: usize,
    /// Tracks per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

const TOPIC: &str = "realtime:presence-bench";

fn presence_join(key: &str) -> Value {
    json!({"config": {"presence": {"enabled": true, "key": key}}})
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    raise_open_files_limit(4 * args.members as u64 + 10_000)?;
    let stack = start_stack(2).await;
    let ports = [stack.gateways[0].port, stack.gateways[1].port];
    let apikey = token(json!({"role": "anon"}));
    println!(
        "presence: {} members over 2 gateways, tracking at {}/s",
        args.members, args.rate
    );

    // When each member's track was sent (0: not yet).
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.members).map(|_| AtomicU64::new(0)).collect());
    let histogram = Arc::new(Histogram::new());
    let seen = Arc::new(AtomicU64::new(0));
    for (gateway, port) in ports.iter().enumerate() {
        let mut observer = LoadSocket::connect(*port, &apikey).await?;
        observer
            .join(TOPIC, presence_join(&format!("observer-{gateway}")))
            .await?;
        let (sent, histogram, seen) = (sent.clone(), histogram.clone(), seen.clone());
        tokio::spawn(observer.read_texts(move |text| {
            if !text.contains("presence_diff") {
                return;
            }
            let now = now_micros();
            let Ok(frame) = serde_json::from_str::<Value>(text) else {
                return;
            };
            let Some(joins) = frame["payload"]["joins"].as_object() else {
                return;
            };
            for key in joins.keys() {
                // Members on the other gateway only: m<i> with i % 2 != gateway.
                let Some(i) = key.strip_prefix('m').and_then(|i| i.parse::<usize>().ok()) else {
                    continue;
                };
                if i % 2 == gateway || i >= sent.len() {
                    continue;
                }
                let at = sent[i].swap(u64::MAX, Ordering::Relaxed);
                if at > 0 && at != u64::MAX {
                    histogram.record(now.saturating_sub(at));
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let members = open_joined(
        args.members,
        128,
        |i| ports[i % 2],
        &apikey,
        |_| TOPIC.into(),
        |i| presence_join(&format!("m{i}")),
    )
    .await?;
    let cpu = CpuSplit::of_processes(gateway_pids(&stack));
    // Member i tracks at start + i / rate, then reads (and drops) what it is sent, as a client
    // would.
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    for (i, mut member) in members.into_iter().enumerate() {
        let sent = sent.clone();
        let at = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            sent[i].store(now_micros(), Ordering::Relaxed);
            let join_ref = member.join_ref.clone();
            let track = json!({"type": "presence", "event": "track", "payload": {"n": i}});
            if member
                .push(join_ref.as_deref(), TOPIC, "presence", track)
                .await
                .is_ok()
            {
                member.read_texts(|_| {}).await;
            }
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::Relaxed) < args.members as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unseen: Vec<usize> = (0..args.members)
        .filter(|&i| sent[i].load(Ordering::Relaxed) != u64::MAX)
        .collect();
    if !unseen.is_empty() {
        println!("  not seen on the other gateway: members {unseen:?}");
    }
    println!("| members | seen on the other gateway | p50 | p99 | p99.9 | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        args.members,
        seen.load(Ordering::Relaxed),
        histogram.quantile_ms(0.5),
        histogram.quantile_ms(0.99),
        histogram.quantile_ms(0.999),
        cpu.report()
    );
    Ok(())
}
