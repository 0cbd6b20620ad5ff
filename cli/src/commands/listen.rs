//! `nself-realtime listen <table> [seconds]` (seed 002): print a table's changes as they happen,
//! for a while (default 60 s).
//!
//! It `LISTEN`s on the CDC endpoint, which delivers each change event as a notification, and
//! prints one line per change:
//!
//! ```text
//! Listening to public.users...
//! [2026-01-30 10:15:23] INSERT: {"email": "user@example.com", "id": 123}
//! ```
//!
//! The time is the commit time in UTC and the object is the new row (the old row, or its key,
//! for DELETE). `--json` prints each event's JSON exactly as the CDC published it, one per line,
//! and the "Listening to" line on stderr. That line is printed only once the endpoint confirmed
//! the LISTEN, so every change committed after it appears.
//!
//! A table that does not exist, or that no publication holds, would deliver nothing: the
//! endpoint answers such a LISTEN with a WARNING saying which (and how to publish it), and
//! `listen` stops with it (exit 2) instead of waiting in silence.

use super::cdc_client::{Endpoint, Incoming, Session};
use super::subscriptions::parse_table;
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_cdc::sql::quote_ident;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Table to listen to: schema.table (or schema.* for every table of a schema).
    table: String,
    /// How long to listen, in seconds.
    #[arg(default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let target = parse_table(&args.table)?;
    let mut session = args.endpoint.connect().await?;
    let channel = target.to_string();
    session
        .run(&format!("LISTEN {}", quote_ident(&channel)))
        .await?;
    let mut pending = refuse_silent_listen(&mut session)?;
    if json {
        // stdout carries only events; the start line goes to stderr.
        eprintln!("Listening to {channel}...");
    } else {
        println!("Listening to {channel}...");
    }
    let deadline = tokio::time::sleep(Duration::from_secs(args.seconds));
    tokio::pin!(deadline);
    let mut stdout = std::io::stdout();
    loop {
        let event = match pending.take() {
            Some(event) => Some(event),
            None => tokio::select! {
                _ = &mut deadline => return Ok(()),
                event = session.events.recv() => event,
            },
        };
        match event {
            Some(Ok(Incoming::Notice { severity, message })) => {
                tracing::warn!(severity, "{message}");
            }
            Some(Ok(Incoming::Notification(notification))) => {
                let line = if json {
                    notification.payload().to_string()
                } else {
                    describe_event(notification.payload())
                };
                // A closed stdout (`| head`) ends listening quietly.
                if writeln!(stdout, "{line}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            Some(Err(reason)) => {
                return Err(CliError::runtime(anyhow!(
                    "the CDC endpoint closed the connection: {reason}"
                )));
            }
            None => {
                return Err(CliError::runtime(anyhow!(
                    "the CDC endpoint closed the connection; is `nself-realtime cdc` still running?"
                )));
            }
        }
    }
}

/// Stops with the endpoint's WARNING when the LISTEN just made can receive nothing (module
/// docs). A command's notices arrive before its answer, so they are queued already; the first
/// event after them (a change that came at once) is handed back to be printed first.
fn refuse_silent_listen(
    session: &mut Session,
) -> Result<Option<Result<Incoming, String>>, CliError> {
    while let Ok(event) = session.events.try_recv() {
        match event {
            Ok(Incoming::Notice { severity, message }) if severity == "WARNING" => {
                return Err(CliError::usage(anyhow!("{message}")));
            }
            Ok(Incoming::Notice { severity, message }) => {
                tracing::info!(severity, "{message}");
            }
            other => return Ok(Some(other)),
        }
    }
    Ok(None)
}

/// `[2026-01-30 10:15:23] INSERT: {"id": 123}` for one change event's JSON.
fn describe_event(payload: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(payload) else {
        return payload.to_string();
    };
    let time = event["commit_timestamp"]
        .as_str()
        .map(utc_seconds)
        .unwrap_or_default();
    let kind = event["type"].as_str().unwrap_or("CHANGE");
    let row = match &event["record"] {
        Value::Null => &event["old_record"],
        record => record,
    };
    let row = match row {
        Value::Null => "{}".to_string(),
        row => spaced_json(row),
    };
    format!("[{time}] {kind}: {row}")
}

/// `2026-01-30T10:15:23.123456Z` (or any RFC 3339 time) as `2026-01-30 10:15:23` in UTC.
fn utc_seconds(timestamp: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::parse(timestamp, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| timestamp.to_string())
}

/// JSON with a space after `:` and `,`, as the seed prints rows: `{"id": 123, "name": "x"}`.
fn spaced_json(value: &Value) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                writer.write_all(b", ")
            }
        }

        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                writer.write_all(b", ")
            }
        }

        fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
            writer.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Spaced);
    match serde::Serialize::serialize(value, &mut serializer) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_like_the_seed() {
        let insert = r#"{"id":"0-0","lsn":"0/1","commit_timestamp":"2026-01-30T10:15:23.123456Z","schema":"public","table":"users","type":"INSERT","columns":[],"record":{"email":"user@example.com","id":123,"tags":[1,2]},"old_record":null,"primary_key":["id"]}"#;
        assert_eq!(
            describe_event(insert),
            r#"[2026-01-30 10:15:23] INSERT: {"email": "user@example.com", "id": 123, "tags": [1, 2]}"#
        );
        let delete = r#"{"commit_timestamp":"2026-01-30T12:15:23+02:00","type":"DELETE","record":null,"old_record":{"id":7}}"#;
        assert_eq!(
            describe_event(delete),
            r#"[2026-01-30 10:15:23] DELETE: {"id": 7}"#
        );
        let truncate = r#"{"commit_timestamp":"2026-01-30T10:15:23Z","type":"TRUNCATE","record":null,"old_record":null}"#;
        assert_eq!(
            describe_event(truncate),
            "[2026-01-30 10:15:23] TRUNCATE: {}"
        );
        assert_eq!(describe_event("not json"), "not json");
    }
}
