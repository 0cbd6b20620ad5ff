//! Broadcast: ephemeral messages to everyone in a channel, on every gateway.
//!
//! A message goes from the sending client (or the REST endpoint) to the broker subject
//! `realtime.broadcast.<topic>`; every gateway with subscribers on the topic holds one broker
//! subscription for it (interest-based) and fans each message out to its local subscribers,
//! encoding it once per wire format and sharing the bytes.
//!
//! On the broker a message is an [`Envelope`]: `[u32 header length][header JSON][payload]`, the
//! payload being the user's JSON text or raw bytes (realtime-js's binary broadcasts), so binary
//! payloads cross gateways without base64 and JSON payloads are never re-parsed.
//!
//! The same rooms carry the nself events that reach every subscriber of a channel whatever its
//! protocol: chat messages ([`Kind::Message`], sent ephemerally or relayed from the database by
//! [`crate::messages`]) and, on instances fed by other subjects ([`Source`]), NOTIFY payloads
//! ([`Kind::Notification`]) and typing signals, which a room turns into who-is-typing events
//! ([`crate::typing`]). [`crate::wire`] encodes each kind per protocol.

use crate::outbox::ConnId;
use crate::phoenix::frame::{BroadcastPayload, OutFrame};
use crate::subscriber::{Subscriber, Wire};
use crate::typing::{self, Typists};
use crate::wire;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use nself_realtime_shared::bus::{Broker, BusError};
use nself_realtime_shared::subject;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// Who sent a broadcast: a gateway and one of its connections (absent for REST broadcasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub gateway: u64,
    pub conn: ConnId,
}

/// What a room message is, which decides how each protocol shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A client's or the REST API's broadcast: any event name, any payload.
    #[default]
    User,
    /// A chat message (`message:new`, `message:updated`, `message:deleted`), built by a gateway.
    Message,
    /// Who is typing (`typing:event`), built by [`crate::typing`].
    Typing,
    /// A Postgres NOTIFY payload (`db:notification`), relayed from the CDC.
    Notification,
}

impl Kind {
    fn is_user(&self) -> bool {
        *self == Kind::User
    }
}

/// The header of a broadcast on the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<Sender>,
    #[serde(default, skip_serializing_if = "Kind::is_user")]
    kind: Kind,
    event: String,
    /// The payload is raw bytes rather than JSON text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<serde_json::Value>,
}

/// One broadcast message.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: Option<Sender>,
    pub kind: Kind,
    pub event: String,
    pub payload: BroadcastPayload,
    pub meta: Option<serde_json::Value>,
}

/// A broker message that is not an envelope.
#[derive(Debug, thiserror::Error)]
#[error("malformed broadcast envelope: {0}")]
pub struct EnvelopeError(String);

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let (binary, payload) = match &self.payload {
            BroadcastPayload::Json(json) => (false, json.clone()),
            BroadcastPayload::Binary(bytes) => (true, bytes.clone()),
        };
        let header = serde_json::to_vec(&Header {
            from: self.from,
            kind: self.kind,
            event: self.event.clone(),
            binary,
            meta: self.meta.clone(),
        })
        .expect("headers serialize");
        let mut out = BytesMut::with_capacity(4 + header.len() + payload.len());
        out.put_u32(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&payload);
        out.freeze()
    }

    pub fn decode(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
        let bad = |what: &str| EnvelopeError(what.to_string());
        let length = bytes
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("shorter than its length prefix"))?;
        let header = bytes
            .get(4..4 + length)
            .ok_or_else(|| bad("header longer than the message"))?;
        let header: Header =
            serde_json::from_slice(header).map_err(|e| EnvelopeError(e.to_string()))?;
        let payload = bytes.slice(4 + length..);
        let payload = if header.binary {
            BroadcastPayload::Binary(payload)
        } else {
            BroadcastPayload::Json(payload)
        };
        Ok(Envelope {
            from: header.from,
            kind: header.kind,
            event: header.event,
            payload,
            meta: header.meta,
        })
    }
}

/// A local subscriber of a broadcast topic.
struct Member {
    subscriber: Arc<Subscriber>,
    /// Receives its own broadcasts (`config.broadcast.self`).
    receive_own: bool,
}

/// The local subscribers of one topic and the broker subscription feeding them.
struct Room {
    name: String,
    members: RwLock<HashMap<u64, Member>>,
    /// Who is typing, for [`Source::Typing`] rooms.
    typists: Mutex<Typists>,
    /// Set once the broker subscription exists.
    subscribed: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Where a set of rooms reads its messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `realtime.broadcast.<topic>`, carrying [`Envelope`]s.
    Broadcast,
    /// `realtime.notify.<channel>`, carrying the CDC's NOTIFY payloads (JSON).
    Notify,
    /// `realtime.typing.<topic>`, carrying typing signals; a typist not refreshed for the
    /// timeout stops typing.
    Typing(std::time::Duration),
}

/// Every broadcast topic with local subscribers.
pub struct Broadcasts {
    broker: Arc<dyn Broker>,
    gateway: u64,
    source: Source,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

/// Identifies a membership so it can be removed: the topic and a key unique per join.
#[derive(Debug, Clone)]
pub struct Membership {
    topic: String,
    key: u64,
}

fn member_key(subscriber: &Arc<Subscriber>) -> u64 {
    Arc::as_ptr(subscriber) as usize as u64
}

impl Broadcasts {
    pub fn new(broker: Arc<dyn Broker>, gateway: u64, source: Source) -> Broadcasts {
        Broadcasts {
            broker,
            gateway,
            source,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// Rooms of typing signals, with the loop that expires typists (it ends when the returned
    /// value is dropped).
    pub fn typing(
        broker: Arc<dyn Broker>,
        gateway: u64,
        timeout: std::time::Duration,
    ) -> Arc<Broadcasts> {
        let broadcasts = Arc::new(Broadcasts::new(broker, gateway, Source::Typing(timeout)));
        let weak = Arc::downgrade(&broadcasts);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(typing::EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broadcasts) = weak.upgrade() else {
                    break;
                };
                broadcasts.expire_typists();
            }
        });
        broadcasts
    }

    fn subject(&self, topic: &str) -> Result<String, subject::SubjectError> {
        match self.source {
            Source::Broadcast => subject::broadcast(topic),
            Source::Notify => subject::notify(topic),
            Source::Typing(_) => subject::typing(topic),
        }
    }

    /// Tells each room whose typists' deadlines passed who is still typing.
    fn expire_typists(&self) {
        let rooms: Vec<Arc<Room>> = self
            .rooms
            .lock()
            .expect("rooms lock")
            .values()
            .cloned()
            .collect();
        let now = std::time::Instant::now();
        for room in rooms {
            let changed = room.typists.lock().expect("typists lock").expire(now);
            for (thread, users) in changed {
                let envelope = typing::envelope(&room.name, thread.as_deref(), &users);
                fan_out(&room, &envelope, self.gateway);
            }
        }
    }

    /// This gateway's id, part of every [`Sender`] it stamps.
    pub fn gateway(&self) -> u64 {
        self.gateway
    }

    /// Adds a subscriber to `topic` and returns once the broker subscription for the topic is
    /// in place (a broadcast published after this returns reaches the subscriber).
    pub async fn join(
        self: &Arc<Self>,
        topic: &str,
        subscriber: Arc<Subscriber>,
        receive_own: bool,
    ) -> Result<Membership, BusError> {
        let key = member_key(&subscriber);
        let room = {
            let mut rooms = self.rooms.lock().expect("rooms lock");
            let room = rooms
                .entry(topic.to_string())
                .or_insert_with(|| {
                    Arc::new(Room {
                        name: topic.to_string(),
                        members: RwLock::new(HashMap::new()),
                        typists: Mutex::new(Typists::default()),
                        subscribed: OnceCell::new(),
                        task: Mutex::new(None),
                    })
                })
                .clone();
            room.members.write().expect("members lock").insert(
                key,
                Member {
                    subscriber,
                    receive_own,
                },
            );
            room
        };
        let membership = Membership {
            topic: topic.to_string(),
            key,
        };
        let started = room
            .subscribed
            .get_or_try_init(|| self.start_room(topic, room.clone()))
            .await;
        if let Err(e) = started {
            self.leave(&membership);
            return Err(e);
        }
        Ok(membership)
    }

    async fn start_room(&self, topic: &str, room: Arc<Room>) -> Result<(), BusError> {
        let subject = self.subject(topic).map_err(|e| BusError::Subscribe {
            subject: topic.to_string(),
            reason: e.to_string(),
        })?;
        let mut messages = self.broker.subscribe(&subject).await?;
        let source = self.source;
        // The subscription must be known to the server before the join is answered.
        self.broker.flush().await?;
        let weak = Arc::downgrade(&room);
        let gateway = self.gateway;
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some(room) = weak.upgrade() else { break };
                let decoded = match source {
                    Source::Broadcast => Envelope::decode(message.payload).map(Some),
                    Source::Notify => Ok(Some(Envelope {
                        from: None,
                        kind: Kind::Notification,
                        event: "db:notification".into(),
                        payload: BroadcastPayload::Json(message.payload),
                        meta: None,
                    })),
                    // A signal changes the room's typists; only a change is told.
                    Source::Typing(timeout) => typing::Signal::decode(&message.payload)
                        .map(|signal| {
                            let thread = signal.thread.clone();
                            room.typists
                                .lock()
                                .expect("typists lock")
                                .apply(signal, timeout)
                                .map(|users| {
                                    typing::envelope(&room.name, thread.as_deref(), &users)
                                })
                        })
                        .map_err(|e| EnvelopeError(e.to_string())),
                };
                match decoded {
                    Ok(Some(envelope)) => fan_out(&room, &envelope, gateway),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(subject = %message.subject, error = %e, "dropping a room message")
                    }
                }
            }
        });
        *room.task.lock().expect("task lock") = Some(task);
        Ok(())
    }

    /// Removes a membership; the last one out ends the topic's broker subscription.
    pub fn leave(&self, membership: &Membership) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let Some(room) = rooms.get(&membership.topic) else {
            return;
        };
        let mut members = room.members.write().expect("members lock");
        members.remove(&membership.key);
        if members.is_empty() {
            drop(members);
            if let Some(task) = room.task.lock().expect("task lock").take() {
                task.abort();
            }
            rooms.remove(&membership.topic);
        }
    }

    /// Publishes a broadcast to every subscriber of `topic` on every gateway.
    pub async fn publish(&self, topic: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_bytes(topic, envelope.encode()).await
    }

    /// Publishes an already encoded message (an envelope, or a typing signal) on `topic`.
    pub async fn publish_bytes(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        let subject = self.subject(topic).map_err(|e| BusError::Publish {
            subject: topic.to_string(),
            reason: e.to_string(),
        })?;
        self.broker.publish(&subject, payload).await
    }

    /// Delivers `envelope` to this gateway's subscribers of `topic` only (for messages every
    /// gateway receives on its own, such as chat messages read from the change log).
    pub fn deliver_local(&self, topic: &str, envelope: &Envelope) {
        let room = self.rooms.lock().expect("rooms lock").get(topic).cloned();
        if let Some(room) = room {
            fan_out(&room, envelope, self.gateway);
        }
    }

    /// The topics each local connection is subscribed to (for operators).
    pub fn rooms_by_connection(&self) -> HashMap<ConnId, std::collections::BTreeSet<String>> {
        let mut by_connection: HashMap<ConnId, std::collections::BTreeSet<String>> = HashMap::new();
        for (topic, room) in self.rooms.lock().expect("rooms lock").iter() {
            for member in room.members.read().expect("members lock").values() {
                by_connection
                    .entry(member.subscriber.conn_id())
                    .or_default()
                    .insert(topic.clone());
            }
        }
        by_connection
    }

    /// Topics with local subscribers, and how many.
    pub fn topic_count(&self) -> usize {
        self.rooms.lock().expect("rooms lock").len()
    }

    /// The topics with local subscribers and how many subscribers each has.
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.rooms
            .lock()
            .expect("rooms lock")
            .iter()
            .map(|(topic, room)| {
                (
                    topic.clone(),
                    room.members.read().expect("members lock").len(),
                )
            })
            .collect()
    }
}

/// Frames of one room message, encoded at most once per (wire format, topic spelling).
pub struct FrameCache<'a> {
    envelope: &'a Envelope,
    built: Vec<(Wire, Arc<str>, Option<OutFrame>)>,
}

impl<'a> FrameCache<'a> {
    pub fn new(envelope: &'a Envelope) -> FrameCache<'a> {
        FrameCache {
            envelope,
            built: Vec::with_capacity(2),
        }
    }

    /// The frame for a subscriber reading `wire` on `topic`; `None` when that protocol cannot
    /// carry the message.
    pub fn get(&mut self, wire: Wire, topic: &Arc<str>) -> Option<OutFrame> {
        if let Some((_, _, frame)) = self
            .built
            .iter()
            .find(|(w, t, _)| *w == wire && (Arc::ptr_eq(t, topic) || **t == **topic))
        {
            return frame.clone();
        }
        let frame = wire::envelope(wire, topic, self.envelope);
        self.built.push((wire, topic.clone(), frame.clone()));
        frame
    }
}

fn fan_out(room: &Room, envelope: &Envelope, gateway: u64) {
    let mut frames = FrameCache::new(envelope);
    let members = room.members.read().expect("members lock");
    for member in members.values() {
        let own = envelope.from.is_some_and(|from| {
            from.conn == member.subscriber.conn_id() && from.gateway == gateway
        });
        if own && !member.receive_own {
            continue;
        }
        if let Some(frame) = frames.get(member.subscriber.wire, &member.subscriber.topic) {
            member.subscriber.deliver(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_json_and_binary() {
        for payload in [
            BroadcastPayload::Json(Bytes::from_static(br#"{"x":1}"#)),
            BroadcastPayload::Binary(Bytes::from_static(&[0, 159, 146, 150])),
        ] {
            let envelope = Envelope {
                from: Some(Sender {
                    gateway: 7,
                    conn: 9,
                }),
                kind: Kind::User,
                event: "cursor".into(),
                payload: payload.clone(),
                meta: None,
            };
            let back = Envelope::decode(envelope.encode()).unwrap();
            assert_eq!(back.from, envelope.from);
            assert_eq!(back.kind, Kind::User);
            assert_eq!(back.event, "cursor");
            assert_eq!(back.payload, payload);
        }
        assert!(Envelope::decode(Bytes::from_static(b"\0\0\0\x09{}")).is_err());
        assert!(Envelope::decode(Bytes::from_static(b"\0")).is_err());
    }
}
