//! Ephemeral publish/subscribe: broadcast messages and NOTIFY payloads. Nothing is retained; a
//! subscriber receives what is published after its subscription exists.

use super::BusError;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// One message received from the broker.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
}

/// Core publish/subscribe on NATS subjects (wildcards `*` and `>` allowed when subscribing).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes one message. Returns once the message is handed to the transport (core NATS
    /// gives no delivery guarantee; neither does the in-process broker to a slow subscriber).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Subscribes to a subject or wildcard pattern. Dropping the stream unsubscribes.
    async fn subscribe(&self, subject: &str) -> Result<BoxStream<'static, BusMessage>, BusError>;

    /// Waits until everything published so far has reached the server (a no-op in process).
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the transport is connected now (always, in process): what a gateway's
    /// readiness reports.
    fn is_connected(&self) -> bool {
        true
    }

    /// The backend's name in health reports: `nats` or `in-process`.
    fn backend(&self) -> &'static str {
        "in-process"
    }
}
