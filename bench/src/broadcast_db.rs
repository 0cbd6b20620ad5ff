//! `realtime-bench broadcast-db`: Broadcast from Database, Supabase's recommended way to stream
//! changes at scale. Each message is `SELECT realtime.send(payload, 'tick', topic)` in its own
//! transaction (private by default): the row goes into `realtime.messages`, the CDC reads it
//! from the WAL into JetStream, and each gateway's reader of `realtime.messages` delivers it to
//! the sockets joined to that private topic.
//!
//! Two gateways on a durable Postgres ([`crate::stack::durable`]), the CDC and NATS of the
//! harness. `--topics` private topics `bench:<k>`, each with `--subscribers-per-topic` sockets
//! (one user each, split evenly over the gateways) joined with `config.private: true` and
//! authorized by the policies of Supabase's docs ([`crate::rooms_policies`]: every join is
//! one policy check). `--writers` Postgres connections send at a total rate from `--rates` for
//! `--seconds` each, message `n` to topic `n % topics`, payload `{"n": <n>, "t": <issue time on
//! the bench's clock, µs>}`.
//!
//! Per rate: sends/s achieved (sends ÷ first issue → last commit), rows stored, deliveries/s,
//! copies each subscriber got of each of its topic's messages (missing, duplicates: exactly
//! once is the goal), and latency from issuing the `realtime.send` to the frame at the client
//! (this includes the sending transaction's durable COMMIT, so it bounds commit → client from
//! above), beside the time from issuing a send to its commit being acknowledged to the writer
//! (the COMMIT's share) and the gateways' own `realtime_message_latency_seconds` (commit
//! timestamp → fan-out start). A rate is *sustained* when the writers kept to it (95 %), every send was
//! stored and delivered to every subscriber of its topic exactly once by the drain deadline,
//! and p99 stayed under `--p99-limit-ms`. The run stops after two unsustained rates in a row
//! (`--all-rates` runs them all) or when a socket was closed.

use crate::load_client::{field_after, raise_open_files_limit};
use crate::measure::{ms, now_micros, Copies, CpuSplit, Histogram, RisingRates};
use crate::rooms_policies::{add_members, install, user_token};
use crate::stack::{open_joined, start_stack};
use crate::stack_report::{print_logs, process_groups, relay_latency};
use anyhow::{bail, Context};
use realtime_tests::{token, Stack};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Private topics.
    #[arg(long, default_value_t = 100)]
    topics: usize,
    /// Subscribed sockets per topic (one user each), split evenly over the two gateways.
    #[arg(long, default_value_t = 10)]
    subscribers_per_topic: usize,
    /// Postgres connections sending, each its share of the rate.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Total send rates to try, `realtime.send` calls per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,3000,4000,5000,6000,8000"
    )]
    rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A rate is sustained when (among the rest) p99 stayed under this.
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,
    /// Seconds to wait after the last send for the deliveries still missing.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Run every rate, not only up to the second unsustained one in a row.
    #[arg(long)]
    all_rates: bool,
}

/// What the subscribers' readers record for one rate (or the warm-up): message `n` of the run
/// is at index `n - base`; subscriber `slot` of its topic at `index * per_topic + slot`.
struct Tally {
    base: u64,
    messages: usize,
    per_topic: usize,
    copies: Copies,
    latency: Histogram,
    /// Issuing a send → its commit acknowledged to the writer (the durable COMMIT's share).
    committed: Histogram,
    deliveries: AtomicU64,
    last_delivery: AtomicU64,
    /// Broadcasts of messages not in this tally (late from an earlier rate) or without `n`/`t`.
    stray: AtomicU64,
    /// The first broadcast without `n`/`t`, to show.
    unreadable: Mutex<Option<String>>,
}

impl Tally {
    fn new(base: u64, messages: usize, per_topic: usize) -> Tally {
        Tally {
            base,
            messages,
            per_topic,
            copies: Copies::new(messages * per_topic),
            latency: Histogram::new(),
            committed: Histogram::new(),
            deliveries: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            unreadable: Mutex::new(None),
        }
    }

    /// A broadcast frame at subscriber `slot` of its topic.
    fn delivery(&self, slot: usize, text: &str) {
        let now = now_micros();
        // No key of the frame around the payload is `n` or `t`.
        let payload = text;
        let index = field_after(payload, r#""n":"#)
            .and_then(|n| n.checked_sub(self.base))
            .filter(|&index| index < self.messages as u64);
        let Some(sent) = field_after(payload, r#""t":"#) else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            let mut unreadable = self.unreadable.lock().expect("unreadable lock");
            unreadable.get_or_insert_with(|| text.to_string());
            return;
        };
        let Some(index) = index else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.latency.record(now.saturating_sub(sent));
        self.copies.add(index as usize * self.per_topic + slot);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.last_delivery.fetch_max(now, Ordering::Relaxed);
    }

    fn expected(&self) -> u64 {
        (self.messages * self.per_topic) as u64
    }
}

/// The sending connections, and the tally the subscribers' readers record into.
struct Load {
    writers: Vec<Arc<tokio_postgres::Client>>,
    tally: Arc<RwLock<Arc<Tally>>>,
    /// Subscriber sockets whose connection ended.
    closed: Arc<AtomicU64>,
    topics: usize,
    per_topic: usize,
}

/// One rate's figures.
struct Row {
    rate: u64,
    sent_per_second: f64,
    stored: i64,
    messages: u64,
    send_errors: u64,
    expected: u64,
    on_time: u64,
    deliveries_per_second: f64,
    missing: u64,
    duplicates: u64,
    p50: f64,
    p99: f64,
    max: f64,
    commit_p50: f64,
    commit_p99: f64,
    relay: String,
    cpu: String,
}

impl Row {
    fn sustained(&self, p99_limit_ms: f64) -> bool {
        self.sent_per_second >= 0.95 * self.rate as f64
            && self.stored == self.messages as i64
            && self.send_errors == 0
            && self.on_time == self.expected
            && self.missing == 0
            && self.duplicates == 0
            && self.p99 < p99_limit_ms
    }

    fn line(&self, p99_limit_ms: f64) -> String {
        format!(
            "| {} | {:.0} | {} of {} | {} | {:.0} | {} of {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            self.rate,
            self.sent_per_second,
            self.stored,
            self.messages,
            self.send_errors,
            self.deliveries_per_second,
            self.on_time,
            self.expected,
            self.missing,
            self.duplicates,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ms(self.commit_p50),
            ms(self.commit_p99),
            ["no", "yes"][self.sustained(p99_limit_ms) as usize],
            self.relay,
            self.cpu
        )
    }
}

const HEADER: &str = "| sends/s asked | sends/s | stored | send errors | deliveries/s | \
                      delivered by the deadline | missing | duplicates | send → client p50 | p99 \
                      | max | send → commit acknowledged p50 / p99 | sustained | gateways' commit \
                      → fan-out (metric) | CPU split |\n\
                      | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | \
                      --- | --- | --- |";

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.topics == 0 || args.subscribers_per_topic == 0 || args.writers == 0 {
        bail!("--topics, --subscribers-per-topic and --writers must be at least 1");
    }
    let subscribers = args.topics * args.subscribers_per_topic;
    let limit = raise_open_files_limit(4 * subscribers as u64 + 10_000)?;
    let stack = start_stack(2).await;
    let db = stack.db.connect().await;
    install(&db).await?;
    let per_topic = args.subscribers_per_topic;
    add_members(
        &db,
        (0..subscribers).map(|i| (i, format!("bench:{}", i / per_topic))),
    )
    .await?;
    println!(
        "broadcast-db: realtime.send into {} private topics × {} subscribers over 2 gateways \
         (Supabase's rooms_users policies), {} writer connections, {} s per rate; sustained = \
         every send stored and delivered exactly once, p99 < {} ms (open files limit {limit})",
        args.topics, per_topic, args.writers, args.seconds, args.p99_limit_ms
    );

    let load = match connect(&stack, &args).await {
        Ok(load) => load,
        Err(e) => {
            print_logs(&stack);
            return Err(e);
        }
    };
    // One message per topic, to see the whole path work before measuring.
    let warm_up = send_and_drain(&load, &args, 0, args.topics as u64, 0).await?;
    if warm_up.1.deliveries.load(Ordering::Relaxed) < warm_up.1.expected() {
        print_logs(&stack);
        bail!(
            "the warm-up did not complete in {} s: {} of {} deliveries, {} broadcasts not of the \
             warm-up (first without n and t: {:?}), send errors: {}",
            args.drain_seconds,
            warm_up.1.deliveries.load(Ordering::Relaxed),
            warm_up.1.expected(),
            warm_up.1.stray.load(Ordering::Relaxed),
            warm_up.1.unreadable.lock().expect("unreadable lock"),
            warm_up.0.describe()
        );
    }

    println!("{HEADER}");
    let mut rows: Vec<Row> = Vec::new();
    let mut base = args.topics as u64;
    let mut rising = RisingRates::new(args.all_rates);
    for &rate in &args.rates {
        let row = measure_rate(&stack, &load, &args, base, rate).await?;
        base += row.messages;
        println!("{}", row.line(args.p99_limit_ms));
        let go_on = rising.go_on(row.sustained(args.p99_limit_ms));
        rows.push(row);
        let closed = load.closed.load(Ordering::Relaxed);
        if closed > 0 {
            println!("  {closed} sockets were closed: stopping");
            print_logs(&stack);
            break;
        }
        if !go_on {
            break;
        }
    }
    let best = (rows.iter())
        .filter(|row| row.sustained(args.p99_limit_ms))
        .max_by(|a, b| a.sent_per_second.total_cmp(&b.sent_per_second));
    match best {
        Some(best) => println!(
            "\nhighest sustained: {:.0} sends/s ({:.0} deliveries/s), p50 {}, p99 {}",
            best.sent_per_second,
            best.deliveries_per_second,
            ms(best.p50),
            ms(best.p99)
        ),
        None => println!("\nno rate sustained"),
    }
    Ok(())
}

/// Joins the subscribers (their readers start recording) and opens the writers.
async fn connect(stack: &Stack, args: &Args) -> anyhow::Result<Load> {
    let ports = [stack.gateways[0].port, stack.gateways[1].port];
    let per_topic = args.subscribers_per_topic;
    let started = Instant::now();
    let sockets = open_joined(
        args.topics * per_topic,
        128,
        |i| ports[i % 2],
        &token(json!({"role": "anon"})),
        |i| format!("realtime:bench:{}", i / per_topic),
        |i| json!({"config": {"private": true}, "access_token": user_token(i)}),
    )
    .await
    .context("join the private topics")?;
    println!(
        "  {} sockets joined their private topics in {:.1?}",
        sockets.len(),
        started.elapsed()
    );
    let tally = Arc::new(RwLock::new(Arc::new(Tally::new(0, 0, per_topic))));
    let closed = Arc::new(AtomicU64::new(0));
    for (i, socket) in sockets.into_iter().enumerate() {
        let (tally, closed) = (tally.clone(), closed.clone());
        let slot = i % per_topic;
        tokio::spawn(async move {
            socket
                .read_texts(|text| {
                    if text.contains(r#""event":"broadcast""#) {
                        tally.read().expect("tally lock").delivery(slot, text);
                    }
                })
                .await;
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let mut writers = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        writers.push(Arc::new(stack.db.connect().await));
    }
    Ok(Load {
        writers,
        tally,
        closed,
        topics: args.topics,
        per_topic,
    })
}

/// Send failures: how many, and the first.
#[derive(Default)]
struct SendErrors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl SendErrors {
    fn record(&self, error: &tokio_postgres::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().expect("error lock");
        first.get_or_insert_with(|| format!("{error:?}"));
    }

    fn describe(&self) -> String {
        let first = self.first.lock().expect("error lock");
        format!(
            "{}, first: {}",
            self.count.load(Ordering::Relaxed),
            first.as_deref().unwrap_or("none")
        )
    }
}

/// Sends messages `base..base + count` at `rate` a second (0: as fast as the writers go), each
/// writer its share, then waits until all were delivered or the drain deadline passed. Returns
/// the send errors, the tally, and the time from the first issue to the last commit (µs).
async fn send_and_drain(
    load: &Load,
    args: &Args,
    base: u64,
    count: u64,
    rate: u64,
) -> anyhow::Result<(Arc<SendErrors>, Arc<Tally>, u64)> {
    let tally = Arc::new(Tally::new(base, count as usize, load.per_topic));
    *load.tally.write().expect("tally lock") = tally.clone();
    let errors = Arc::new(SendErrors::default());
    let writers = load.writers.len() as u64;
    let started = now_micros();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(load.writers.len());
    for (w, client) in load.writers.iter().enumerate() {
        let (client, errors, tally) = (client.clone(), errors.clone(), tally.clone());
        let topics = load.topics as u64;
        tasks.push(tokio::spawn(async move {
            let send = client
                .prepare("SELECT realtime.send($1::text::jsonb, 'tick', $2)")
                .await?;
            // Writer w sends messages w, w + writers, ...: its ticks are offset by w sends.
            let (period, offset) = match rate {
                0 => (Duration::from_micros(1), Duration::ZERO),
                rate => (
                    Duration::from_secs_f64(writers as f64 / rate as f64),
                    Duration::from_secs_f64(w as f64 / rate as f64),
                ),
            };
            let mut tick = tokio::time::interval_at(start + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = base + w as u64;
            while n < base + count {
                tick.tick().await;
                let issued = now_micros();
                let payload = format!(r#"{{"n":{n},"t":{issued}}}"#);
                let topic = format!("bench:{}", n % topics);
                match client.execute(&send, &[&payload, &topic]).await {
                    Ok(_) => tally.committed.record(now_micros() - issued),
                    Err(e) => errors.record(&e),
                }
                n += writers;
            }
            anyhow::Ok(now_micros())
        }));
    }
    let mut last_commit = started;
    for task in tasks {
        last_commit = last_commit.max(task.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(args.drain_seconds);
    while tally.deliveries.load(Ordering::Relaxed) < tally.expected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((errors, tally, last_commit - started))
}

/// Measures one rate: messages `base..` at `rate` a second for `--seconds`.
async fn measure_rate(
    stack: &Stack,
    load: &Load,
    args: &Args,
    base: u64,
    rate: u64,
) -> anyhow::Result<Row> {
    let messages = rate * args.seconds;
    let relay_before = relay_latency(stack).await;
    let cpu = CpuSplit::start(process_groups(stack).await);
    let first_issue = now_micros();
    let (errors, tally, sending) = send_and_drain(load, args, base, messages, rate).await?;
    let cpu = cpu.report();
    let relay = relay_latency(stack).await.since(&relay_before).describe();
    let on_time = tally.deliveries.load(Ordering::Relaxed);
    let window = tally
        .last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_issue);
    // Let the stragglers come before the next rate: until 500 ms pass with no frame, 30 s at
    // most; they count as missing here, and as stray in the next rate if any come later.
    let settle = Instant::now() + Duration::from_secs(30);
    let mut seen = tally.deliveries.load(Ordering::Relaxed) + tally.stray.load(Ordering::Relaxed);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = tally.deliveries.load(Ordering::Relaxed) + tally.stray.load(Ordering::Relaxed);
        if now == seen {
            break;
        }
        seen = now;
    }
    let (missing, duplicates) = tally.copies.missing_and_duplicates();
    let stored: i64 = stack
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM realtime.messages
              WHERE topic LIKE 'bench:%' AND event = 'tick'
                AND (payload->>'n')::bigint >= $1 AND (payload->>'n')::bigint < $2",
            &[&(base as i64), &((base + messages) as i64)],
        )
        .await?
        .get(0);
    let stray = tally.stray.load(Ordering::Relaxed);
    if stray > 0 {
        println!("  {stray} broadcasts of earlier rates' messages arrived during this one");
    }
    if errors.count.load(Ordering::Relaxed) > 0 {
        println!("  send errors: {}", errors.describe());
    }
    let per_second = |n: u64, micros: u64| match micros {
        0 => 0.0,
        micros => n as f64 / (micros as f64 / 1e6),
    };
    Ok(Row {
        rate,
        sent_per_second: per_second(messages, sending),
        stored,
        messages,
        send_errors: errors.count.load(Ordering::Relaxed),
        expected: tally.expected(),
        on_time,
        deliveries_per_second: per_second(on_time, window),
        missing,
        duplicates,
        p50: tally.latency.quantile_ms(0.5),
        p99: tally.latency.quantile_ms(0.99),
        max: tally.latency.quantile_ms(1.0),
        commit_p50: tally.committed.quantile_ms(0.5),
        commit_p99: tally.committed.quantile_ms(0.99),
        relay,
        cpu,
    })
}
