//! `nself-realtime events <channel> [hours]` (seed 002): how many events of each type the
//! gateways logged for a channel in the last hours, from `realtime.events` (written only when
//! the gateways run with REALTIME_LOG_EVENTS on).
//!
//! An event's `channel` is the topic the gateway saw, which need not have a channel row (ad-hoc
//! topics are allowed), so the argument matches events logged under it as given and, when it
//! names a channel, under that channel's slug or id.

use super::channel::find;
use super::{counted, query_failed, utc_rfc3339, Database};
use crate::exit::CliError;
use anyhow::anyhow;
use serde_json::{json, Value};

/// The default time frame, in hours.
const DEFAULT_HOURS: i32 = 24;
/// The longest time frame: a year (events are normally kept 30 days; see `cleanup`).
const MAX_HOURS: i32 = 8760;

#[derive(clap::Args)]
pub struct Args {
    /// Channel slug or id (or an ad-hoc topic).
    channel: String,
    /// Time frame in hours (default 24, max 8760).
    hours: Option<String>,
    #[command(flatten)]
    database: Database,
}

fn parse_hours(text: Option<&str>) -> Result<i32, CliError> {
    let Some(text) = text else {
        return Ok(DEFAULT_HOURS);
    };
    match text.trim().parse::<i32>() {
        Ok(n) if (1..=MAX_HOURS).contains(&n) => Ok(n),
        _ => Err(CliError::usage(anyhow!(
            "hours {text:?} must be a number from 1 to {MAX_HOURS}, as in `events general 168` for a week"
        ))),
    }
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let hours = parse_hours(args.hours.as_deref())?;
    let client = args.database.connect().await?;
    let mut names = vec![args.channel.clone()];
    let label = match find(&client, &args.channel).await? {
        Some(channel) => {
            names.push(channel.id);
            names.push(channel.slug.clone());
            channel.slug
        }
        None => args.channel.clone(),
    };
    let rows = client
        .query(
            &format!(
                "SELECT type, count(*), {}
                   FROM realtime.events
                  WHERE channel = ANY($1) AND created_at > now() - make_interval(hours => $2)
                  GROUP BY type
                  ORDER BY count(*) DESC, type",
                utc_rfc3339("max(created_at)")
            ),
            &[&names, &hours],
        )
        .await
        .map_err(query_failed)?;
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "type": row.get::<_, String>(0),
                    "count": row.get::<_, i64>(1),
                    "last_at": row.get::<_, String>(2),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "channel": label, "hours": hours, "events": list })
        );
        return Ok(());
    }
    println!("Event Types (last {hours}h):");
    println!();
    if rows.is_empty() {
        println!("  (none logged for {label}; gateways log events when REALTIME_LOG_EVENTS is on)");
    }
    let width = rows
        .iter()
        .map(|row| row.get::<_, &str>(0).chars().count())
        .max()
        .unwrap_or(0)
        .max(17);
    for row in &rows {
        let (kind, count): (&str, i64) = (row.get(0), row.get(1));
        println!("  {kind:<width$} {}", counted(count, "event", "events"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_checked() {
        assert_eq!(parse_hours(None).unwrap(), 24);
        assert_eq!(parse_hours(Some("168")).unwrap(), 168);
        assert!(parse_hours(Some("0")).is_err());
        assert!(parse_hours(Some("8761")).is_err());
        assert!(parse_hours(Some("a week")).is_err());
    }
}
