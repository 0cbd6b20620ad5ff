//! `realtime-bench joins`: how many channel joins per second one gateway completes, with and
//! without Row Level Security authorization.
//!
//! `--users` sockets, each with its own user's token, join `--channels-per-user` channels one
//! after another, all sockets at once. *Private* joins (`config.private: true`) are authorized
//! by a query on `realtime.channels` under the user's claims (RLS: members only; every user is
//! a member of its own channels, created beforehand); *public* joins are the same load on
//! public channels, which need no query. Joins/s = joins ÷ wall time; latency is from sending a
//! join to its reply.

use crate::load_client::{raise_open_files_limit, LoadSocket};
use crate::measure::{now_micros, CpuSplit, Histogram};
use crate::stack::{gateway_pids, start_stack};
use realtime_tests::token;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Sockets (one user each).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Channels each socket joins.
    #[arg(long, default_value_t = 50)]
    channels_per_user: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    raise_open_files_limit(4 * args.users as u64 + 10_000)?;
    let stack = start_stack(1).await;
    let port = stack.gateways[0].port;
    let db = stack.db.connect().await;
    db.execute(
        "WITH made AS (
             INSERT INTO realtime.channels (name, slug, type, created_by)
             SELECT 'room', format('room-%s-%s', u, c), 'private', format('user-%s', u)
             FROM generate_series(0, $1::int - 1) u, generate_series(0, $2::int - 1) c
             RETURNING id, created_by)
         INSERT INTO realtime.channel_members (channel_id, user_id, role)
         SELECT id, created_by, 'owner' FROM made",
        &[&(args.users as i32), &(args.channels_per_user as i32)],
    )
    .await?;
    db.batch_execute("ANALYZE realtime.channels; ANALYZE realtime.channel_members;")
        .await?;
    println!(
        "joins: {} sockets × {} channels on one gateway",
        args.users, args.channels_per_user
    );
    println!("| joins | authorization | joins/s | p50 | p99 | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for private in [true, false] {
        let histogram = Arc::new(Histogram::new());
        let cpu = CpuSplit::start(gateway_pids(&stack));
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.users)
            .map(|u| {
                let histogram = histogram.clone();
                let channels = args.channels_per_user;
                tokio::spawn(async move {
                    let user = token(json!({"role": "authenticated", "sub": format!("user-{u}")}));
                    let mut socket = LoadSocket::connect(port, &user).await?;
                    for c in 0..channels {
                        let topic = if private {
                            format!("realtime:room-{u}-{c}")
                        } else {
                            format!("realtime:public-{u}-{c}")
                        };
                        let sent = now_micros();
                        socket
                            .join(&topic, json!({"config": {"private": private}}))
                            .await?;
                        histogram.record(now_micros() - sent);
                    }
                    anyhow::Ok(socket)
                })
            })
            .collect();
        let mut sockets = Vec::new();
        for task in tasks {
            sockets.push(task.await??);
        }
        let elapsed = started.elapsed();
        let joins = args.users * args.channels_per_user;
        println!(
            "| {joins} | {} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            if private {
                "RLS on realtime.channels"
            } else {
                "none (public)"
            },
            joins as f64 / elapsed.as_secs_f64(),
            histogram.quantile_ms(0.5),
            histogram.quantile_ms(0.99),
            cpu.report()
        );
        drop(sockets);
    }
    Ok(())
}
