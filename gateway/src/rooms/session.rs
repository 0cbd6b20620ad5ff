//! One nself-API connection: its identity, its joined rooms and its limits, whatever protocol
//! (Socket.IO or `/ws`) carries the requests.
//!
//! A room is a channel, joined through the channel service ([`crate::channels`]) exactly like a
//! Phoenix join: a [`JoinRequest`] for this connection's [`Wire`] with the broadcast room, the
//! NOTIFY room, typing and presence, which also tracks the user's presence in the room at once
//! (what other members see as `user:joined`); channels that persist messages register with the
//! chat relay. The reply goes out before the subscriber's gate opens (see [`Reply::open`]), so
//! the joiner hears `room:joined` before anything else.

use super::request::{ApiError, ErrorCode, Request};
use crate::auth::channel_access::{AccessError, ChannelAccess};
use crate::auth::identity::Identity;
use crate::channels::{JoinError, JoinRequest, JoinedChannel};
use crate::decision_log::{self, Severity};
use crate::envelope::{BroadcastPayload, Envelope, Kind, Sender};
use crate::messages::{Outgoing, SendError};
use crate::outbox::Outbox;
use crate::presence::STATUSES;
use crate::rate_limit::RateLimit;
use crate::state::Gateway;
use crate::subscriber::{Subscriber, Wire};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Largest `metadata` of a message, and `customStatus` plus presence metadata, as JSON.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a request produced for the client: an event to emit (Socket.IO's `room:joined`,
/// `pong`, `authenticated`; `None` when the ack alone answers) and the body, which is also the
/// ack's payload.
pub struct Reply {
    pub event: Option<&'static str>,
    pub body: Value,
    /// A subscriber to open once the reply is queued (a join).
    open: Option<Arc<Subscriber>>,
}

impl Reply {
    fn new(event: Option<&'static str>, body: Value) -> Reply {
        Reply {
            event,
            body,
            open: None,
        }
    }

    /// Lets the joined room's frames flow. Call right after queueing the reply.
    pub fn open(&self) {
        if let Some(subscriber) = &self.open {
            subscriber.open();
        }
    }
}

/// What a connection tracks in its rooms' presence, kept compact (it is paid per connection;
/// the map is built when tracking).
struct Tracked {
    status: &'static str,
    custom_status: Option<Value>,
    /// `metadata` of presence updates (an empty map allocates nothing).
    extra: Map<String, Value>,
    online_at: Box<str>,
}

impl Tracked {
    /// Keys a presence update's metadata may not set.
    const RESERVED: [&'static str; 5] = ["userId", "status", "customStatus", "onlineAt", "phx_ref"];

    /// `{userId, status, customStatus?, onlineAt, ...metadata}`.
    fn meta(&self, user: &str) -> Map<String, Value> {
        let mut meta = self.extra.clone();
        meta.insert("userId".into(), Value::String(user.to_string()));
        meta.insert("status".into(), Value::String(self.status.to_string()));
        if let Some(custom) = &self.custom_status {
            meta.insert("customStatus".into(), custom.clone());
        }
        meta.insert("onlineAt".into(), Value::String(self.online_at.to_string()));
        meta
    }
}

/// A joined room: the service's channel, and the threads this connection is typing in
/// (`None`: the room itself), stopped when it leaves.
struct Joined {
    channel: JoinedChannel,
    typing_in: HashSet<Option<String>>,
}

/// The rooms of one connection.
pub struct RoomSession {
    gateway: Arc<Gateway>,
    outbox: Arc<Outbox>,
    wire: Wire,
    identity: Option<Arc<Identity>>,
    rooms: HashMap<String, Joined>,
    messages: RateLimit,
    presence_updates: RateLimit,
    events: RateLimit,
    /// What this connection tracks in its rooms' presence (see [`Tracked::meta`]).
    tracked: Tracked,
}

fn server_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ServerError, format!("{what}: {e}"))
}

/// A failed join or re-authorization of `room`, in the nself API's codes.
fn room_error(e: JoinError, room: &str) -> ApiError {
    match e {
        JoinError::TooMany(max) => ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!(
                "too many rooms: at most {max} per connection (REALTIME_MAX_CHANNELS_PER_CLIENT)"
            ),
        ),
        JoinError::Unavailable(_) => ApiError::new(ErrorCode::ServerError, e.to_string()),
        JoinError::Access(AccessError::Session(e)) => {
            ApiError::new(ErrorCode::AuthenticationFailed, e.to_string())
        }
        JoinError::Access(other) => server_error("cannot authorize the room", other),
        JoinError::Denied(reason) => ApiError::new(
            ErrorCode::RoomAccessDenied,
            reason.unwrap_or_else(|| format!("Access denied to room: {room}")),
        )
        .with_details(json!({ "roomName": room })),
        other => server_error("cannot join the room", other),
    }
}

impl RoomSession {
    pub fn new(
        gateway: Arc<Gateway>,
        outbox: Arc<Outbox>,
        wire: Wire,
        identity: Option<Arc<Identity>>,
    ) -> RoomSession {
        let limits = &gateway.config.nself;
        let messages = RateLimit::per_minute(limits.max_messages_per_minute);
        let presence_updates = RateLimit::per_minute(limits.max_presence_updates_per_minute);
        let events = RateLimit::per_second(gateway.config.max_events_per_second);
        let mut session = RoomSession {
            gateway,
            outbox,
            wire,
            identity: None,
            rooms: HashMap::new(),
            messages,
            presence_updates,
            events,
            tracked: Tracked {
                status: STATUSES[0],
                custom_status: None,
                extra: Map::new(),
                online_at: crate::wire::now_rfc3339().into(),
            },
        };
        session.set_identity(identity);
        session
    }

    fn set_identity(&mut self, identity: Option<Arc<Identity>>) {
        self.identity = identity;
    }

    /// The presence metadata this connection tracks.
    fn presence_meta(&self) -> Map<String, Value> {
        self.tracked.meta(&self.user_id())
    }

    pub fn is_authenticated(&self) -> bool {
        self.identity.is_some()
    }

    /// The user this connection acts for: the token's `sub` (or Hasura user id), else
    /// `anon-<connection id>`.
    pub fn user_id(&self) -> String {
        self.identity
            .as_ref()
            .and_then(|i| i.user_id())
            .unwrap_or_else(|| format!("anon-{}", self.outbox.id))
    }

    /// The rooms joined, by name.
    pub fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rooms.keys().cloned().collect();
        names.sort();
        names
    }

    /// The `authenticated` body: `{userId, sessionId, rooms}`.
    pub fn authenticated_body(&self) -> Value {
        json!({
            "userId": self.user_id(),
            "sessionId": self.gateway.connection_id(self.outbox.id),
            "rooms": self.room_names(),
            "role": self.identity.as_ref().and_then(|i| i.claims.role()).unwrap_or("anon"),
        })
    }

    /// When the token expires, if it does.
    pub fn expires_at(&self) -> Option<tokio::time::Instant> {
        let exp = self.identity.as_ref()?.expires_at()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = Duration::from_secs(u64::try_from(exp - now).unwrap_or(0));
        Some(tokio::time::Instant::now() + wait)
    }

    /// Handles one request.
    pub async fn handle(&mut self, request: Request) -> Result<Reply, ApiError> {
        let result = match request {
            Request::Ping => Ok(Reply::new(
                Some("pong"),
                json!({ "timestamp": time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 }),
            )),
            Request::Authenticate { token } => self.authenticate(&token).await,
            _ if self.identity.is_none() => {
                let error = ApiError::new(
                    ErrorCode::AuthenticationFailed,
                    "not authenticated: send {\"type\": \"auth\", \"token\": \"<jwt>\"} first (or connect with a token)",
                );
                // The service logs the joins it refuses; this one never reaches it.
                if let Request::Join { room } = &request {
                    decision_log::join_refused(room, Severity::Refusal, &error.message);
                }
                Err(error)
            }
            Request::Join { room } => self.join(&room).await,
            Request::Leave { room } => self.leave(&room).await,
            Request::Send {
                room,
                content,
                message_type,
                metadata,
                thread_id,
            } => {
                self.send(&room, &content, message_type, metadata, thread_id)
                    .await
            }
            Request::Typing {
                room,
                thread_id,
                typing,
            } => self.typing(&room, thread_id, typing).await,
            Request::Presence {
                room,
                status,
                custom_status,
                metadata,
            } => {
                self.update_presence(room.as_deref(), &status, custom_status, metadata)
                    .await
            }
            Request::Broadcast {
                room,
                event,
                payload,
            } => self.broadcast(&room, &event, &payload).await,
        };
        if let Err(e) = &result {
            self.gateway.metrics.nself_error(e.code.as_str());
            let user = self.user_id();
            self.gateway.events.record(
                "error",
                Some(&user),
                e.details
                    .as_ref()
                    .and_then(|d| d.get("roomName"))
                    .and_then(Value::as_str),
                json!({ "error_code": e.code.as_str(), "message": e.message }),
            );
        }
        result
    }

    /// Logs an event of this connection's user in `room` (if that kind is logged).
    fn log(&self, kind: &str, room: &str, data: Value) {
        if self.gateway.events.logs(kind) {
            let user = self.user_id();
            self.gateway
                .events
                .record(kind, Some(&user), Some(room), data);
        }
    }

    async fn authenticate(&mut self, token: &str) -> Result<Reply, ApiError> {
        let claims = self.gateway.verifier.verify(token).map_err(|e| {
            ApiError::new(
                ErrorCode::AuthenticationFailed,
                format!("invalid token: {e}"),
            )
        })?;
        let identity = Arc::new(Identity::new(claims));
        let mut left = Vec::new();
        // Another user takes over nothing of the previous one: their rooms (and the presence
        // tracked there under the previous user) are left.
        if self.identity.is_some()
            && identity.user_id() != self.identity.as_ref().and_then(|i| i.user_id())
        {
            left = self.room_names();
            self.leave_all().await;
        }
        self.set_identity(Some(identity.clone()));
        self.gateway.identify(self.outbox.id, &self.user_id());
        // Rooms joined under the old token are checked again under the new claims.
        for room in self.room_names() {
            let joined = self.rooms.get_mut(&room).expect("a joined room");
            let kept = self
                .gateway
                .channels
                .reauthorize(&mut joined.channel, identity.clone())
                .await;
            if kept.is_err() {
                if let Some(joined) = self.rooms.remove(&room) {
                    self.close(&room, joined).await;
                }
                left.push(room);
            }
        }
        let mut body = self.authenticated_body();
        body["left"] = json!(left);
        Ok(Reply::new(Some("authenticated"), body))
    }

    async fn join(&mut self, room: &str) -> Result<Reply, ApiError> {
        if let Some(joined) = self.rooms.get(room) {
            return Ok(Reply::new(
                Some("room:joined"),
                joined_body(room, &joined.channel.access),
            ));
        }
        let identity = self.identity.clone().expect("checked by handle");
        let limits = &self.gateway.config.nself;
        let request = JoinRequest {
            topic: room.into(),
            join_ref: None,
            channel: room.to_string(),
            wire: self.wire,
            identity,
            private: false,
            receive_own: true,
            notifications: true,
            typing: limits.typing,
            presence: limits.presence,
            track: limits
                .presence
                .then(|| (self.user_id(), self.presence_meta())),
            postgres_changes: Vec::new(),
            resume: None,
            replay: None,
        };
        let channel = self
            .gateway
            .channels
            .join(&self.outbox, self.rooms.len(), request)
            .await
            .map_err(|e| room_error(e, room))?;
        let body = joined_body(room, &channel.access);
        let mut reply = Reply::new(Some("room:joined"), body);
        reply.open = Some(channel.subscriber.clone());
        self.rooms.insert(
            room.to_string(),
            Joined {
                channel,
                typing_in: HashSet::new(),
            },
        );
        self.log("join", room, json!({}));
        Ok(reply)
    }

    async fn leave(&mut self, room: &str) -> Result<Reply, ApiError> {
        if let Some(joined) = self.rooms.remove(room) {
            self.close(room, joined).await;
            self.log("leave", room, json!({}));
        }
        Ok(Reply::new(Some("room:left"), json!({ "roomName": room })))
    }

    /// The joined room, or ROOM_ACCESS_DENIED.
    fn joined(&self, room: &str) -> Result<&Joined, ApiError> {
        self.rooms.get(room).ok_or_else(|| {
            ApiError::new(
                ErrorCode::RoomAccessDenied,
                format!("join room {room} first (room:join / subscribe)"),
            )
            .with_details(json!({ "roomName": room }))
        })
    }

    fn may_send(&self, room: &str) -> Result<&Joined, ApiError> {
        let joined = self.joined(room)?;
        if !joined.channel.access.can_send {
            return Err(ApiError::new(
                ErrorCode::RoomAccessDenied,
                format!("you may not send to room {room}"),
            )
            .with_details(json!({ "roomName": room })));
        }
        Ok(joined)
    }

    /// Takes one of the connection's typing and broadcast events per second.
    fn allow_event(&mut self) -> Result<(), ApiError> {
        if self.events.allow() {
            return Ok(());
        }
        Err(Self::rate_limited(
            &self.events,
            "events",
            &format!("{} per second", self.gateway.config.max_events_per_second),
            "REALTIME_MAX_EVENTS_PER_SECOND",
        ))
    }

    fn rate_limited(limit: &RateLimit, what: &str, per: &str, env: &str) -> ApiError {
        ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!("too many {what}: slow down ({per}, {env})"),
        )
        .with_details(json!({ "retryAfter": limit.retry_after() }))
    }

    async fn send(
        &mut self,
        room: &str,
        content: &Value,
        message_type: Option<Value>,
        metadata: Option<Value>,
        thread_id: Option<Value>,
    ) -> Result<Reply, ApiError> {
        let limits = self.gateway.config.nself.clone();
        if !self.messages.allow() {
            return Err(Self::rate_limited(
                &self.messages,
                "messages",
                &format!("{} per minute", limits.max_messages_per_minute),
                "REALTIME_MAX_MESSAGES_PER_MINUTE",
            ));
        }
        self.may_send(room)?;
        let content = match content {
            Value::String(text) if !text.trim().is_empty() => text.as_str(),
            Value::String(_) | Value::Null => {
                return Err(ApiError::validation("Content cannot be empty"))
            }
            _ => return Err(ApiError::validation("content must be a string")),
        };
        let length = content.chars().count();
        if length > limits.max_content_length {
            return Err(ApiError::validation(format!(
                "Content too long (max {} chars, got {length}; REALTIME_MAX_CONTENT_LENGTH)",
                limits.max_content_length
            )));
        }
        let message_type = match &message_type {
            None | Some(Value::Null) => "text",
            Some(Value::String(t)) if limits.message_types.iter().any(|k| k == t) => t.as_str(),
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "Invalid message type {other}: use one of {}",
                    limits.message_types.join(", ")
                )))
            }
        };
        let metadata = match metadata {
            None | Some(Value::Null) => json!({}),
            Some(Value::Object(meta)) => Value::Object(meta),
            Some(_) => return Err(ApiError::validation("metadata must be an object")),
        };
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::validation("metadata is larger than 16 KiB"));
        }
        let thread_id = match &thread_id {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.len() <= 255 => Some(t.as_str()),
            Some(_) => {
                return Err(ApiError::validation(
                    "threadId must be a string of at most 255 bytes",
                ))
            }
        };
        let outgoing = Outgoing {
            content,
            message_type,
            metadata: &metadata,
            thread_id,
        };
        let joined = self.joined(room)?;
        let persisted = joined.channel.is_persisted();
        let room_name = joined.channel.room_name.clone();
        let room_type = joined
            .channel
            .access
            .channel_type
            .clone()
            .unwrap_or_else(|| "adhoc".into());
        let sent = if persisted {
            let identity = self.identity.clone().expect("checked by handle");
            self.gateway
                .channels
                .messages
                .store(&identity, room, &outgoing)
                .await
        } else {
            let from = Sender {
                gateway: self.gateway.id,
                conn: self.outbox.id,
            };
            self.gateway
                .channels
                .messages
                .publish(from, &self.user_id(), room, &room_name, &outgoing)
                .await
        };
        let message = sent.map_err(|e| match e {
            SendError::Denied { .. } => ApiError::new(ErrorCode::RoomAccessDenied, e.to_string())
                .with_details(json!({ "roomName": room })),
            other => server_error("message not sent", other),
        })?;
        self.gateway.metrics.nself_message(&room_type);
        self.log(
            "message",
            room,
            json!({ "id": message["id"], "messageType": message_type, "persisted": persisted }),
        );
        // Sending ends typing in that thread.
        let thread = thread_id.map(str::to_string);
        if self
            .rooms
            .get(room)
            .is_some_and(|j| j.typing_in.contains(&thread))
        {
            let _ = self.typing(room, thread, false).await;
        }
        Ok(Reply::new(None, json!({ "ok": true, "message": message })))
    }

    async fn typing(
        &mut self,
        room: &str,
        thread: Option<String>,
        typing: bool,
    ) -> Result<Reply, ApiError> {
        if !self.gateway.config.nself.typing {
            return Err(ApiError::validation(
                "typing indicators are off (REALTIME_ENABLE_TYPING)",
            ));
        }
        self.allow_event()?;
        self.may_send(room)?;
        let user = self.user_id();
        let room_name = self.joined(room)?.channel.room_name.clone();
        crate::typing::signal(
            &self.gateway.channels.typing,
            &room_name,
            &user,
            thread.as_deref(),
            typing,
        )
        .await
        .map_err(|e| server_error("typing not sent", e))?;
        self.log(
            "typing",
            room,
            json!({ "threadId": thread, "typing": typing }),
        );
        let joined = self.rooms.get_mut(room).expect("checked by may_send");
        if typing {
            joined.typing_in.insert(thread.clone());
        } else {
            joined.typing_in.remove(&thread);
        }
        Ok(Reply::new(
            None,
            json!({ "ok": true, "roomName": room, "threadId": thread, "typing": typing }),
        ))
    }

    async fn update_presence(
        &mut self,
        room: Option<&str>,
        status: &str,
        custom_status: Option<Value>,
        metadata: Option<Map<String, Value>>,
    ) -> Result<Reply, ApiError> {
        if !self.gateway.config.nself.presence {
            return Err(ApiError::validation(
                "presence is off (REALTIME_ENABLE_PRESENCE)",
            ));
        }
        if !self.presence_updates.allow() {
            return Err(Self::rate_limited(
                &self.presence_updates,
                "presence updates",
                &format!(
                    "{} per minute",
                    self.gateway.config.nself.max_presence_updates_per_minute
                ),
                "REALTIME_MAX_PRESENCE_UPDATES_PER_MINUTE",
            ));
        }
        if !STATUSES.contains(&status) {
            return Err(ApiError::validation(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
        if let Some(room) = room {
            self.joined(room)?;
        }
        let mut tracked = Tracked {
            status: STATUSES
                .iter()
                .copied()
                .find(|s| *s == status)
                .expect("checked above"),
            custom_status,
            extra: self.tracked.extra.clone(),
            online_at: self.tracked.online_at.clone(),
        };
        if let Some(metadata) = metadata {
            for (k, v) in metadata {
                if !Tracked::RESERVED.contains(&k.as_str()) {
                    tracked.extra.insert(k, v);
                }
            }
        }
        let meta = tracked.meta(&self.user_id());
        if Value::Object(meta.clone()).to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::validation("presence data is larger than 16 KiB"));
        }
        self.gateway
            .registry
            .set_status(self.outbox.id, tracked.status);
        self.tracked = tracked;
        let rooms: Vec<String> = match room {
            Some(room) => vec![room.to_string()],
            None => self.room_names(),
        };
        let user = self.user_id();
        for name in &rooms {
            if let Some(joined) = self.rooms.get_mut(name) {
                if !joined.channel.has_presence() {
                    continue;
                }
                self.gateway
                    .channels
                    .presences
                    .track(
                        &joined.channel.room_name,
                        self.outbox.id,
                        &user,
                        meta.clone(),
                    )
                    .await
                    .map_err(|e| server_error("presence not updated", e))?;
                joined.channel.tracked = true;
            }
        }
        for name in &rooms {
            self.log("presence", name, json!({ "status": status }));
        }
        let mut body = Value::Object(meta);
        body["rooms"] = json!(rooms);
        Ok(Reply::new(None, body))
    }

    async fn broadcast(
        &mut self,
        room: &str,
        event: &str,
        payload: &Value,
    ) -> Result<Reply, ApiError> {
        self.allow_event()?;
        self.may_send(room)?;
        let room_name = self.joined(room)?.channel.room_name.clone();
        let envelope = Envelope {
            from: Some(Sender {
                gateway: self.gateway.id,
                conn: self.outbox.id,
            }),
            kind: Kind::User,
            event: event.to_string(),
            payload: BroadcastPayload::Json(Bytes::from(
                serde_json::to_vec(payload).expect("JSON values serialize"),
            )),
            meta: Some(json!({ "userId": self.user_id() })),
        };
        self.gateway
            .channels
            .broadcasts
            .publish(&room_name, &envelope)
            .await
            .map_err(|e| server_error("broadcast not sent", e))?;
        self.gateway.metrics.broadcasts_received.inc();
        Ok(Reply::new(
            None,
            json!({ "ok": true, "roomName": room, "event": event }),
        ))
    }

    /// Unregisters a room everywhere; a typist stops typing, a tracked member leaves.
    async fn close(&self, room: &str, joined: Joined) {
        let channels = &self.gateway.channels;
        if joined.channel.has_typing() {
            let user = self.user_id();
            for thread in &joined.typing_in {
                let stopped = crate::typing::signal(
                    &channels.typing,
                    &joined.channel.room_name,
                    &user,
                    thread.as_deref(),
                    false,
                );
                if let Err(e) = stopped.await {
                    tracing::debug!(channel = room, error = %e, "could not clear typing");
                }
            }
        }
        channels.leave(joined.channel, self.outbox.id).await;
    }

    /// Leaves every room (the connection ended).
    pub async fn leave_all(&mut self) {
        for (room, joined) in std::mem::take(&mut self.rooms) {
            self.close(&room, joined).await;
        }
    }
}

/// The `room:joined` body.
fn joined_body(room: &str, access: &ChannelAccess) -> Value {
    json!({
        "roomName": room,
        "channelType": access.channel_type.as_deref().unwrap_or("public"),
        "persisted": access.persisted,
        "canSend": access.can_send,
    })
}
