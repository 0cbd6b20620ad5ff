//! `realtime-bench replay`: broadcast replay at join (`config.broadcast.replay: {since,
//! limit}` on a private channel): how long from sending the join until the last replayed
//! message has arrived, and how many such joins a gateway completes per second.
//!
//! One gateway on a durable Postgres. `--topics` private topics `replay:<k>`, each holding
//! `--stored` broadcasts sent with `realtime.send` beforehand. `--sockets` sockets (one user
//! each, a member of every topic under the policies of Supabase's docs,
//! [`crate::rooms_policies`]) each join `--joins-per-socket` topics in turn, asking for the
//! last `--limit` messages of the last hour, wait for the join's reply and every replayed
//! message (`meta.replayed: true`), then leave; as fast as they can, or at `--rate` joins per
//! second in all (to measure latency below saturation). Reported: joins/s (joins ÷ wall time),
//! join → reply and join → last replayed message (p50, p99), and joins that did not get
//! exactly `min(stored, limit)` replayed messages (must be 0).

use crate::load_client::{raise_open_files_limit, LoadSocket};
use crate::measure::{ms, now_micros, wall_micros, CpuSplit, Histogram};
use crate::rooms_policies::{add_members, install, user_token};
use crate::stack::{gateway_pids, start_stack};
use anyhow::{bail, Context};
use realtime_tests::token;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Private topics, each with `--stored` messages.
    #[arg(long, default_value_t = 100)]
    topics: usize,
    /// Messages stored in each topic.
    #[arg(long, default_value_t = 30)]
    stored: usize,
    /// Messages asked for at each join (1 to 25).
    #[arg(long, default_value_t = 25)]
    limit: usize,
    /// Sockets joining at once (one user each).
    #[arg(long, default_value_t = 50)]
    sockets: usize,
    /// Joins each socket makes, one after another.
    #[arg(long, default_value_t = 40)]
    joins_per_socket: usize,
    /// Joins per second over all sockets (0: each socket joins again as soon as it left).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// The joins' figures, shared by the sockets' tasks.
#[derive(Default)]
struct Tally {
    to_reply: Histogram,
    to_last: Histogram,
    /// Joins that got a different number of replayed messages than expected.
    wrong_count: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(1..=25).contains(&args.limit) || args.topics == 0 || args.sockets == 0 {
        bail!("--limit must be 1 to 25, --topics and --sockets at least 1");
    }
    raise_open_files_limit(4 * args.sockets as u64 + 10_000)?;
    let stack = start_stack(1).await;
    let db = stack.db.connect().await;
    install(&db).await?;
    let topic = |k: usize| format!("replay:{k}");
    add_members(
        &db,
        (0..args.sockets).flat_map(|u| (0..args.topics).map(move |k| (u, topic(k)))),
    )
    .await?;
    db.execute(
        "SELECT realtime.send(jsonb_build_object('i', i), 'stored', 'replay:' || k)
           FROM generate_series(0, $1::int - 1) k, generate_series(1, $2::int) i",
        &[&(args.topics as i32), &(args.stored as i32)],
    )
    .await?;
    let expected = args.stored.min(args.limit);
    let pace = match args.rate {
        0 => "as fast as they go".to_string(),
        rate => format!("{rate} joins/s in all"),
    };
    println!(
        "replay: {} sockets × {} joins on one gateway ({pace}), {} private topics of {} stored \
         messages, {expected} replayed per join (limit {})",
        args.sockets, args.joins_per_socket, args.topics, args.stored, args.limit
    );
    let port = stack.gateways[0].port;
    let since_ms = wall_micros() / 1000 - 3_600_000;
    let tally = Arc::new(Tally::default());
    let cpu = CpuSplit::of_processes(gateway_pids(&stack));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.sockets)
        .map(|u| {
            let tally = tally.clone();
            let (joins, topics, limit) = (args.joins_per_socket, args.topics, args.limit);
            // Socket u joins at its share of the rate, its ticks offset by u joins.
            let (period, offset) = match args.rate {
                0 => (Duration::from_micros(1), Duration::ZERO),
                rate => (
                    Duration::from_secs_f64(args.sockets as f64 / rate as f64),
                    Duration::from_secs_f64(u as f64 / rate as f64),
                ),
            };
            tokio::spawn(async move {
                let mut socket = LoadSocket::connect(port, &token(json!({"role": "anon"}))).await?;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for j in 0..joins {
                    tick.tick().await;
                    let topic = format!("realtime:replay:{}", (u * joins + j) % topics);
                    let payload = json!({
                        "config": {"private": true, "broadcast": {"replay": {"since": since_ms, "limit": limit}}},
                        "access_token": user_token(u),
                    });
                    let replayed = join_with_replay(&mut socket, &topic, payload, expected, &tally).await?;
                    if replayed != expected {
                        tally.wrong_count.fetch_add(1, Ordering::Relaxed);
                    }
                    let join_ref = socket.join_ref.take();
                    let leave = socket
                        .push(join_ref.as_deref(), &topic, "phx_leave", json!({}))
                        .await?;
                    socket.reply_to(&leave).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let joins = args.sockets * args.joins_per_socket;
    println!("| joins | joins/s | join → reply p50 | p99 | join → last replayed p50 | p99 | joins without {expected} replayed | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {joins} | {:.0} | {} | {} | {} | {} | {} | {} |",
        joins as f64 / elapsed.as_secs_f64(),
        ms(tally.to_reply.quantile_ms(0.5)),
        ms(tally.to_reply.quantile_ms(0.99)),
        ms(tally.to_last.quantile_ms(0.5)),
        ms(tally.to_last.quantile_ms(0.99)),
        tally.wrong_count.load(Ordering::Relaxed),
        cpu.report()
    );
    Ok(())
}

/// Joins `topic` and reads until its reply and the `expected` replayed messages came (the
/// gateway sends the reply first, then the replay, then live messages); records the two
/// latencies and returns how many messages were replayed.
async fn join_with_replay(
    socket: &mut LoadSocket,
    topic: &str,
    payload: serde_json::Value,
    expected: usize,
    tally: &Tally,
) -> anyhow::Result<usize> {
    let sent = now_micros();
    let join_ref = socket.send_join(topic, payload).await?;
    let reply = socket.reply_to(&join_ref).await?;
    if !reply.contains(r#""status":"ok""#) {
        bail!("join of {topic} refused: {reply}");
    }
    tally.to_reply.record(now_micros() - sent);
    socket.join_ref = Some(join_ref);
    // The replay ends at the expected count, at a frame of this topic other than a replayed
    // broadcast once the replay began, or after a quiet 2 s.
    let mut replayed = 0;
    let mut last = sent;
    let topic_field = format!(r#""topic":"{topic}""#);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), socket.next_text());
        let Ok(text) = next.await else { break };
        let text = text.context("read the replay")?;
        if text.contains(&topic_field) && text.contains(r#""replayed":true"#) {
            replayed += 1;
            last = now_micros();
            if replayed == expected {
                break;
            }
        }
        if replayed > 0 && text.contains(&topic_field) && !text.contains(r#""replayed":true"#) {
            break;
        }
    }
    tally.to_last.record(last - sent);
    Ok(replayed)
}
