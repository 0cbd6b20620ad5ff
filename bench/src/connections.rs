//! `realtime-bench connections`: how much gateway memory an idle joined socket costs.
//!
//! One gateway; `--sockets` WebSockets from source addresses spread over 127.0.0.x (so that the
//! load generator does not run out of ephemeral ports), each joined to one of 100 public
//! channels, then left idle. The gateway's RSS is read before the first socket and once every
//! socket is joined; the difference divided by the sockets is the cost of one connection
//! (kernel socket buffers are not in RSS and not counted).
//!
//! `--protocol socketio` holds Socket.IO sockets instead (each its own user, joined to a room
//! with `room:join`). Presence is off for that run: with it, every join would queue a
//! `user:joined` for each member of the room on sockets that never read, and the queued frames
//! would be counted as per-connection memory.

use crate::load_client::raise_open_files_limit;
use crate::measure::rss_kib;
use crate::socketio_client::SioSocket;
use crate::stack::{durable, open_joined, BENCH_GATEWAY_ENV};
use futures::StreamExt;
use realtime_tests::{token, Postgres, Stack};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Phoenix,
    Socketio,
}

#[derive(clap::Args)]
pub struct Args {
    /// Idle joined sockets to hold.
    #[arg(long, default_value_t = 50_000)]
    sockets: usize,
    /// The protocol the sockets speak.
    #[arg(long, value_enum, default_value = "phoenix")]
    protocol: Protocol,
}

/// Something that keeps a socket open until dropped.
enum Held {
    Phoenix(Vec<crate::load_client::LoadSocket>),
    SocketIo(Vec<SioSocket>),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::Phoenix(sockets) => sockets.len(),
            Held::SocketIo(sockets) => sockets.len(),
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = raise_open_files_limit(2 * args.sockets as u64 + 10_000)?;
    durable(Postgres::shared());
    let env: Vec<(&str, &str)> = match args.protocol {
        Protocol::Phoenix => BENCH_GATEWAY_ENV.to_vec(),
        Protocol::Socketio => BENCH_GATEWAY_ENV
            .iter()
            .copied()
            .chain([("REALTIME_ENABLE_PRESENCE", "false")])
            .collect(),
    };
    let stack = Stack::start(1, &env).await;
    let gateway = &stack.gateways[0];
    let pid = gateway
        .pid()
        .ok_or_else(|| anyhow::anyhow!("gateway not running"))?;
    let apikey = token(json!({"role": "anon"}));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let protocol = match args.protocol {
        Protocol::Phoenix => "Phoenix",
        Protocol::Socketio => "Socket.IO (presence off)",
    };
    println!(
        "connections: {} idle joined {protocol} sockets on one gateway (open files limit {limit}); gateway RSS before: {before} KiB",
        args.sockets
    );
    let started = Instant::now();
    let sockets = match args.protocol {
        Protocol::Phoenix => Held::Phoenix(
            open_joined(
                args.sockets,
                512,
                |_| gateway.port,
                &apikey,
                |i| format!("realtime:idle-{}", i % 100),
                |_| json!({"config": {"broadcast": {"self": false}}}),
            )
            .await?,
        ),
        Protocol::Socketio => {
            let port = gateway.port;
            let jobs = (0..args.sockets).map(|i| async move {
                let user = token(json!({"role": "authenticated", "sub": format!("idle-{i}")}));
                let mut socket = SioSocket::connect(port, &user).await?;
                socket.join(&format!("idle-{}", i % 100)).await?;
                anyhow::Ok(socket)
            });
            let sockets: Vec<SioSocket> = futures::stream::iter(jobs)
                .buffered(512)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<_>>()?;
            Held::SocketIo(sockets)
        }
    };
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per_socket = (after.saturating_sub(before) as f64 * 1024.0) / sockets.len() as f64;
    println!("| sockets | opened and joined in | gateway RSS before | after | per connection |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} | {:.1?} ({:.0}/s) | {:.1} MiB | {:.1} MiB | {:.0} bytes ({:.2} KiB) |",
        sockets.len(),
        opened,
        sockets.len() as f64 / opened.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_socket,
        per_socket / 1024.0
    );
    drop(sockets);
    Ok(())
}
