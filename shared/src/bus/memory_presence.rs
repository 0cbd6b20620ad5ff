//! [`PresenceStore`] inside one process, for `nself-realtime up` without NATS.
//!
//! A map of entries and a list of watchers; a watcher is registered and handed its snapshot
//! under one lock, so it misses nothing between the two.

use super::{BusError, PresenceChange, PresenceEntry, PresenceStore, PresenceWatch};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

struct Watcher {
    prefix: String,
    sender: mpsc::UnboundedSender<PresenceChange>,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Bytes>,
    watchers: Vec<Watcher>,
}

impl Inner {
    fn notify(&mut self, key: &str, change: PresenceChange) {
        self.watchers.retain(|w| !w.sender.is_closed());
        for watcher in &self.watchers {
            if under(key, &watcher.prefix) {
                let _ = watcher.sender.send(change.clone());
            }
        }
    }
}

fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// The in-process presence store. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryPresence {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryPresence {
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        let mut inner = self.inner.lock().expect("presence lock");
        inner.entries.insert(key.to_string(), value.clone());
        inner.notify(
            key,
            PresenceChange::Put {
                key: key.to_string(),
                value,
                written_at: None,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        let mut inner = self.inner.lock().expect("presence lock");
        if inner.entries.remove(key).is_some() {
            inner.notify(
                key,
                PresenceChange::Delete {
                    key: key.to_string(),
                },
            );
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<PresenceEntry>, BusError> {
        let inner = self.inner.lock().expect("presence lock");
        Ok(inner
            .entries
            .iter()
            .map(|(key, value)| PresenceEntry {
                key: key.clone(),
                value: value.clone(),
                // Owners delete their entries in process; what is here is live.
                written_at: None,
            })
            .collect())
    }

    async fn watch(&self, prefix: &str) -> Result<PresenceWatch, BusError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock().expect("presence lock");
        for (key, value) in inner.entries.range(format!("{prefix}.")..) {
            if !under(key, prefix) {
                break;
            }
            let _ = sender.send(PresenceChange::Put {
                key: key.clone(),
                value: value.clone(),
                written_at: None,
            });
        }
        let _ = sender.send(PresenceChange::Synced);
        inner.watchers.push(Watcher {
            prefix: prefix.to_string(),
            sender,
        });
        Ok(
            futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|change| (Ok(change), receiver))
            })
            .boxed(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_get_the_snapshot_then_changes_of_their_prefix_only() {
        let store = MemoryPresence::new();
        store.put("room1.a", "1".into()).await.unwrap();
        store.put("room10.b", "x".into()).await.unwrap();
        let mut watch = store.watch("room1").await.unwrap();
        let next = |w: &mut PresenceWatch| futures::FutureExt::now_or_never(w.next()).flatten();
        assert_eq!(
            next(&mut watch).unwrap().unwrap(),
            PresenceChange::Put {
                key: "room1.a".into(),
                value: "1".into(),
                written_at: None
            }
        );
        assert_eq!(next(&mut watch).unwrap().unwrap(), PresenceChange::Synced);
        store.put("room10.c", "y".into()).await.unwrap();
        store.delete("room1.a").await.unwrap();
        assert_eq!(
            next(&mut watch).unwrap().unwrap(),
            PresenceChange::Delete {
                key: "room1.a".into()
            }
        );
        assert!(next(&mut watch).is_none());
    }
}
