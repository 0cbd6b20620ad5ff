//! The change log: every table change, retained for `REALTIME_MESSAGE_TTL` in commit order, read
//! from any point (new changes only, a time, or after an event id) and then followed live.
//!
//! Two sides, each a trait with an in-process and a JetStream backend: the CDC writes through a
//! [`ChangeLogWriter`] (append in commit order, learn when each event is stored, know where the
//! log ended), gateways read through [`ChangeLog`].
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
use futures::future::BoxFuture;
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

/// Where the stored log ends when a writer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogEnd {
    /// The log's last sequence (0 for a new log); it stays when entries expire.
    pub last_sequence: u64,
    /// The id of the newest event, if the log still holds it: a writer skips every id up to it.
    pub last_id: Option<EventId>,
}

/// An append's acknowledgement: resolves once the event is stored, to whether the log already
/// had it (a duplicate, dropped by id).
pub type Stored = BoxFuture<'static, Result<bool, AppendError>>;

/// Why writing to the change log failed. Each ends the writer: the CDC drops it and resumes
/// from the slot's confirmed LSN with a new one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log could not be created or configured.
    #[error("cannot set up the change log: {0}")]
    Setup(String),
    /// Where the log ends could not be read.
    #[error("cannot read the end of the change log: {0}")]
    End(String),
    #[error("sending an event to the change log failed: {0}")]
    Send(String),
    #[error("the change log did not acknowledge an event: {0}")]
    Ack(String),
    /// The log refused an event because it does not end where the writer expected (an
    /// earlier event was lost on the way): carries the log's last sequence, where the next
    /// writer continues.
    #[error("the change log refused an event: its last sequence is {0}, not the one expected")]
    OutOfStep(u64),
}

/// The write side of the change log: the CDC's one way to store change events, whatever the
/// backend. Events are stored in the order they are appended; a writer never stores an event
/// whose predecessor is missing.
#[async_trait]
pub trait ChangeLogWriter: Send {
    /// Where the log ended when this writer was made.
    fn end(&self) -> LogEnd;

    /// The largest event stored whole, and that limit in words for an event's `errors` (a
    /// bigger event is reduced to its primary key by the caller).
    fn event_limit(&self) -> (usize, String);

    /// Sends one event and returns once it is on its way; the acknowledgement resolves once it
    /// is stored.
    async fn append(
        &mut self,
        id: EventId,
        subject: String,
        payload: Bytes,
    ) -> Result<Stored, AppendError>;
}
