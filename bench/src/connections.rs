//! `realtime-bench connections`: how much gateway memory an idle joined socket costs.
//!
//! One gateway; `--sockets` WebSockets from source addresses spread over 127.0.0.x (so that the
//! load generator does not run out of ephemeral ports), each joined to one of 100 public
//! channels, then left idle. The gateway's RSS is read before the first socket and once every
//! socket is joined; the difference divided by the sockets is the cost of one connection
//! (kernel socket buffers are not in RSS and not counted).

use crate::load_client::raise_open_files_limit;
use crate::measure::rss_kib;
use crate::stack::{open_joined, start_stack};
use realtime_tests::token;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Idle joined sockets to hold.
    #[arg(long, default_value_t = 50_000)]
    sockets: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = raise_open_files_limit(2 * args.sockets as u64 + 10_000)?;
    let stack = start_stack(1).await;
    let gateway = &stack.gateways[0];
    let pid = gateway
        .pid()
        .ok_or_else(|| anyhow::anyhow!("gateway not running"))?;
    let apikey = token(json!({"role": "anon"}));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    println!(
        "connections: {} idle joined sockets on one gateway (open files limit {limit}); gateway RSS before: {before} KiB",
        args.sockets
    );
    let started = Instant::now();
    let sockets = open_joined(
        args.sockets,
        512,
        |_| gateway.port,
        &apikey,
        |i| format!("realtime:idle-{}", i % 100),
        |_| json!({"config": {"broadcast": {"self": false}}}),
    )
    .await?;
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
