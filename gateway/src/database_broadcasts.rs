//! Broadcasts from the database: every row of `realtime.messages`, delivered to its topic's
//! subscribers on every protocol.
//!
//! `realtime.send(...)`, `realtime.send_binary(...)`, triggers calling
//! `realtime.broadcast_changes(...)` and chat messages (`realtime.send_message`, whose trigger
//! fills the same columns) all insert a row with a `topic`, an `event`, a `payload` (or
//! `binary_payload`) and `private` (migration 0004). The CDC streams the table into the change
//! log like any other (DESIGN.md path 4, exactly once and in commit order); each gateway follows
//! `realtime.db.realtime.messages.*` with one reader, started at its first join, and hands each
//! row to its local room of the topic (the private room when `private`, see
//! [`channel_access::room_name`]) as an [`Envelope`] with `meta.id` = the row id, as Supabase
//! does. Inserts are delivered; a chat row's updates and deletes are too (`message:updated`,
//! `message:deleted`; the table has `REPLICA IDENTITY FULL`, so a DELETE still names its topic).
//!
//! [`DatabaseBroadcasts::replay`] reads a private topic's stored broadcasts for Supabase's
//! broadcast replay (`config.broadcast.replay`).
//!
//! Rows are not checked one by one against each subscriber's claims: a private topic's
//! subscribers were authorized for it at their join (the messages policies or the channel rules)
//! and again on every token refresh, as in Supabase.

use crate::auth::channel_access::room_name;
use crate::broadcast::{Broadcasts, Replayed, StoredAt};
use crate::db::Pool;
use crate::envelope::{BroadcastPayload, Envelope, Kind};
use crate::metrics::Metrics;
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::{BusError, ChangeLog, StartAt};
use nself_realtime_shared::event::{ChangeEvent, EventType, Row};
use nself_realtime_shared::postgres_error::describe;
use nself_realtime_shared::subject;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Most broadcasts one replay returns (Supabase's hard limit).
pub const MAX_REPLAY: i64 = 25;

/// The relay of `realtime.messages` rows to local rooms.
pub struct DatabaseBroadcasts {
    changes: Arc<dyn ChangeLog>,
    broadcasts: Arc<Broadcasts>,
    pool: Pool,
    metrics: Arc<Metrics>,
    reading: OnceCell<()>,
}

/// A row as its topic's subscribers receive it.
#[derive(Debug)]
pub struct StoredBroadcast {
    /// The room it goes to.
    pub room: String,
    pub id: String,
    /// As Postgres writes a `timestamp`, with `T` (the CDC's form).
    pub inserted_at: String,
    pub envelope: Envelope,
}

impl DatabaseBroadcasts {
    pub fn new(
        changes: Arc<dyn ChangeLog>,
        broadcasts: Arc<Broadcasts>,
        pool: Pool,
        metrics: Arc<Metrics>,
    ) -> Arc<DatabaseBroadcasts> {
        Arc::new(DatabaseBroadcasts {
            changes,
            broadcasts,
            pool,
            metrics,
            reading: OnceCell::new(),
        })
    }

    /// Returns once this gateway reads the table's changes (the first call starts the reader),
    /// so every row committed after a join's reply reaches the joined channel.
    pub async fn follow(self: &Arc<Self>) -> Result<(), BusError> {
        self.reading
            .get_or_try_init(|| self.start_reading())
            .await
            .map(|_| ())
    }

    /// Whether the reader runs (for `replication_ready`).
    pub fn is_following(&self) -> bool {
        self.reading.initialized()
    }

    /// Starts the one reader. It lives as long as the gateway and, when the change log fails
    /// it, resumes after the last change it handled.
    async fn start_reading(self: &Arc<Self>) -> Result<(), BusError> {
        let filter = subject::table_changes("realtime", "messages")
            .expect("realtime.messages is a valid subject");
        let first = self.changes.follow(&filter, StartAt::New).await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut changes = first.changes;
            let mut last: Option<nself_realtime_shared::event::EventId> = None;
            let mut backoff = Duration::from_millis(100);
            loop {
                while let Some(change) = changes.next().await {
                    let Some(relay) = weak.upgrade() else {
                        return;
                    };
                    match change {
                        Ok(change) => {
                            backoff = Duration::from_millis(100);
                            match serde_json::from_slice::<ChangeEvent>(&change.payload) {
                                Ok(event) => {
                                    last = Some(event.id);
                                    relay.relay(&event);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "skipping a realtime.messages change that is not a change event")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the realtime.messages reader failed; resuming");
                            break;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                let Some(relay) = weak.upgrade() else {
                    return;
                };
                let start = last.map_or(StartAt::New, StartAt::After);
                match relay.changes.follow(&filter, start).await {
                    Ok(following) => changes = following.changes,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot resume the realtime.messages reader");
                        changes = futures::stream::empty().boxed();
                    }
                }
            }
        });
        Ok(())
    }

    /// Hands one change to the local subscribers of its topic.
    fn relay(&self, event: &ChangeEvent) {
        let Some(stored) = from_change(event) else {
            return;
        };
        if let Ok(committed) = time::OffsetDateTime::parse(
            &event.commit_timestamp,
            &time::format_description::well_known::Rfc3339,
        ) {
            let latency = time::OffsetDateTime::now_utc() - committed;
            self.metrics
                .message_latency
                .observe(latency.as_seconds_f64().max(0.0));
        }
        let at = StoredAt {
            id: &stored.id,
            inserted_at: &stored.inserted_at,
        };
        self.broadcasts
            .deliver_local(&stored.room, &stored.envelope, Some(at));
    }

    /// The broadcasts stored for the private `topic` at or after `since_ms` (milliseconds since
    /// the epoch), the `limit` newest of them (1 to [`MAX_REPLAY`]), oldest first, each with
    /// `meta: {replayed: true, id}`; and whether the limit cut older ones off.
    pub async fn replay(
        &self,
        topic: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<(Vec<Replayed>, bool), String> {
        let limit = limit.clamp(1, MAX_REPLAY);
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let statement = client.prepared(REPLAY).await.map_err(|e| describe(&e))?;
        let rows = client
            .query(&statement, &[&topic, &since_ms, &limit])
            .await
            .map_err(|e| describe(&e))?;
        let mut replayed = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            let id: String = row.get(0);
            let payload = match (
                row.get::<_, Option<String>>(2),
                row.get::<_, Option<Vec<u8>>>(3),
            ) {
                (_, Some(binary)) => BroadcastPayload::Binary(Bytes::from(binary)),
                (Some(json), None) => BroadcastPayload::Json(Bytes::from(json)),
                (None, None) => continue,
            };
            let chat: bool = row.get(4);
            replayed.push(Replayed {
                inserted_at: row.get(5),
                envelope: Envelope {
                    from: None,
                    kind: if chat { Kind::Message } else { Kind::User },
                    event: row.get(1),
                    payload,
                    meta: Some(json!({ "replayed": true, "id": id })),
                },
                id,
            });
        }
        let cut = rows.len() as i64 == limit;
        Ok((replayed, cut))
    }
}

/// The stored broadcasts of a private topic ($1) since $2 (milliseconds since the epoch), the
/// $3 newest. Prepared once per connection: planning it costs ten times what running it does
/// (with migration 0005's index on (topic, inserted_at)).
const REPLAY: &str =
    "SELECT id::text, event, payload::text, binary_payload, channel_id IS NOT NULL,
            replace(inserted_at::text, ' ', 'T')
       FROM realtime.messages
      WHERE topic = $1 AND private IS TRUE AND extension = 'broadcast'
        AND event IS NOT NULL
        AND inserted_at >= to_timestamp($2::bigint / 1000.0) AT TIME ZONE 'utc'
        AND inserted_at < (now() AT TIME ZONE 'utc') + interval '1 minute'
      ORDER BY inserted_at DESC
      LIMIT $3";

/// What a change of `realtime.messages` delivers, if anything: an insert of a broadcast row,
/// or an update or delete of a chat row (one with a `channel_id`).
pub fn from_change(event: &ChangeEvent) -> Option<StoredBroadcast> {
    let (row, deleted) = match event.operation {
        EventType::Insert => (event.record.as_ref()?, false),
        EventType::Update => (event.record.as_ref()?, false),
        EventType::Delete => (event.old_record.as_ref()?, true),
        EventType::Truncate => return None,
    };
    let chat = !row.get("channel_id").is_none_or(Value::is_null);
    if event.operation != EventType::Insert && !chat {
        return None;
    }
    if text(row, "extension") != Some("broadcast") {
        return None;
    }
    let topic = text(row, "topic")?;
    let id = text(row, "id")?.to_string();
    let event_name = if deleted {
        "message:deleted"
    } else {
        text(row, "event")?
    };
    let payload = match (row.get("binary_payload"), row.get("payload")) {
        (Some(Value::String(hex)), _) => BroadcastPayload::Binary(Bytes::from(bytea(hex)?)),
        (_, Some(json)) if !json.is_null() => BroadcastPayload::Json(Bytes::from(
            serde_json::to_vec(json).expect("JSON values serialize"),
        )),
        _ => return None,
    };
    let private = row.get("private").and_then(Value::as_bool).unwrap_or(false);
    Some(StoredBroadcast {
        room: room_name(topic, private),
        inserted_at: text(row, "inserted_at").unwrap_or_default().to_string(),
        envelope: Envelope {
            from: None,
            kind: if chat { Kind::Message } else { Kind::User },
            event: event_name.to_string(),
            payload,
            meta: Some(json!({ "id": id })),
        },
        id,
    })
}

fn text<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
    row.get(column).and_then(Value::as_str)
}

/// A bytea value as the CDC writes it (`\x` and hex digits).
fn bytea(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.strip_prefix("\\x")?.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(operation: EventType, record: Value, old: Option<Value>) -> ChangeEvent {
        serde_json::from_value(json!({
            "id": "0000000000000001-00000000", "lsn": "0/1", "commit_timestamp": "2026-12-06T10:00:00Z",
            "schema": "realtime", "table": "messages",
            "type": match operation {
                EventType::Insert => "INSERT", EventType::Update => "UPDATE",
                EventType::Delete => "DELETE", EventType::Truncate => "TRUNCATE",
            },
            "columns": [], "record": if operation == EventType::Delete { Value::Null } else { record },
            "old_record": old, "primary_key": ["id", "inserted_at"],
        }))
        .unwrap()
    }

    #[test]
    fn a_sent_row_becomes_a_broadcast_to_its_private_room_with_its_id() {
        let row = json!({"id": "m1", "topic": "room:1", "extension": "broadcast", "event": "ev",
                         "payload": {"a": 1}, "binary_payload": null, "private": true,
                         "channel_id": null});
        let stored = from_change(&change(EventType::Insert, row, None)).unwrap();
        assert_eq!(stored.room, room_name("room:1", true));
        assert_eq!(stored.id, "m1");
        assert_eq!(stored.envelope.kind, Kind::User);
        assert_eq!(stored.envelope.event, "ev");
        assert_eq!(stored.envelope.meta, Some(json!({"id": "m1"})));
        assert!(
            matches!(stored.envelope.payload, BroadcastPayload::Json(ref j) if j.as_ref() == br#"{"a":1}"#)
        );
    }

    #[test]
    fn binary_rows_carry_bytes_and_public_rows_go_to_the_public_room() {
        let row = json!({"id": "m2", "topic": "t", "extension": "broadcast", "event": "bin",
                         "payload": null, "binary_payload": "\\x01ff", "private": false});
        let stored = from_change(&change(EventType::Insert, row, None)).unwrap();
        assert_eq!(stored.room, "t");
        assert!(
            matches!(stored.envelope.payload, BroadcastPayload::Binary(ref b) if b.as_ref() == [1, 255])
        );
    }

    #[test]
    fn only_chat_rows_deliver_updates_and_deletes() {
        let broadcast = json!({"id": "m3", "topic": "t", "extension": "broadcast", "event": "ev",
                               "payload": {}, "private": false, "channel_id": null});
        assert!(from_change(&change(EventType::Update, broadcast.clone(), None)).is_none());
        let chat = json!({"id": "m4", "topic": "general", "extension": "broadcast",
                          "event": "message:updated", "payload": {"content": "hi"},
                          "private": false, "channel_id": "c1"});
        let updated = from_change(&change(EventType::Update, chat.clone(), None)).unwrap();
        assert_eq!(updated.envelope.kind, Kind::Message);
        assert_eq!(updated.envelope.event, "message:updated");
        let deleted = from_change(&change(EventType::Delete, Value::Null, Some(chat))).unwrap();
        assert_eq!(deleted.envelope.event, "message:deleted");
    }

    #[test]
    fn probe_and_malformed_rows_deliver_nothing() {
        let presence = json!({"id": "p", "topic": "t", "extension": "presence", "event": null,
                              "payload": null, "private": true});
        assert!(from_change(&change(EventType::Insert, presence, None)).is_none());
        let odd_hex = json!({"id": "b", "topic": "t", "extension": "broadcast", "event": "e",
                             "binary_payload": "\\x0", "private": true});
        assert!(from_change(&change(EventType::Insert, odd_hex, None)).is_none());
        let no_event = json!({"id": "n", "topic": "t", "extension": "broadcast",
                              "payload": {}, "private": true});
        assert!(from_change(&change(EventType::Insert, no_event, None)).is_none());
    }
}
