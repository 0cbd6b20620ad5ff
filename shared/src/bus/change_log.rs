//! The change log: every table change, retained for `REALTIME_MESSAGE_TTL` in commit order, read
//! from any point (new changes only, a time, or after an event id) and then followed live.
//!
//! Gateways read it per table (interest-based: a subject filter such as
//! `realtime.db.public.users.*`). The sequence numbers it hands out increase with commit order
//! and are what lets a reader merge a replay with a live feed without gap or duplicate: the
//! replay runs until it is caught up (`pending == 0`), and the live events past its last
//! sequence follow.

use super::BusError;
use crate::event::EventId;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only changes stored from now on.
    New,
    /// Every change stored at or after this time (a change is stored after its commit, so this
    /// includes every change committed at or after it; callers filter on `commit_timestamp`).
    Time(time::OffsetDateTime),
    /// Every change after the one with this id.
    After(EventId),
}

/// One change read from the log.
#[derive(Debug, Clone)]
pub struct LoggedChange {
    /// Position in the log; increases with commit order.
    pub sequence: u64,
    /// Changes matching the reader's filter stored after this one and not yet delivered to it
    /// when it was delivered: 0 means the reader had caught up with the log at that moment.
    pub pending: u64,
    pub subject: String,
    /// The change event JSON, as the CDC built it.
    pub payload: Bytes,
}

/// Changes in log order. An `Err` item means the reader is broken and should be re-created.
pub type ChangeStream = BoxStream<'static, Result<LoggedChange, BusError>>;

/// A reader in place.
pub struct Following {
    /// Matching changes between the start point and the end of the log when the reader was
    /// created (0: nothing to replay, the reader is live at once).
    pub pending_at_start: u64,
    pub changes: ChangeStream,
}

/// The retained, ordered log of table changes.
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// Starts reading changes whose subject matches `filter` from `start`, then live. Returns
    /// once the reader is in place: every change stored after this returns will be delivered.
    async fn follow(&self, filter: &str, start: StartAt) -> Result<Following, BusError>;
}
