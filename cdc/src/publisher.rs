//! Publishing change events to the bus, and knowing which LSN is safe to confirm to Postgres.
//!
//! Two targets ([`Target`]): JetStream (stream `REALTIME_DB`, for a CDC sidecar and any number
//! of gateways) and the in-process [`MemoryChangeLog`] (`nself-realtime up` without
//! `NATS_URL`). The window logic is one code path for both: [`Publisher::publish`] sends and
//! returns at once, keeping the acknowledgement future in an ordered window of at most
//! `max_in_flight` events. The caller marks each transaction's end with [`Publisher::commit`];
//! an LSN becomes confirmable only when every event of its transaction and of all earlier ones
//! is acknowledged ([`Publisher::next_confirmed`]). Nothing is confirmed before it is stored.
//! An append to the in-process log *is* the store, so its acknowledgement is ready at once; it
//! still goes through the window, so confirmation, `is_full` and `is_idle` behave the same.
//!
//! Exactly once, in order, on JetStream:
//!
//! * every event carries `Nats-Msg-Id` = its deterministic id, so JetStream drops a
//!   re-publication within its duplicate window;
//! * a publisher created after a restart skips every id up to the last one already in the
//!   stream ([`last_published`]), so exactness does not depend on that window;
//! * every event also carries `Nats-Expected-Last-Sequence` = the stream sequence the event
//!   before it got (or the stream's last sequence for the first one), so JetStream refuses any
//!   event whose predecessor is missing. The stream therefore never has a gap: what it holds
//!   is always a prefix of what was sent, in order — even when the client reconnects and
//!   re-sends buffered messages after others were lost with the old socket. That is what makes
//!   "skip up to the last stored id" safe. After any refusal or publish error the caller drops
//!   the publisher and resumes from the slot's confirmed LSN.
//!
//! In process the same holds more simply: an append cannot be lost half-way, a new session
//! skips every id up to the log's last one ([`last_logged`]), and the log itself drops an id
//! not greater than its last one, as JetStream's `Nats-Msg-Id` does.

use crate::metrics::CdcMetrics;
use async_nats::jetstream::context::{Context, PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use nself_realtime_shared::bus::MemoryChangeLog;
use nself_realtime_shared::config::DB_STREAM;
use nself_realtime_shared::event::{ChangeEvent, EventId};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::subject;
use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// Largest event JSON the in-process log takes whole; a bigger one is reduced to its primary
/// key, as on JetStream. Nothing in process limits a message, but a multi-megabyte row pushed
/// to every subscriber's socket is almost certainly a mistake, and 8 MiB matches the largest
/// `max_payload` people commonly give nats-server, so `up` and a NATS deployment behave alike.
pub const IN_PROCESS_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Room left in JetStream's `max_payload` for the subject and headers of a message.
const HEADER_ALLOWANCE: usize = 1024;

/// Why publishing stopped. Every variant ends the replication session; the service reconnects
/// and resumes from the last confirmed LSN.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create or update JetStream stream {DB_STREAM}: {0}")]
    Stream(String),
    #[error("cannot read the last event of stream {DB_STREAM}: {0}")]
    LastEvent(String),
    #[error("publishing to JetStream failed: {0}")]
    Publish(String),
    #[error("JetStream did not acknowledge an event: {0}")]
    Ack(String),
    /// JetStream refused an event because the stream does not end where the publisher expected:
    /// an earlier event was lost on the way, or the server's count moved (see
    /// [`Target::JetStream`]). Carries the server's last sequence, where the next session starts.
    #[error("JetStream refused an event: the stream's last sequence is {0}, not the one expected; resuming from the slot")]
    OutOfStep(u64),
    #[error("event {0} has a name that cannot become a NATS subject: {1}")]
    Subject(EventId, subject::SubjectError),
}

pub use nself_realtime_shared::bus::StreamSettings;

/// Creates the stream, or updates its retention and duplicate window to the configured ones
/// (the definition is shared with the gateways that read it).
pub async fn ensure_stream(js: &Context, settings: &StreamSettings) -> Result<(), PublishError> {
    nself_realtime_shared::bus::ensure_stream(js, settings)
        .await
        .map_err(|e| PublishError::Stream(e.to_string()))
}

/// Where the stream ends: its last sequence and the id of the event stored there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamEnd {
    /// The stream's last sequence (0 for a new stream); it stays when messages expire.
    pub last_sequence: u64,
    /// The id of the newest event, if the stream still holds it.
    pub last_id: Option<EventId>,
}

/// Reads where the stream ends.
pub async fn last_published(js: &Context) -> Result<StreamEnd, PublishError> {
    let err = |e: &dyn std::fmt::Display| PublishError::LastEvent(e.to_string());
    let mut stream = js.get_stream(DB_STREAM).await.map_err(|e| err(&e))?;
    let last_sequence = stream
        .info()
        .await
        .map_err(|e| err(&e))?
        .state
        .last_sequence;
    if last_sequence == 0 {
        return Ok(StreamEnd::default());
    }
    let last_id = match stream.get_raw_message(last_sequence).await {
        Ok(message) => message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .and_then(|id| id.as_str().parse().ok()),
        // Expired or deleted: nothing left to deduplicate against.
        Err(e)
            if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
        {
            None
        }
        Err(e) => return Err(err(&e)),
    };
    Ok(StreamEnd {
        last_sequence,
        last_id,
    })
}

/// Builds a JetStream context whose own in-flight limit sits above ours, so that our window,
/// not the client's, decides when to stop reading.
pub fn context(client: async_nats::Client, max_in_flight: usize, ack_timeout: Duration) -> Context {
    async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(max_in_flight + 64)
        .ack_timeout(ack_timeout)
        .timeout(ack_timeout)
        .build(client)
}

/// Where the in-process log ends: its newest id (there are no sequences to keep in step with,
/// so `last_sequence` is 0).
pub fn last_logged(log: &MemoryChangeLog) -> StreamEnd {
    StreamEnd {
        last_sequence: 0,
        last_id: log.last_id(),
    }
}

/// Where a publisher puts events.
// One per replication session, built once and never moved on a hot path: boxing the JetStream
// context to even out the variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// The JetStream stream `REALTIME_DB`.
    JetStream {
        js: Context,
        /// The server's `max_payload`; a bigger event is reduced to its primary key.
        max_payload: usize,
        /// The stream's last sequence as JetStream will see it when the next event arrives:
        /// the next event carries it as `Nats-Expected-Last-Sequence`. Normally
        /// [`StreamEnd::last_sequence`]; after a refusal it is the sequence the server
        /// reported, because a nats-server that crashed can restart counting from a sequence
        /// its store does not reach (it then stores the next event right after its last
        /// message, so the stream stays gap-free).
        expected_last_sequence: u64,
    },
    /// The in-process change log; events over [`IN_PROCESS_MAX_EVENT_BYTES`] are reduced.
    Memory(MemoryChangeLog),
}

impl Target {
    /// The largest event JSON sent whole, and how to describe that limit in an event's `errors`.
    fn event_limit(&self) -> (usize, String) {
        match self {
            Target::JetStream { max_payload, .. } => (
                max_payload.saturating_sub(HEADER_ALLOWANCE),
                format!(
                    "NATS max_payload ({max_payload} bytes): only the primary key is sent; \
                     raise max_payload in nats-server.conf to receive whole rows"
                ),
            ),
            Target::Memory(_) => (
                IN_PROCESS_MAX_EVENT_BYTES,
                format!(
                    "the in-process bus limit ({IN_PROCESS_MAX_EVENT_BYTES} bytes): only the \
                     primary key is sent"
                ),
            ),
        }
    }
}

/// One event's acknowledgement, in the window. Resolves to whether the target already had the
/// event (a duplicate dropped by id).
enum Ack {
    /// JetStream's answer, still to come.
    JetStream(<PublishAckFuture as IntoFuture>::IntoFuture),
    /// Appended to the in-process log (or dropped there as a duplicate): ready at once.
    Stored { duplicate: bool },
}

impl Future for Ack {
    type Output = Result<bool, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Ack::JetStream(ack) => ack
                .as_mut()
                .poll(cx)
                .map(|result| result.map(|ack| ack.duplicate).map_err(refusal)),
            Ack::Stored { duplicate } => Poll::Ready(Ok(*duplicate)),
        }
    }
}

/// JetStream's refusal of an event, as the error that restarts the session.
fn refusal(e: async_nats::jetstream::context::PublishError) -> PublishError {
    let server_last = (e.kind()
        == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence)
        .then(|| server_last_sequence(&e.to_string()))
        .flatten();
    match server_last {
        Some(sequence) => PublishError::OutOfStep(sequence),
        None => PublishError::Ack(e.to_string()),
    }
}

/// The ordered window of unacknowledged events of one replication session.
pub struct Publisher {
    target: Target,
    max_in_flight: usize,
    acks: FuturesOrdered<Ack>,
    /// Events sent so far, and acknowledged so far (acks complete in order).
    sent: u64,
    acked: u64,
    /// Transaction ends not yet confirmable: (events sent when it committed, its end LSN).
    commits: VecDeque<(u64, Lsn)>,
    /// Ids up to this one are already stored and are skipped.
    skip_through: Option<EventId>,
    metrics: Arc<CdcMetrics>,
}

impl Publisher {
    /// A publisher to `target`, whose stored events end at `stream_end` (from
    /// [`last_published`] or [`last_logged`]): every id up to its `last_id` is skipped.
    pub fn new(
        target: Target,
        max_in_flight: usize,
        stream_end: StreamEnd,
        metrics: Arc<CdcMetrics>,
    ) -> Publisher {
        Publisher {
            target,
            max_in_flight,
            acks: FuturesOrdered::new(),
            sent: 0,
            acked: 0,
            commits: VecDeque::new(),
            skip_through: stream_end.last_id,
            metrics,
        }
    }

    /// Whether the window is full: the caller must wait for [`Publisher::next_confirmed`]
    /// before publishing more (and so stops reading the replication stream).
    pub fn is_full(&self) -> bool {
        self.acks.len() >= self.max_in_flight
    }

    /// Events sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.acks.len()
    }

    /// Nothing in flight and no transaction waiting for acknowledgements.
    pub fn is_idle(&self) -> bool {
        self.acks.is_empty() && self.commits.is_empty()
    }

    /// Sends one event (or skips it if the target already has it).
    pub async fn publish(&mut self, event: &ChangeEvent) -> Result<(), PublishError> {
        if self.skip_through.is_some_and(|last| event.id <= last) {
            self.metrics.events_skipped.inc();
            return Ok(());
        }
        let subject = subject::table_change(&event.schema, &event.table, event.operation.into())
            .map_err(|e| PublishError::Subject(event.id, e))?;
        let payload = self.encode(event);
        let bytes = payload.len();
        let ack = match &mut self.target {
            Target::JetStream {
                js,
                expected_last_sequence,
                ..
            } => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    event.id.to_string().as_str(),
                );
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                    expected_last_sequence.to_string().as_str(),
                );
                let ack = js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| PublishError::Publish(e.to_string()))?;
                tracing::trace!(id = %event.id, expected_last_sequence = *expected_last_sequence, "published");
                *expected_last_sequence += 1;
                Ack::JetStream(ack.into_future())
            }
            Target::Memory(log) => {
                let duplicate = log.append(event.id, subject, payload).is_none();
                tracing::trace!(id = %event.id, duplicate, "appended to the in-process log");
                Ack::Stored { duplicate }
            }
        };
        self.acks.push_back(ack);
        self.sent += 1;
        self.metrics.events_published.inc();
        self.metrics.bytes_published.inc_by(bytes as u64);
        self.metrics.in_flight.set(self.acks.len() as i64);
        Ok(())
    }

    /// The event's JSON, reduced to its primary key when it would exceed the target's limit
    /// (on JetStream, publishing it whole would fail forever and stall the stream).
    fn encode(&self, event: &ChangeEvent) -> Bytes {
        let json = serde_json::to_vec(event).expect("change events always serialize");
        let (limit, limit_text) = self.target.event_limit();
        if json.len() <= limit {
            return Bytes::from(json);
        }
        self.metrics.events_oversized.inc();
        tracing::warn!(
            id = %event.id, schema = %event.schema, table = %event.table, bytes = json.len(),
            limit, "event exceeds the bus' message limit; publishing its primary key only"
        );
        let keep_key = |row: &Option<nself_realtime_shared::event::Row>| {
            row.as_ref().map(|row| {
                row.iter()
                    .filter(|(name, _)| event.primary_key.contains(name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            })
        };
        let mut reduced = event.clone();
        reduced.record = keep_key(&event.record);
        reduced.old_record = keep_key(&event.old_record);
        reduced.unchanged_toast.clear();
        reduced.errors.push(format!(
            "event of {} bytes exceeds {limit_text}",
            json.len()
        ));
        Bytes::from(serde_json::to_vec(&reduced).expect("change events always serialize"))
    }

    /// Marks the end of a transaction whose events were all passed to [`Publisher::publish`].
    /// Returns its end LSN at once when nothing of it (or before it) awaits acknowledgement.
    pub fn commit(&mut self, end_lsn: Lsn) -> Option<Lsn> {
        self.commits.push_back((self.sent, end_lsn));
        self.take_confirmable()
    }

    fn take_confirmable(&mut self) -> Option<Lsn> {
        let mut confirmable = None;
        while let Some(&(needed, lsn)) = self.commits.front() {
            if self.acked < needed {
                break;
            }
            confirmable = Some(lsn);
            self.commits.pop_front();
        }
        confirmable
    }

    /// Waits for the oldest acknowledgement; returns the newest LSN that became safe to confirm,
    /// if any. Pending forever when nothing is in flight. Cancel-safe.
    pub async fn next_confirmed(&mut self) -> Result<Option<Lsn>, PublishError> {
        match self.acks.next().await {
            None => std::future::pending().await,
            Some(Err(e)) => {
                self.metrics.publish_errors.inc();
                Err(e)
            }
            Some(Ok(duplicate)) => {
                if duplicate {
                    self.metrics.events_deduplicated.inc();
                }
                self.acked += 1;
                self.metrics.in_flight.set(self.acks.len() as i64);
                Ok(self.take_confirmable())
            }
        }
    }
}

/// The sequence in JetStream's refusal `wrong last sequence: 1136`.
fn server_last_sequence(error: &str) -> Option<u64> {
    let (_, rest) = error.split_once("wrong last sequence: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_server_sequence() {
        assert_eq!(
            server_last_sequence("wrong last sequence: 1136 (code 400, error code 10071)"),
            Some(1136)
        );
        assert_eq!(server_last_sequence("timed out"), None);
    }

    fn event(lsn: u64, position: u32, label: &str) -> ChangeEvent {
        let record: nself_realtime_shared::event::Row =
            serde_json::from_value(serde_json::json!({"id": position, "label": label})).unwrap();
        ChangeEvent {
            id: EventId {
                commit_lsn: Lsn(lsn),
                position,
            },
            lsn: Lsn(lsn).to_string(),
            commit_timestamp: "2026-01-30T10:15:23.123456Z".into(),
            schema: "public".into(),
            table: "items".into(),
            operation: nself_realtime_shared::event::EventType::Insert,
            columns: Vec::new(),
            record: Some(record),
            old_record: None,
            primary_key: vec!["id".into()],
            unchanged_toast: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn memory_publisher(log: &MemoryChangeLog, max_in_flight: usize) -> Publisher {
        Publisher::new(
            Target::Memory(log.clone()),
            max_in_flight,
            last_logged(log),
            Arc::new(CdcMetrics::new()),
        )
    }

    #[tokio::test]
    async fn the_in_process_log_goes_through_the_same_window() {
        let log = MemoryChangeLog::new(Duration::from_secs(60), 100);
        let mut publisher = memory_publisher(&log, 2);
        assert!(publisher.is_idle());
        publisher.publish(&event(10, 0, "a")).await.unwrap();
        publisher.publish(&event(10, 1, "b")).await.unwrap();
        assert!(publisher.is_full());
        // Stored at once, confirmable only once the window has seen the acknowledgements.
        assert_eq!(log.last_id(), Some(event(10, 1, "").id));
        assert_eq!(publisher.commit(Lsn(11)), None);
        assert_eq!(publisher.next_confirmed().await.unwrap(), None);
        assert_eq!(publisher.next_confirmed().await.unwrap(), Some(Lsn(11)));
        assert!(publisher.is_idle() && !publisher.is_full());
        // A transaction with nothing to send is confirmable at once.
        assert_eq!(publisher.commit(Lsn(12)), Some(Lsn(12)));
    }

    #[tokio::test]
    async fn a_new_in_process_publisher_skips_what_the_log_has() {
        let log = MemoryChangeLog::new(Duration::from_secs(60), 100);
        let mut first = memory_publisher(&log, 10);
        first.publish(&event(10, 0, "a")).await.unwrap();
        first.publish(&event(10, 1, "b")).await.unwrap();
        drop(first);
        let mut again = memory_publisher(&log, 10);
        again.publish(&event(10, 0, "a")).await.unwrap();
        again.publish(&event(10, 1, "b")).await.unwrap();
        again.publish(&event(20, 0, "c")).await.unwrap();
        assert_eq!(again.in_flight(), 1, "only the new event was sent");
        assert_eq!(again.metrics.events_skipped.get(), 2);
        assert_eq!(log.last_id(), Some(event(20, 0, "").id));
    }

    #[tokio::test]
    async fn oversized_in_process_events_keep_their_key() {
        let log = MemoryChangeLog::new(Duration::from_secs(60), 100);
        let mut publisher = memory_publisher(&log, 10);
        let big = "x".repeat(IN_PROCESS_MAX_EVENT_BYTES + 1);
        publisher.publish(&event(10, 7, &big)).await.unwrap();
        let mut following = nself_realtime_shared::bus::ChangeLog::follow(
            &log,
            "realtime.db.>",
            nself_realtime_shared::bus::StartAt::Time(time::OffsetDateTime::UNIX_EPOCH),
        )
        .await
        .unwrap();
        let stored = following.changes.next().await.unwrap().unwrap();
        assert_eq!(stored.subject, "realtime.db.public.items.insert");
        let stored: ChangeEvent = serde_json::from_slice(&stored.payload).unwrap();
        assert_eq!(
            stored.record.unwrap(),
            serde_json::from_value::<nself_realtime_shared::event::Row>(
                serde_json::json!({"id": 7})
            )
            .unwrap()
        );
        assert!(
            stored.errors[0].contains("in-process bus limit"),
            "{:?}",
            stored.errors
        );
    }
}
