//! The bus: how processes exchange events, behind traits with two backends each.
//!
//! Three concepts, each a trait with an in-process implementation (for `nself-realtime up` on one
//! machine) and a NATS one (for any number of gateways and a CDC sidecar):
//!
//! | concept | trait | in-process | NATS |
//! | --- | --- | --- | --- |
//! | ephemeral pub/sub (broadcast, NOTIFY) | [`Broker`] | [`MemoryBroker`] | [`NatsBroker`] (core NATS) |
//! | the ordered, retained log of table changes: read | [`ChangeLog`] | [`MemoryChangeLog`] | [`JetStreamChangeLog`] (stream `REALTIME_DB`) |
//! | … and written by the CDC | [`ChangeLogWriter`] | [`MemoryChangeLog`] | [`JetStreamChangeLogWriter`] |
//! | presence entries shared by every gateway | [`PresenceStore`] | [`MemoryPresence`] | [`KvPresence`] (KV bucket `realtime_presence`) |
//!
//! Subjects are NATS subjects (see [`crate::subject`]) in both backends, so callers never care
//! which one runs.

mod broker;
mod change_log;
pub mod control;
mod jetstream_change_log;
mod kv_presence;
mod memory_broker;
mod memory_change_log;
mod memory_presence;
mod nats_broker;
mod presence;

pub use broker::{Broker, BusMessage};
pub use change_log::{
    AppendError, ChangeLog, ChangeLogWriter, ChangeStream, Following, LogEnd, LoggedChange,
    StartAt, Stored,
};
pub use jetstream_change_log::{
    context as jetstream_context, ensure_stream, JetStreamChangeLog, JetStreamChangeLogWriter,
    StreamSettings,
};
pub use kv_presence::KvPresence;
pub use memory_broker::MemoryBroker;
pub use memory_change_log::{MemoryChangeLog, IN_PROCESS_MAX_EVENT_BYTES};
pub use memory_presence::MemoryPresence;
pub use nats_broker::NatsBroker;
pub use presence::{PresenceChange, PresenceEntry, PresenceStore, PresenceWatch, PRESENCE_BUCKET};

/// A bus operation failed. The message is meant for logs and health, and names the backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("publishing to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscribing to {subject} failed: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("the change log cannot be read: {0}")]
    ChangeLog(String),
    /// The reader asked for events older than the log keeps (`REALTIME_MESSAGE_TTL`), or fell
    /// so far behind that the in-process log dropped what it had not read yet.
    #[error("the change log no longer holds the requested events: {0}")]
    Expired(String),
    #[error("presence store: {0}")]
    Presence(String),
}
