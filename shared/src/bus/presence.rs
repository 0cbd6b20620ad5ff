//! The presence store: who is in which channel, shared by every gateway.
//!
//! An entry's key is `<topic token>.<member id>` (see [`crate::subject::kv_token`]) and its
//! value is the member's JSON, written by the gateway that holds the member's connection. A
//! gateway watches the topics it has subscribers for: first every current entry, then
//! [`PresenceChange::Synced`], then changes as they happen.
//!
//! Liveness is the owners' job: an owner re-puts its entries regularly, and watchers treat an
//! entry not refreshed within the timeout as gone (a killed gateway deletes nothing). The NATS
//! bucket's `max_age` only collects the garbage.

use super::BusError;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// The NATS KV bucket holding presence entries.
pub const PRESENCE_BUCKET: &str = "realtime_presence";

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceChange {
    /// An entry was written or refreshed, at `written_at` by the store's clock when it says
    /// (an entry in a watch's initial snapshot may be old: a dead owner's leftover).
    Put {
        key: String,
        value: Bytes,
        written_at: Option<time::OffsetDateTime>,
    },
    /// An entry was removed by its owner.
    Delete { key: String },
    /// Every entry that existed when the watch started has been delivered.
    Synced,
}

/// Presence changes in order. An `Err` item means the watch broke and should be re-created.
pub type PresenceWatch = BoxStream<'static, Result<PresenceChange, BusError>>;

/// Shared presence entries.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Writes or refreshes an entry.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError>;
    /// Removes an entry.
    async fn delete(&self, key: &str) -> Result<(), BusError>;
    /// Watches every key under `prefix.`: current entries, [`PresenceChange::Synced`], then
    /// changes.
    async fn watch(&self, prefix: &str) -> Result<PresenceWatch, BusError>;
    /// Every current entry of every topic, with when it was written when the store says (for
    /// operators' views; the caller decides which are stale).
    async fn snapshot(&self) -> Result<Vec<PresenceEntry>, BusError>;
}

/// One entry of a [`PresenceStore::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEntry {
    pub key: String,
    pub value: Bytes,
    pub written_at: Option<time::OffsetDateTime>,
}
