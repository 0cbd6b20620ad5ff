//! [`PresenceStore`] on the NATS KV bucket `realtime_presence`, shared by every gateway.
//!
//! Writes go through the KV API. Watches read the bucket's stream with an ordered push consumer
//! (last value per key, then live) so that the watcher learns when the snapshot is complete:
//! the consumer reports how many entries were pending when it was created, and each delivery
//! how many are still pending.

use super::{
    BusError, PresenceChange, PresenceEntry, PresenceStore, PresenceWatch, PRESENCE_BUCKET,
};
use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// The header the KV API sets on deletes and purges.
const KV_OPERATION: &str = "KV-Operation";

/// Presence in NATS KV.
#[derive(Clone)]
pub struct KvPresence {
    js: Context,
    store: Store,
}

impl KvPresence {
    /// Opens the bucket, creating it when missing. `max_age` only bounds garbage: entries a dead
    /// gateway left behind disappear from the bucket after it (watchers stop counting them
    /// long before, see [`super::presence`]).
    pub async fn open(
        js: Context,
        max_age: Duration,
        replicas: usize,
    ) -> Result<KvPresence, BusError> {
        if js.get_key_value(PRESENCE_BUCKET).await.is_err() {
            // The bucket's stream, laid out as the KV API lays it out (ADR-8). Created directly
            // because `create_key_value` first reads the account info, which async-nats 0.51
            // cannot parse from nats-server 2.9 (Debian's); 2.9 serves the KV API itself fine.
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{PRESENCE_BUCKET}"),
                description: Some(
                    "nself-realtime presence: <topic>.<member> -> member JSON".into(),
                ),
                subjects: vec![format!("$KV.{PRESENCE_BUCKET}.>")],
                max_messages_per_subject: 1,
                max_age,
                storage: StorageType::Memory,
                num_replicas: replicas,
                allow_rollup: true,
                deny_delete: true,
                deny_purge: false,
                allow_direct: true,
                discard: DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                BusError::Presence(format!("cannot create KV bucket {PRESENCE_BUCKET}: {e}"))
            })?;
        }
        let store = js.get_key_value(PRESENCE_BUCKET).await.map_err(|e| {
            BusError::Presence(format!("cannot open KV bucket {PRESENCE_BUCKET}: {e}"))
        })?;
        Ok(KvPresence { js, store })
    }
}

#[async_trait]
impl PresenceStore for KvPresence {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        self.store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Presence(format!("put {key}: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| BusError::Presence(format!("delete {key}: {e}")))
    }

    async fn snapshot(&self) -> Result<Vec<PresenceEntry>, BusError> {
        // Every topic: a watch of `*.>` read up to its sync point.
        let mut watch = self.watch("*").await?;
        let mut entries: std::collections::BTreeMap<String, PresenceEntry> = Default::default();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let change = tokio::time::timeout_at(deadline, watch.next())
                .await
                .map_err(|_| BusError::Presence("presence snapshot timed out".into()))?;
            match change {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(PresenceChange::Synced)) => break,
                Some(Ok(PresenceChange::Delete { key })) => {
                    entries.remove(&key);
                }
                Some(Ok(PresenceChange::Put {
                    key,
                    value,
                    written_at,
                })) => {
                    entries.insert(
                        key.clone(),
                        PresenceEntry {
                            key,
                            value,
                            written_at,
                        },
                    );
                }
            }
        }
        Ok(entries.into_values().collect())
    }

    async fn watch(&self, prefix: &str) -> Result<PresenceWatch, BusError> {
        let subject_prefix = format!("$KV.{PRESENCE_BUCKET}.");
        let stream = self
            .js
            .get_stream(format!("KV_{PRESENCE_BUCKET}"))
            .await
            .map_err(|e| BusError::Presence(format!("bucket {PRESENCE_BUCKET}: {e}")))?;
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                description: Some("nself-realtime presence watch".into()),
                filter_subject: format!("{subject_prefix}{prefix}.>"),
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Presence(format!("watch {prefix}: {e}")))?;
        let synced_at_start = consumer.cached_info().num_pending == 0;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::Presence(format!("watch {prefix}: {e}")))?;
        let head = futures::stream::iter(synced_at_start.then_some(Ok(PresenceChange::Synced)));
        let mut synced = synced_at_start;
        let changes = messages.flat_map(move |message| {
            let mut out = Vec::with_capacity(2);
            match message {
                Err(e) => out.push(Err(BusError::Presence(e.to_string()))),
                Ok(message) => {
                    let key = message
                        .subject
                        .strip_prefix(subject_prefix.as_str())
                        .unwrap_or(&message.subject)
                        .to_string();
                    let removed = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(KV_OPERATION))
                        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                    out.push(Ok(if removed {
                        PresenceChange::Delete { key }
                    } else {
                        PresenceChange::Put {
                            key,
                            value: message.payload.clone(),
                            written_at: message.info().ok().map(|info| info.published),
                        }
                    }));
                    if !synced && message.info().is_ok_and(|info| info.pending == 0) {
                        synced = true;
                        out.push(Ok(PresenceChange::Synced));
                    }
                }
            }
            futures::stream::iter(out)
        });
        Ok(head.chain(changes).boxed())
    }
}
