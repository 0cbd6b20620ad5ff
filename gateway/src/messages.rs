//! Chat messages: sent by a client, seen by every subscriber of the channel on every protocol.
//!
//! Two paths, chosen by the channel's `persist_messages` (true unless the channel was created
//! `--ephemeral`):
//!
//! * **persisted** (DESIGN.md path 4): the gateway calls `realtime.send_message(...)` under the
//!   sender's claims, so Row Level Security (`WITH CHECK`) decides who may send, and answers
//!   the sender only once Postgres committed. The row is a database broadcast (its trigger
//!   fills topic, event and payload), so delivery comes from the database through
//!   [`crate::database_broadcasts`], like `realtime.send`.
//! * **ephemeral** (ad-hoc topics, channels that opt out): the sending gateway builds the
//!   `message:new` payload and publishes it on the channel's broadcast subject as a
//!   [`Kind::Message`] envelope; nothing is stored.

use crate::auth::channel_access::random_uuid;
use crate::auth::identity::Identity;
use crate::auth::session::{self, AllowedRoles, QueryAsError};
use crate::broadcast::Broadcasts;
use crate::db::Pool;
use crate::envelope::{BroadcastPayload, Envelope, Kind, Sender};
use bytes::Bytes;
use nself_realtime_shared::bus::BusError;
use serde_json::{json, Value};
use std::sync::Arc;

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

/// The sending side of both paths.
pub struct Messages {
    broadcasts: Arc<Broadcasts>,
    pool: Pool,
    roles: Arc<AllowedRoles>,
}

impl Messages {
    pub fn new(broadcasts: Arc<Broadcasts>, pool: Pool, roles: Arc<AllowedRoles>) -> Arc<Messages> {
        Arc::new(Messages {
            broadcasts,
            pool,
            roles,
        })
    }

    /// Stores a message under `identity`'s claims (the persisted path); returns the client
    /// form of the stored row (its `payload`). Delivery follows through the change log.
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
            "SELECT m.payload::text FROM realtime.send_message($1, $2, $3, $4::text::jsonb, $5) AS m",
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
        serde_json::from_str(&text)
            .map_err(|e| SendError::Unavailable(format!("unreadable message row: {e}")))
    }

    /// Publishes a message that is not stored (the ephemeral path) to the channel `slug`, whose
    /// subscribers are in `room`; returns what was sent.
    pub async fn publish(
        &self,
        from: Sender,
        user_id: &str,
        slug: &str,
        room: &str,
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
            .publish(room, &message_envelope(Some(from), "message:new", &payload))
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
