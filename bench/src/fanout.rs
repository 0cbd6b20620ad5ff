//! `realtime-bench fanout`: one broadcast topic, `--subscribers` sockets spread over two
//! gateways that share one NATS, one publisher. For each publish rate in `--rates` it sends for
//! `--seconds` and reports deliveries/s, publish → receive latency and the CPU split.
//!
//! The publisher is a socket on gateway 0 (`broadcast.self` off): each message goes to NATS
//! once, both gateways receive it and fan it out to their sockets. Every message carries the
//! send time on the bench's clock (`{"t": µs}`); a receiver's latency is its arrival time minus
//! that. Deliveries/s = deliveries ÷ (first send → last delivery).

use crate::load_client::{field_after, raise_open_files_limit, LoadSocket};
use crate::measure::{now_micros, CpuSplit, Histogram};
use crate::stack::{gateway_pids, open_joined, start_stack};
use realtime_tests::token;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Subscribed sockets, split evenly over the two gateways.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Publish rates to try, messages per second (each delivered to every subscriber).
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,40,50")]
    rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = raise_open_files_limit(4 * args.subscribers as u64 + 10_000)?;
    let stack = start_stack(2).await;
    let ports = [stack.gateways[0].port, stack.gateways[1].port];
    let apikey = token(json!({"role": "anon"}));
    println!(
        "fanout: {} subscribers over 2 gateways (open files limit {limit})",
        args.subscribers
    );

    let started = Instant::now();
    let sockets = open_joined(
        args.subscribers,
        256,
        |i| ports[i % 2],
        &apikey,
        |_| "realtime:fanout".into(),
        |_| json!({"config": {"broadcast": {"self": false}}}),
    )
    .await?;
    println!(
        "  {} sockets joined in {:.1?}",
        sockets.len(),
        started.elapsed()
    );

    let histogram = Arc::new(std::sync::RwLock::new(Arc::new(Histogram::new())));
    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    for socket in sockets {
        let (histogram, delivered, last_delivery) =
            (histogram.clone(), delivered.clone(), last_delivery.clone());
        tokio::spawn(socket.read_texts(move |text| {
            if let Some(sent) = field_after(text, r#""t":"#) {
                let now = now_micros();
                histogram
                    .read()
                    .expect("histogram lock")
                    .record(now.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
                last_delivery.fetch_max(now, Ordering::Relaxed);
            }
        }));
    }

    let mut publisher = LoadSocket::connect(ports[0], &apikey).await?;
    let join_ref = publisher
        .join(
            "realtime:fanout",
            json!({"config": {"broadcast": {"self": false}}}),
        )
        .await?;

    println!("| publishes/s | deliveries/s | delivered | p50 | p99 | p99.9 | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for rate in &args.rates {
        let fresh = Arc::new(Histogram::new());
        *histogram.write().expect("histogram lock") = fresh.clone();
        delivered.store(0, Ordering::Relaxed);
        let messages = rate * args.seconds;
        let expected = messages * args.subscribers as u64;
        let cpu = CpuSplit::of_processes(gateway_pids(&stack));
        let first_send = now_micros();
        let period = Duration::from_secs_f64(1.0 / *rate as f64);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..messages {
            tick.tick().await;
            publisher
                .push(
                    Some(&join_ref),
                    "realtime:fanout",
                    "broadcast",
                    json!({"type": "broadcast", "event": "tick", "payload": {"t": now_micros()}}),
                )
                .await?;
        }
        // Wait for the stragglers: until everything arrived or nothing arrives for 2 s.
        let mut seen = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = delivered.load(Ordering::Relaxed);
            if now >= expected
                || (now == seen && now_micros() - last_delivery.load(Ordering::Relaxed) > 2_000_000)
            {
                break;
            }
            seen = now;
        }
        let got = delivered.load(Ordering::Relaxed);
        let window = (last_delivery.load(Ordering::Relaxed) - first_send) as f64 / 1e6;
        println!(
            "| {rate} | {:.0} | {got} of {expected} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            got as f64 / window,
            fresh.quantile_ms(0.5),
            fresh.quantile_ms(0.99),
            fresh.quantile_ms(0.999),
            cpu.report()
        );
    }
    Ok(())
}
