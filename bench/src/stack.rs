//! What the scenarios start from: Postgres with its durable defaults ([`durable`]), and for the
//! gateway scenarios the harness stack (private Postgres and NATS, the
//! CDC, gateways of the release build) with Postgres' durable defaults and gateway limits
//! raised for the load, and a way to open many joined load sockets.

use crate::load_client::LoadSocket;
use futures::StreamExt;
use realtime_tests::{Postgres, Stack};

/// The gateway settings every gateway scenario uses: room for the load, logs at warn, and a
/// heartbeat long enough that idle load sockets are not timed out while the load builds.
pub const BENCH_GATEWAY_ENV: &[(&str, &str)] = &[
    ("REALTIME_MAX_CONNECTIONS", "200000"),
    ("REALTIME_MAX_EVENTS_PER_SECOND", "100000"),
    ("REALTIME_HEARTBEAT_INTERVAL", "300"),
    ("REALTIME_SEND_QUEUE", "4096"),
    // The load comes from a few loopback addresses at thousands of connections a minute.
    ("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "0"),
    ("LOG_LEVEL", "warn"),
];

/// Opens `count` sockets (`parallel` at a time), `gateway_of(i)` choosing the port, each joined
/// to `topic(i)` with `payload(i)`; socket `i` is at index `i`.
pub async fn open_joined(
    count: usize,
    parallel: usize,
    gateway_of: impl Fn(usize) -> u16,
    apikey: &str,
    topic: impl Fn(usize) -> String,
    payload: impl Fn(usize) -> serde_json::Value,
) -> anyhow::Result<Vec<LoadSocket>> {
    let jobs = (0..count).map(|i| {
        let (port, topic, payload) = (gateway_of(i), topic(i), payload(i));
        let apikey = apikey.to_string();
        async move {
            let mut socket = LoadSocket::connect(port, &apikey).await?;
            socket.join(&topic, payload).await?;
            anyhow::Ok(socket)
        }
    });
    futures::stream::iter(jobs)
        .buffered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Turns the harness' speed settings back to Postgres' defaults (`fsync`, `synchronous_commit`,
/// `full_page_writes` on) and restarts it: with `synchronous_commit = off` a commit's WAL waits
/// up to 200 ms for the WAL writer before logical decoding can stream it, which would be
/// measured as gateway latency.
pub fn durable(pg: &Postgres) {
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        pg.psql("postgres", &format!("ALTER SYSTEM SET {setting} = on"));
    }
    pg.restart();
}

/// The stack with `gateways` gateways on a durable Postgres.
pub async fn start_stack(gateways: usize) -> Stack {
    durable(Postgres::shared());
    Stack::start(gateways, BENCH_GATEWAY_ENV).await
}

/// The gateways' process ids, labelled `gateway <n>`, for a [`crate::measure::CpuSplit`].
pub fn gateway_pids(stack: &Stack) -> Vec<(String, u32)> {
    stack
        .gateways
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.pid().map(|pid| (format!("gateway {i}"), pid)))
        .collect()
}
