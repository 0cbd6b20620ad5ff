//! Publishing change events to the change log, and knowing which LSN is safe to confirm to
//! Postgres.
//!
//! The publisher writes through a [`ChangeLogWriter`] (JetStream, or the in-process log of
//! `nself-realtime up`; [`crate::bus::CdcBus::writer`] picks it), so the window logic is one
//! code path for both: [`Publisher::publish`] sends and returns at once, keeping the
//! acknowledgement in an ordered window of at most `max_in_flight` events. The caller marks
//! each transaction's end with [`Publisher::commit`]; an LSN becomes confirmable only when every
//! event of its transaction and of all earlier ones is acknowledged
//! ([`Publisher::next_confirmed`]). Nothing is confirmed before it is stored.
//!
//! Exactly once, in order: the writer stores events in the order sent and never one whose
//! predecessor is missing (on JetStream, `Nats-Expected-Last-Sequence`; see
//! `shared::bus::JetStreamChangeLogWriter`), and a publisher skips every id up to the last one
//! the log already holds ([`ChangeLogWriter::end`]), so a new session after any crash neither
//! loses nor repeats an event. After any refusal or publish error the caller drops the
//! publisher and resumes from the slot's confirmed LSN.

use crate::metrics::CdcMetrics;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use nself_realtime_shared::bus::{AppendError, ChangeLogWriter, Stored};
use nself_realtime_shared::config::DB_STREAM;
use nself_realtime_shared::event::{ChangeEvent, EventId};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::subject;
use std::collections::VecDeque;
use std::sync::Arc;

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
    /// an earlier event was lost on the way, or the server's count moved. Carries the server's
    /// last sequence, where the next session starts.
    #[error("JetStream refused an event: the stream's last sequence is {0}, not the one expected; resuming from the slot")]
    OutOfStep(u64),
    #[error("event {0} has a name that cannot become a NATS subject: {1}")]
    Subject(EventId, subject::SubjectError),
}

impl From<AppendError> for PublishError {
    fn from(e: AppendError) -> PublishError {
        match e {
            AppendError::Setup(e) => PublishError::Stream(e),
            AppendError::End(e) => PublishError::LastEvent(e),
            AppendError::Send(e) => PublishError::Publish(e),
            AppendError::Ack(e) => PublishError::Ack(e),
            AppendError::OutOfStep(sequence) => PublishError::OutOfStep(sequence),
        }
    }
}

/// The ordered window of unacknowledged events of one replication session.
pub struct Publisher {
    writer: Box<dyn ChangeLogWriter>,
    max_in_flight: usize,
    acks: FuturesOrdered<Stored>,
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
    /// A publisher through `writer`: every id up to the last one the log holds is skipped.
    pub fn new(
        writer: Box<dyn ChangeLogWriter>,
        max_in_flight: usize,
        metrics: Arc<CdcMetrics>,
    ) -> Publisher {
        let skip_through = writer.end().last_id;
        Publisher {
            writer,
            max_in_flight,
            acks: FuturesOrdered::new(),
            sent: 0,
            acked: 0,
            commits: VecDeque::new(),
            skip_through,
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
        let ack = self
            .writer
            .append(event.id, subject, payload)
            .await
            .map_err(PublishError::from)?;
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
        let (limit, limit_text) = self.writer.event_limit();
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
                Err(e.into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use nself_realtime_shared::bus::{MemoryChangeLog, IN_PROCESS_MAX_EVENT_BYTES};
    use std::time::Duration;

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
            Box::new(log.clone()),
            max_in_flight,
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
