//! `nself-realtime status` (seed 002): is the realtime system up, and how big is it.
//!
//! The gateways are asked through their control API ([`super::live`]: every gateway over NATS,
//! else the one at `REALTIME_URL`); over HTTP without a token at hand, `/health` (which needs
//! none) still tells whether it runs and how many connections it holds. Channels and
//! subscriptions come from the database when there is one (`DATABASE_URL`, or `up`'s local
//! cluster); presence from the shared presence store. A background service started by
//! `nself-realtime start` in `--dir` is named too.
//!
//! When no gateway answers, the report says how it tried (`✗ WebSocket server not reachable
//! (…)`), still shows what the database knows, and the command exits 1.

use super::live::{self, Gateways, LiveArgs, Problem};
use super::presence;
use super::stats::{self, DatabaseArgs, DbFigures};
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::control::Command;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// One gateway as status shows it.
struct Gateway {
    id: String,
    uptime: u64,
    connections: u64,
}

/// What the gateways said, or why they said nothing.
struct Reached {
    gateways: Vec<Gateway>,
    /// Users and channels in the presence store, when it could be read.
    presence: Option<(usize, usize)>,
}

async fn reach(live_args: &LiveArgs) -> Result<(Reached, String), Problem> {
    let gateways = Gateways::connect(live_args).await?;
    let via = gateways.via.clone();
    if !gateways.can_control() {
        let health = gateways.health().await?.unwrap_or(Value::Null);
        let gateway = Gateway {
            id: health["gateway_id"].as_str().unwrap_or("?").to_string(),
            uptime: health["uptime_seconds"].as_u64().unwrap_or(0),
            connections: health["connections"].as_u64().unwrap_or(0),
        };
        return Ok((
            Reached {
                gateways: vec![gateway],
                presence: None,
            },
            via,
        ));
    }
    let answers = gateways.ask_all(&Command::Stats).await?;
    let list = answers
        .iter()
        .filter_map(|a| {
            let result = a.outcome.as_ref().ok()?;
            Some(Gateway {
                id: result["gateway"].as_str().unwrap_or(&a.gateway).to_string(),
                uptime: result["uptime_seconds"].as_u64().unwrap_or(0),
                connections: stats::sum(&[result], &["connections", "active"]),
            })
        })
        .collect();
    let presence = match presence::snapshot(&gateways, None, None).await {
        Ok(entries) => {
            let users = presence::per_user(&entries).len();
            let channels: std::collections::BTreeSet<&str> =
                entries.iter().map(|e| e.channel.as_str()).collect();
            Some((users, channels.len()))
        }
        Err(_) => None,
    };
    Ok((
        Reached {
            gateways: list,
            presence,
        },
        via,
    ))
}

fn channel_breakdown(db: &DbFigures) -> String {
    let mut parts = vec![
        format!("{} public", super::thousands(db.of_type("public"))),
        format!("{} private", super::thousands(db.of_type("private"))),
        format!("{} presence", super::thousands(db.of_type("presence"))),
    ];
    if db.of_type("direct") > 0 {
        parts.push(format!("{} direct", super::thousands(db.of_type("direct"))));
    }
    parts.join(", ")
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let reached = match reach(&args.live).await {
        Ok(reached) => Ok(reached),
        Err(Problem::Usage(e)) => return Err(CliError::usage(e)),
        Err(Problem::Unreachable(how)) => Err(how),
        Err(Problem::Runtime(e)) => Err(format!("{e:#}")),
    };
    let db = args.database.figures(&args.live.dir).await?;
    let background = super::service::running(&args.live.dir);
    let log = args.live.dir.join(super::service::LOG_FILE);

    if json {
        let mut value = json!({
            "running": reached.is_ok(),
            "channels": db.as_ref().map(|d| json!({
                "total": d.channel_total(),
                "public": d.of_type("public"),
                "private": d.of_type("private"),
                "presence": d.of_type("presence"),
                "direct": d.of_type("direct"),
            })),
            "subscriptions": db.as_ref().map(|d| d.subscriptions),
            "background": background.map(|pid| json!({"pid": pid, "log": log})),
        });
        match &reached {
            Ok((reached, via)) => {
                value["via"] = json!(via);
                value["gateways"] = reached
                    .gateways
                    .iter()
                    .map(|g| json!({"id": g.id, "uptime_seconds": g.uptime, "connections": g.connections}))
                    .collect();
                value["connections"] =
                    json!(reached.gateways.iter().map(|g| g.connections).sum::<u64>());
                value["presence"] = match reached.presence {
                    Some((users, channels)) => {
                        json!({"enabled": true, "users": users, "channels": channels})
                    }
                    None => json!({"enabled": true}),
                };
            }
            Err(how) => value["reason"] = json!(how),
        }
        println!("{value}");
    } else {
        println!("Real-Time System Status");
        println!();
        match &reached {
            Ok((reached, via)) => {
                let count = reached.gateways.len();
                println!(
                    "✓ WebSocket server running ({count} gateway{} via {via})",
                    if count == 1 { "" } else { "s" }
                );
                for gateway in &reached.gateways {
                    println!(
                        "    {}  up {}  {}",
                        gateway.id,
                        live::uptime(gateway.uptime),
                        super::counted(gateway.connections as i64, "connection", "connections")
                    );
                }
            }
            Err(how) => println!("✗ WebSocket server not reachable ({how})"),
        }
        if let Some(pid) = background {
            println!(
                "✓ Running in the background (pid {pid}, log {})",
                log.display()
            );
        }
        if let Ok((reached, _)) = &reached {
            let active: u64 = reached.gateways.iter().map(|g| g.connections).sum();
            println!(
                "✓ {}",
                super::counted(active as i64, "active connection", "active connections")
            );
        }
        match &db {
            Some(db) => {
                println!(
                    "✓ {} ({})",
                    super::counted(db.channel_total(), "channel", "channels"),
                    channel_breakdown(db)
                );
                println!(
                    "✓ {}",
                    super::counted(
                        db.subscriptions,
                        "active subscription",
                        "active subscriptions"
                    )
                );
            }
            None => println!("- Channels and subscriptions: n/a (set DATABASE_URL)"),
        }
        if let Ok((reached, _)) = &reached {
            match reached.presence {
                Some((users, channels)) => println!(
                    "✓ Presence tracking enabled ({} in {})",
                    super::counted(users as i64, "user", "users"),
                    super::counted(channels as i64, "channel", "channels")
                ),
                None => println!("✓ Presence tracking enabled"),
            }
        }
    }
    match reached {
        Ok(_) => Ok(()),
        Err(_) => Err(CliError::runtime(anyhow!(
            "no gateway is reachable; start one (`nself-realtime start`, `up` or `gateway`) or point NATS_URL/REALTIME_URL at it"
        ))),
    }
}
