//! `nself-realtime cleanup [--stale 5m] [--retention 30d]` (seed 002): runs the cleanup
//! functions of the realtime schema and prints what each removed: connections a killed gateway
//! left open are closed, expired broadcasts deleted, and messages, events and closed connection
//! records older than the retention deleted. Presence needs no cleanup here: its entries expire
//! in the gateways' store by themselves.
//!
//! Old messages are deleted for good (a hard DELETE, which reaches subscribed clients as a
//! change like any other).

use super::{query_failed, thousands, Database};
use crate::exit::CliError;
use anyhow::anyhow;
use serde_json::json;

/// The longest duration accepted: a hundred years, well inside Postgres' interval range.
const MAX_SECONDS: u64 = 100 * 365 * 86_400;

#[derive(clap::Args)]
pub struct Args {
    /// Close connections not seen for this long (30s, 5m, 2h, 30d).
    #[arg(long, default_value = "5m")]
    stale: String,
    /// Delete messages, events and closed connection records older than this.
    #[arg(long, default_value = "30d")]
    retention: String,
    #[command(flatten)]
    database: Database,
}

/// `30s`, `5m`, `2h`, `30d` in seconds; `option` names the flag in the error.
fn parse_duration(option: &str, text: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::usage(anyhow!(
            "{option} {text:?} is not a duration: use a number and s, m, h or d, as in 5m or 30d"
        ))
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = number.saturating_mul(unit_seconds);
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err(CliError::usage(anyhow!(
            "{option} {text:?} must be more than 0 and at most 100 years"
        )));
    }
    Ok(seconds)
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let stale = parse_duration("--stale", &args.stale)?;
    let retention = parse_duration("--retention", &args.retention)?;
    let client = args.database.connect().await?;
    let interval = |seconds: u64| format!("{seconds} seconds");
    let row = client
        .query_one(
            "SELECT realtime.cleanup_stale_connections($1::text::interval),
                    realtime.cleanup_expired_broadcasts(),
                    realtime.cleanup_old_messages($2::text::interval),
                    realtime.cleanup_old_events($2::text::interval)",
            &[&interval(stale), &interval(retention)],
        )
        .await
        .map_err(query_failed)?;
    let (connections, broadcasts, messages, events): (i32, i32, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if json {
        println!(
            "{}",
            json!({
                "stale_connections_closed": connections,
                "expired_broadcasts_deleted": broadcasts,
                "old_messages_deleted": messages,
                "old_events_deleted": events,
                "stale_seconds": stale,
                "retention_seconds": retention,
            })
        );
        return Ok(());
    }
    let lines = [
        ("Stale connections closed:", connections),
        ("Expired broadcasts deleted:", broadcasts),
        ("Old messages deleted:", messages),
        ("Old events deleted:", events),
    ];
    for (label, count) in lines {
        println!("  {label:<28} {}", thousands(count.into()));
    }
    println!();
    println!("✓ Cleanup complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("--stale", "30s").unwrap(), 30);
        assert_eq!(parse_duration("--stale", "5m").unwrap(), 300);
        assert_eq!(parse_duration("--stale", "2h").unwrap(), 7_200);
        assert_eq!(parse_duration("--retention", "30d").unwrap(), 2_592_000);
        for bad in [
            "",
            "5",
            "m",
            "5 m",
            "5w",
            "-5m",
            "0s",
            "99999999999999999999d",
            "40000d",
        ] {
            assert!(parse_duration("--stale", bad).is_err(), "{bad}");
        }
    }
}
