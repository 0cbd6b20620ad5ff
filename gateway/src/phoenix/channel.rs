//! The channels of one Phoenix connection: `phx_join`, `phx_leave`, `access_token`,
//! `broadcast`, `presence` and the heartbeat, as realtime-js 2.x speaks them.
//!
//! This is the Phoenix adapter of the channel service ([`crate::channels`]): a `phx_join`
//! becomes a [`JoinRequest`] (its identity from the join's `access_token`, else the socket's
//! `apikey`; its config's broadcast, presence and postgres_changes sections), the service
//! authorizes and registers it, and only then does the adapter reply: the subscriber is gated
//! until the reply is queued, so everything that happens after the join reaches the client,
//! after the reply.

use super::frame::{self, InFrame, Payload, Vsn};
use crate::auth::channel_access::{self, Write};
use crate::auth::identity::Identity;
use crate::changes::binding::Binding;
use crate::channels::{JoinError, JoinRequest, JoinedChannel, ReplayRequest};
use crate::decision_log::{self, Severity};
use crate::envelope::{BroadcastPayload, Envelope, Kind, Sender};
use crate::outbox::Outbox;
use crate::rate_limit::RateLimit;
use crate::state::Gateway;
use crate::subscriber::Wire;
use nself_realtime_shared::bus::StartAt;
use nself_realtime_shared::event::EventId;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A joined channel: the service's part, and what only Phoenix keeps of it.
struct Joined {
    channel: JoinedChannel,
    /// `config.broadcast.ack`: broadcasts are answered.
    ack: bool,
    /// `config.presence.key`: the key this connection tracks under.
    presence_key: String,
}

/// What a join keeps for its reply and for the joined channel, besides the [`JoinRequest`].
struct Joining {
    /// The reply's body (the bindings' ids).
    response: Value,
    subscribes_to_tables: bool,
    ack: bool,
    presence_key: String,
    replication_ready: bool,
}

/// A refused request: the reason goes back in an error reply.
struct Refusal(String);

impl<T: std::fmt::Display> From<T> for Refusal {
    fn from(e: T) -> Refusal {
        Refusal(e.to_string())
    }
}

/// A failed join or re-authorization of channel `slug`, in realtime-js' words.
fn join_refusal(e: JoinError, slug: &str) -> Refusal {
    match e {
        JoinError::Denied(None) => Refusal(format!(
            "Unauthorized: you do not have permission to join channel {slug}"
        )),
        other => Refusal(other.to_string()),
    }
}

/// What a `phx_join`'s `config` asks for.
struct JoinConfig {
    private: bool,
    /// `broadcast.self`, `broadcast.ack`, `presence.enabled`.
    receive_own: bool,
    ack: bool,
    presence: bool,
    /// `presence.key`, else a random one.
    presence_key: String,
    bindings: Vec<Binding>,
    /// `postgres_changes_options.since`.
    resume: Option<StartAt>,
    /// `broadcast.replay`.
    replay: Option<ReplayRequest>,
    /// `broadcast.replication_ready`: say when the database broadcast feed is live.
    replication_ready: bool,
}

impl JoinConfig {
    fn parse(config: Option<&Map<String, Value>>) -> Result<JoinConfig, Refusal> {
        let empty = Map::new();
        let config = config.unwrap_or(&empty);
        let flag = |section: &str, key: &str| {
            config
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let presence_key = config
            .get("presence")
            .and_then(|p| p.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:x}", rand::random::<u64>()));
        let bindings = Binding::parse_all(config.get("postgres_changes"))?;
        let resume = match config
            .get("postgres_changes_options")
            .and_then(|o| o.get("since"))
        {
            None | Some(Value::Null) => None,
            Some(Value::String(since)) => Some(parse_since(since)?),
            Some(_) => {
                return Err(Refusal(
                    "postgres_changes_options.since must be an RFC 3339 time or an event id".into(),
                ))
            }
        };
        Ok(JoinConfig {
            replay: parse_replay(config.get("broadcast").and_then(|b| b.get("replay")))?,
            replication_ready: flag("broadcast", "replication_ready"),
            private: config
                .get("private")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            receive_own: flag("broadcast", "self"),
            ack: flag("broadcast", "ack"),
            presence: flag("presence", "enabled"),
            presence_key,
            bindings,
            resume,
        })
    }
}

/// The channels of one connection.
pub struct Channels {
    gateway: Arc<Gateway>,
    outbox: Arc<Outbox>,
    vsn: Vsn,
    /// The socket's identity (`apikey`), used when a join brings no `access_token`.
    identity: Option<Arc<Identity>>,
    joined: HashMap<String, Joined>,
    rate: RateLimit,
}

/// The channel slug of a topic: `realtime:room1` → `room1`.
fn slug_of(topic: &str) -> &str {
    topic.strip_prefix("realtime:").unwrap_or(topic)
}

impl Channels {
    pub fn new(
        gateway: Arc<Gateway>,
        outbox: Arc<Outbox>,
        vsn: Vsn,
        identity: Option<Arc<Identity>>,
    ) -> Channels {
        let rate = RateLimit::per_second(gateway.config.max_events_per_second);
        Channels {
            gateway,
            outbox,
            vsn,
            identity,
            joined: HashMap::new(),
            rate,
        }
    }

    fn reply(&self, frame: &InFrame, status: &str, response: Value) {
        self.outbox.send(frame::reply(
            self.vsn,
            frame.join_ref.as_deref(),
            frame.ref_.as_deref(),
            &frame.topic,
            status,
            &response,
        ));
    }

    fn refuse(&self, frame: &InFrame, reason: &str) {
        self.reply(frame, "error", json!({ "reason": reason }));
    }

    /// Handles one client frame.
    pub async fn handle(&mut self, frame: InFrame) {
        if frame.topic == "phoenix" {
            if frame.event == "heartbeat" {
                self.reply(&frame, "ok", json!({}));
            } else {
                self.refuse(
                    &frame,
                    &format!("unknown event {:?} on topic phoenix", frame.event),
                );
            }
            return;
        }
        match frame.event.as_str() {
            "phx_join" => {
                let outcome = self.join(&frame).await;
                // Logged where it was decided (the request here, the rules in the service).
                if let Err(Refusal(reason)) = outcome {
                    self.gateway.metrics.joins_refused.inc();
                    self.refuse(&frame, &reason);
                }
            }
            "phx_leave" => {
                if let Some(joined) = self.joined.remove(&frame.topic) {
                    self.close(joined).await;
                }
                self.reply(&frame, "ok", json!({}));
                self.outbox.send(frame::push(
                    self.vsn,
                    frame.join_ref.as_deref(),
                    &frame.topic,
                    "phx_close",
                    &raw(&json!({})),
                ));
            }
            _ if !self.joined.contains_key(&frame.topic) => {
                self.refuse(&frame, "unmatched topic: join the channel first");
            }
            "access_token" => self.refresh_token(&frame).await,
            "broadcast" => self.broadcast(&frame).await,
            "presence" => self.presence(&frame).await,
            other => {
                let reason = format!("unknown event {other:?}; expected phx_join, phx_leave, access_token, broadcast, presence or heartbeat");
                self.refuse(&frame, &reason);
            }
        }
    }

    /// Verifies a token, or falls back to the socket's identity.
    fn identity_for(&self, token: Option<&str>) -> Result<Arc<Identity>, Refusal> {
        match token {
            Some(token) => {
                let claims = self.gateway.verifier.verify(token)?;
                Ok(Arc::new(Identity::new(claims)))
            }
            None => self.identity.clone().ok_or_else(|| {
                Refusal("no token: connect with an apikey or join with an access_token".into())
            }),
        }
    }

    /// `phx_join`: the request (refusals of its own logged here; the service logs its own),
    /// the channel service's join, then the reply and what follows it.
    async fn join(&mut self, frame: &InFrame) -> Result<(), Refusal> {
        self.gateway.metrics.joins_total.inc();
        let slug = slug_of(&frame.topic).to_string();
        let (request, joining) = match self.join_request(frame, &slug).await {
            Ok(prepared) => prepared,
            Err(Refusal(reason)) => {
                decision_log::join_refused(&slug, Severity::Refusal, &reason);
                return Err(Refusal(reason));
            }
        };
        let channel = self
            .gateway
            .channels
            .join(&self.outbox, self.joined.len(), request)
            .await
            .map_err(|e| join_refusal(e, &slug))?;
        self.joined_reply(frame, &slug, channel, joining);
        Ok(())
    }

    /// The [`JoinRequest`] a `phx_join` asks for, and what Phoenix keeps for the reply. A second
    /// join of a joined topic replaces the first, as Phoenix does: the first is closed here.
    async fn join_request(
        &mut self,
        frame: &InFrame,
        slug: &str,
    ) -> Result<(JoinRequest, Joining), Refusal> {
        let payload = match &frame.payload {
            Payload::Json(Value::Object(payload)) => payload.clone(),
            Payload::Json(Value::Null) => Map::new(),
            _ => return Err(Refusal("phx_join payload must be an object".into())),
        };
        if !channel_access::valid_channel_name(slug) {
            return Err(Refusal(channel_access::CHANNEL_NAME_RULE.into()));
        }
        if let Some(previous) = self.joined.remove(&frame.topic) {
            let join_ref = previous.channel.subscriber.join_ref.clone();
            self.close(previous).await;
            self.outbox.send(frame::push(
                self.vsn,
                join_ref.as_deref(),
                &frame.topic,
                "phx_close",
                &raw(&json!({})),
            ));
        }
        let token = payload.get("access_token").and_then(Value::as_str);
        let identity = self.identity_for(token)?;
        let JoinConfig {
            private,
            receive_own,
            ack,
            presence,
            presence_key,
            bindings,
            resume,
            replay,
            replication_ready,
        } = JoinConfig::parse(payload.get("config").and_then(Value::as_object))?;
        let joining = Joining {
            response: json!({
                "postgres_changes": bindings.iter().map(Binding::reply_json).collect::<Vec<_>>(),
            }),
            subscribes_to_tables: !bindings.is_empty(),
            ack,
            presence_key,
            replication_ready,
        };
        let request = JoinRequest {
            topic: frame.topic.clone().into(),
            join_ref: frame.join_ref.clone(),
            channel: slug.to_string(),
            wire: Wire::Phoenix(self.vsn),
            identity,
            private,
            receive_own,
            notifications: false,
            typing: false,
            presence,
            track: None,
            postgres_changes: bindings,
            resume,
            replay,
        };
        Ok((request, joining))
    }

    /// A joined channel: the `ok` reply, the gate opened, the `system` notices, the replay
    /// started, and the channel kept.
    fn joined_reply(
        &mut self,
        frame: &InFrame,
        slug: &str,
        channel: JoinedChannel,
        joining: Joining,
    ) {
        let Joining {
            response,
            subscribes_to_tables,
            ack,
            presence_key,
            replication_ready,
        } = joining;
        self.reply(frame, "ok", response);
        channel.subscriber.open();
        if subscribes_to_tables {
            self.postgres_changes_notice(frame, slug, "ok", "Subscribed to PostgreSQL");
        }
        for warning in &channel.warnings {
            self.postgres_changes_notice(frame, slug, "warning", warning);
        }
        if replication_ready && self.gateway.channels.database_broadcasts.is_following() {
            // After the replay (if any): both go through the channel's subscriber, in order.
            channel.subscriber.deliver(frame::push(
                self.vsn,
                frame.join_ref.as_deref(),
                &frame.topic,
                "system",
                &raw(&json!({
                    "message": "Replication connection established",
                    "status": "ok",
                    "extension": "system",
                    "channel": slug,
                })),
            ));
        }
        self.gateway.channels.start_replay(&channel);
        self.joined.insert(
            frame.topic.clone(),
            Joined {
                channel,
                ack,
                presence_key,
            },
        );
    }

    /// A `system` message of the postgres_changes extension on the channel `frame` joined.
    fn postgres_changes_notice(&self, frame: &InFrame, slug: &str, status: &str, message: &str) {
        self.outbox.send(frame::push(
            self.vsn,
            frame.join_ref.as_deref(),
            &frame.topic,
            "system",
            &raw(&json!({
                "message": message,
                "status": status,
                "extension": "postgres_changes",
                "channel": slug,
            })),
        ));
    }

    /// When the first joined channel's token expires (the reader waits for it).
    pub fn next_expiry(&self) -> Option<tokio::time::Instant> {
        let exp = self
            .joined
            .values()
            .filter_map(|j| j.channel.identity.expires_at())
            .min()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = Duration::from_secs(u64::try_from(exp - now).unwrap_or(0));
        Some(tokio::time::Instant::now() + wait)
    }

    /// Closes every channel whose token has expired, with a `system` message saying so.
    pub async fn close_expired(&mut self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expired: Vec<(String, i64)> = self
            .joined
            .iter()
            .filter_map(|(topic, j)| {
                let exp = j.channel.identity.expires_at()?;
                (exp <= now).then(|| (topic.clone(), exp))
            })
            .collect();
        for (topic, exp) in expired {
            let reason = format!("Token has expired {} seconds ago", now - exp);
            decision_log::channel_closed(slug_of(&topic), Severity::Refusal, &reason);
            self.shut(&topic, &reason).await;
        }
    }

    /// Closes a channel from the server side: a `system` error, then `phx_close`.
    async fn shut(&mut self, topic: &str, message: &str) {
        let Some(joined) = self.joined.remove(topic) else {
            return;
        };
        let join_ref = joined.channel.subscriber.join_ref.clone();
        self.outbox.send(frame::push(
            self.vsn,
            join_ref.as_deref(),
            topic,
            "system",
            &raw(&json!({
                "message": message,
                "status": "error",
                "extension": "system",
                "channel": joined.channel.channel,
            })),
        ));
        self.close(joined).await;
        self.outbox.send(frame::push(
            self.vsn,
            join_ref.as_deref(),
            topic,
            "phx_close",
            &raw(&json!({})),
        ));
    }

    /// `access_token`: a refreshed token for a joined channel. The channel is re-authorized
    /// under the new claims; an invalid token or a lost right closes the channel.
    async fn refresh_token(&mut self, frame: &InFrame) {
        let token = match &frame.payload {
            Payload::Json(payload) => payload
                .get("access_token")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let Some(token) = token else {
            self.refuse(
                frame,
                "access_token payload must be {\"access_token\": \"<jwt>\"}",
            );
            return;
        };
        let identity = match self.identity_for(Some(&token)) {
            Ok(identity) => identity,
            Err(Refusal(reason)) => {
                let reason = format!("Received an invalid access token: {reason}");
                decision_log::channel_closed(slug_of(&frame.topic), Severity::Refusal, &reason);
                self.shut(&frame.topic, &reason).await;
                return;
            }
        };
        // The new claims must keep every right the join needed: the channel, and each table
        // a binding names.
        let joined = self
            .joined
            .get_mut(&frame.topic)
            .expect("checked by handle");
        let slug = joined.channel.channel.clone();
        let reauthorized = self
            .gateway
            .channels
            .reauthorize(&mut joined.channel, identity)
            .await;
        match reauthorized {
            // Logged by the service.
            Err(e) => {
                let Refusal(reason) = join_refusal(e, &slug);
                self.shut(&frame.topic, &reason).await;
            }
            Ok(()) => self.reply(frame, "ok", json!({})),
        }
    }

    /// A client broadcast: `{type: "broadcast", event, payload}` or a binary broadcast frame.
    async fn broadcast(&mut self, frame: &InFrame) {
        if !self.rate.allow() {
            self.gateway.metrics.rate_limited.inc();
            self.refuse(frame, &format!(
                "rate limit exceeded: at most {} messages per second (REALTIME_MAX_EVENTS_PER_SECOND)",
                self.gateway.config.max_events_per_second
            ));
            return;
        }
        let joined = self
            .joined
            .get_mut(&frame.topic)
            .expect("checked by handle");
        let channels = &self.gateway.channels;
        let refusal = match channels
            .may_write(&mut joined.channel, Write::Broadcast)
            .await
        {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "Unauthorized: you may not send to channel {}",
                joined.channel.channel
            )),
            Err(e) => Some(join_refusal(e, &joined.channel.channel).0),
        };
        if let Some(reason) = refusal {
            self.refuse(frame, &reason);
            return;
        }
        let joined = &self.joined[&frame.topic];
        let (event, payload, meta) = match &frame.payload {
            Payload::Broadcast { event, data, meta } => (event.clone(), data.clone(), meta.clone()),
            Payload::Json(message) => {
                let Some(event) = message.get("event").and_then(Value::as_str) else {
                    self.refuse(frame, "broadcast payload must be {\"type\": \"broadcast\", \"event\": \"<name>\", \"payload\": {...}}");
                    return;
                };
                let body = message.get("payload").cloned().unwrap_or_else(|| json!({}));
                let json = serde_json::to_vec(&body).expect("JSON values serialize");
                (event.to_string(), BroadcastPayload::Json(json.into()), None)
            }
        };
        self.gateway.metrics.broadcasts_received.inc();
        let envelope = Envelope {
            kind: Kind::User,
            from: Some(Sender {
                gateway: self.gateway.id,
                conn: self.outbox.id,
            }),
            event,
            payload,
            meta,
        };
        let published = self
            .gateway
            .channels
            .broadcasts
            .publish(&joined.channel.room_name, &envelope)
            .await;
        let ack = joined.ack;
        match published {
            Ok(()) if ack => self.reply(frame, "ok", json!({})),
            Ok(()) => {}
            Err(e) => self.refuse(frame, &format!("broadcast failed: {e}")),
        }
    }

    /// `presence` track and untrack.
    async fn presence(&mut self, frame: &InFrame) {
        if !self.rate.allow() {
            self.gateway.metrics.rate_limited.inc();
            self.refuse(
                frame,
                "rate limit exceeded (REALTIME_MAX_EVENTS_PER_SECOND)",
            );
            return;
        }
        let Payload::Json(message) = &frame.payload else {
            self.refuse(frame, "presence payload must be JSON");
            return;
        };
        let conn = self.outbox.id;
        let joined = self
            .joined
            .get_mut(&frame.topic)
            .expect("checked by handle");
        let event = message.get("event").and_then(Value::as_str);
        if event == Some("track") {
            let channels = &self.gateway.channels;
            let refusal = match channels
                .may_write(&mut joined.channel, Write::Presence)
                .await
            {
                Ok(true) => None,
                Ok(false) => Some(channel_access::unauthorized_track(&joined.channel.channel)),
                Err(e) => Some(join_refusal(e, &joined.channel.channel).0),
            };
            if let Some(reason) = refusal {
                self.refuse(frame, &reason);
                return;
            }
        }
        let result = match event {
            Some("track") => {
                let meta = match message.get("payload") {
                    Some(Value::Object(meta)) => meta.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        self.refuse(frame, "presence track payload must be an object");
                        return;
                    }
                };
                joined.channel.tracked = true;
                self.gateway
                    .channels
                    .presences
                    .track(&joined.channel.room_name, conn, &joined.presence_key, meta)
                    .await
            }
            Some("untrack") => {
                joined.channel.tracked = false;
                self.gateway
                    .channels
                    .presences
                    .untrack(&joined.channel.room_name, conn)
                    .await
            }
            _ => {
                self.refuse(frame, "presence event must be track or untrack");
                return;
            }
        };
        match result {
            Ok(()) => self.reply(frame, "ok", json!({})),
            Err(e) => self.refuse(frame, &format!("presence failed: {e}")),
        }
    }

    /// Unregisters a channel everywhere.
    async fn close(&self, joined: Joined) {
        self.gateway
            .channels
            .leave(joined.channel, self.outbox.id)
            .await;
    }

    /// Leaves every channel (the connection ended).
    pub async fn leave_all(&mut self) {
        for (_, joined) in std::mem::take(&mut self.joined) {
            self.close(joined).await;
        }
    }
}

/// `broadcast.replay: {since, limit}`: since in milliseconds since the epoch (default 0), limit
/// 1 to 25 (default 25). Anything but an object asks for no replay, as in Supabase.
fn parse_replay(replay: Option<&Value>) -> Result<Option<ReplayRequest>, Refusal> {
    let Some(Value::Object(replay)) = replay else {
        return Ok(None);
    };
    let number = |key: &str, default: i64| match replay.get(key) {
        None | Some(Value::Null) => Some(default),
        Some(value) => value.as_i64(),
    };
    match (number("since", 0), number("limit", 25)) {
        (Some(since_ms), Some(limit)) => Ok(Some(ReplayRequest { since_ms, limit })),
        _ => Err(Refusal(
            "UnableToReplayMessages: Replay params are not valid".into(),
        )),
    }
}

/// `since`: an RFC 3339 time (changes committed at or after it) or an event id (changes after
/// it).
fn parse_since(since: &str) -> Result<StartAt, Refusal> {
    if let Ok(id) = since.parse::<EventId>() {
        return Ok(StartAt::After(id));
    }
    time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
        .map(StartAt::Time)
        .map_err(|_| Refusal(format!("postgres_changes_options.since {since:?} is neither an RFC 3339 time (2026-01-30T10:15:23Z) nor an event id")))
}

fn raw(value: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(value).expect("JSON values serialize")
}
