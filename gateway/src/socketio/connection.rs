//! One Socket.IO connection (Engine.IO v4, websocket transport, default namespace).
//!
//! ```text
//! server: 0{"sid","pingInterval","pingTimeout",...}     Engine.IO handshake, at once
//! client: 40{"token":"<jwt>"}                           connect, auth in the handshake
//! server: 40{"sid"}  42["connected",{...}]  42["authenticated",{...}]
//!         or 44{"message","data":{"code":"AUTHENTICATION_FAILED"}}
//! client: 42["room:join",{"roomName":"general"}]        events, each optionally with an ack id
//! server: 42["room:joined",{...}]  (+ 43<id>[{...}] when the client asked for an ack)
//! server: 2 every pingInterval; client: 3
//! ```
//!
//! The token comes from the handshake's `auth.token`, else from the upgrade request
//! (`Authorization: Bearer`, `?token=`). Errors are `error` events `{code, message, details?}`
//! and the connection stays.

use super::packet::{self, ClientPacket};
use crate::auth::identity::Identity;
use crate::outbox::{Disconnect, Kick, Outbox};
use crate::rooms::request::{self, ApiError, ErrorCode};
use crate::rooms::session::RoomSession;
use crate::socket::{self, Session};
use crate::state::{ConnectionSlot, Gateway};
use crate::subscriber::Wire;
use axum::extract::ws::{Message, WebSocket};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Socket.IO's default ping interval; shorter when `REALTIME_HEARTBEAT_INTERVAL` is.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// Socket.IO's default: how long a client has to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The `protocolVersion` of the `connected` event.
pub const PROTOCOL_VERSION: &str = "nself-realtime/1";

/// Runs a Socket.IO connection. `upgrade_identity` is the identity the upgrade request
/// carried, if any (the handshake's `auth.token` wins).
pub fn run(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    slot: ConnectionSlot,
    peer: socket::Peer,
    upgrade_identity: Option<Arc<Identity>>,
) -> impl std::future::Future<Output = ()> + Send {
    let session_gateway = gateway.clone();
    socket::serve(socket, gateway, slot, peer, move |outbox| {
        let ping_interval = session_gateway.config.heartbeat_interval.min(PING_INTERVAL);
        let sid = session_gateway.connection_id(outbox.id);
        outbox.send(packet::open(
            &sid,
            ping_interval.as_millis() as u64,
            PING_TIMEOUT.as_millis() as u64,
            session_gateway.config.max_frame_bytes,
        ));
        SocketIoSession {
            rooms: RoomSession::new(
                session_gateway.clone(),
                outbox.clone(),
                Wire::SocketIo,
                None,
            ),
            gateway: session_gateway,
            outbox,
            sid,
            connected: false,
            upgrade_identity,
            ping_interval,
            next_ping: Instant::now() + ping_interval,
        }
    })
}

struct SocketIoSession {
    gateway: Arc<Gateway>,
    outbox: Arc<Outbox>,
    sid: String,
    /// The client completed the Socket.IO CONNECT.
    connected: bool,
    upgrade_identity: Option<Arc<Identity>>,
    rooms: RoomSession,
    ping_interval: Duration,
    next_ping: Instant,
}

impl SocketIoSession {
    fn emit(&self, event: &str, body: &Value) {
        self.outbox.send(packet::event_value(event, body));
    }

    fn emit_error(&self, error: &ApiError) {
        self.gateway.metrics.nself_error(error.code.as_str());
        self.emit("error", &error.to_json());
    }

    /// CONNECT to the default namespace: authenticate, then greet. A second CONNECT starts
    /// over: the rooms of the first are left.
    async fn connect(&mut self, auth: Option<Value>) {
        let token = auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let identity = match token {
            Some(token) => match self.gateway.verifier.verify(token) {
                Ok(claims) => Some(Arc::new(Identity::new(claims))),
                Err(e) => return self.refuse_connect(&format!("invalid token: {e}")),
            },
            None => self.upgrade_identity.clone(),
        };
        let identity = match identity {
            Some(identity) => identity,
            None if self.gateway.config.allow_anonymous => Arc::new(Identity::anonymous()),
            None => {
                return self.refuse_connect(
                    "no token: connect with io(url, { auth: { token: \"<jwt>\" } })",
                )
            }
        };
        let anonymous = identity.claims.sub().is_none();
        self.rooms.leave_all().await;
        self.rooms = RoomSession::new(
            self.gateway.clone(),
            self.outbox.clone(),
            Wire::SocketIo,
            Some(identity),
        );
        if !self.connected {
            self.gateway.metrics.connection_opened(!anonymous);
        }
        self.gateway.identify(self.outbox.id, &self.rooms.user_id());
        self.connected = true;
        self.outbox.send(packet::connected(&self.sid));
        self.emit(
            "connected",
            &json!({
                "socketId": self.sid,
                "serverTime": crate::wire::now_rfc3339(),
                "protocolVersion": PROTOCOL_VERSION,
            }),
        );
        self.emit("authenticated", &self.rooms.authenticated_body());
    }

    fn refuse_connect(&self, reason: &str) {
        crate::decision_log::connection_refused(&reason);
        self.gateway
            .metrics
            .nself_error(ErrorCode::AuthenticationFailed.as_str());
        self.outbox.send(packet::connect_error(
            "/",
            &format!("AUTHENTICATION_FAILED: {reason}"),
            &json!({ "code": "AUTHENTICATION_FAILED", "message": reason }),
        ));
    }

    async fn event(&mut self, name: &str, args: Vec<Value>, ack: Option<u64>) {
        let payload = args.into_iter().next().unwrap_or(Value::Null);
        let outcome = match request::parse(name, &payload) {
            Ok(request) => self.rooms.handle(request).await,
            Err(e) => {
                self.gateway.metrics.nself_error(e.code.as_str());
                Err(e)
            }
        };
        match outcome {
            Ok(reply) => {
                if let Some(event) = reply.event {
                    self.emit(event, &reply.body);
                }
                if let Some(id) = ack {
                    self.outbox.send(packet::ack(id, &reply.body));
                }
                reply.open();
            }
            Err(error) => {
                // Counted by the session already; only the frame here.
                self.emit("error", &error.to_json());
                if let Some(id) = ack {
                    self.outbox
                        .send(packet::ack(id, &json!({ "error": error.to_json() })));
                }
            }
        }
    }
}

impl Session for SocketIoSession {
    const PROTOCOL: &'static str = "socketio";

    fn idle_timeout(&self) -> Duration {
        self.ping_interval + PING_TIMEOUT
    }

    async fn handle(&mut self, message: Message) {
        let text = match &message {
            Message::Text(text) => text.as_str(),
            _ => {
                self.emit_error(&ApiError::validation(
                    "binary messages are not supported: the nself Socket.IO events are JSON",
                ));
                return;
            }
        };
        let packet = match packet::decode(text) {
            Ok(packet) => packet,
            Err(e) => {
                self.gateway.metrics.frames_rejected.inc();
                self.emit_error(&ApiError::validation(format!("malformed packet: {e}")));
                return;
            }
        };
        match packet {
            ClientPacket::Connect { namespace, .. } if namespace != "/" => {
                self.outbox.send(packet::connect_error(
                    &namespace,
                    "Invalid namespace",
                    &json!({ "code": "VALIDATION_ERROR", "message": "only the default namespace / is served" }),
                ));
            }
            ClientPacket::Connect { auth, .. } => self.connect(auth).await,
            ClientPacket::Event { name, args, ack } if self.connected => {
                self.event(&name, args, ack).await
            }
            // Socket.IO clients buffer events until connected; anything earlier is a stray.
            ClientPacket::Event { .. } => {}
            ClientPacket::Disconnect | ClientPacket::Close => self.outbox.kick(Kick::new(
                Disconnect::ClientClosed,
                1000,
                "the client disconnected",
            )),
            ClientPacket::Ping => {
                self.outbox.send(packet::pong());
            }
            ClientPacket::Pong
            | ClientPacket::Noop
            | ClientPacket::Ack
            | ClientPacket::OtherNamespace => {}
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.rooms.expires_at();
        Some(expiry.map_or(self.next_ping, |e| e.min(self.next_ping)))
    }

    async fn wake(&mut self) {
        let now = Instant::now();
        if self.rooms.expires_at().is_some_and(|e| e <= now) {
            self.emit_error(&ApiError::new(
                ErrorCode::AuthenticationFailed,
                "the token expired: reconnect with a fresh token",
            ));
            self.outbox.send(packet::disconnect());
            self.outbox
                .kick(Kick::new(Disconnect::TokenExpired, 1008, "token expired"));
            return;
        }
        if now >= self.next_ping {
            self.outbox.send(packet::ping());
            self.next_ping = now + self.ping_interval;
        }
    }

    async fn finish(&mut self) {
        self.rooms.leave_all().await;
    }
}
