//! `realtime-bench joins`: how many channel joins per second one gateway completes, with and
//! without Row Level Security authorization.
//!
//! `--users` sockets, each with its own user's token, join `--channels-per-user` channels one
//! after another, all sockets at once, in three rounds:
//! - private channels of the seeds (`config.private: true`, a `realtime.channels` row): the
//!   channel rules, a query on `realtime.channels` under the user's claims (RLS: members only;
//!   every user is a member of its own channels, created beforehand);
//! - private topics with no channel row, authorized as in Supabase by the policies on
//!   `realtime.messages` of its docs ([`crate::rooms_policies`]: every user a member of its own
//!   topics in `rooms_users`), probed in one rolled-back transaction per join;
//! - public channels, which need no authorization query.
//!
//! Joins/s = joins ÷ wall time; latency is from sending a join to its reply.

use crate::load_client::{raise_open_files_limit, LoadSocket};
use crate::measure::{now_micros, CpuSplit, Histogram};
use crate::rooms_policies::{add_members, install, user_token};
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
    install(&db).await?;
    add_members(
        &db,
        (0..args.users)
            .flat_map(|u| (0..args.channels_per_user).map(move |c| (u, format!("member-{u}-{c}")))),
    )
    .await?;
    println!(
        "joins: {} sockets × {} channels on one gateway",
        args.users, args.channels_per_user
    );
    println!("| joins | authorization | joins/s | p50 | p99 | CPU split |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for mode in [Mode::ChannelRules, Mode::MessagesPolicies, Mode::Public] {
        let histogram = Arc::new(Histogram::new());
        let cpu = CpuSplit::of_processes(gateway_pids(&stack));
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.users)
            .map(|u| {
                let histogram = histogram.clone();
                let channels = args.channels_per_user;
                tokio::spawn(async move {
                    let mut socket = LoadSocket::connect(port, &mode.token(u)).await?;
                    for c in 0..channels {
                        let sent = now_micros();
                        socket.join(&mode.topic(u, c), mode.payload()).await?;
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
            mode.describe(),
            joins as f64 / elapsed.as_secs_f64(),
            histogram.quantile_ms(0.5),
            histogram.quantile_ms(0.99),
            cpu.report()
        );
        drop(sockets);
    }
    Ok(())
}

/// What authorizes a round's joins.
#[derive(Clone, Copy)]
enum Mode {
    ChannelRules,
    MessagesPolicies,
    Public,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::ChannelRules => "channel rules (RLS on realtime.channels)",
            Mode::MessagesPolicies => "Supabase's policies on realtime.messages",
            Mode::Public => "none (public)",
        }
    }

    /// User `u`'s token: the policies of Supabase's docs need a UUID `sub`.
    fn token(self, u: usize) -> String {
        match self {
            Mode::MessagesPolicies => user_token(u),
            _ => token(json!({"role": "authenticated", "sub": format!("user-{u}")})),
        }
    }

    fn topic(self, u: usize, c: usize) -> String {
        match self {
            Mode::ChannelRules => format!("realtime:room-{u}-{c}"),
            Mode::MessagesPolicies => format!("realtime:member-{u}-{c}"),
            Mode::Public => format!("realtime:public-{u}-{c}"),
        }
    }

    fn payload(self) -> serde_json::Value {
        json!({"config": {"private": !matches!(self, Mode::Public)}})
    }
}
