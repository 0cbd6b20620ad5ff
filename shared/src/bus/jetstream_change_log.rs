//! The change log on JetStream: the stream `REALTIME_DB`, written by the CDC through a
//! [`JetStreamChangeLogWriter`] and read by gateways through [`JetStreamChangeLog`]'s ephemeral
//! ordered push consumers (one per reader, filtered on its subject), which the client re-creates
//! by itself after a reconnect or a gap so a reader never sees a change twice or out of order.
//!
//! The stream's settings live here too ([`ensure_stream`]), so the CDC that creates it and the
//! gateways that read it agree on one definition.
//!
//! Exactly once, in order, on the write side:
//!
//! * every event carries `Nats-Msg-Id` = its deterministic id, so JetStream drops a
//!   re-publication within its duplicate window;
//! * a writer made after a restart reports where the stream ends ([`ChangeLogWriter::end`]) and
//!   its caller skips every id up to the last one stored, so exactness does not depend on that
//!   window;
//! * every event also carries `Nats-Expected-Last-Sequence` = the stream sequence the event
//!   before it got (or the stream's last sequence for the first one), so JetStream refuses any
//!   event whose predecessor is missing ([`AppendError::OutOfStep`]). The stream therefore never
//!   has a gap: what it holds is always a prefix of what was sent, in order — even when the
//!   client reconnects and re-sends buffered messages after others were lost with the old
//!   socket. That is what makes "skip up to the last stored id" safe.

use super::change_log::{Following, LogEnd, Stored};
use super::{AppendError, BusError, ChangeLog, ChangeLogWriter, LoggedChange, StartAt};
use crate::config::{DB_STREAM, DB_STREAM_DUPLICATE_WINDOW};
use crate::event::EventId;
use crate::subject;
use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::future::IntoFuture;
use std::time::Duration;

/// Room left in JetStream's `max_payload` for the subject and headers of a message.
const HEADER_ALLOWANCE: usize = 1024;

/// Settings of the `REALTIME_DB` stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long events are kept (`REALTIME_MESSAGE_TTL`): the replay window.
    pub message_ttl: Duration,
    /// Copies kept in a NATS cluster (`REALTIME_STREAM_REPLICAS`).
    pub replicas: usize,
}

fn stream_config(settings: &StreamSettings) -> Config {
    Config {
        name: DB_STREAM.to_string(),
        description: Some(
            "nself-realtime table changes, one event per row, in commit order".into(),
        ),
        subjects: vec![format!("{}.>", subject::DB_PREFIX)],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        max_age: settings.message_ttl,
        duplicate_window: DB_STREAM_DUPLICATE_WINDOW,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates the stream, or updates its retention and duplicate window to the configured ones.
pub async fn ensure_stream(
    js: &Context,
    settings: &StreamSettings,
) -> Result<(), async_nats::jetstream::context::CreateStreamError> {
    js.create_or_update_stream(stream_config(settings))
        .await
        .map(|_| ())
}

/// Reads `REALTIME_DB`.
#[derive(Clone)]
pub struct JetStreamChangeLog {
    js: Context,
}

impl JetStreamChangeLog {
    pub fn new(js: Context) -> JetStreamChangeLog {
        JetStreamChangeLog { js }
    }

    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        self.js.get_stream(DB_STREAM).await.map_err(|e| {
            BusError::ChangeLog(format!(
                "stream {DB_STREAM} is not available ({e}); is `nself-realtime cdc` running against this NATS?"
            ))
        })
    }

    /// The first sequence whose event id is after `after`, found by binary search over the
    /// stream (ids increase with sequences): O(log n) direct gets.
    async fn first_sequence_after(
        stream: &mut async_nats::jetstream::stream::Stream,
        after: EventId,
    ) -> Result<u64, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::ChangeLog(e.to_string());
        let state = stream.info().await.map_err(|e| err(&e))?.state.clone();
        let (mut low, mut high) = (state.first_sequence.max(1), state.last_sequence + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let id = match stream.get_raw_message(middle).await {
                Ok(message) => message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .and_then(|id| id.as_str().parse::<EventId>().ok()),
                // Expired meanwhile: everything before it is gone too, so search above it.
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    None
                }
                Err(e) => return Err(err(&e)),
            };
            match id {
                Some(id) if id > after => high = middle,
                _ => low = middle + 1,
            }
        }
        Ok(low)
    }
}

#[async_trait]
impl ChangeLog for JetStreamChangeLog {
    async fn follow(&self, filter: &str, start: StartAt) -> Result<Following, BusError> {
        let mut stream = self.stream().await?;
        let deliver_policy = match start {
            StartAt::New => DeliverPolicy::New,
            StartAt::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
            StartAt::After(id) => DeliverPolicy::ByStartSequence {
                start_sequence: Self::first_sequence_after(&mut stream, id).await?,
            },
        };
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                description: Some("nself-realtime gateway change feed".into()),
                filter_subject: filter.to_string(),
                replay_policy: ReplayPolicy::Instant,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Subscribe {
                subject: filter.to_string(),
                reason: e.to_string(),
            })?;
        let pending_at_start = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(|e| BusError::Subscribe {
            subject: filter.to_string(),
            reason: e.to_string(),
        })?;
        let changes = messages
            .map(|message| {
                let message = message.map_err(|e| BusError::ChangeLog(e.to_string()))?;
                let info = message.info().map_err(|e| {
                    BusError::ChangeLog(format!("bad JetStream reply subject: {e}"))
                })?;
                Ok(LoggedChange {
                    sequence: info.stream_sequence,
                    pending: info.pending,
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                })
            })
            .boxed();
        Ok(Following {
            pending_at_start,
            changes,
        })
    }
}

/// Writes `REALTIME_DB`: one per replication session.
pub struct JetStreamChangeLogWriter {
    js: Context,
    /// The server's `max_payload`; a bigger event is reduced to its primary key.
    max_payload: usize,
    end: LogEnd,
    /// The stream's last sequence as JetStream will see it when the next event arrives: the
    /// next event carries it as `Nats-Expected-Last-Sequence`.
    expected_last_sequence: u64,
}

impl JetStreamChangeLogWriter {
    /// Creates or updates the stream and reads where it ends. The writer keeps at most
    /// `max_in_flight` unacknowledged events in the client (the caller's window decides) and
    /// waits `ack_timeout` for each acknowledgement.
    ///
    /// `resume_sequence` is the last sequence the server reported when it refused an event of
    /// the previous writer: a nats-server that crashed can restart counting from a sequence its
    /// store does not reach (it then stores the next event right after its last message, so
    /// the stream stays gap-free), and the next event must expect that one.
    pub async fn open(
        client: async_nats::Client,
        settings: &StreamSettings,
        max_in_flight: usize,
        ack_timeout: Duration,
        resume_sequence: Option<u64>,
    ) -> Result<JetStreamChangeLogWriter, AppendError> {
        let max_payload = client.server_info().max_payload;
        let js = context(client, max_in_flight, ack_timeout);
        ensure_stream(&js, settings)
            .await
            .map_err(|e| AppendError::Setup(e.to_string()))?;
        let end = last_stored(&js).await?;
        Ok(JetStreamChangeLogWriter {
            js,
            max_payload,
            end,
            expected_last_sequence: resume_sequence.unwrap_or(end.last_sequence),
        })
    }
}

#[async_trait]
impl ChangeLogWriter for JetStreamChangeLogWriter {
    fn end(&self) -> LogEnd {
        self.end
    }

    fn event_limit(&self) -> (usize, String) {
        let max_payload = self.max_payload;
        (
            max_payload.saturating_sub(HEADER_ALLOWANCE),
            format!(
                "NATS max_payload ({max_payload} bytes): only the primary key is sent; \
                 raise max_payload in nats-server.conf to receive whole rows"
            ),
        )
    }

    async fn append(
        &mut self,
        id: EventId,
        subject: String,
        payload: Bytes,
    ) -> Result<Stored, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            self.expected_last_sequence.to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| AppendError::Send(e.to_string()))?;
        tracing::trace!(%id, expected_last_sequence = self.expected_last_sequence, "published");
        self.expected_last_sequence += 1;
        Ok(ack
            .into_future()
            .map(|result| result.map(|ack| ack.duplicate).map_err(refusal))
            .boxed())
    }
}

/// A JetStream context whose own in-flight limit sits above the caller's, so that the caller's
/// window, not the client's, decides when to stop sending.
pub fn context(client: async_nats::Client, max_in_flight: usize, ack_timeout: Duration) -> Context {
    async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(max_in_flight + 64)
        .ack_timeout(ack_timeout)
        .timeout(ack_timeout)
        .build(client)
}

/// Where the stream ends: its last sequence and the id of the event stored there.
async fn last_stored(js: &Context) -> Result<LogEnd, AppendError> {
    let err = |e: &dyn std::fmt::Display| AppendError::End(e.to_string());
    let mut stream = js.get_stream(DB_STREAM).await.map_err(|e| err(&e))?;
    let last_sequence = stream
        .info()
        .await
        .map_err(|e| err(&e))?
        .state
        .last_sequence;
    if last_sequence == 0 {
        return Ok(LogEnd::default());
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
    Ok(LogEnd {
        last_sequence,
        last_id,
    })
}

/// JetStream's refusal of an event, as the error that ends the writer.
fn refusal(e: PublishError) -> AppendError {
    let server_last = (e.kind() == PublishErrorKind::WrongLastSequence)
        .then(|| server_last_sequence(&e.to_string()))
        .flatten();
    match server_last {
        Some(sequence) => AppendError::OutOfStep(sequence),
        None => AppendError::Ack(e.to_string()),
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
