//! [`ChangeLog`] on JetStream: the stream `REALTIME_DB` the CDC writes, read through ephemeral
//! ordered push consumers (one per reader, filtered on its subject), which the client re-creates
//! by itself after a reconnect or a gap so a reader never sees a change twice or out of order.
//!
//! The stream's settings live here too ([`ensure_stream`]), so the CDC that creates it and the
//! gateways that read it agree on one definition.

use super::change_log::Following;
use super::{BusError, ChangeLog, LoggedChange, StartAt};
use crate::config::{DB_STREAM, DB_STREAM_DUPLICATE_WINDOW};
use crate::event::EventId;
use crate::subject;
use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use async_trait::async_trait;
use futures::StreamExt;
use std::time::Duration;

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
