//! [`Broker`] on core NATS: at-most-once fan-out across every gateway of the cluster.

use super::{Broker, BusError, BusMessage};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// Core NATS publish/subscribe over one client connection.
#[derive(Clone)]
pub struct NatsBroker {
    client: async_nats::Client,
}

impl NatsBroker {
    pub fn new(client: async_nats::Client) -> NatsBroker {
        NatsBroker { client }
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.to_string(),
                reason: e.to_string(),
            })
    }

    async fn subscribe(&self, subject: &str) -> Result<BoxStream<'static, BusMessage>, BusError> {
        let subscriber = self
            .client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| BusError::Subscribe {
                subject: subject.to_string(),
                reason: e.to_string(),
            })?;
        Ok(subscriber
            .map(|message| BusMessage {
                subject: message.subject.to_string(),
                payload: message.payload,
            })
            .boxed())
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Publish {
            subject: "(flush)".into(),
            reason: e.to_string(),
        })
    }
}
