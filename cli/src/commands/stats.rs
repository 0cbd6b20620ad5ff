//! `nself-realtime stats` (seed 002): figures of the running system, from where each one lives.
//!
//! * The gateways (their control API, summed over every gateway that answers): connections,
//!   channels with subscribers, chat messages sent (the nself API), broadcasts sent by clients,
//!   errors and table changes delivered. They count since each gateway started (no 24-hour window is kept), and the
//!   labels say so; the peak is each gateway's own peak, summed when there are several, which
//!   can exceed the true peak of the whole.
//! * The database (`DATABASE_URL`, or the local cluster of `up`): channels by type, the
//!   subscriptions of the CDC, the tables its publications hold, and persisted messages of the
//!   last 24 hours.
//! * The presence store: users tracked and online.
//!
//! A figure that is not available is shown as `n/a` with what would provide it; seed 002's
//! average latency, delivered messages and heartbeats are not measured here and are left out.
//!
//! [`DbFigures`] is shared with `status`.

use super::database::OptionalDatabase;
use super::live::{Gateways, LiveArgs};
use super::presence;
use super::{query_failed, thousands};
use crate::exit::CliError;
use nself_realtime_gateway::control::Command;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// The optional database and the publication whose tables are monitored.
#[derive(clap::Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    database: OptionalDatabase,
    /// The CDC's publication (and the base name of its per-operation publications).
    #[arg(long, env = "REALTIME_PUBLICATION", default_value = nself_realtime_shared::config::DEFAULT_PUBLICATION)]
    publication: String,
}

/// What the database says.
#[derive(Debug, Clone, Default)]
pub struct DbFigures {
    /// Channels by type (`public`, `private`, `presence`, `direct`).
    pub channels: BTreeMap<String, i64>,
    /// Rows of `realtime.subscriptions`.
    pub subscriptions: i64,
    /// Distinct tables in the CDC's publications.
    pub tables: i64,
    /// Messages of `realtime.messages` sent in the last 24 hours and not deleted.
    pub messages_24h: i64,
}

impl DbFigures {
    pub fn channel_total(&self) -> i64 {
        self.channels.values().sum()
    }

    pub fn of_type(&self, kind: &str) -> i64 {
        self.channels.get(kind).copied().unwrap_or(0)
    }
}

impl DatabaseArgs {
    /// The database figures, or `None` without a database.
    pub async fn figures(&self, dir: &std::path::Path) -> Result<Option<DbFigures>, CliError> {
        let Some(client) = self.database.connect(dir).await? else {
            return Ok(None);
        };
        let mut figures = DbFigures::default();
        for row in client
            .query(
                "SELECT type, count(*) FROM realtime.channels GROUP BY type",
                &[],
            )
            .await
            .map_err(query_failed)?
        {
            figures.channels.insert(row.get(0), row.get(1));
        }
        let publications: Vec<String> = nself_realtime_cdc::publications::all(&self.publication)
            .into_iter()
            .map(|p| p.name)
            .collect();
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM realtime.subscriptions),
                        (SELECT count(*) FROM (SELECT DISTINCT schemaname, tablename
                                                 FROM pg_publication_tables
                                                WHERE pubname = ANY($1)) t),
                        (SELECT count(*) FROM realtime.messages
                          WHERE sent_at > now() - interval '24 hours' AND deleted_at IS NULL)",
                &[&publications],
            )
            .await
            .map_err(query_failed)?;
        figures.subscriptions = row.get(0);
        figures.tables = row.get(1);
        figures.messages_24h = row.get(2);
        Ok(Some(figures))
    }
}

/// A counter summed over the gateways' stats results: `path` like `["messages", "total"]`.
pub fn sum(results: &[&Value], path: &[&str]) -> u64 {
    results
        .iter()
        .map(|r| {
            path.iter()
                .fold(*r, |v, key| &v[*key])
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

/// A `{label: count}` map summed over the gateways' stats results.
fn sum_map(results: &[&Value], path: &[&str]) -> Map<String, Value> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        if let Some(map) = path.iter().fold(*result, |v, key| &v[*key]).as_object() {
            for (label, count) in map {
                *sums.entry(label.clone()).or_default() += count.as_u64().unwrap_or(0);
            }
        }
    }
    sums.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let gateways = Gateways::connect(&args.live).await?;
    let answers = gateways.ask_all(&Command::Stats).await?;
    let results: Vec<&Value> = answers
        .iter()
        .filter_map(|a| a.outcome.as_ref().ok())
        .collect();
    let db = args.database.figures(&args.live.dir).await?;
    let presence = match presence::snapshot(&gateways, None, None).await {
        Ok(entries) => Some(presence::Tally::of(&presence::per_user(&entries))),
        Err(_) => None,
    };

    let active = sum(&results, &["connections", "active"]);
    let peak = sum(&results, &["connections", "peak"]);
    let with_subscribers: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r["channels"]["by_name"].as_object())
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    let sent = sum(&results, &["messages", "total"]);
    let broadcasts = sum(&results, &["broadcasts_received"]);
    let failed = sum(&results, &["errors", "total"]);
    let delivered = sum(&results, &["changes", "delivered_total"]);

    if json {
        let per_gateway: Vec<Value> = results.iter().map(|r| (*r).clone()).collect();
        let value = json!({
            "gateways": answers.iter().map(|a| a.gateway.as_str()).collect::<Vec<_>>(),
            "connections": {
                "active": active,
                "peak_since_start": peak,
                "by_protocol": sum_map(&results, &["connections", "by_protocol"]),
            },
            "channels": {
                "with_subscribers": with_subscribers.len(),
                "total": db.as_ref().map(DbFigures::channel_total),
                "by_type": db.as_ref().map(|d| &d.channels),
            },
            "messages_since_start": {
                "sent": sent,
                "client_broadcasts": broadcasts,
                "failed": failed,
                "sent_by_room_type": sum_map(&results, &["messages", "by"]),
                "failed_by_code": sum_map(&results, &["errors", "by"]),
            },
            "messages_persisted_24h": db.as_ref().map(|d| d.messages_24h),
            "subscriptions": {
                "active": db.as_ref().map(|d| d.subscriptions),
                "tables_monitored": db.as_ref().map(|d| d.tables),
                "changes_delivered_since_start": delivered,
            },
            "presence": presence.map(|t| json!({"users": t.total(), "online": t.online})),
            "per_gateway": per_gateway,
        });
        println!("{value}");
        return Ok(());
    }

    let line = |label: &str, value: String| println!("  {label:<24} {value}");
    let n = |value: u64| thousands(value as i64);
    let no_db = || "n/a (set DATABASE_URL)".to_string();
    println!("Real-Time Statistics:");
    println!();
    println!("WebSocket Connections:");
    line("Active:", n(active));
    if results.len() > 1 {
        line(
            "Peak (since start):",
            format!("{} (sum of {} gateways' peaks)", n(peak), results.len()),
        );
    } else {
        line("Peak (since start):", n(peak));
    }
    line("Gateways:", n(results.len() as u64));
    println!();
    println!("Channels:");
    match &db {
        Some(db) => {
            line("Total:", thousands(db.channel_total()));
            line("Public:", thousands(db.of_type("public")));
            line("Private:", thousands(db.of_type("private")));
            line("Presence:", thousands(db.of_type("presence")));
            if db.of_type("direct") > 0 {
                line("Direct:", thousands(db.of_type("direct")));
            }
        }
        None => line("Total:", no_db()),
    }
    line("With subscribers now:", n(with_subscribers.len() as u64));
    println!();
    println!("Messages (since start):");
    line("Sent:", n(sent));
    line("Client broadcasts:", n(broadcasts));
    line("Failed:", n(failed));
    if let Some(db) = &db {
        line("Persisted (24h):", thousands(db.messages_24h));
    }
    println!();
    println!("Database Subscriptions:");
    match &db {
        Some(db) => {
            line("Active:", thousands(db.subscriptions));
            line("Tables monitored:", thousands(db.tables));
        }
        None => line("Active:", no_db()),
    }
    line(
        "Changes delivered:",
        format!("{} (since start)", n(delivered)),
    );
    println!();
    println!("Presence:");
    match presence {
        Some(tally) => {
            line("Users tracked:", n(tally.total() as u64));
            line("Currently online:", n(tally.online as u64));
        }
        None => line(
            "Users tracked:",
            "n/a (the presence store did not answer)".into(),
        ),
    }
    Ok(())
}
