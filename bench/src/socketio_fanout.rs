//! `realtime-bench socketio-fanout`: the fanout workload over Socket.IO, run against one
//! nself-realtime gateway and then against a plain Node.js Socket.IO server
//! (`bench/node/reference-server.mjs`: one Node process, socket.io 4.x pinned in its
//! package-lock.json, the `ws` transport, the architecture of the seeds' Socket.IO plugin), so
//! the two are measured by the same load generator on the same machine in one run.
//!
//! Each server gets one room, `bench`, with `--subscribers` sockets (each with its own HS256
//! token, `sub` = `bench-<i>`) and one publisher socket in it. For each rate in `--rates` the
//! publisher sends `message:send` for `--seconds`, each message carrying its send time on the
//! bench's clock (`metadata.t`, µs); every subscriber's `message:new` is a delivery, its latency
//! the arrival time minus that. Deliveries/s = deliveries ÷ (first send → last delivery); the
//! publisher's own copy (the sender is in the room) is drained but not counted. A rate is
//! *sustained* when every delivery arrived and p99 stayed under `--p99-limit-ms`; a server's
//! figure is its highest sustained deliveries/s, and the run ends with the ratio of ours to
//! Node's. A server's sweep stops at its first rate that is not sustained (`--all-rates` runs
//! them all).
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
use crate::socketio_client::SioSocket;
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
    /// Run every rate, not only up to a server's first unsustained one.
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

/// What one server's sweep gave: its label, and its rows or why it could not be measured.
struct Outcome {
    label: String,
    rows: anyhow::Result<Vec<Row>>,
}

impl Outcome {
    /// The sustained row with the most deliveries/s.
    fn best(&self, p99_limit_ms: f64) -> Option<&Row> {
        self.rows
            .as_ref()
            .ok()?
            .iter()
            .filter(|row| row.sustained(p99_limit_ms))
            .max_by(|a, b| a.per_second.total_cmp(&b.per_second))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = raise_open_files_limit(4 * args.subscribers as u64 + 10_000)?;
    println!(
        "socketio-fanout: {} subscribers + 1 publisher in one room, {} s per rate, \
         sustained = every delivery and p99 < {} ms (open files limit {limit})",
        args.subscribers, args.seconds, args.p99_limit_ms
    );
    let mut outcomes = Vec::new();
    for server in &args.servers {
        let outcome = match server {
            Server::Nself => run_nself(&args).await,
            Server::Node => run_node(&args).await,
        };
        if let Err(e) = &outcome.rows {
            println!("  {}: not measured: {e:#}", outcome.label);
        }
        outcomes.push(outcome);
    }

    println!("\n== summary ==");
    for outcome in &outcomes {
        println!("\n{}", outcome.label);
        match &outcome.rows {
            Ok(rows) => {
                println!("{HEADER}");
                for row in rows {
                    println!("{}", row.line(args.p99_limit_ms));
                }
                match outcome.best(args.p99_limit_ms) {
                    Some(best) => println!(
                        "highest sustained: {:.0} deliveries/s at {} publishes/s (p99 {:.1} ms)",
                        best.per_second, best.rate, best.p99
                    ),
                    None => println!("no rate sustained"),
                }
            }
            Err(e) => println!("not measured: {e:#}"),
        }
    }
    let best = |server: Server| {
        args.servers
            .iter()
            .position(|s| *s == server)
            .and_then(|i| outcomes[i].best(args.p99_limit_ms))
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

/// The sweep against one nself-realtime gateway.
async fn run_nself(args: &Args) -> Outcome {
    let label = "nself-realtime: 1 gateway, /socket.io/".to_string();
    println!("\n== {label} ==");
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
    let rows = sweep(stack.gateways[0].port, gateway_pids(&stack), args).await;
    if rows.is_err() {
        let log = stack.gateways[0].log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        for line in tail.into_iter().rev() {
            println!("  gateway log: {line}");
        }
    }
    Outcome { label, rows }
}

/// The sweep against bench/node/reference-server.mjs.
async fn run_node(args: &Args) -> Outcome {
    let mut label = "Node.js Socket.IO reference server".to_string();
    let rows = async {
        let node = NodeServer::start().await?;
        label = format!(
            "Node.js {} Socket.IO {} reference server: 1 process, ws transport",
            node.node_version, node.socketio_version
        );
        println!("\n== {label} ==");
        let pid = node.child.id().context("node exited")?;
        let rows = sweep(node.port, vec![("node".into(), pid)], args).await;
        node.stop().await;
        rows
    }
    .await;
    Outcome { label, rows }
}

/// The reference server, killed when dropped (and exiting by itself if the bench dies: it
/// stops when its standard input, held here, closes).
struct NodeServer {
    child: tokio::process::Child,
    port: u16,
    node_version: String,
    socketio_version: String,
}

impl NodeServer {
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
            child,
            port,
            node_version,
            socketio_version,
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Opens the room's sockets on `port`, then measures each rate; `server` names the server's
/// processes for the CPU split.
async fn sweep(port: u16, server: Vec<(String, u32)>, args: &Args) -> anyhow::Result<Vec<Row>> {
    let started = Instant::now();
    let jobs = (0..args.subscribers).map(|i| async move {
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

    println!("{HEADER}");
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let fresh = Arc::new(Histogram::new());
        *histogram.write().expect("histogram lock") = fresh.clone();
        delivered.store(0, Ordering::Relaxed);
        errors.store(0, Ordering::Relaxed);
        let messages = rate * args.seconds;
        let expected = messages * args.subscribers as u64;
        let cpu = CpuSplit::start(server.clone());
        let server_cpu = || -> f64 {
            server
                .iter()
                .map(|(_, pid)| process_cpu_seconds(*pid))
                .sum()
        };
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
            writer.emit("message:send", &data).await?;
        }
        // Wait for the stragglers: until everything arrived or nothing arrives for 2 s.
        let mut seen = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = delivered.load(Ordering::Relaxed);
            let quiet =
                now_micros().saturating_sub(last_delivery.load(Ordering::Relaxed).max(first_send));
            if now >= expected || (now == seen && quiet > 2_000_000) {
                break;
            }
            seen = now;
        }
        let got = delivered.load(Ordering::Relaxed);
        let window = last_delivery
            .load(Ordering::Relaxed)
            .saturating_sub(first_send) as f64
            / 1e6;
        let row = Row {
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
        };
        println!("{}", row.line(args.p99_limit_ms));
        let refused = errors.load(Ordering::Relaxed);
        if refused > 0 {
            println!(
                "  the publisher got {refused} error events, the first: {}",
                first_error
                    .lock()
                    .expect("error lock")
                    .as_deref()
                    .unwrap_or("")
            );
        }
        let sustained = row.sustained(args.p99_limit_ms);
        rows.push(row);
        if !sustained && !args.all_rates {
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
    Ok(rows)
}
