//! `nself-realtime stats` (seed 002): figures of the running system, from where each one lives.
//!
//! * The gateways (their control API, summed over every gateway that answers): connections,
//!   channels with subscribers, chat messages sent (the nself API), broadcasts sent by clients,
//!   errors and table changes delivered. "Failed" is the gateways' `realtime_errors_total`:
//!   Socket.IO and `/ws` requests answered with an error, and connections refused by the
//!   per-IP limit, by error code; the gateways also log each request error in `realtime.events`
//!   (type `error`, with its message), whose latest are shown when there is a database. They count since each gateway started (no 24-hour window is kept), and the
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
    /// The newest request errors the gateways logged, newest first.
    pub latest_failures: Vec<Failure>,
}

/// A request error the gateways logged in `realtime.events`.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `2026-01-30 10:15:23` (UTC).
    pub at: String,
    /// RFC 3339 (UTC).
    pub at_rfc3339: String,
    pub code: String,
    pub message: String,
    pub user_id: Option<String>,
    pub channel: Option<String>,
}

/// How many of the latest failures `stats` shows.
const LATEST_FAILURES: i64 = 5;

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
        figures.latest_failures = latest_failures(&client).await?;
        Ok(Some(figures))
    }
}

/// The newest request errors in `realtime.events`.
async fn latest_failures(client: &tokio_postgres::Client) -> Result<Vec<Failure>, CliError> {
    let rows = client
        .query(
            &format!(
                "SELECT {}, {}, coalesce(data->>'error_code', '?'), coalesce(data->>'message', ''),
                        user_id, channel
                   FROM realtime.events
                  WHERE type = 'error'
                  ORDER BY created_at DESC
                  LIMIT $1",
                super::utc_seconds("created_at"),
                super::utc_rfc3339("created_at")
            ),
            &[&LATEST_FAILURES],
        )
        .await
        .map_err(query_failed)?;
    Ok(rows
        .iter()
        .map(|row| Failure {
            at: row.get(0),
            at_rfc3339: row.get(1),
            code: row.get(2),
            message: row.get(3),
            user_id: row.get(4),
            channel: row.get(5),
        })
        .collect())
}

/// The text of "Failed": the count and its codes, most frequent first.
fn failed_text(failed: u64, by_code: &Map<String, Value>) -> String {
    if failed == 0 {
        return "0".into();
    }
    let mut codes: Vec<(&String, u64)> = by_code
        .iter()
        .map(|(code, n)| (code, n.as_u64().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let codes: Vec<String> = codes
        .iter()
        .map(|(code, n)| format!("{code} {}", thousands(*n as i64)))
        .collect();
    let requests = if failed == 1 { "request" } else { "requests" };
    format!(
        "{} client {requests} refused ({})",
        thousands(failed as i64),
        codes.join(", ")
    )
}

/// The lines under "Failed" that say where the failures are told in full.
fn print_failure_details(failed: u64, db: Option<&DbFigures>) {
    if failed == 0 {
        return;
    }
    match db {
        Some(db) if !db.latest_failures.is_empty() => {
            println!("  Latest (realtime.events, type error):");
            for failure in &db.latest_failures {
                let mut who: Vec<String> = Vec::new();
                who.extend(failure.user_id.clone());
                who.extend(failure.channel.as_deref().map(|c| format!("in {c}")));
                let who = if who.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", who.join(" "))
                };
                println!(
                    "    [{}] {}{who}: {}",
                    failure.at, failure.code, failure.message
                );
            }
        }
        Some(_) => println!(
            "  Details:                 none logged in realtime.events (the gateways log errors with REALTIME_LOG_EVENTS=true and error in REALTIME_LOG_EVENT_TYPES)"
        ),
        None => println!(
            "  Details:                 logged in realtime.events (type error); set DATABASE_URL to see the latest here"
        ),
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

/// The gateways' counters, summed.
struct Totals {
    gateways: usize,
    active: u64,
    peak: u64,
    with_subscribers: usize,
    sent: u64,
    broadcasts: u64,
    failed: u64,
    failed_by_code: Map<String, Value>,
    delivered: u64,
}

impl Totals {
    fn of(results: &[&Value]) -> Totals {
        let with_subscribers: BTreeSet<&str> = results
            .iter()
            .filter_map(|r| r["channels"]["by_name"].as_object())
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        Totals {
            gateways: results.len(),
            active: sum(results, &["connections", "active"]),
            peak: sum(results, &["connections", "peak"]),
            with_subscribers: with_subscribers.len(),
            sent: sum(results, &["messages", "total"]),
            broadcasts: sum(results, &["broadcasts_received"]),
            failed: sum(results, &["errors", "total"]),
            failed_by_code: sum_map(results, &["errors", "by"]),
            delivered: sum(results, &["changes", "delivered_total"]),
        }
    }
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
    let totals = Totals::of(&results);
    if json {
        let ids: Vec<&str> = answers.iter().map(|a| a.gateway.as_str()).collect();
        print_json(&ids, &results, &totals, db.as_ref(), presence.as_ref());
    } else {
        print_text(&totals, db.as_ref(), presence.as_ref());
    }
    Ok(())
}

fn print_json(
    ids: &[&str],
    results: &[&Value],
    totals: &Totals,
    db: Option<&DbFigures>,
    presence: Option<&presence::Tally>,
) {
    let failures = db.map(|d| {
        d.latest_failures
            .iter()
            .map(|f| {
                json!({
                    "at": f.at_rfc3339,
                    "error_code": f.code,
                    "message": f.message,
                    "user_id": f.user_id,
                    "channel": f.channel,
                })
            })
            .collect::<Vec<_>>()
    });
    let value = json!({
        "gateways": ids,
        "connections": {
            "active": totals.active,
            "peak_since_start": totals.peak,
            "by_protocol": sum_map(results, &["connections", "by_protocol"]),
        },
        "channels": {
            "with_subscribers": totals.with_subscribers,
            "total": db.map(DbFigures::channel_total),
            "by_type": db.map(|d| &d.channels),
        },
        "messages_since_start": {
            "sent": totals.sent,
            "client_broadcasts": totals.broadcasts,
            "failed": totals.failed,
            "sent_by_room_type": sum_map(results, &["messages", "by"]),
            "failed_by_code": totals.failed_by_code,
        },
        "latest_failures": failures,
        "messages_persisted_24h": db.map(|d| d.messages_24h),
        "subscriptions": {
            "active": db.map(|d| d.subscriptions),
            "tables_monitored": db.map(|d| d.tables),
            "changes_delivered_since_start": totals.delivered,
        },
        "presence": presence.map(|t| json!({"users": t.total(), "online": t.online})),
        "per_gateway": results,
    });
    println!("{value}");
}

/// One `  Label:    value` line of the text report.
fn line(label: &str, value: String) {
    println!("  {label:<24} {value}");
}

fn n(value: u64) -> String {
    thousands(value as i64)
}

const NO_DB: &str = "n/a (set DATABASE_URL)";

fn print_text(totals: &Totals, db: Option<&DbFigures>, presence: Option<&presence::Tally>) {
    println!("Real-Time Statistics:");
    println!();
    println!("WebSocket Connections:");
    line("Active:", n(totals.active));
    let peak = match totals.gateways {
        0 | 1 => n(totals.peak),
        several => format!("{} (sum of {several} gateways' peaks)", n(totals.peak)),
    };
    line("Peak (since start):", peak);
    line("Gateways:", n(totals.gateways as u64));
    println!();
    println!("Channels:");
    match db {
        Some(db) => {
            line("Total:", thousands(db.channel_total()));
            for (label, kind) in [
                ("Public:", "public"),
                ("Private:", "private"),
                ("Presence:", "presence"),
            ] {
                line(label, thousands(db.of_type(kind)));
            }
            if db.of_type("direct") > 0 {
                line("Direct:", thousands(db.of_type("direct")));
            }
        }
        None => line("Total:", NO_DB.into()),
    }
    line("With subscribers now:", n(totals.with_subscribers as u64));
    println!();
    println!("Messages (since start):");
    line("Sent:", n(totals.sent));
    line("Client broadcasts:", n(totals.broadcasts));
    line(
        "Failed:",
        failed_text(totals.failed, &totals.failed_by_code),
    );
    print_failure_details(totals.failed, db);
    if let Some(db) = db {
        line("Persisted (24h):", thousands(db.messages_24h));
    }
    println!();
    print_text_tail(totals, db, presence);
}

/// The text report's subscriptions and presence.
fn print_text_tail(totals: &Totals, db: Option<&DbFigures>, presence: Option<&presence::Tally>) {
    println!("Database Subscriptions:");
    match db {
        Some(db) => {
            line("Active:", thousands(db.subscriptions));
            line("Tables monitored:", thousands(db.tables));
        }
        None => line("Active:", NO_DB.into()),
    }
    line(
        "Changes delivered:",
        format!("{} (since start)", n(totals.delivered)),
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
}
