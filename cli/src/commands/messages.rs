//! `nself-realtime messages <channel> [limit]` and `replay <channel> <timestamp>` (seed 002):
//! a channel's persisted messages from `realtime.messages`, oldest first, one line each:
//! `[2026-01-30 10:15:23] user-123: Hello` (times in UTC, `(edited)` after edited ones).
//! Soft-deleted messages are left out. `--json` prints one array of message objects.

use super::channel::{resolve, Channel};
use super::{query_failed, thousands, utc_rfc3339, utc_seconds, Database};
use crate::exit::CliError;
use anyhow::anyhow;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// `messages` shows this many by default...
const DEFAULT_LIMIT: i64 = 50;
/// ...and at most this many.
const MAX_LIMIT: i64 = 1000;
/// `replay` stops after this many messages.
const REPLAY_CAP: i64 = 10_000;

#[derive(clap::Args)]
pub struct MessagesArgs {
    /// Channel slug or id.
    channel: String,
    /// How many of the newest messages (default 50, max 1000).
    limit: Option<String>,
    #[command(flatten)]
    database: Database,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Channel slug or id.
    channel: String,
    /// ISO 8601 time to replay from, as in 2026-01-30T09:00:00Z (no offset: UTC).
    timestamp: String,
    #[command(flatten)]
    database: Database,
}

/// One message as printed.
struct Message {
    id: String,
    user_id: String,
    content: String,
    message_type: String,
    metadata: Value,
    thread_id: Option<String>,
    /// `2026-01-30 10:15:23` (UTC).
    sent: String,
    sent_at: String,
    edited_at: Option<String>,
}

impl Message {
    /// The select list matching [`Message::from_row`], over `realtime.messages`.
    fn columns() -> String {
        format!(
            "id::text, user_id, content, message_type, metadata::text, thread_id, {}, {}, {}",
            utc_seconds("sent_at"),
            utc_rfc3339("sent_at"),
            utc_rfc3339("edited_at")
        )
    }

    fn from_row(row: &tokio_postgres::Row) -> Message {
        let metadata: String = row.get(4);
        Message {
            id: row.get(0),
            user_id: row.get(1),
            content: row.get(2),
            message_type: row.get(3),
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            thread_id: row.get(5),
            sent: row.get(6),
            sent_at: row.get(7),
            edited_at: row.get(8),
        }
    }

    fn line(&self) -> String {
        let edited = if self.edited_at.is_some() {
            " (edited)"
        } else {
            ""
        };
        format!("[{}] {}: {}{edited}", self.sent, self.user_id, self.content)
    }

    fn to_json(&self, channel: &Channel) -> Value {
        json!({
            "id": self.id,
            "channel": channel.slug,
            "user_id": self.user_id,
            "content": self.content,
            "message_type": self.message_type,
            "metadata": self.metadata,
            "thread_id": self.thread_id,
            "sent_at": self.sent_at,
            "edited_at": self.edited_at,
        })
    }
}

fn parse_limit(text: Option<&str>) -> Result<i64, CliError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(CliError::usage(anyhow!(
            "limit {text:?} must be a number from 1 to {MAX_LIMIT}, as in `messages general 100`"
        ))),
    }
}

/// An ISO 8601 time: RFC 3339 (`2026-01-30T09:00:00Z`, `2026-01-30T10:00:00+01:00`), a date and
/// time without offset (taken as UTC, with `T` or a space), or a date (midnight UTC).
fn parse_timestamp(text: &str) -> Result<OffsetDateTime, CliError> {
    let text = text.trim();
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let local_formats = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ];
    for format in local_formats {
        if let Ok(time) = PrimitiveDateTime::parse(text, format) {
            return Ok(time.assume_offset(UtcOffset::UTC));
        }
    }
    if let Ok(date) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(date.midnight().assume_offset(UtcOffset::UTC));
    }
    Err(CliError::usage(anyhow!(
        "bad timestamp {text:?}: use ISO 8601, as in 2026-01-30T09:00:00Z"
    )))
}

fn print(channel: &Channel, messages: &[Message], json: bool) {
    if json {
        let list: Vec<Value> = messages.iter().map(|m| m.to_json(channel)).collect();
        println!("{}", Value::Array(list));
        return;
    }
    for message in messages {
        println!("{}", message.line());
    }
}

pub async fn messages(args: MessagesArgs, json: bool) -> Result<(), CliError> {
    let limit = parse_limit(args.limit.as_deref())?;
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    // The newest `limit`, printed oldest first.
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM (
                     SELECT * FROM realtime.messages
                      WHERE channel_id = $1::text::uuid AND deleted_at IS NULL
                      ORDER BY sent_at DESC, id DESC
                      LIMIT $2
                 ) newest
                 ORDER BY sent_at, id",
                Message::columns()
            ),
            &[&channel.id, &limit],
        )
        .await
        .map_err(query_failed)?;
    let messages: Vec<Message> = rows.iter().map(Message::from_row).collect();
    if messages.is_empty() && !json {
        println!("No messages in {}.", channel.slug);
        return Ok(());
    }
    print(&channel, &messages, json);
    Ok(())
}

pub async fn replay(args: ReplayArgs, json: bool) -> Result<(), CliError> {
    let since = parse_timestamp(&args.timestamp)?;
    let since_text = since
        .to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| anyhow!("cannot format {since}: {e}"))?;
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM realtime.messages
                  WHERE channel_id = $1::text::uuid AND deleted_at IS NULL
                    AND sent_at >= $2::text::timestamptz
                  ORDER BY sent_at, id
                  LIMIT $3",
                Message::columns()
            ),
            &[&channel.id, &since_text, &(REPLAY_CAP + 1)],
        )
        .await
        .map_err(query_failed)?;
    let mut messages: Vec<Message> = rows.iter().map(Message::from_row).collect();
    let capped = messages.len() as i64 > REPLAY_CAP;
    messages.truncate(REPLAY_CAP as usize);
    if messages.is_empty() && !json {
        println!("No messages in {} since {since_text}.", channel.slug);
        return Ok(());
    }
    print(&channel, &messages, json);
    if capped {
        let last = messages.last().map(|m| m.sent_at.as_str()).unwrap_or("");
        let note = format!(
            "(stopped after {} messages; replay from {last} for the rest)",
            thousands(REPLAY_CAP)
        );
        // JSON output stays one document; the note goes beside it.
        if json {
            eprintln!("{note}");
        } else {
            println!("{note}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(parse_limit(None).unwrap(), 50);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("1001")).is_err());
        assert!(parse_limit(Some("many")).is_err());
    }

    #[test]
    fn timestamps_are_iso_8601() {
        let utc = |text: &str| {
            parse_timestamp(text)
                .unwrap()
                .to_offset(UtcOffset::UTC)
                .format(&Rfc3339)
                .unwrap()
        };
        assert_eq!(utc("2026-01-30T09:00:00Z"), "2026-01-30T09:00:00Z");
        assert_eq!(utc("2026-01-30T10:00:00+01:00"), "2026-01-30T09:00:00Z");
        assert_eq!(utc("2026-01-30T09:00:00.5Z"), "2026-01-30T09:00:00.5Z");
        assert_eq!(utc("2026-01-30T09:00:00"), "2026-01-30T09:00:00Z");
        assert_eq!(utc("2026-01-30 09:00:00"), "2026-01-30T09:00:00Z");
        assert_eq!(utc("2026-01-30T09:00"), "2026-01-30T09:00:00Z");
        assert_eq!(utc("2026-01-30"), "2026-01-30T00:00:00Z");
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2026-13-01").is_err());
        assert!(parse_timestamp("1706600000").is_err());
    }
}
