//! One `/ws` connection: the plain WebSocket JSON protocol of seed 004.
//!
//! Client → server, one JSON object per message; any may carry an `id`, echoed in its answer:
//!
//! | `type` | fields |
//! | --- | --- |
//! | `auth` | `token` |
//! | `subscribe` / `unsubscribe` | `channel` |
//! | `message` | `channel`, `content`, `messageType?`, `threadId?`, `metadata?` |
//! | `presence` | `status` (online, away, busy, offline), `customStatus?`, `metadata?`, `channel?` |
//! | `typing` | `channel`, `typing?` (default true), `threadId?` |
//! | `broadcast` | `channel`, `event`, `payload` |
//! | `ping` | |
//!
//! Server → client:
//!
//! | `type` | when |
//! | --- | --- |
//! | `connected` | at once: `connectionId`, `serverTime`, `protocolVersion`, `authenticated`, `userId?` |
//! | `ack` | a request succeeded: `id?`, `request` (its type), `payload` |
//! | `pong` | answer to `ping`: `id?`, `payload.timestamp` (ms) |
//! | `error` | a request failed, or a message was not JSON: `id?`, `code`, `message`, `details?` |
//! | `message`, `typing`, `presence`, `broadcast`, `notification`, `change` | events of a subscribed channel: `{type, channel, event, payload}` (see [`crate::wire`]) |
//!
//! The token comes from the upgrade (`Authorization: Bearer`, `?token=`) or a later `auth`.
//! Send something (a `ping`) at least every `2 × REALTIME_HEARTBEAT_INTERVAL` (60 s by
//! default) or the socket is closed as idle.

use crate::auth::identity::Identity;
use crate::outbox::OutFrame;
use crate::outbox::{Disconnect, Kick, Outbox};
use crate::rooms::request::{self, ApiError, ErrorCode};
use crate::rooms::session::RoomSession;
use crate::socket::{self, Session};
use crate::state::{ConnectionSlot, Gateway};
use crate::subscriber::Wire;
use crate::wire;
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The `protocolVersion` of the `connected` frame.
pub const PROTOCOL_VERSION: &str = "nself-realtime/1";

/// Runs a `/ws` connection; `identity` is what the upgrade request authenticated, if anything.
pub fn run(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    slot: ConnectionSlot,
    peer: socket::Peer,
    identity: Option<Arc<Identity>>,
) -> impl std::future::Future<Output = ()> + Send {
    let session_gateway = gateway.clone();
    socket::serve(socket, gateway, slot, peer, move |outbox| {
        let rooms = RoomSession::new(
            session_gateway.clone(),
            outbox.clone(),
            Wire::Json,
            identity.clone(),
        );
        let authenticated = identity.is_some();
        session_gateway
            .metrics
            .connection_opened(identity.as_ref().is_some_and(|i| i.claims.sub().is_some()));
        let mut hello = json!({
            "type": "connected",
            "connectionId": session_gateway.connection_id(outbox.id),
            "serverTime": wire::now_rfc3339(),
            "protocolVersion": PROTOCOL_VERSION,
            "authenticated": authenticated,
        });
        if authenticated {
            hello["userId"] = Value::String(rooms.user_id());
        }
        outbox.send(frame(&hello));
        NativeSession {
            gateway: session_gateway,
            outbox,
            rooms,
        }
    })
}

struct NativeSession {
    gateway: Arc<Gateway>,
    outbox: Arc<Outbox>,
    rooms: RoomSession,
}

fn frame(body: &Value) -> OutFrame {
    OutFrame::Text(Bytes::from(
        serde_json::to_vec(body).expect("JSON values serialize"),
    ))
}

impl NativeSession {
    fn error(&self, id: Option<&Value>, error: &ApiError) {
        self.outbox.send(wire::error_frame(
            id,
            error.code.as_str(),
            &error.message,
            error.details.as_ref(),
        ));
    }

    /// A message that is not a request at all (bad JSON, no type).
    fn reject(&self, id: Option<&Value>, message: String) {
        self.gateway.metrics.frames_rejected.inc();
        let error = ApiError::validation(message);
        self.gateway.metrics.nself_error(error.code.as_str());
        self.error(id, &error);
    }
}

impl Session for NativeSession {
    const PROTOCOL: &'static str = "websocket";

    fn idle_timeout(&self) -> Duration {
        self.gateway.config.idle_timeout()
    }

    async fn handle(&mut self, message: Message) {
        let Message::Text(text) = &message else {
            self.reject(
                None,
                "binary messages are not supported: send JSON text".into(),
            );
            return;
        };
        let parsed = crate::json_input::prepare(text.as_str())
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()));
        let value = match parsed {
            Ok(value) => value,
            Err(e) => return self.reject(None, format!("invalid JSON: {e}")),
        };
        let id = value.get("id").cloned();
        let Some(kind) = value
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return self.reject(
                id.as_ref(),
                "a message is a JSON object with a string \"type\": auth, subscribe, unsubscribe, message, presence, typing, broadcast or ping".into(),
            );
        };
        let outcome = match request::parse(&kind, &value) {
            Ok(request) => self.rooms.handle(request).await,
            Err(e) => {
                self.gateway.metrics.nself_error(e.code.as_str());
                Err(e)
            }
        };
        match outcome {
            Ok(reply) => {
                let mut body = json!({
                    "type": if kind == "ping" { "pong" } else { "ack" },
                    "request": kind,
                    "payload": reply.body,
                });
                if let Some(id) = id {
                    body["id"] = id;
                }
                self.outbox.send(frame(&body));
                reply.open();
            }
            Err(error) => self.error(id.as_ref(), &error),
        }
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.rooms.expires_at()
    }

    async fn wake(&mut self) {
        self.error(
            None,
            &ApiError::new(
                ErrorCode::AuthenticationFailed,
                "the token expired: reconnect with a fresh token",
            ),
        );
        self.outbox
            .kick(Kick::new(Disconnect::TokenExpired, 1008, "token expired"));
    }

    async fn finish(&mut self) {
        self.rooms.leave_all().await;
    }
}
