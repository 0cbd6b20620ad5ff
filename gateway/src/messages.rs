//! Chat messages: sent by a client, seen by every subscriber of the channel on every protocol.
//!
//! Two paths, chosen by the channel's `persist_messages`:
//!
//! * **ephemeral** (ad-hoc topics, channels that do not persist): the sending gateway builds the
//!   `message:new` payload and publishes it on the channel's broadcast subject as a
//!   [`Kind::Message`] envelope; nothing is stored.
//! * **persisted** (DESIGN.md path 4): the gateway calls `realtime.send_message(...)` under the
//!   sender's claims, so Row Level Security (`WITH CHECK`) decides who may send, and answers
//!   the sender only once Postgres committed. Delivery then comes from the database: the CDC
//!   streams the row into the change log, and every gateway with subscribers on a persisted
//!   channel follows `realtime.db.realtime.messages.*` (one reader per gateway) and hands each
//!   message to its local subscribers of that channel. Edits (`edited_at`) become
//!   `message:updated`, soft deletes (`deleted_at`) and hard DELETEs `message:deleted`
//!   (`realtime.messages` has `REPLICA IDENTITY FULL`, so a DELETE still names its channel).
//!
//! Persisted messages are not checked row by row against the reader's claims: the messages
//! policy lets exactly those who can see the channel read its messages, and every subscriber
//! passed that check when it joined (and again on each token refresh).

use crate::auth::identity::Identity;
use crate::auth::session::{self, AllowedRoles, QueryAsError};
use crate::broadcast::Broadcasts;
use crate::db::Pool;
use crate::envelope::{BroadcastPayload, Envelope, Kind, Sender};
use crate::metrics::Metrics;
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::{BusError, ChangeLog, StartAt};
use nself_realtime_shared::event::{ChangeEvent, EventType, Row};
use nself_realtime_shared::subject;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// What a client asks to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub content: &'a str,
    pub message_type: &'a str,
    pub metadata: &'a Value,
    pub thread_id: Option<&'a str>,
}

/// Sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The claims may not send to this channel (RLS `WITH CHECK`, or the channel is not
    /// visible to them).
    #[error("you may not send messages to channel {channel}: {reason}")]
    Denied { channel: String, reason: String },
    /// Postgres refused the message itself (`22023`: empty or over-long content, unknown type).
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("the message could not be stored: {0}")]
    Unavailable(String),
    #[error("the message could not be published: {0}")]
    Bus(#[from] BusError),
}

/// The relay of persisted messages, and the sending side of both paths.
pub struct Messages {
    changes: Arc<dyn ChangeLog>,
    metrics: Arc<Metrics>,
    broadcasts: Arc<Broadcasts>,
    pool: Pool,
    roles: Arc<AllowedRoles>,
    /// channel id → slug → how many local joins registered it.
    channels: Mutex<HashMap<String, HashMap<String, usize>>>,
    reading: OnceCell<()>,
}

/// A registration of a persisted channel, to remove it.
#[derive(Debug, Clone)]
pub struct PersistedChannel {
    channel_id: String,
    slug: String,
}

impl Messages {
    pub fn new(
        changes: Arc<dyn ChangeLog>,
        broadcasts: Arc<Broadcasts>,
        pool: Pool,
        roles: Arc<AllowedRoles>,
        metrics: Arc<Metrics>,
    ) -> Arc<Messages> {
        Arc::new(Messages {
            changes,
            metrics,
            broadcasts,
            pool,
            roles,
            channels: Mutex::new(HashMap::new()),
            reading: OnceCell::new(),
        })
    }

    /// Registers a joined persisted channel; returns once this gateway reads the messages
    /// table's changes, so every message committed after the join reply is delivered.
    pub async fn register(
        self: &Arc<Self>,
        channel_id: &str,
        slug: &str,
    ) -> Result<PersistedChannel, BusError> {
        *self
            .channels
            .lock()
            .expect("channels lock")
            .entry(channel_id.to_string())
            .or_default()
            .entry(slug.to_string())
            .or_default() += 1;
        let registration = PersistedChannel {
            channel_id: channel_id.to_string(),
            slug: slug.to_string(),
        };
        if let Err(e) = self.reading.get_or_try_init(|| self.start_reading()).await {
            self.unregister(&registration);
            return Err(e);
        }
        Ok(registration)
    }

    pub fn unregister(&self, registration: &PersistedChannel) {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(slugs) = channels.get_mut(&registration.channel_id) {
            if let Some(count) = slugs.get_mut(&registration.slug) {
                *count -= 1;
                if *count == 0 {
                    slugs.remove(&registration.slug);
                }
            }
            if slugs.is_empty() {
                channels.remove(&registration.channel_id);
            }
        }
    }

    /// Starts the one reader of `realtime.messages` changes. It lives as long as the gateway
    /// and, when the change log fails it, resumes after the last change it handled.
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
                    let Some(messages) = weak.upgrade() else {
                        return;
                    };
                    match change {
                        Ok(change) => {
                            backoff = Duration::from_millis(100);
                            match serde_json::from_slice::<ChangeEvent>(&change.payload) {
                                Ok(event) => {
                                    last = Some(event.id);
                                    messages.relay(&event);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "skipping a realtime.messages change that is not a change event")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the messages reader failed; resuming");
                            break;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                let Some(messages) = weak.upgrade() else {
                    return;
                };
                let start = last.map_or(StartAt::New, StartAt::After);
                match messages.changes.follow(&filter, start).await {
                    Ok(following) => changes = following.changes,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot resume the messages reader");
                        changes = futures::stream::empty().boxed();
                    }
                }
            }
        });
        Ok(())
    }

    /// Hands one change of `realtime.messages` to the local subscribers of its channel.
    fn relay(&self, event: &ChangeEvent) {
        let (row, name) = match event.operation {
            EventType::Insert => (event.record.as_ref(), "message:new"),
            EventType::Update => {
                let row = event.record.as_ref();
                let newly_deleted = row.is_some_and(|r| !r["deleted_at"].is_null())
                    && event
                        .old_record
                        .as_ref()
                        .is_none_or(|old| old.get("deleted_at").is_none_or(Value::is_null));
                (
                    row,
                    if newly_deleted {
                        "message:deleted"
                    } else {
                        "message:updated"
                    },
                )
            }
            EventType::Delete => (event.old_record.as_ref(), "message:deleted"),
            EventType::Truncate => return,
        };
        let Some(row) = row else { return };
        let Some(channel_id) = row.get("channel_id").and_then(Value::as_str) else {
            return;
        };
        let slugs: Vec<String> = match self.channels.lock().expect("channels lock").get(channel_id)
        {
            Some(slugs) => slugs.keys().cloned().collect(),
            None => return,
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
        for slug in slugs {
            let payload = stored_message(&slug, row);
            self.broadcasts
                .deliver_local(&slug, &message_envelope(None, name, &payload));
        }
    }

    /// Stores a message under `identity`'s claims (the persisted path); returns the client
    /// form of the stored row. Delivery follows through the change log.
    pub async fn store(
        &self,
        identity: &Identity,
        slug: &str,
        message: &Outgoing<'_>,
    ) -> Result<Value, SendError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let metadata = message.metadata.to_string();
        let rows = session::write_as(
            &mut client,
            &identity.claims,
            &self.roles,
            "SELECT row_to_json(m)::text FROM realtime.send_message($1, $2, $3, $4::text::jsonb, $5) AS m",
            &[
                &slug,
                &message.content,
                &message.message_type,
                &metadata,
                &message.thread_id,
            ],
        )
        .await
        .map_err(|e| match e {
            QueryAsError::Session(e) => SendError::Denied {
                channel: slug.to_string(),
                reason: e.to_string(),
            },
            QueryAsError::Query(e) => match e.as_db_error() {
                Some(db) if db.code().code().starts_with("42") || db.code().code() == "P0002" => {
                    SendError::Denied {
                        channel: slug.to_string(),
                        reason: db.message().to_string(),
                    }
                }
                Some(db) if db.code().code().starts_with("22") || db.code().code() == "23514" => {
                    SendError::Invalid(db.message().to_string())
                }
                _ => SendError::Unavailable(nself_realtime_shared::postgres_error::describe(&e)),
            },
        })?;
        let text: String = rows
            .first()
            .map(|row| row.get(0))
            .ok_or_else(|| SendError::Unavailable("send_message returned no row".into()))?;
        let row: Row = serde_json::from_str(&text)
            .map_err(|e| SendError::Unavailable(format!("unreadable message row: {e}")))?;
        Ok(stored_message(slug, &row))
    }

    /// Publishes a message that is not stored (the ephemeral path); returns what was sent.
    pub async fn publish(
        &self,
        from: Sender,
        user_id: &str,
        slug: &str,
        message: &Outgoing<'_>,
    ) -> Result<Value, SendError> {
        let now = crate::wire::now_rfc3339();
        let payload = json!({
            "id": random_uuid(),
            "roomName": slug,
            "channel": slug,
            "userId": user_id,
            "content": message.content,
            "messageType": message.message_type,
            "threadId": message.thread_id,
            "metadata": message.metadata,
            "timestamp": now,
            "sentAt": now,
            "persisted": false,
        });
        self.broadcasts
            .publish(slug, &message_envelope(Some(from), "message:new", &payload))
            .await?;
        Ok(payload)
    }
}

/// A [`Kind::Message`] envelope carrying `payload`.
fn message_envelope(from: Option<Sender>, event: &str, payload: &Value) -> Envelope {
    Envelope {
        from,
        kind: Kind::Message,
        event: event.to_string(),
        payload: BroadcastPayload::Json(Bytes::from(
            serde_json::to_vec(payload).expect("JSON values serialize"),
        )),
        meta: None,
    }
}

/// The client form of a `realtime.messages` row (as the CDC or `row_to_json` wrote it).
pub fn stored_message(slug: &str, row: &Row) -> Value {
    let field = |name: &str| row.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": field("id"),
        "roomName": slug,
        "channel": slug,
        "channelId": field("channel_id"),
        "userId": field("user_id"),
        "content": field("content"),
        "messageType": field("message_type"),
        "threadId": field("thread_id"),
        "metadata": field("metadata"),
        "timestamp": field("sent_at"),
        "sentAt": field("sent_at"),
        "editedAt": field("edited_at"),
        "deletedAt": field("deleted_at"),
        "persisted": true,
    })
}

/// A random (version 4) UUID for an ephemeral message.
fn random_uuid() -> String {
    let bits: u128 = rand::random::<u128>() & !(0xf000 << 64) & !(0xc000 << 48);
    let bits = bits | (0x4000 << 64) | (0x8000 << 48);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(random_uuid(), id);
    }

    #[test]
    fn stored_rows_become_client_messages() {
        let row: Row = serde_json::from_value(json!({
            "id": "m1", "channel_id": "c1", "user_id": "u1", "content": "hi",
            "message_type": "text", "metadata": {"a": 1}, "thread_id": null,
            "sent_at": "2026-01-30T10:15:23Z", "edited_at": null, "deleted_at": null
        }))
        .unwrap();
        let message = stored_message("general", &row);
        assert_eq!(message["roomName"], "general");
        assert_eq!(message["userId"], "u1");
        assert_eq!(message["metadata"]["a"], 1);
        assert_eq!(message["timestamp"], "2026-01-30T10:15:23Z");
    }
}
