//! `realtime-bench messages`: persisted chat messages end to end, the path of the nself API's
//! `message:send` in a channel with `persist_messages = true`: the gateway runs
//! `realtime.send_message(...)` under the sender's claims (RLS) and acks after COMMIT; every
//! subscriber of the channel, on either gateway, then gets `message:new` from the CDC (WAL →
//! CDC → JetStream → each gateway's reader of `realtime.messages` changes → its sockets).
//!
//! Two gateways on a durable Postgres ([`durable`]: every COMMIT is flushed, as in
//! production), the CDC and NATS of the harness. One public channel, `bench-chat`, persisting
//! its messages. `--subscribers` Socket.IO sockets, each its own user (`bench-sub-<i>`), split
//! evenly over the gateways and joined to it; `--publishers` sockets (`bench-pub-<i>`,
//! alternating gateways, joined too) send `message:send` in turn at a
//! total rate from `--rates` for `--seconds` each, content `"m"`, `metadata: {"t": <send time
//! on the bench's clock, µs>, "p": <publisher>, "n": <sequence number of the run>}`, each with
//! an ack id (the ack is `43<n>[{"ok":true,"message":{...}}]` or `43<n>[{"error":{...}}]`).
//!
//! Per rate: acks/s and ack latency (send → ack: the INSERT under RLS and the durable COMMIT,
//! plus any wait behind the same socket's earlier messages, which a gateway handles in turn);
//! messages stored (rows of the rate's `n`s in `realtime.messages`); deliveries/s and delivery
//! latency (send → `message:new` at a subscriber, `t` read from the frame); how many copies of
//! each message each subscriber got (missing and duplicates: exactly once is the goal); error
//! events and error acks, counted and the first one shown. After the last send the bench waits
//! until every ack and delivery arrived or `--drain-seconds` passed; what arrives after that is
//! reported as late (and counted in the latency). Deliveries/s = deliveries ÷ (first send →
//! last delivery). A rate is *sustained* when every message was acked with no error, stored,
//! and delivered to every subscriber exactly once by the deadline, with delivery p99 under
//! `--p99-limit-ms`. The run stops after two unsustained rates in a row (`--all-rates` runs
//! them all) or when a socket was closed.
//!
//! Where the time goes, per message: send → transaction start (the stored row's `sent_at`, on
//! the same machine's clock: the gateway reading the frame, waiting behind the socket's
//! earlier messages, a pooled connection, the claims), transaction start → ack (the INSERT,
//! the durable COMMIT, and the ack's way back, which shares the publisher's outbox with its
//! copies of the room's messages), ack → first delivery (the CDC path: decoding the WAL,
//! JetStream, the gateway's reader), first → last delivery (fan-out to the sockets of both
//! gateways); beside them the gateways' own `realtime_message_latency_seconds` (commit
//! timestamp → fan-out start on that gateway) and the CDC's events published. The CPU
//! split names the gateways, the CDC, nats-server and Postgres (the postmaster and its
//! children) and the load generator.
//!
//! The gateways run with [`BENCH_GATEWAY_ENV`], a per-socket message limit high enough not to
//! throttle the publishers (60 a minute by default), and presence and typing off, as in
//! `socketio-fanout`: with presence on, each join would send `user:joined` to every member
//! already in the room (half a million frames for 1,000 joins), and neither presence nor
//! typing frames are part of the workload measured. The publishers are in the room (a socket
//! sends only to rooms it joined) and get their own copies; those are read but not counted.

use crate::load_client::{field_after, raise_open_files_limit};
use crate::measure::{ms, now_micros, wall_micros, Copies, CpuSplit, Histogram, RisingRates};
use crate::socketio_client::{SioSocket, SioWriter};
use crate::stack::{durable, BENCH_GATEWAY_ENV};
use crate::stack_report::{cdc_events, print_logs, process_groups, relay_latency, RelayLatency};
use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use realtime_tests::{token, Postgres, Stack};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const ROOM: &str = "bench-chat";

#[derive(clap::Args)]
pub struct Args {
    /// Subscribed sockets (one user each), split evenly over the two gateways.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Sending sockets (one user each), alternating gateways; they send in turn.
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    /// Total send rates to try, messages per second (each delivered to every subscriber).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800")]
    rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A rate is sustained when (among the rest) delivery p99 stayed under this.
    #[arg(long, default_value_t = 250.0)]
    p99_limit_ms: f64,
    /// Seconds to wait after the last send for the acks and deliveries still missing.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Run every rate, not only up to the second unsustained one in a row.
    #[arg(long)]
    all_rates: bool,
}

/// What the sockets' readers record for one rate (or the warm-up): message `n` of the run is at
/// index `n - base`.
struct Tally {
    base: u64,
    messages: usize,
    /// Per message, on the bench's clock (µs): sent, acked (0: not yet), first and last
    /// delivery (`u64::MAX` and 0 before any).
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    /// Per message, the send time on the wall clock (µs since the epoch), to set beside the
    /// stored row's `sent_at` (Postgres' `now()`: the start of the sending transaction).
    sent_wall: Vec<AtomicU64>,
    first: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    /// Copies of each message each subscriber got, at `subscriber * messages + index`.
    copies: Copies,
    ack_latency: Histogram,
    /// The ack latency in two: send → transaction start, transaction start → ack.
    to_begin: Histogram,
    begin_to_ack: Histogram,
    delivery_latency: Histogram,
    acks: AtomicU64,
    deliveries: AtomicU64,
    last_ack: AtomicU64,
    last_delivery: AtomicU64,
    /// `message:new` or acks of messages not in this tally (late from an earlier rate), or
    /// frames without a readable `n` and `t`.
    stray: AtomicU64,
    error_acks: AtomicU64,
    error_events: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn new(base: u64, messages: usize, subscribers: usize) -> Tally {
        let atomics = |n: usize, v: u64| (0..n).map(|_| AtomicU64::new(v)).collect();
        Tally {
            base,
            messages,
            sent: atomics(messages, 0),
            acked: atomics(messages, 0),
            sent_wall: atomics(messages, 0),
            first: atomics(messages, u64::MAX),
            last: atomics(messages, 0),
            copies: Copies::new(messages * subscribers),
            ack_latency: Histogram::new(),
            to_begin: Histogram::new(),
            begin_to_ack: Histogram::new(),
            delivery_latency: Histogram::new(),
            acks: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            last_ack: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            error_acks: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// The index of message `n`, if it is one of this tally's.
    fn index(&self, n: u64) -> Option<usize> {
        let index = n.checked_sub(self.base)? as usize;
        (index < self.messages).then_some(index)
    }

    /// A `42["message:new",...]` at `subscriber`.
    fn delivery(&self, subscriber: usize, packet: &str) {
        let now = now_micros();
        let metadata = packet.find(r#""metadata":"#).map_or("", |at| &packet[at..]);
        let found = field_after(metadata, r#""n":"#)
            .and_then(|n| self.index(n))
            .zip(field_after(metadata, r#""t":"#));
        let Some((index, sent)) = found else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.delivery_latency.record(now.saturating_sub(sent));
        self.copies.add(subscriber * self.messages + index);
        self.first[index].fetch_min(now, Ordering::Relaxed);
        self.last[index].fetch_max(now, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.last_delivery.fetch_max(now, Ordering::Relaxed);
    }

    /// The rest of an ack packet after `43`: `<n>[{...}]`.
    fn ack(&self, rest: &str) {
        let now = now_micros();
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
        let Some(index) = rest[..digits].parse().ok().and_then(|n| self.index(n)) else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !rest.contains(r#""ok":true"#) {
            self.error_acks.fetch_add(1, Ordering::Relaxed);
            self.keep_error(rest);
            return;
        }
        let sent = self.sent[index].load(Ordering::Relaxed);
        self.acked[index].store(now, Ordering::Relaxed);
        self.ack_latency.record(now.saturating_sub(sent));
        let begin = rest
            .split_once(r#""sentAt":""#)
            .and_then(|(_, at)| at.split_once('"'))
            .and_then(|(at, _)| OffsetDateTime::parse(at, &Rfc3339).ok())
            .map(|at| (at.unix_timestamp_nanos() / 1000) as u64);
        if let Some(begin) = begin {
            let sent_wall = self.sent_wall[index].load(Ordering::Relaxed);
            self.to_begin.record(begin.saturating_sub(sent_wall));
            self.begin_to_ack
                .record(wall_micros().saturating_sub(begin));
        }
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.last_ack.fetch_max(now, Ordering::Relaxed);
    }

    /// A `42["error",...]` at any socket.
    fn error_event(&self, packet: &str) {
        self.error_events.fetch_add(1, Ordering::Relaxed);
        self.keep_error(packet);
    }

    fn keep_error(&self, text: &str) {
        self.first_error
            .lock()
            .expect("error lock")
            .get_or_insert_with(|| text.to_string());
    }

    /// The first error frame, if any.
    fn first_error(&self) -> String {
        let first = self.first_error.lock().expect("error lock");
        first.clone().unwrap_or_else(|| "none".into())
    }

    fn errors(&self) -> u64 {
        self.error_acks.load(Ordering::Relaxed) + self.error_events.load(Ordering::Relaxed)
    }

    /// Whether every message was answered (acked or refused) and every copy delivered.
    fn complete(&self, subscribers: usize) -> bool {
        self.acks.load(Ordering::Relaxed) + self.error_acks.load(Ordering::Relaxed)
            >= self.messages as u64
            && self.deliveries.load(Ordering::Relaxed) >= (self.messages * subscribers) as u64
    }

    /// Frames seen so far, to tell when they stop coming.
    fn activity(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
            + self.deliveries.load(Ordering::Relaxed)
            + self.stray.load(Ordering::Relaxed)
            + self.errors()
    }
}

/// The connected sockets and the tally their readers record into.
struct Clients {
    writers: Vec<SioWriter>,
    tally: Arc<RwLock<Arc<Tally>>>,
    /// Sockets whose connection ended.
    closed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One rate's figures.
struct Row {
    rate: u64,
    messages: usize,
    /// Acks by the drain deadline, and all of them.
    acked_on_time: u64,
    acked: u64,
    acked_per_second: f64,
    ack_p50: f64,
    ack_p99: f64,
    stored: i64,
    error_acks: u64,
    error_events: u64,
    expected: u64,
    /// Deliveries by the drain deadline, and all of them (with the late ones).
    on_time: u64,
    delivered: u64,
    deliveries_per_second: f64,
    missing: u64,
    duplicates: u64,
    p50: f64,
    p99: f64,
    max: f64,
    cpu: String,
    /// The "where the time goes" columns.
    time: String,
}

impl Row {
    fn sustained(&self, p99_limit_ms: f64) -> bool {
        self.acked_on_time == self.messages as u64
            && self.stored == self.messages as i64
            && self.error_acks + self.error_events == 0
            && self.on_time == self.expected
            && self.missing == 0
            && self.duplicates == 0
            && self.p99 < p99_limit_ms
    }

    fn line(&self, p99_limit_ms: f64) -> String {
        format!(
            "| {} | {:.0} | {} of {}{} | {} | {} | {} | {} acks, {} events | {:.0} | {} of {}{} | {} \
             | {} | {} | {} | {} | {} | {} |",
            self.rate,
            self.acked_per_second,
            self.acked_on_time,
            self.messages,
            late(self.acked - self.acked_on_time),
            ms(self.ack_p50),
            ms(self.ack_p99),
            self.stored,
            self.error_acks,
            self.error_events,
            self.deliveries_per_second,
            self.on_time,
            self.expected,
            late(self.delivered - self.on_time),
            self.missing,
            self.duplicates,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ["no", "yes"][self.sustained(p99_limit_ms) as usize],
            self.cpu
        )
    }
}

/// ` (+N late)`, or nothing.
fn late(count: u64) -> String {
    match count {
        0 => String::new(),
        n => format!(" (+{n} late)"),
    }
}

const HEADER: &str =
    "| messages/s sent | acked/s | acked by the deadline | ack p50 | ack p99 | stored | errors | \
                      deliveries/s | delivered by the deadline | missing | duplicates | p50 | \
                      p99 | max | sustained | CPU split |\n\
                      | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | \
                      --- | --- | --- | --- |";
const TIME_HEADER: &str =
    "| messages/s sent | send → transaction start p50 / p99 | transaction start → ack p50 / \
                           p99 | ack → first delivery p50 / \
                           p99 | first → last delivery p50 / p99 | send → delivery p50 / p99 | \
                           gateways' commit → fan-out (metric) | CDC events |\n\
                           | --- | --- | --- | --- | --- | --- | --- | --- |";

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.publishers == 0 || args.subscribers == 0 {
        bail!("--publishers and --subscribers must be at least 1");
    }
    let limit = raise_open_files_limit(4 * (args.subscribers + args.publishers) as u64 + 10_000)?;
    durable(Postgres::shared());
    let mut env = BENCH_GATEWAY_ENV.to_vec();
    env.extend([
        ("REALTIME_MAX_MESSAGES_PER_MINUTE", "100000000"),
        ("REALTIME_ENABLE_PRESENCE", "false"),
        ("REALTIME_ENABLE_TYPING", "false"),
    ]);
    let stack = Stack::start(2, &env).await;
    stack
        .sql(&format!(
            "INSERT INTO realtime.channels (name, slug, type, persist_messages) \
             VALUES ('Bench', '{ROOM}', 'public', true)"
        ))
        .await;
    println!(
        "messages: {} subscribers and {} publishers over 2 gateways in one persisted public \
         channel, {} s per rate, drain deadline {} s; sustained = every message acked, stored \
         and delivered to every subscriber exactly once, no error, delivery p99 < {} ms \
         (open files limit {limit})",
        args.subscribers, args.publishers, args.seconds, args.drain_seconds, args.p99_limit_ms
    );

    let clients = match connect_clients(&stack, &args).await {
        Ok(clients) => clients,
        Err(e) => {
            print_logs(&stack);
            return Err(e);
        }
    };
    // One message per publisher, to open the gateways' database connections and see the whole
    // path work before measuring.
    let warm_up = send_and_drain(&clients, &args, 0, args.publishers as u64, 0).await?;
    if !warm_up.complete(args.subscribers) {
        print_logs(&stack);
        bail!(
            "the warm-up did not complete in {} s: {} of {} acks, {} of {} deliveries, {} \
             errors (first: {})",
            args.drain_seconds,
            warm_up.acks.load(Ordering::Relaxed),
            args.publishers,
            warm_up.deliveries.load(Ordering::Relaxed),
            args.publishers * args.subscribers,
            warm_up.errors(),
            warm_up.first_error()
        );
    }

    println!("{HEADER}");
    let mut rows: Vec<Row> = Vec::new();
    let mut base = args.publishers as u64;
    let mut rising = RisingRates::new(args.all_rates);
    for &rate in &args.rates {
        let row = measure_rate(&stack, &clients, &args, base, rate).await?;
        base += row.messages as u64;
        println!("{}", row.line(args.p99_limit_ms));
        println!("  where the time goes: {}", row.time);
        let go_on = rising.go_on(row.sustained(args.p99_limit_ms));
        rows.push(row);
        let closed = clients.closed.load(Ordering::Relaxed);
        if closed > 0 {
            println!(
                "  {closed} sockets were closed: stopping (the next rates would not be comparable)"
            );
            print_logs(&stack);
            break;
        }
        if !go_on {
            break;
        }
    }

    println!("\n== summary ==\n{HEADER}");
    for row in &rows {
        println!("{}", row.line(args.p99_limit_ms));
    }
    println!("\nwhere the time goes (per message; the metric is summed over both gateways)\n{TIME_HEADER}");
    for row in &rows {
        println!("| {} | {} |", row.rate, row.time);
    }
    let best = rows
        .iter()
        .filter(|row| row.sustained(args.p99_limit_ms))
        .max_by(|a, b| a.acked_per_second.total_cmp(&b.acked_per_second));
    match best {
        Some(best) => println!(
            "\nhighest sustained: {} messages/s sent ({:.0} acked/s, {:.0} deliveries/s), \
             delivery p99 {}, ack p99 {}",
            best.rate,
            best.acked_per_second,
            best.deliveries_per_second,
            ms(best.p99),
            ms(best.ack_p99)
        ),
        None => println!("\nno rate sustained"),
    }
    Ok(())
}

/// Connects and joins the subscribers, then the publishers; their readers start recording.
async fn connect_clients(stack: &Stack, args: &Args) -> anyhow::Result<Clients> {
    let ports = [stack.gateways[0].port, stack.gateways[1].port];
    let tally = Arc::new(RwLock::new(Arc::new(Tally::new(0, 0, 0))));
    let closed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let open = |user: String, port: u16| async move {
        let token = token(json!({"sub": user, "role": "authenticated"}));
        let joined = tokio::time::timeout(Duration::from_secs(10), async {
            let mut socket = SioSocket::connect(port, &token).await?;
            socket.join(ROOM).await?;
            anyhow::Ok(socket)
        });
        joined
            .await
            .context("no connect and join within 10 s")?
            .with_context(|| user.clone())
    };
    let users = (0..args.subscribers)
        .map(|i| (format!("bench-sub-{i}"), ports[i % 2]))
        .chain((0..args.publishers).map(|i| (format!("bench-pub-{i}"), ports[i % 2])));
    let opening = futures::stream::iter(users).map(|(user, port)| open(user, port));
    let sockets: Vec<SioSocket> = opening.buffered(256).try_collect().await?;
    let took = started.elapsed();
    println!("  {} sockets joined {ROOM} in {took:.1?}", sockets.len());

    let mut writers = Vec::with_capacity(args.publishers);
    let mut tasks = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let (tally, closed) = (tally.clone(), closed.clone());
        let subscriber = (i < args.subscribers).then_some(i);
        if subscriber.is_none() {
            writers.push(socket.writer());
        }
        tasks.push(tokio::spawn(async move {
            socket
                .read_events(|packet| {
                    let tally = tally.read().expect("tally lock");
                    if let Some(rest) = packet.strip_prefix("43") {
                        tally.ack(rest);
                    } else if packet.starts_with(r#"42["error""#) {
                        tally.error_event(packet);
                    } else if let Some(subscriber) = subscriber {
                        if packet.starts_with(r#"42["message:new""#) {
                            tally.delivery(subscriber, packet);
                        }
                    }
                })
                .await;
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    Ok(Clients {
        writers,
        tally,
        closed,
        tasks,
    })
}

/// Sends messages `base..base + count` at `rate` a second (0: all at once), publishers in
/// turn, then waits until all were answered and delivered or the drain deadline passed;
/// returns their tally.
async fn send_and_drain(
    clients: &Clients,
    args: &Args,
    base: u64,
    count: u64,
    rate: u64,
) -> anyhow::Result<Arc<Tally>> {
    let tally = Arc::new(Tally::new(base, count as usize, args.subscribers));
    *clients.tally.write().expect("tally lock") = tally.clone();
    let period = Duration::from_secs_f64(if rate > 0 { 1.0 / rate as f64 } else { 1e-6 });
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for index in 0..count as usize {
        tick.tick().await;
        let (n, p) = (base + index as u64, index % clients.writers.len());
        let t = now_micros();
        tally.sent[index].store(t, Ordering::Relaxed);
        tally.sent_wall[index].store(wall_micros(), Ordering::Relaxed);
        let packet = format!(
            r#"42{n}["message:send",{{"roomName":"{ROOM}","content":"m","metadata":{{"t":{t},"p":{p},"n":{n}}}}}]"#
        );
        clients.writers[p]
            .send(&packet)
            .await
            .with_context(|| format!("publisher {p}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.drain_seconds);
    while !tally.complete(args.subscribers) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tally)
}

/// Measures one rate: messages `base..` at `rate` a second for `--seconds`.
async fn measure_rate(
    stack: &Stack,
    clients: &Clients,
    args: &Args,
    base: u64,
    rate: u64,
) -> anyhow::Result<Row> {
    let count = rate * args.seconds;
    let relay_before = relay_latency(stack).await;
    let cdc_before = cdc_events(stack).await;
    let cpu = CpuSplit::start(process_groups(stack).await);
    let tally = send_and_drain(clients, args, base, count, rate).await?;
    let first_send = tally.sent.first().map_or(0, |t| t.load(Ordering::Relaxed));
    let cpu = cpu.report();
    let relay = relay_latency(stack).await.since(&relay_before);
    let cdc = cdc_events(stack).await - cdc_before;
    let on_time = tally.deliveries.load(Ordering::Relaxed);
    let acked_on_time = tally.acks.load(Ordering::Relaxed);
    // Let the stragglers come (counted late) before the next rate: until 500 ms pass with no
    // frame, 30 s at most.
    let settle = Instant::now() + Duration::from_secs(30);
    let mut seen = tally.activity();
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = tally.activity();
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
            "SELECT count(*) FROM realtime.messages \
             WHERE (metadata->>'n')::bigint >= $1 AND (metadata->>'n')::bigint < $2",
            &[&(base as i64), &((base + count) as i64)],
        )
        .await?
        .get(0);
    let delivered = tally.deliveries.load(Ordering::Relaxed);
    let acked = tally.acks.load(Ordering::Relaxed);
    let per_second = |n: u64, last: &AtomicU64| {
        let window = last.load(Ordering::Relaxed).saturating_sub(first_send) as f64 / 1e6;
        if window > 0.0 {
            n as f64 / window
        } else {
            0.0
        }
    };
    let notes = [
        (delivered > on_time)
            .then(|| format!("{} deliveries came after the deadline", delivered - on_time)),
        (tally.stray.load(Ordering::Relaxed) > 0).then(|| {
            format!(
                "{} frames of earlier rates' messages (or without n and t) arrived during this one",
                tally.stray.load(Ordering::Relaxed)
            )
        }),
        (tally.errors() > 0).then(|| format!("first error: {}", tally.first_error())),
    ];
    for note in notes.into_iter().flatten() {
        println!("  {note}");
    }
    Ok(Row {
        rate,
        messages: count as usize,
        acked_on_time,
        acked,
        acked_per_second: per_second(acked, &tally.last_ack),
        ack_p50: tally.ack_latency.quantile_ms(0.5),
        ack_p99: tally.ack_latency.quantile_ms(0.99),
        stored,
        error_acks: tally.error_acks.load(Ordering::Relaxed),
        error_events: tally.error_events.load(Ordering::Relaxed),
        expected: count * args.subscribers as u64,
        on_time,
        delivered,
        deliveries_per_second: per_second(delivered, &tally.last_delivery),
        missing,
        duplicates,
        p50: tally.delivery_latency.quantile_ms(0.5),
        p99: tally.delivery_latency.quantile_ms(0.99),
        max: tally.delivery_latency.quantile_ms(1.0),
        cpu,
        time: time_columns(&tally, &relay, cdc),
    })
}

/// The "where the time goes" columns of a rate (without the rate).
fn time_columns(tally: &Tally, relay: &RelayLatency, cdc_events: f64) -> String {
    let (to_first, spread) = (Histogram::new(), Histogram::new());
    for index in 0..tally.messages {
        let acked = tally.acked[index].load(Ordering::Relaxed);
        let first = tally.first[index].load(Ordering::Relaxed);
        if acked > 0 && first != u64::MAX {
            to_first.record(first.saturating_sub(acked));
            spread.record(tally.last[index].load(Ordering::Relaxed) - first);
        }
    }
    let pair = |h: &Histogram| format!("{} / {}", ms(h.quantile_ms(0.5)), ms(h.quantile_ms(0.99)));
    format!(
        "{} | {} | {} | {} | {} | {} | {cdc_events:.0}",
        pair(&tally.to_begin),
        pair(&tally.begin_to_ack),
        pair(&to_first),
        pair(&spread),
        pair(&tally.delivery_latency),
        relay.describe()
    )
}
