//! Broadcast: ephemeral messages to everyone in a channel, on every gateway.
//!
//! A message goes from the sending client (or the REST endpoint) to the broker subject
//! `realtime.broadcast.<topic>`; every gateway with subscribers on the topic holds one broker
//! subscription for it (interest-based) and fans each message out to its local subscribers,
//! encoding it once per wire format and sharing the bytes. On the broker a message is an
//! [`Envelope`].
//!
//! The same rooms carry the nself events that reach every subscriber of a channel whatever its
//! protocol: chat messages ([`Kind::Message`], sent ephemerally or relayed from the database by
//! [`crate::messages`]) and, on instances fed by other subjects (a [`RoomFeed`]), NOTIFY
//! payloads ([`NotifyFeed`]) and typing signals ([`crate::typing`] builds its rooms on these).
//! [`crate::wire`] encodes each kind per protocol.

use crate::auth::channel_access::room_label;
use crate::envelope::{BroadcastPayload, Envelope, EnvelopeError, Kind};
use crate::outbox::{ConnId, OutFrame};
use crate::subscriber::{Subscriber, Wire};
use crate::wire;
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::{Broker, BusError};
use nself_realtime_shared::subject::{self, SubjectError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// What feeds a set of rooms: the broker subject of a topic, and what each message on it
/// becomes for the room's subscribers.
pub trait RoomFeed: Send + Sync + 'static {
    /// The broker subject a topic's messages are published and read on.
    fn subject(&self, topic: &str) -> Result<String, SubjectError>;

    /// The envelope a broker message on `room`'s subject becomes, or `None` when it changes
    /// nothing the subscribers see.
    fn receive(&self, room: &str, payload: Bytes) -> Result<Option<Envelope>, EnvelopeError>;
}

/// `realtime.broadcast.<topic>`, carrying [`Envelope`]s as they are.
pub struct BroadcastFeed;

impl RoomFeed for BroadcastFeed {
    fn subject(&self, topic: &str) -> Result<String, SubjectError> {
        subject::broadcast(topic)
    }

    fn receive(&self, _room: &str, payload: Bytes) -> Result<Option<Envelope>, EnvelopeError> {
        Envelope::decode(payload).map(Some)
    }
}

/// `realtime.notify.<channel>`, carrying the CDC's NOTIFY payloads (JSON), each shown as a
/// `db:notification` event.
pub struct NotifyFeed;

impl RoomFeed for NotifyFeed {
    fn subject(&self, channel: &str) -> Result<String, SubjectError> {
        subject::notify(channel)
    }

    fn receive(&self, _room: &str, payload: Bytes) -> Result<Option<Envelope>, EnvelopeError> {
        Ok(Some(Envelope {
            from: None,
            kind: Kind::Notification,
            event: "db:notification".into(),
            payload: BroadcastPayload::Json(payload),
            meta: None,
        }))
    }
}

/// A local subscriber of a broadcast topic.
struct Member {
    subscriber: Arc<Subscriber>,
    /// Receives its own broadcasts (`config.broadcast.self`).
    receive_own: bool,
    /// The member joined with a broadcast replay (`config.broadcast.replay`).
    replay: Option<Arc<Replay>>,
}

/// Where a database broadcast sits in `realtime.messages`: its id and its `inserted_at` (as
/// Postgres writes a timestamp, with `T`: such texts sort as their times do).
#[derive(Debug, Clone, Copy)]
pub struct StoredAt<'a> {
    pub id: &'a str,
    pub inserted_at: &'a str,
}

/// The database broadcasts a member replays at its join, and the live ones around them: while
/// the replay is read, database broadcasts arriving live are held; once it is delivered, the
/// held ones follow, and a broadcast the replay already covered is dropped when it arrives live
/// (this gateway relays it after the replay read it from the table): one the replay carried,
/// or, when the replay was cut at its limit, one older than the oldest replayed. So the member
/// sees the replay, then the live feed, in order, with no gap and no duplicate.
#[derive(Default)]
pub struct Replay {
    state: Mutex<ReplayState>,
}

enum ReplayState {
    Reading(Vec<(String, String, OutFrame)>),
    Done(Covered),
}

/// What a finished replay covered.
struct Covered {
    ids: HashSet<String>,
    /// The oldest replayed `inserted_at` when the replay was cut at its limit.
    cut_at: Option<String>,
}

impl Covered {
    fn covers(&self, stored: StoredAt) -> bool {
        self.ids.contains(stored.id)
            || self
                .cut_at
                .as_deref()
                .is_some_and(|cut| stored.inserted_at < cut)
    }
}

impl Default for ReplayState {
    fn default() -> ReplayState {
        ReplayState::Reading(Vec::new())
    }
}

/// One replayed broadcast: where it is stored and what it becomes.
pub struct Replayed {
    pub id: String,
    pub inserted_at: String,
    pub envelope: Envelope,
}

impl Replay {
    pub fn new() -> Arc<Replay> {
        Arc::new(Replay::default())
    }

    /// Delivers the replayed broadcasts (oldest first) to `subscriber`, then the live ones
    /// held meanwhile that the replay did not cover. `cut` says the replay stopped at its limit.
    pub fn finish(&self, subscriber: &Subscriber, replayed: &[Replayed], cut: bool) {
        let mut state = self.state.lock().expect("replay lock");
        let covered = Covered {
            ids: replayed.iter().map(|r| r.id.clone()).collect(),
            cut_at: replayed
                .first()
                .filter(|_| cut)
                .map(|r| r.inserted_at.clone()),
        };
        for replayed in replayed {
            if let Some(frame) =
                wire::envelope(subscriber.wire, &subscriber.topic, &replayed.envelope)
            {
                subscriber.deliver(frame);
            }
        }
        let held = match std::mem::replace(&mut *state, ReplayState::Reading(Vec::new())) {
            ReplayState::Reading(held) => held,
            ReplayState::Done(_) => Vec::new(),
        };
        for (id, inserted_at, frame) in held {
            let stored = StoredAt {
                id: &id,
                inserted_at: &inserted_at,
            };
            if !covered.covers(stored) {
                subscriber.deliver(frame);
            }
        }
        *state = ReplayState::Done(covered);
    }

    /// A live database broadcast for `subscriber`: held, dropped or delivered.
    fn offer(&self, subscriber: &Subscriber, stored: StoredAt, frame: OutFrame) {
        let mut state = self.state.lock().expect("replay lock");
        match &mut *state {
            ReplayState::Reading(held) => {
                held.push((stored.id.to_string(), stored.inserted_at.to_string(), frame))
            }
            ReplayState::Done(covered) if covered.covers(stored) => {}
            ReplayState::Done(_) => {
                subscriber.deliver(frame);
            }
        }
    }
}

/// The local subscribers of one topic and the broker subscription feeding them.
struct Room {
    name: String,
    members: RwLock<HashMap<u64, Member>>,
    /// Set once the broker subscription exists.
    subscribed: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Every broadcast topic with local subscribers.
pub struct Broadcasts {
    broker: Arc<dyn Broker>,
    gateway: u64,
    feed: Arc<dyn RoomFeed>,
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
    /// Rooms fed by `feed`, on this gateway (`gateway` stamps its senders).
    pub fn new(broker: Arc<dyn Broker>, gateway: u64, feed: Arc<dyn RoomFeed>) -> Broadcasts {
        Broadcasts {
            broker,
            gateway,
            feed,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// This gateway's id, part of every [`Sender`](crate::envelope::Sender) it stamps.
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
        replay: Option<Arc<Replay>>,
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
                    replay,
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
        let subject = self.feed.subject(topic).map_err(|e| BusError::Subscribe {
            subject: topic.to_string(),
            reason: e.to_string(),
        })?;
        let mut messages = self.broker.subscribe(&subject).await?;
        // The subscription must be known to the server before the join is answered.
        self.broker.flush().await?;
        let weak = Arc::downgrade(&room);
        let (gateway, feed) = (self.gateway, self.feed.clone());
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some(room) = weak.upgrade() else { break };
                match feed.receive(&room.name, message.payload) {
                    Ok(Some(envelope)) => fan_out(&room, &envelope, gateway, None),
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
        let subject = self.feed.subject(topic).map_err(|e| BusError::Publish {
            subject: topic.to_string(),
            reason: e.to_string(),
        })?;
        self.broker.publish(&subject, payload).await
    }

    /// Delivers `envelope` to this gateway's subscribers of `topic` only (for messages every
    /// gateway receives on its own: typing expiries, and database broadcasts read from the
    /// change log, which say where they are `stored`).
    pub fn deliver_local(&self, topic: &str, envelope: &Envelope, stored: Option<StoredAt>) {
        let room = self.rooms.lock().expect("rooms lock").get(topic).cloned();
        if let Some(room) = room {
            fan_out(&room, envelope, self.gateway, stored);
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
                    .insert(room_label(topic));
            }
        }
        by_connection
    }

    /// Topics with local subscribers, and how many.
    pub fn topic_count(&self) -> usize {
        self.rooms.lock().expect("rooms lock").len()
    }

    /// The topics with local subscribers and how many subscribers each has (a private room as
    /// `private:<topic>`).
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.rooms
            .lock()
            .expect("rooms lock")
            .iter()
            .map(|(topic, room)| {
                (
                    room_label(topic),
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

fn fan_out(room: &Room, envelope: &Envelope, gateway: u64, stored: Option<StoredAt>) {
    let mut frames = FrameCache::new(envelope);
    let members = room.members.read().expect("members lock");
    for member in members.values() {
        let own = envelope.from.is_some_and(|from| {
            from.conn == member.subscriber.conn_id() && from.gateway == gateway
        });
        if own && !member.receive_own {
            continue;
        }
        let Some(frame) = frames.get(member.subscriber.wire, &member.subscriber.topic) else {
            continue;
        };
        match (&member.replay, stored) {
            (Some(replay), Some(stored)) => replay.offer(&member.subscriber, stored, frame),
            _ => {
                member.subscriber.deliver(frame);
            }
        }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::outbox::{Outbox, OutboxReceiver};
    use serde_json::json;

    fn member() -> (Arc<Subscriber>, OutboxReceiver) {
        let (outbox, receiver) = Outbox::new(64);
        let subscriber = Arc::new(Subscriber::new(outbox, Wire::Json, "t".into(), None));
        subscriber.open();
        (subscriber, receiver)
    }

    fn frame(text: &str) -> OutFrame {
        OutFrame::Text(Bytes::from(text.to_string()))
    }

    fn replayed(id: &str, inserted_at: &str) -> Replayed {
        Replayed {
            id: id.into(),
            inserted_at: inserted_at.into(),
            envelope: Envelope {
                from: None,
                kind: Kind::User,
                event: "e".into(),
                payload: BroadcastPayload::Json(Bytes::from(json!({ "id": id }).to_string())),
                meta: Some(json!({ "replayed": true, "id": id })),
            },
        }
    }

    fn at<'a>(id: &'a str, inserted_at: &'a str) -> StoredAt<'a> {
        StoredAt { id, inserted_at }
    }

    fn received(receiver: &mut OutboxReceiver) -> Vec<String> {
        std::iter::from_fn(|| receiver.try_recv())
            .map(|f| match f {
                OutFrame::Text(text) => String::from_utf8_lossy(&text).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn live_broadcasts_wait_for_the_replay_and_what_it_covered_is_dropped() {
        let (subscriber, mut receiver) = member();
        let replay = Replay::new();
        // Arriving while the replay is read: an old one past the limit, a replayed one, a new one.
        replay.offer(
            &subscriber,
            at("old", "2026-12-06T10:00:00.1"),
            frame("old"),
        );
        replay.offer(
            &subscriber,
            at("r2", "2026-12-06T10:00:02"),
            frame("r2 live"),
        );
        replay.offer(&subscriber, at("n1", "2026-12-06T10:00:03"), frame("n1"));
        assert!(
            received(&mut receiver).is_empty(),
            "held while the replay is read"
        );
        let rows = [
            replayed("r1", "2026-12-06T10:00:01"),
            replayed("r2", "2026-12-06T10:00:02"),
        ];
        replay.finish(&subscriber, &rows, true);
        replay.offer(
            &subscriber,
            at("r1", "2026-12-06T10:00:01"),
            frame("r1 live"),
        );
        replay.offer(&subscriber, at("n2", "2026-12-06T10:00:04"), frame("n2"));
        let got = received(&mut receiver);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[0].contains("\"r1\"") && got[1].contains("\"r2\""),
            "{got:?}"
        );
        assert_eq!(&got[2..], ["n1", "n2"]);
    }

    #[test]
    fn a_replay_that_was_not_cut_keeps_older_live_broadcasts() {
        let (subscriber, mut receiver) = member();
        let replay = Replay::new();
        replay.finish(&subscriber, &[replayed("r1", "2026-12-06T10:00:05")], false);
        replay.offer(
            &subscriber,
            at("late", "2026-12-06T10:00:01"),
            frame("late"),
        );
        assert_eq!(
            received(&mut receiver).last().map(String::as_str),
            Some("late")
        );
    }
}
