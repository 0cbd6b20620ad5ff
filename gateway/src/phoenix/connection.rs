//! One Phoenix WebSocket connection: client frames decoded per `vsn` and dispatched to the
//! connection's joined [`Channels`], which also close channels whose token expired.

use super::channel::Channels;
use super::frame::{self, Vsn};
use crate::auth::identity::Identity;
use crate::outbox::OutFrame;
use crate::outbox::Outbox;
use crate::socket::{self, Session};
use crate::state::{ConnectionSlot, Gateway};
use axum::extract::ws::{Message, WebSocket};
use std::sync::Arc;
use std::time::Duration;

/// Runs a Phoenix connection (see [`crate::socket::serve`]).
pub fn run(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    slot: ConnectionSlot,
    peer: socket::Peer,
    vsn: Vsn,
    identity: Option<Arc<Identity>>,
) -> impl std::future::Future<Output = ()> + Send {
    let session_gateway = gateway.clone();
    gateway
        .metrics
        .connection_opened(identity.as_ref().is_some_and(|i| i.claims.sub().is_some()));
    socket::serve(socket, gateway, slot, peer, move |outbox| PhoenixSession {
        channels: Channels::new(session_gateway.clone(), outbox.clone(), vsn, identity),
        gateway: session_gateway,
        outbox,
        vsn,
    })
}

/// The Phoenix protocol's session: frames decoded per `vsn`, handled by the [`Channels`].
struct PhoenixSession {
    gateway: Arc<Gateway>,
    outbox: Arc<Outbox>,
    vsn: Vsn,
    channels: Channels,
}

impl Session for PhoenixSession {
    const PROTOCOL: &'static str = "phoenix";

    fn idle_timeout(&self) -> Duration {
        self.gateway.config.idle_timeout()
    }

    async fn handle(&mut self, message: Message) {
        let decoded = match message {
            Message::Text(text) => frame::decode_text(self.vsn, text.as_str()),
            Message::Binary(bytes) => frame::decode_binary(self.vsn, &bytes),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return,
        };
        match decoded {
            Ok(frame) => self.channels.handle(frame).await,
            Err(e) => {
                self.gateway.metrics.frames_rejected.inc();
                self.outbox.send(malformed_reply(self.vsn, &e.to_string()));
            }
        }
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.channels.next_expiry()
    }

    async fn wake(&mut self) {
        self.channels.close_expired().await
    }

    async fn finish(&mut self) {
        self.channels.leave_all().await;
    }
}

/// The reply to a frame that could not be decoded: on topic `phoenix`, with no ref (none could
/// be read), status `error` and the reason.
fn malformed_reply(vsn: Vsn, reason: &str) -> OutFrame {
    frame::reply(
        vsn,
        None,
        None,
        "phoenix",
        "error",
        &serde_json::json!({ "reason": format!("malformed message: {reason}") }),
    )
}
