//! [`Broker`] inside one process, for `nself-realtime up` without NATS.
//!
//! Subscriptions are kept in a list of (pattern, channel); a publish walks the list and offers
//! the message to every matching subscriber. Each subscriber has a bounded queue: one that does
//! not keep up loses messages (counted and logged) instead of slowing the publisher, as NATS
//! treats a slow consumer.

use super::{Broker, BusError, BusMessage};
use crate::subject::subject_matches;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Messages a subscriber may have queued before new ones are dropped.
const SUBSCRIBER_QUEUE: usize = 65_536;

struct Subscription {
    pattern: String,
    sender: mpsc::Sender<BusMessage>,
}

/// The in-process broker. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    subscriptions: Arc<Mutex<Vec<Subscription>>>,
}

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        let mut subscriptions = self.subscriptions.lock().expect("broker lock");
        subscriptions.retain(|s| !s.sender.is_closed());
        for subscription in subscriptions.iter() {
            if !subject_matches(&subscription.pattern, subject) {
                continue;
            }
            let message = BusMessage {
                subject: subject.to_string(),
                payload: payload.clone(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = subscription.sender.try_send(message) {
                tracing::warn!(subject, pattern = %subscription.pattern, "in-process subscriber is too slow; message dropped");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<BoxStream<'static, BusMessage>, BusError> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.subscriptions
            .lock()
            .expect("broker lock")
            .push(Subscription {
                pattern: subject.to_string(),
                sender,
            });
        Ok(
            futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|message| (message, receiver))
            })
            .boxed(),
        )
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wildcards_route_and_dropped_streams_unsubscribe() {
        let broker = MemoryBroker::new();
        let mut all = broker.subscribe("realtime.broadcast.>").await.unwrap();
        let mut one = broker.subscribe("realtime.broadcast.room1").await.unwrap();
        let other = broker.subscribe("realtime.notify.*").await.unwrap();
        drop(other);
        broker
            .publish("realtime.broadcast.room1", Bytes::from_static(b"a"))
            .await
            .unwrap();
        broker
            .publish("realtime.broadcast.room2", Bytes::from_static(b"b"))
            .await
            .unwrap();
        assert_eq!(all.next().await.unwrap().payload, "a");
        assert_eq!(all.next().await.unwrap().payload, "b");
        let got = one.next().await.unwrap();
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("realtime.broadcast.room1", &b"a"[..])
        );
        assert_eq!(broker.subscriptions.lock().unwrap().len(), 2);
    }
}
