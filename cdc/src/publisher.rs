//! Publishing change events to JetStream, and knowing which LSN is safe to confirm to Postgres.
//!
//! Events go out asynchronously: [`Publisher::publish`] sends and returns at once, keeping the
//! acknowledgement future in an ordered window of at most `max_in_flight` events. The caller
//! marks each transaction's end with [`Publisher::commit`]; an LSN becomes confirmable only when
//! JetStream has acknowledged every event of its transaction and of all earlier ones
//! ([`Publisher::next_confirmed`]). Nothing is confirmed before it is stored.
//!
//! Exactly once, in order:
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

use crate::health::CdcMetrics;
use async_nats::jetstream::context::{Context, PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use nself_realtime_shared::config::DB_STREAM;
use nself_realtime_shared::event::{ChangeEvent, EventId};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::subject;
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

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
    /// [`Publisher::new`]). Carries the server's last sequence, where the next session starts.
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

/// The ordered window of unacknowledged events of one replication session.
pub struct Publisher {
    js: Context,
    max_payload: usize,
    max_in_flight: usize,
    acks: FuturesOrdered<<PublishAckFuture as IntoFuture>::IntoFuture>,
    /// Events sent so far, and acknowledged so far (acks complete in order).
    sent: u64,
    acked: u64,
    /// Transaction ends not yet confirmable: (events sent when it committed, its end LSN).
    commits: VecDeque<(u64, Lsn)>,
    /// Ids up to this one are already stored and are skipped.
    skip_through: Option<EventId>,
    /// The stream's last sequence as JetStream will see it when the next event arrives: the
    /// next event carries it as `Nats-Expected-Last-Sequence`.
    expected_last_sequence: u64,
    metrics: Arc<CdcMetrics>,
}

impl Publisher {
    /// `stream_end` says what the stream holds. `expected_last_sequence` is where the server
    /// counts from, normally `stream_end.last_sequence`; after a refusal it is the sequence the
    /// server reported, because a nats-server that crashed can restart counting from a
    /// sequence its store does not reach (it then stores the next event right after its last
    /// message, so the stream stays gap-free).
    pub fn new(
        js: Context,
        max_payload: usize,
        max_in_flight: usize,
        stream_end: StreamEnd,
        expected_last_sequence: u64,
        metrics: Arc<CdcMetrics>,
    ) -> Publisher {
        Publisher {
            js,
            max_payload,
            max_in_flight,
            acks: FuturesOrdered::new(),
            sent: 0,
            acked: 0,
            commits: VecDeque::new(),
            skip_through: stream_end.last_id,
            expected_last_sequence,
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

    /// Sends one event (or skips it if the stream already has it).
    pub async fn publish(&mut self, event: &ChangeEvent) -> Result<(), PublishError> {
        if self.skip_through.is_some_and(|last| event.id <= last) {
            self.metrics.events_skipped.inc();
            return Ok(());
        }
        let subject = subject::table_change(&event.schema, &event.table, event.operation.into())
            .map_err(|e| PublishError::Subject(event.id, e))?;
        let payload = self.encode(event);
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event.id.to_string().as_str(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            self.expected_last_sequence.to_string().as_str(),
        );
        let bytes = payload.len();
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?;
        tracing::trace!(id = %event.id, expected_last_sequence = self.expected_last_sequence, "published");
        self.acks.push_back(ack.into_future());
        self.expected_last_sequence += 1;
        self.sent += 1;
        self.metrics.events_published.inc();
        self.metrics.bytes_published.inc_by(bytes as u64);
        self.metrics.in_flight.set(self.acks.len() as i64);
        Ok(())
    }

    /// The event's JSON, reduced to its primary key when it would exceed NATS' `max_payload`
    /// (publishing it whole would fail forever and stall the stream).
    fn encode(&self, event: &ChangeEvent) -> Bytes {
        let json = serde_json::to_vec(event).expect("change events always serialize");
        // Headers and the subject take some of max_payload too.
        let limit = self.max_payload.saturating_sub(1024);
        if json.len() <= limit {
            return Bytes::from(json);
        }
        self.metrics.events_oversized.inc();
        tracing::warn!(
            id = %event.id, schema = %event.schema, table = %event.table, bytes = json.len(),
            max_payload = self.max_payload,
            "event exceeds NATS max_payload; publishing its primary key only"
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
            "event of {} bytes exceeds NATS max_payload ({} bytes): only the primary key is sent; \
             raise max_payload in nats-server.conf to receive whole rows",
            json.len(),
            self.max_payload
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
                let server_last = (e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence)
                    .then(|| server_last_sequence(&e.to_string()))
                    .flatten();
                Err(match server_last {
                    Some(sequence) => PublishError::OutOfStep(sequence),
                    None => PublishError::Ack(e.to_string()),
                })
            }
            Some(Ok(ack)) => {
                if ack.duplicate {
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
}
