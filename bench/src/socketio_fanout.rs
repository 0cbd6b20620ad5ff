//! `realtime-bench socketio-fanout`: the fanout workload over Socket.IO, run against one
//! nself-realtime gateway and against a plain Node.js Socket.IO server
//! (`bench/node/reference-server.mjs`: one Node process, socket.io 4.x pinned in its
//! package-lock.json, the `ws` transport, the architecture of the seeds' Socket.IO plugin), so
//! the two are measured by the same load generator on the same machine in one run. Both
//! servers are up with their rooms full from the start and take turns at each rate (ours,
//! then Node's), so that the two figures of a rate are seconds apart: on a machine shared with
//! other work, a sweep of one server and then the other could meet different loads.
//!
//! Each server gets one room, `bench`, with `--subscribers` sockets (each with its own HS256
//! token, `sub` = `bench-<i>`) and one publisher socket in it. For each rate in `--rates` the
//! publisher sends `message:send` for `--seconds`, each message carrying its send time on the
//! bench's clock (`metadata.t`, µs); every subscriber's `message:new` is a delivery, its latency
//! the arrival time minus that. Deliveries/s = deliveries ÷ (first send → last delivery); the
//! publisher's own copy (the sender is in the room) is drained but not counted. A rate is
//! *sustained* when every delivery arrived and p99 stayed under `--p99-limit-ms`; a server's
//! figure is its highest sustained deliveries/s, and the run ends with the ratio of ours to
//! Node's. A server drops out (and closes its sockets) after two unsustained rates in a row
//! (one could be a burst of the machine's other work; `--all-rates` keeps it in).
//!
//! The gateway runs with the other gateway scenarios' settings ([`BENCH_GATEWAY_ENV`]), a
//! per-socket message limit high enough not to throttle the publisher, no limit on connections
//! per IP per minute (the load's 5,000 sockets come from a few 127.0.0.x addresses), and
//! presence and typing off: with presence on, each join would send `user:joined` to every
//! member (12.5 million frames for 5,000 joins), work the reference server, which implements
//! only the events measured here, does not do. The Node dependencies are installed with
//! `npm ci` when `bench/node/node_modules` is missing.

use crate::load_client::{field_after, raise_open_files_limit};
use crate::measure::{now_micros, process_cpu_seconds, CpuSplit, Histogram};
use crate::socketio_client::{SioSocket, SioWriter};
use crate::stack::{durable, gateway_pids, BENCH_GATEWAY_ENV};
use anyhow::{bail, Context};
use futures::StreamExt;
use realtime_tests::{free_port, token, Postgres, Stack, TEST_JWT_SECRET};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

const ROOM: &str = "bench";

#[derive(clap::Args)]
pub struct Args {
    /// Subscribed sockets in the room (the publisher is one more).
    #[arg(long, default_value_t = 5_000)]
    subscribers: usize,
    /// Publish rates to try, messages per second (each delivered to every subscriber).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,4,6,8,10,15,20,30,40,60,80,120"
    )]
    rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A rate is sustained when every delivery arrived and p99 stayed under this.
    #[arg(long, default_value_t = 250.0)]
    p99_limit_ms: f64,
    /// The servers to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "nself,node")]
    servers: Vec<Server>,
    /// Run every rate, not only up to a server's second unsustained one in a row.
    #[arg(long)]
    all_rates: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// One nself-realtime gateway (its /socket.io/ endpoint).
    Nself,
    /// bench/node/reference-server.mjs.
    Node,
}

/// One rate's figures.
struct Row {
    rate: u64,
    per_second: f64,
    delivered: u64,
    expected: u64,
    p50: f64,
    p99: f64,
    max: f64,
    /// The server's CPU time per delivery, µs (its processes, over the whole window).
    cpu_per_delivery: f64,
    cpu: String,
}

impl Row {
    fn sustained(&self, p99_limit_ms: f64) -> bool {
        self.delivered == self.expected && self.p99 < p99_limit_ms
    }

    fn line(&self, p99_limit_ms: f64) -> String {
        format!(
            "| {} | {:.0} | {} of {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.1} µs | {} |",
            self.rate,
            self.per_second,
            self.delivered,
            self.expected,
            self.p50,
            self.p99,
            self.max,
            if self.sustained(p99_limit_ms) {
                "yes"
            } else {
                "no"
            },
            self.cpu_per_delivery,
            self.cpu
        )
    }
}

const HEADER: &str = "| publishes/s | deliveries/s | delivered | p50 | p99 | max | sustained | \
                      server CPU per delivery | CPU split |\n\
                      | --- | --- | --- | --- | --- | --- | --- | --- | --- |";
/// One server under load: the process(es) kept alive, its room's sockets, and its rows so far.
struct Target {
    server: Server,
    label: String,
    /// The server's processes, for the CPU split and CPU per delivery.
    pids: Vec<(String, u32)>,
    /// Keeps the server running (dropping it stops the server).
    _running: Running,
    room: Option<Room>,
    rows: Vec<Row>,
    /// Unsustained rates in a row, up to now.
    misses: u32,
    /// Why it could not be measured, or stopped being measured, if it did.
    failure: Option<String>,
}

enum Running {
    Stack(Box<Stack>),
    Node(Box<NodeServer>),
}

/// The connected sockets of one server's room and what their readers record into.
struct Room {
    writer: SioWriter,
    tasks: Vec<JoinHandle<()>>,
    histogram: Arc<RwLock<Arc<Histogram>>>,
    delivered: Arc<AtomicU64>,
    last_delivery: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Room {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Target {
    /// The sustained row with the most deliveries/s.
    fn best(&self, p99_limit_ms: f64) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|row| row.sustained(p99_limit_ms))
            .max_by(|a, b| a.per_second.total_cmp(&b.per_second))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = raise_open_files_limit(
        4 * (args.subscribers as u64 + 1) * args.servers.len() as u64 + 10_000,
    )?;
    println!(
        "socketio-fanout: {} subscribers + 1 publisher in one room per server, {} s per rate, \
         the servers taking turns at each rate; sustained = every delivery and p99 < {} ms \
         (open files limit {limit})",
        args.subscribers, args.seconds, args.p99_limit_ms
    );
    let mut targets = Vec::new();
    for &server in &args.servers {
        let mut target = match server {
            Server::Nself => start_nself().await,
            Server::Node => start_node().await,
        };
        println!("{}", target.label);
        match open_room(&target, args.subscribers).await {
            Ok(room) => target.room = Some(room),
            Err(e) => target.failure = Some(format!("{e:#}")),
        }
        if let Some(failure) = &target.failure {
            println!("  not measured: {failure}");
            if let Running::Stack(stack) = &target._running {
                let log = stack.gateways[0].log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                for line in tail.into_iter().rev() {
                    println!("  gateway log: {line}");
                }
            }
        }
        targets.push(target);
    }

    println!("| server |{}", &HEADER[1..].replace("\n|", "\n| --- |"));
    for &rate in &args.rates {
        for target in targets.iter_mut() {
            let Some(room) = &target.room else { continue };
            match measure_rate(room, &target.pids, rate, &args).await {
                Ok(row) => {
                    println!(
                        "| {} {}",
                        short_name(target.server),
                        row.line(args.p99_limit_ms)
                    );
                    let refused = room.errors.load(Ordering::Relaxed);
                    if refused > 0 {
                        println!(
                            "  the publisher got {refused} error events, the first: {}",
                            room.first_error
                                .lock()
                                .expect("error lock")
                                .as_deref()
                                .unwrap_or("")
                        );
                    }
                    target.misses = if row.sustained(args.p99_limit_ms) {
                        0
                    } else {
                        target.misses + 1
                    };
                    target.rows.push(row);
                    if target.misses >= 2 && !args.all_rates {
                        // Its sockets go, so that they cost the other server nothing.
                        target.room = None;
                    }
                }
                Err(e) => {
                    println!("  {}: stopped: {e:#}", target.label);
                    target.failure = Some(format!("{e:#}"));
                    target.room = None;
                }
            }
        }
    }
    for target in &mut targets {
        target.room = None;
    }

    println!("\n== summary ==");
    for target in &targets {
        println!("\n{}", target.label);
        if !target.rows.is_empty() {
            println!("{HEADER}");
            for row in &target.rows {
                println!("{}", row.line(args.p99_limit_ms));
            }
        }
        if let Some(failure) = &target.failure {
            println!("not measured (further): {failure}");
        }
        match target.best(args.p99_limit_ms) {
            Some(best) => println!(
                "highest sustained: {:.0} deliveries/s at {} publishes/s (p99 {:.1} ms)",
                best.per_second, best.rate, best.p99
            ),
            None => println!("no rate sustained"),
        }
    }
    let best = |server: Server| {
        targets
            .iter()
            .find(|t| t.server == server)
            .and_then(|t| t.best(args.p99_limit_ms))
    };
    match (best(Server::Nself), best(Server::Node)) {
        (Some(ours), Some(node)) => {
            let ratio = ours.per_second / node.per_second;
            println!(
                "\nratio at p99 < {} ms: nself-realtime {:.0} / Node {:.0} deliveries/s = {ratio:.2}× \
                 (target ≥ 5×: {})",
                args.p99_limit_ms,
                ours.per_second,
                node.per_second,
                if ratio >= 5.0 { "met" } else { "not met" }
            );
            println!(
                "server CPU per delivery at those rates: nself-realtime {:.1} µs, Node {:.1} µs \
                 ({:.2}× less)",
                ours.cpu_per_delivery,
                node.cpu_per_delivery,
                node.cpu_per_delivery / ours.cpu_per_delivery
            );
        }
        _ => println!("\nratio: not available (a server was not measured or sustained no rate)"),
    }
    Ok(())
}

fn short_name(server: Server) -> &'static str {
    match server {
        Server::Nself => "nself",
        Server::Node => "node",
    }
}

/// One nself-realtime gateway on the harness stack.
async fn start_nself() -> Target {
    durable(Postgres::shared());
    let env: Vec<(&str, &str)> = BENCH_GATEWAY_ENV
        .iter()
        .copied()
        .chain([
            ("REALTIME_MAX_MESSAGES_PER_MINUTE", "100000000"),
            ("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "0"),
            ("REALTIME_ENABLE_PRESENCE", "false"),
            ("REALTIME_ENABLE_TYPING", "false"),
        ])
        .collect();
    let stack = Stack::start(1, &env).await;
    Target {
        server: Server::Nself,
        label: format!(
            "nself-realtime: 1 gateway, /socket.io/ (port {})",
            stack.gateways[0].port
        ),
        pids: gateway_pids(&stack),
        _running: Running::Stack(Box::new(stack)),
        room: None,
        rows: Vec::new(),
        misses: 0,
        failure: None,
    }
}

/// bench/node/reference-server.mjs.
async fn start_node() -> Target {
    match NodeServer::start().await {
        Ok(node) => Target {
            server: Server::Node,
            label: format!(
                "Node.js {} Socket.IO {} reference server: 1 process, ws transport (port {})",
                node.node_version, node.socketio_version, node.port
            ),
            pids: node
                .child
                .as_ref()
                .and_then(|child| child.id())
                .map(|pid| vec![("node".to_string(), pid)])
                .unwrap_or_default(),
            _running: Running::Node(Box::new(node)),
            room: None,
            rows: Vec::new(),
            misses: 0,
            failure: None,
        },
        Err(e) => Target {
            server: Server::Node,
            label: "Node.js Socket.IO reference server".into(),
            pids: Vec::new(),
            _running: Running::Node(Box::new(NodeServer::none())),
            room: None,
            rows: Vec::new(),
            misses: 0,
            failure: Some(format!("{e:#}")),
        },
    }
}

/// The reference server, killed when dropped (and exiting by itself if the bench dies: it
/// stops when its standard input, held here, closes).
struct NodeServer {
    child: Option<tokio::process::Child>,
    port: u16,
    node_version: String,
    socketio_version: String,
}

impl NodeServer {
    /// No server (it failed to start).
    fn none() -> NodeServer {
        NodeServer {
            child: None,
            port: 0,
            node_version: String::new(),
            socketio_version: String::new(),
        }
    }

    async fn start() -> anyhow::Result<NodeServer> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
        if !dir.join("node_modules").exists() {
            println!("  installing the reference server's packages: npm ci --prefix bench/node");
            let status = tokio::process::Command::new("npm")
                .arg("ci")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund", "--loglevel=error"])
                .status()
                .await
                .context("run npm (install Node.js and npm)")?;
            if !status.success() {
                bail!("npm ci --prefix bench/node failed: {status}");
            }
        }
        let node_version = tokio::process::Command::new("node")
            .arg("--version")
            .output()
            .await
            .context("run node (install Node.js)")?;
        let node_version = String::from_utf8_lossy(&node_version.stdout)
            .trim()
            .to_string();
        let socketio_version =
            std::fs::read_to_string(dir.join("node_modules/socket.io/package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|package| package["version"].as_str().map(str::to_string))
                .unwrap_or_else(|| "?".into());
        let port = free_port();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("reference-server.mjs"))
            .env("PORT", port.to_string())
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("STOP_ON_STDIN_CLOSE", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start node bench/node/reference-server.mjs")?;
        let stdout = child.stdout.take().context("node's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the reference server did not start listening within 30 s")??;
        match first {
            Some(line) if line.starts_with("listening") => {}
            other => bail!("the reference server did not start: {other:?}"),
        }
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(NodeServer {
            child: Some(child),
            port,
            node_version,
            socketio_version,
        })
    }
}

/// Connects `subscribers` sockets and the publisher to the target's server and joins them to
/// the room; the subscribers' readers start recording deliveries.
async fn open_room(target: &Target, subscribers: usize) -> anyhow::Result<Room> {
    if let Some(failure) = &target.failure {
        bail!("{failure}");
    }
    let port = match &target._running {
        Running::Stack(stack) => stack.gateways[0].port,
        Running::Node(node) => node.port,
    };
    let started = Instant::now();
    let jobs = (0..subscribers).map(|i| async move {
        let token = token(json!({"sub": format!("bench-{i}"), "role": "authenticated"}));
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut socket = SioSocket::connect(port, &token).await?;
            socket.join(ROOM).await?;
            anyhow::Ok(socket)
        })
        .await
        .context("no connect and join within 10 s")?
        .with_context(|| format!("subscriber {i}"))
    });
    let sockets: Vec<SioSocket> = futures::stream::iter(jobs)
        .buffered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!(
        "  {} sockets connected and joined in {:.1?}",
        sockets.len(),
        started.elapsed()
    );

    let histogram = Arc::new(RwLock::new(Arc::new(Histogram::new())));
    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(sockets.len() + 1);
    for socket in sockets {
        let (histogram, delivered, last_delivery) =
            (histogram.clone(), delivered.clone(), last_delivery.clone());
        tasks.push(tokio::spawn(socket.read_events(move |packet| {
            if !packet.starts_with(r#"42["message:new""#) {
                return;
            }
            if let Some(sent) = field_after(packet, r#""t":"#) {
                let now = now_micros();
                histogram
                    .read()
                    .expect("histogram lock")
                    .record(now.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
                last_delivery.fetch_max(now, Ordering::Relaxed);
            }
        })));
    }

    let publisher_token = token(json!({"sub": "bench-publisher", "role": "authenticated"}));
    let mut publisher = SioSocket::connect(port, &publisher_token)
        .await
        .context("publisher")?;
    publisher.join(ROOM).await.context("publisher")?;
    let writer = publisher.writer();
    // The publisher's own copies are drained; errors sent to it (a refused or throttled
    // message) are counted and the first one kept, to tell why deliveries are missing.
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    {
        let (errors, first_error) = (errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(publisher.read_events(move |packet| {
            if packet.starts_with(r#"42["error""#) {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error
                    .lock()
                    .expect("error lock")
                    .get_or_insert_with(|| packet.to_string());
            }
        })));
    }
    Ok(Room {
        writer,
        tasks,
        histogram,
        delivered,
        last_delivery,
        errors,
        first_error,
    })
}

/// Publishes at `rate` for `--seconds` into `room` and waits for the deliveries; `pids` are
/// the server's processes.
async fn measure_rate(
    room: &Room,
    pids: &[(String, u32)],
    rate: u64,
    args: &Args,
) -> anyhow::Result<Row> {
    let fresh = Arc::new(Histogram::new());
    *room.histogram.write().expect("histogram lock") = fresh.clone();
    room.delivered.store(0, Ordering::Relaxed);
    room.errors.store(0, Ordering::Relaxed);
    let messages = rate * args.seconds;
    let expected = messages * args.subscribers as u64;
    let cpu = CpuSplit::of_processes(pids.to_vec());
    let server_cpu = || -> f64 { pids.iter().map(|(_, pid)| process_cpu_seconds(*pid)).sum() };
    let server_cpu_start = server_cpu();
    let first_send = now_micros();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..messages {
        tick.tick().await;
        let data = format!(
            r#"{{"roomName":"{ROOM}","content":"x","metadata":{{"t":{}}}}}"#,
            now_micros()
        );
        room.writer.emit("message:send", &data).await?;
    }
    // Wait for the stragglers: until everything arrived or nothing arrives for 2 s.
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = room.delivered.load(Ordering::Relaxed);
        let last = room.last_delivery.load(Ordering::Relaxed).max(first_send);
        if now >= expected || (now == seen && now_micros().saturating_sub(last) > 2_000_000) {
            break;
        }
        seen = now;
    }
    let got = room.delivered.load(Ordering::Relaxed);
    let window = room
        .last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_send) as f64
        / 1e6;
    Ok(Row {
        rate,
        per_second: if window > 0.0 {
            got as f64 / window
        } else {
            0.0
        },
        delivered: got,
        expected,
        p50: fresh.quantile_ms(0.5),
        p99: fresh.quantile_ms(0.99),
        max: fresh.quantile_ms(1.0),
        cpu_per_delivery: (server_cpu() - server_cpu_start) * 1e6 / got.max(1) as f64,
        cpu: cpu.report(),
    })
}
