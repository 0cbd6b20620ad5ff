//! [`ChangeLog`] inside one process, for `nself-realtime up` without NATS: a bounded in-memory
//! log the embedded CDC appends to and gateways follow.
//!
//! Entries are kept for the retention time and up to a maximum count, whichever is reached
//! first. Appending is idempotent by event id (a re-sent event is dropped, like JetStream's
//! `Nats-Msg-Id`), so the CDC's exactly-once logic holds unchanged. Readers hold a cursor (a
//! sequence) and wait on a [`Notify`] for new entries; a reader whose next entry was already
//! dropped gets [`BusError::Expired`].

use super::change_log::{Following, LogEnd, Stored};
use super::{AppendError, BusError, ChangeLog, ChangeLogWriter, LoggedChange, StartAt};
use crate::event::EventId;
use crate::subject::subject_matches;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// Largest event JSON the in-process log takes whole; a bigger one is reduced to its primary
/// key, as on JetStream. Nothing in process limits a message, but a multi-megabyte row pushed
/// to every subscriber's socket is almost certainly a mistake, and 8 MiB matches the largest
/// `max_payload` people commonly give nats-server, so `up` and a NATS deployment behave alike.
pub const IN_PROCESS_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

struct Entry {
    sequence: u64,
    id: EventId,
    stored: OffsetDateTime,
    subject: String,
    payload: Bytes,
}

struct Log {
    entries: VecDeque<Entry>,
    /// Sequence of the newest entry ever appended (0: none yet).
    last_sequence: u64,
    last_id: Option<EventId>,
}

struct Shared {
    log: Mutex<Log>,
    appended: Notify,
    retention: Duration,
    max_entries: usize,
}

/// The in-process change log. Cloning shares it.
#[derive(Clone)]
pub struct MemoryChangeLog {
    shared: Arc<Shared>,
}

impl MemoryChangeLog {
    /// A log keeping entries for `retention` and at most `max_entries` of them.
    pub fn new(retention: Duration, max_entries: usize) -> MemoryChangeLog {
        MemoryChangeLog {
            shared: Arc::new(Shared {
                log: Mutex::new(Log {
                    entries: VecDeque::new(),
                    last_sequence: 0,
                    last_id: None,
                }),
                appended: Notify::new(),
                retention,
                max_entries: max_entries.max(1),
            }),
        }
    }

    /// Appends one event; returns its sequence, or `None` when an event with this id (or a
    /// later one) is already in the log.
    pub fn append(&self, id: EventId, subject: String, payload: Bytes) -> Option<u64> {
        let sequence = {
            let mut log = self.shared.log.lock().expect("change log lock");
            if log.last_id.is_some_and(|last| id <= last) {
                return None;
            }
            let now = OffsetDateTime::now_utc();
            log.last_sequence += 1;
            log.last_id = Some(id);
            let sequence = log.last_sequence;
            log.entries.push_back(Entry {
                sequence,
                id,
                stored: now,
                subject,
                payload,
            });
            let oldest_kept = now - self.shared.retention;
            while log.entries.len() > self.shared.max_entries
                || log.entries.front().is_some_and(|e| e.stored < oldest_kept)
            {
                log.entries.pop_front();
            }
            sequence
        };
        self.shared.appended.notify_waiters();
        Some(sequence)
    }

    /// The id of the newest event appended, if any (the CDC skips everything up to it).
    pub fn last_id(&self) -> Option<EventId> {
        self.shared.log.lock().expect("change log lock").last_id
    }

    /// The sequence after which a reader starting at `start` begins.
    fn cursor_for(log: &Log, start: StartAt) -> u64 {
        let first = log
            .entries
            .front()
            .map_or(log.last_sequence + 1, |e| e.sequence);
        match start {
            StartAt::New => log.last_sequence,
            StartAt::Time(t) => {
                let index = log.entries.partition_point(|e| e.stored < t);
                log.entries
                    .get(index)
                    .map_or(log.last_sequence, |e| e.sequence - 1)
            }
            StartAt::After(id) => {
                let index = log.entries.partition_point(|e| e.id <= id);
                log.entries
                    .get(index)
                    .map_or(log.last_sequence, |e| e.sequence - 1)
                    .max(first - 1)
            }
        }
    }
}

/// What a look at the log found after a reader's cursor.
enum Look {
    Found(LoggedChange),
    /// Nothing matching up to this sequence (the newest one looked at).
    NothingThrough(u64),
}

/// Reads the next matching entry after `cursor`.
fn next_after(shared: &Shared, filter: &str, cursor: u64) -> Result<Look, BusError> {
    let log = shared.log.lock().expect("change log lock");
    let nothing = Look::NothingThrough(log.last_sequence.max(cursor));
    let Some(front) = log.entries.front() else {
        return Ok(nothing);
    };
    if cursor + 1 < front.sequence {
        return Err(BusError::Expired(format!(
            "the in-process change log dropped entries {} to {} before this reader read them",
            cursor + 1,
            front.sequence - 1
        )));
    }
    let start = (cursor + 1 - front.sequence) as usize;
    let mut matching = log
        .entries
        .range(start.min(log.entries.len())..)
        .filter(|e| subject_matches(filter, &e.subject));
    let Some(entry) = matching.next() else {
        return Ok(nothing);
    };
    Ok(Look::Found(LoggedChange {
        sequence: entry.sequence,
        pending: matching.count() as u64,
        subject: entry.subject.clone(),
        payload: entry.payload.clone(),
    }))
}

/// The CDC of `up` appends here directly: an append *is* the store, so its acknowledgement is
/// ready at once, and an id not above the last one is dropped as a duplicate (as JetStream's
/// `Nats-Msg-Id` does). There are no sequences to keep in step with (`last_sequence` is 0).
#[async_trait]
impl ChangeLogWriter for MemoryChangeLog {
    fn end(&self) -> LogEnd {
        LogEnd {
            last_sequence: 0,
            last_id: self.last_id(),
        }
    }

    fn event_limit(&self) -> (usize, String) {
        (
            IN_PROCESS_MAX_EVENT_BYTES,
            format!(
                "the in-process bus limit ({IN_PROCESS_MAX_EVENT_BYTES} bytes): only the primary \
                 key is sent"
            ),
        )
    }

    async fn append(
        &mut self,
        id: EventId,
        subject: String,
        payload: Bytes,
    ) -> Result<Stored, AppendError> {
        let duplicate = MemoryChangeLog::append(self, id, subject, payload).is_none();
        tracing::trace!(%id, duplicate, "appended to the in-process log");
        Ok(Box::pin(std::future::ready(Ok(duplicate))))
    }
}

#[async_trait]
impl ChangeLog for MemoryChangeLog {
    async fn follow(&self, filter: &str, start: StartAt) -> Result<Following, BusError> {
        let (cursor, pending_at_start) = {
            let log = self.shared.log.lock().expect("change log lock");
            let cursor = Self::cursor_for(&log, start);
            let pending = log
                .entries
                .iter()
                .filter(|e| e.sequence > cursor && subject_matches(filter, &e.subject))
                .count() as u64;
            (cursor, pending)
        };
        let shared = self.shared.clone();
        let filter = filter.to_string();
        let changes = futures::stream::unfold(
            (shared, filter, cursor, false),
            |(shared, filter, mut cursor, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    let outcome = {
                        let appended = shared.appended.notified();
                        tokio::pin!(appended);
                        // Register for the wake-up before looking, so an append between the look
                        // and the wait is not missed.
                        appended.as_mut().enable();
                        match next_after(&shared, &filter, cursor) {
                            Ok(Look::NothingThrough(last)) => {
                                // Skip past non-matching entries so the next look starts later.
                                cursor = last;
                                appended.await;
                                continue;
                            }
                            Ok(Look::Found(change)) => Ok(change),
                            Err(e) => Err(e),
                        }
                    };
                    return match outcome {
                        Ok(change) => {
                            cursor = change.sequence;
                            Some((Ok(change), (shared, filter, cursor, false)))
                        }
                        Err(e) => Some((Err(e), (shared, filter, cursor, true))),
                    };
                }
            },
        )
        .boxed();
        Ok(Following {
            pending_at_start,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn id(n: u64) -> EventId {
        EventId {
            commit_lsn: Lsn(n),
            position: 0,
        }
    }

    #[tokio::test]
    async fn follows_from_every_start_point_and_drops_duplicates() {
        let log = MemoryChangeLog::new(Duration::from_secs(60), 100);
        assert_eq!(
            log.append(id(1), "realtime.db.public.a.insert".into(), "1".into()),
            Some(1)
        );
        assert_eq!(
            log.append(id(2), "realtime.db.public.b.insert".into(), "2".into()),
            Some(2)
        );
        assert_eq!(
            log.append(id(3), "realtime.db.public.a.update".into(), "3".into()),
            Some(3)
        );
        assert_eq!(
            log.append(id(3), "realtime.db.public.a.update".into(), "3".into()),
            None
        );

        let mut after_first = log
            .follow("realtime.db.public.a.*", StartAt::After(id(1)))
            .await
            .unwrap();
        assert_eq!(after_first.pending_at_start, 1);
        let change = after_first.changes.next().await.unwrap().unwrap();
        assert_eq!((change.sequence, change.pending), (3, 0));

        let all = log
            .follow(
                "realtime.db.public.a.*",
                StartAt::Time(OffsetDateTime::UNIX_EPOCH),
            )
            .await
            .unwrap();
        assert_eq!(all.pending_at_start, 2);

        let mut live = log.follow("realtime.db.>", StartAt::New).await.unwrap();
        assert_eq!(live.pending_at_start, 0);
        let appender = log.clone();
        tokio::spawn(async move {
            appender.append(id(4), "realtime.db.public.b.delete".into(), "4".into());
        });
        let change = live.changes.next().await.unwrap().unwrap();
        assert_eq!((change.sequence, &change.payload[..]), (4, &b"4"[..]));
    }

    #[tokio::test]
    async fn a_reader_left_behind_is_told() {
        let log = MemoryChangeLog::new(Duration::from_secs(60), 2);
        log.append(id(1), "s.a".into(), "1".into());
        let mut reader = log.follow("s.*", StartAt::After(id(0))).await.unwrap();
        for n in 2..=5 {
            log.append(id(n), "s.a".into(), Bytes::new());
        }
        assert!(matches!(
            reader.changes.next().await,
            Some(Err(BusError::Expired(_)))
        ));
        assert!(reader.changes.next().await.is_none());
    }
}
