//! `realtime-bench changes-rls`: postgres_changes on a table with Row Level Security, every
//! subscriber a different user.
//!
//! One gateway; `--subscribers` sockets, user `user-<i>` each, subscribed to INSERTs of
//! `public.bench_rls`, whose policy lets a user see only the rows it owns. Rows are inserted at
//! `--rate` single-row transactions per second for `--seconds`, owners in turn, so each row is
//! for exactly one subscriber. Reported: rows delivered/s, commit → client latency (the event's
//! `commit_timestamp` against the wall clock at arrival; one machine, one clock), rows a
//! subscriber was not allowed to see (must be 0), and the visibility queries the gateway issued
//! per second (`realtime_gateway_rls_queries_total`), beside rows × subscribers — what checking
//! each row for each subscriber would cost.

use crate::load_client::raise_open_files_limit;
use crate::measure::{wall_micros, CpuSplit, Histogram};
use crate::stack::{gateway_pids, open_joined, start_stack};
use realtime_tests::token;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Subscribers, one user each.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Inserts per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    raise_open_files_limit(4 * args.subscribers as u64 + 10_000)?;
    let stack = start_stack(1).await;
    stack
        .sql(
            "CREATE TABLE public.bench_rls (
                 id bigserial PRIMARY KEY, owner text NOT NULL, body text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             ALTER TABLE public.bench_rls ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_rows ON public.bench_rls FOR SELECT TO authenticated
                 USING (owner = realtime.user_id());
             GRANT SELECT ON public.bench_rls TO authenticated;",
        )
        .await;
    stack.publish("public.bench_rls").await;
    let port = stack.gateways[0].port;
    println!(
        "changes-rls: {} subscribers (distinct users) on one gateway, {} inserts/s for {} s",
        args.subscribers, args.rate, args.seconds
    );

    let subscribers = args.subscribers;
    let sockets = open_joined(
        subscribers,
        128,
        |_| port,
        &token(json!({"role": "anon"})),
        |i| format!("realtime:rls-{i}"),
        |i| {
            json!({
                "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "bench_rls"}]},
                "access_token": token(json!({"role": "authenticated", "sub": format!("user-{i}")})),
            })
        },
    )
    .await?;
    let histogram = Arc::new(Histogram::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let foreign = Arc::new(AtomicU64::new(0));
    for (i, socket) in sockets.into_iter().enumerate() {
        let (histogram, delivered, foreign) =
            (histogram.clone(), delivered.clone(), foreign.clone());
        let mine = format!(r#""owner":"user-{i}""#);
        tokio::spawn(socket.read_texts(move |text| {
            if !text.contains(r#""event":"postgres_changes""#) {
                return;
            }
            let now = wall_micros();
            if !text.contains(&mine) {
                foreign.fetch_add(1, Ordering::Relaxed);
            }
            let commit = text
                .split_once(r#""commit_timestamp":""#)
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(at, _)| {
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .ok()
                });
            if let Some(commit) = commit {
                let micros = (commit.unix_timestamp_nanos() / 1000) as u64;
                histogram.record(now.saturating_sub(micros));
            }
            delivered.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // Inserters: 8 connections, each inserting its share of the rate, one row per transaction.
    const RLS_QUERIES: &str = "realtime_gateway_rls_queries_total";
    let rls_queries = || async {
        stack.gateways[0]
            .metric(RLS_QUERIES)
            .await
            .unwrap_or(f64::NAN)
    };
    let queries_before = rls_queries().await;
    let cpu = CpuSplit::of_processes(gateway_pids(&stack));
    let started = Instant::now();
    let total = args.rate * args.seconds;
    let writers = 8u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = stack.db.connect().await;
        let rate = args.rate;
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO public.bench_rls (owner, body) VALUES ($1, 'x')")
                .await?;
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(writers as f64 / rate as f64));
            let mut n = w;
            while n < total {
                tick.tick().await;
                let owner = format!("user-{}", n % subscribers as u64);
                client.execute(&insert, &[&owner]).await?;
                n += writers;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let inserted_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let queries = rls_queries().await - queries_before;
    let got = delivered.load(Ordering::Relaxed);
    println!("| inserts/s | rows delivered | delivered/s | p50 | p99 | foreign rows | RLS queries/s | rows × subscribers/s | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {:.0} | {got} of {total} | {:.0} | {:.1} ms | {:.1} ms | {} | {:.0} | {:.0} | {} |",
        total as f64 / inserted_in.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        histogram.quantile_ms(0.5),
        histogram.quantile_ms(0.99),
        foreign.load(Ordering::Relaxed),
        queries / elapsed.as_secs_f64(),
        (total * subscribers as u64) as f64 / inserted_in.as_secs_f64(),
        cpu.report()
    );
    Ok(())
}
