//! The channels of one Phoenix connection: `phx_join`, `phx_leave`, `access_token`,
//! `broadcast`, `presence` and the heartbeat, as realtime-js 2.x speaks them.
//!
//! A join authenticates (the join's `access_token`, else the socket's `apikey`), authorizes the
//! channel with RLS, validates the postgres_changes bindings, registers the channel with the
//! broadcast room, the presence topic and the table feeds it needs, and only then replies: the
//! subscriber is gated until the reply is queued, so everything that happens after the join
//! reaches the client, after the reply.

use super::frame::{self, InFrame, Payload, Vsn};
use crate::auth::channel_access::{self, ChannelAccess};
use crate::auth::identity::Identity;
use crate::broadcast::Membership;
use crate::changes::binding::Binding;
use crate::changes::feed::{FeedMembership, TableSubscription};
use crate::envelope::{BroadcastPayload, Envelope, Kind, Sender};
use crate::messages::PersistedChannel;
use crate::outbox::Outbox;
use crate::presence::PresenceMembership;
use crate::rate_limit::RateLimit;
use crate::state::Gateway;
use crate::subscriber::{Subscriber, Wire};
use nself_realtime_shared::bus::StartAt;
use nself_realtime_shared::event::{Column, EventId};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A joined channel.
struct Joined {
    subscriber: Arc<Subscriber>,
    slug: String,
    private: bool,
    identity: Arc<Identity>,
    access: ChannelAccess,
    ack: bool,
    presence_key: String,
    room: Membership,
    presence: Option<PresenceMembership>,
    feeds: Vec<(FeedMembership, Arc<TableSubscription>)>,
    /// Registered with the chat relay (the channel persists its messages).
    persisted: Option<PersistedChannel>,
    tracked: bool,
}

/// A refused request: the reason goes back in an error reply.
struct Refusal(String);

impl<T: std::fmt::Display> From<T> for Refusal {
    fn from(e: T) -> Refusal {
        Refusal(e.to_string())
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
                if let Err(Refusal(reason)) = outcome {
                    self.gateway.metrics.joins_refused.inc();
                    tracing::debug!(topic = %frame.topic, reason, "join refused");
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

    async fn join(&mut self, frame: &InFrame) -> Result<(), Refusal> {
        self.gateway.metrics.joins_total.inc();
        let payload = match &frame.payload {
            Payload::Json(Value::Object(payload)) => payload.clone(),
            Payload::Json(Value::Null) => Map::new(),
            _ => return Err(Refusal("phx_join payload must be an object".into())),
        };
        let slug = slug_of(&frame.topic).to_string();
        if !channel_access::valid_channel_name(&slug) {
            return Err(Refusal(channel_access::CHANNEL_NAME_RULE.into()));
        }
        // A second join of a joined topic replaces the first, as Phoenix does.
        if let Some(previous) = self.joined.remove(&frame.topic) {
            let join_ref = previous.subscriber.join_ref.clone();
            self.close(previous).await;
            self.outbox.send(frame::push(
                self.vsn,
                join_ref.as_deref(),
                &frame.topic,
                "phx_close",
                &raw(&json!({})),
            ));
        }
        if self.joined.len() >= self.gateway.config.max_channels_per_client {
            return Err(Refusal(format!(
                "too many channels: at most {} per connection (REALTIME_MAX_CHANNELS_PER_CLIENT)",
                self.gateway.config.max_channels_per_client
            )));
        }
        let config = payload
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let flag = |section: &str, key: &str| {
            config
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let private = config
            .get("private")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let receive_own = flag("broadcast", "self");
        let ack = flag("broadcast", "ack");
        let presence_enabled = flag("presence", "enabled");
        let presence_key = config
            .get("presence")
            .and_then(|p| p.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:x}", rand::random::<u64>()));
        let token = payload.get("access_token").and_then(Value::as_str);
        let identity = self.identity_for(token)?;
        let bindings = Binding::parse_all(config.get("postgres_changes"))?;
        let start = match config
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

        let access = self.authorize(&identity, &slug, private).await?;
        let warnings = self.check_tables(&identity, &bindings).await?;

        let subscriber = Arc::new(Subscriber::new(
            self.outbox.clone(),
            Wire::Phoenix(self.vsn),
            frame.topic.clone().into(),
            frame.join_ref.clone(),
        ));
        let room = self
            .gateway
            .broadcasts
            .join(&slug, subscriber.clone(), receive_own)
            .await?;
        let mut joined = Joined {
            subscriber: subscriber.clone(),
            slug: slug.clone(),
            private,
            identity: identity.clone(),
            access,
            ack,
            presence_key,
            room,
            presence: None,
            feeds: Vec::new(),
            persisted: None,
            tracked: false,
        };
        if let (true, Some(channel_id)) =
            (joined.access.persisted, joined.access.channel_id.clone())
        {
            match self.gateway.messages.register(&channel_id, &slug).await {
                Ok(registration) => joined.persisted = Some(registration),
                Err(e) => {
                    self.close(joined).await;
                    return Err(e.into());
                }
            }
        }
        if presence_enabled {
            match self.gateway.presences.join(&slug, subscriber.clone()).await {
                Ok(membership) => joined.presence = Some(membership),
                Err(e) => {
                    self.close(joined).await;
                    return Err(e.into());
                }
            }
        }
        // One feed subscription per distinct subject the bindings read.
        let mut by_subject: Vec<(String, Vec<Binding>)> = Vec::new();
        for binding in &bindings {
            let subject = binding.subject_filter()?;
            match by_subject.iter_mut().find(|(s, _)| *s == subject) {
                Some((_, list)) => list.push(binding.clone()),
                None => by_subject.push((subject, vec![binding.clone()])),
            }
        }
        for (subject, list) in by_subject {
            let subscription =
                TableSubscription::new(subscriber.clone(), list, identity.clone(), start.is_some());
            match self
                .gateway
                .feeds
                .subscribe(&subject, subscription.clone())
                .await
            {
                Ok(membership) => joined.feeds.push((membership, subscription)),
                Err(e) => {
                    self.close(joined).await;
                    return Err(Refusal(format!("cannot follow table changes: {e}")));
                }
            }
        }

        let response = json!({
            "postgres_changes": bindings.iter().map(Binding::reply_json).collect::<Vec<_>>(),
        });
        self.reply(frame, "ok", response);
        subscriber.open();
        if !bindings.is_empty() {
            self.postgres_changes_notice(frame, &slug, "ok", "Subscribed to PostgreSQL");
        }
        for warning in warnings {
            self.postgres_changes_notice(frame, &slug, "warning", &warning);
        }
        if let Some(start) = start {
            for (membership, subscription) in &joined.feeds {
                self.gateway.feeds.replay(
                    membership.subject().to_string(),
                    subscription.clone(),
                    start,
                );
            }
        }
        self.joined.insert(frame.topic.clone(), joined);
        Ok(())
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

    /// A pooled Postgres connection for an authorization query.
    async fn connection(&self) -> Result<crate::db::Pooled, Refusal> {
        self.gateway
            .pool
            .get()
            .await
            .map_err(|e| Refusal(format!("authorization is unavailable: {e}")))
    }

    /// Channel authorization under the identity's claims (RLS on `realtime.channels`).
    async fn authorize(
        &self,
        identity: &Identity,
        slug: &str,
        private: bool,
    ) -> Result<ChannelAccess, Refusal> {
        let mut client = self.connection().await?;
        let access = channel_access::authorize(
            &mut client,
            &identity.claims,
            &self.gateway.roles,
            slug,
            private,
            self.gateway.config.require_channels,
        )
        .await?;
        if !access.allowed {
            return Err(Refusal(access.reason.clone().unwrap_or_else(|| {
                format!("Unauthorized: you do not have permission to join channel {slug}")
            })));
        }
        Ok(access)
    }

    /// Every table a binding names must exist and be readable under the identity's role, and
    /// each filter must be able to match: its columns exist and its values convert to their
    /// types. Returns warnings for the client: tables no publication carries, whose changes
    /// would never come.
    async fn check_tables(
        &self,
        identity: &Identity,
        bindings: &[Binding],
    ) -> Result<Vec<String>, Refusal> {
        let mut tables: Vec<(&str, &str)> = Vec::new();
        for binding in bindings {
            if let (Some(schema), Some(table)) = (&binding.schema, &binding.table) {
                if !tables.contains(&(schema.as_str(), table.as_str())) {
                    tables.push((schema, table));
                }
            }
        }
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.connection().await?;
        let (schemas, names): (Vec<&str>, Vec<&str>) = tables.into_iter().unzip();
        let filtered = bindings.iter().any(|b| b.filter.is_some());
        // Column types as the CDC names them in change events (a domain as its base type),
        // read only when a filter is to be checked against them.
        let rows = crate::auth::session::query_as(
            &mut client,
            &identity.claims,
            &self.gateway.roles,
            "SELECT u.s, u.t, c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT'), false),
                    EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.schemaname = u.s AND p.tablename = u.t),
                    coalesce(cols.names, '{}'), coalesce(cols.types, '{}')
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, t, i)
             LEFT JOIN pg_namespace n ON n.nspname = u.s
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t AND c.relkind IN ('r', 'p')
             LEFT JOIN LATERAL (
                 SELECT array_agg(a.attname::text ORDER BY a.attnum) AS names,
                        array_agg(coalesce(b.typname, t.typname)::text ORDER BY a.attnum) AS types
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
                 WHERE $3 AND a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ) cols ON true
             ORDER BY u.i",
            &[&schemas, &names, &filtered],
        )
        .await?;
        let mut warnings = Vec::new();
        for row in rows {
            let (schema, table, exists, readable, published): (&str, &str, bool, bool, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            if !exists {
                return Err(Refusal(format!("table {schema}.{table} does not exist")));
            }
            if !readable {
                return Err(Refusal(format!(
                    "Unauthorized: role {} may not SELECT from {schema}.{table}",
                    identity.claims.role().unwrap_or("anon")
                )));
            }
            let names: Vec<String> = row.get(5);
            let types: Vec<String> = row.get(6);
            let columns: Vec<Column> = names
                .into_iter()
                .zip(types)
                .map(|(name, type_name)| Column { name, type_name })
                .collect();
            for binding in bindings.iter().filter(|b| {
                b.schema.as_deref() == Some(schema) && b.table.as_deref() == Some(table)
            }) {
                if let Some(filter) = &binding.filter {
                    filter.check_types(&columns).map_err(|e| {
                        Refusal(format!(
                            "invalid filter {:?} on {schema}.{table}: {e}",
                            binding
                                .echo
                                .get("filter")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        ))
                    })?;
                }
            }
            if !published {
                warnings.push(format!(
                    "table {schema}.{table} is not published, so no changes of it will arrive: run `nself-realtime subscribe {schema}.{table}`"
                ));
            }
        }
        Ok(warnings)
    }

    /// When the first joined channel's token expires (the reader waits for it).
    pub fn next_expiry(&self) -> Option<tokio::time::Instant> {
        let exp = self
            .joined
            .values()
            .filter_map(|j| j.identity.expires_at())
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
                let exp = j.identity.expires_at()?;
                (exp <= now).then(|| (topic.clone(), exp))
            })
            .collect();
        for (topic, exp) in expired {
            self.shut(
                &topic,
                &format!("Token has expired {} seconds ago", now - exp),
            )
            .await;
        }
    }

    /// Closes a channel from the server side: a `system` error, then `phx_close`.
    async fn shut(&mut self, topic: &str, message: &str) {
        let Some(joined) = self.joined.remove(topic) else {
            return;
        };
        let join_ref = joined.subscriber.join_ref.clone();
        self.outbox.send(frame::push(
            self.vsn,
            join_ref.as_deref(),
            topic,
            "system",
            &raw(&json!({
                "message": message,
                "status": "error",
                "extension": "system",
                "channel": joined.slug,
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
                tracing::info!(topic = %frame.topic, reason, "invalid access_token: channel closed");
                self.shut(
                    &frame.topic,
                    &format!("Received an invalid access token: {reason}"),
                )
                .await;
                return;
            }
        };
        let (slug, private, bindings) = {
            let joined = &self.joined[&frame.topic];
            let bindings: Vec<Binding> = joined
                .feeds
                .iter()
                .flat_map(|(_, subscription)| subscription.bindings.iter().cloned())
                .collect();
            (joined.slug.clone(), joined.private, bindings)
        };
        // The new claims must keep every right the join needed: the channel, and each table
        // a binding names.
        let authorized = match self.authorize(&identity, &slug, private).await {
            Ok(access) => self
                .check_tables(&identity, &bindings)
                .await
                .map(|_| access),
            Err(refusal) => Err(refusal),
        };
        match authorized {
            Err(Refusal(reason)) => {
                tracing::info!(topic = %frame.topic, reason, "access_token lost access: channel closed");
                self.shut(&frame.topic, &reason).await;
            }
            Ok(access) => {
                let joined = self.joined.get_mut(&frame.topic).expect("checked above");
                for (_, subscription) in &joined.feeds {
                    subscription.set_identity(identity.clone());
                }
                joined.identity = identity;
                joined.access = access;
                self.reply(frame, "ok", json!({}));
            }
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
        let joined = &self.joined[&frame.topic];
        if !joined.access.can_send {
            self.refuse(
                frame,
                &format!("Unauthorized: you may not send to channel {}", joined.slug),
            );
            return;
        }
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
            .broadcasts
            .publish(&joined.slug, &envelope)
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
        let result = match message.get("event").and_then(Value::as_str) {
            Some("track") => {
                let meta = match message.get("payload") {
                    Some(Value::Object(meta)) => meta.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        self.refuse(frame, "presence track payload must be an object");
                        return;
                    }
                };
                joined.tracked = true;
                self.gateway
                    .presences
                    .track(&joined.slug, conn, &joined.presence_key, meta)
                    .await
            }
            Some("untrack") => {
                joined.tracked = false;
                self.gateway.presences.untrack(&joined.slug, conn).await
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
        joined.subscriber.close();
        self.gateway.broadcasts.leave(&joined.room);
        if let Some(presence) = &joined.presence {
            self.gateway.presences.leave(presence);
        }
        if joined.tracked {
            if let Err(e) = self
                .gateway
                .presences
                .untrack(&joined.slug, self.outbox.id)
                .await
            {
                tracing::warn!(channel = %joined.slug, error = %e, "could not remove presence");
            }
        }
        for (membership, _) in &joined.feeds {
            self.gateway.feeds.unsubscribe(membership);
        }
        if let Some(persisted) = &joined.persisted {
            self.gateway.messages.unregister(persisted);
        }
    }

    /// Leaves every channel (the connection ended).
    pub async fn leave_all(&mut self) {
        for (_, joined) in std::mem::take(&mut self.joined) {
            self.close(joined).await;
        }
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
