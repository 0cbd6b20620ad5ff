//! Presence: who is in a channel, the same on every gateway.
//!
//! Tracking writes the member to the presence store (NATS KV `realtime_presence` or the
//! in-process store) under `<topic token>.<member id>`; the member id names this gateway and the
//! connection, so one presence key (a user) can have several connections, each one *meta*. Every
//! gateway with presence subscribers on a topic watches the topic's keys and turns what it sees
//! into Phoenix's `presence_state` (on join) and `presence_diff` (on change) frames.
//!
//! Liveness: this gateway re-writes its own entries every `heartbeat / 2`; a watcher drops an
//! entry not refreshed for `1.5 × heartbeat` (swept every `heartbeat / 4`), so the members of
//! a gateway killed with -9 leave every other gateway's view within `2 × heartbeat`. A graceful
//! untrack deletes the entry and is seen at once.

use crate::outbox::OutFrame;
use crate::phoenix::frame;
use crate::subscriber::{Subscriber, Wire};
use crate::wire::{self, PresenceEvent, PresenceMember};
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::{BusError, PresenceChange, PresenceStore};
use nself_realtime_shared::subject::kv_token;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The presence statuses of the nself API (seed 001), which its clients and the operators'
/// `presence track` set.
pub const STATUSES: [&str; 4] = ["online", "away", "busy", "offline"];

/// What a presence entry holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// The presence key (`config.presence.key`, or one generated per join).
    key: String,
    /// The tracked payload plus `phx_ref`.
    meta: Value,
}

/// A member as a watcher sees it.
struct Member {
    entry: Entry,
    refreshed: Instant,
}

/// The presence of one topic on this gateway: the members seen and the local subscribers.
struct Topic {
    name: String,
    members: Mutex<HashMap<String, Member>>,
    subscribers: RwLock<HashMap<u64, Arc<Subscriber>>>,
    /// Joins waiting for the watch to sync.
    joining: AtomicUsize,
    synced: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One presence entry as operators see it ([`Presences::snapshot`]).
#[derive(Debug, Clone, Serialize)]
pub struct PresenceRecord {
    pub channel: String,
    /// The presence key: the user for the nself protocols, `config.presence.key` for Phoenix.
    pub key: String,
    /// The store's member id (gateway and connection).
    pub member: String,
    pub meta: Value,
    /// Seconds since the entry was last written, when the store says.
    pub age_seconds: Option<f64>,
}

/// Timing derived from `REALTIME_HEARTBEAT_INTERVAL`.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    pub refresh: Duration,
    pub timeout: Duration,
    pub sweep: Duration,
}

impl PresenceTiming {
    pub fn from_heartbeat(heartbeat: Duration) -> PresenceTiming {
        PresenceTiming {
            refresh: heartbeat / 2,
            timeout: heartbeat * 3 / 2,
            sweep: heartbeat / 4,
        }
    }
}

/// Presence for every topic with local subscribers, and this gateway's own tracked members.
pub struct Presences {
    store: Arc<dyn PresenceStore>,
    gateway: u64,
    timing: PresenceTiming,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Entries this gateway wrote, by store key: re-written every `refresh`.
    own: Mutex<HashMap<String, Bytes>>,
}

/// A subscriber's place in a topic's presence, to leave it.
#[derive(Debug, Clone)]
pub struct PresenceMembership {
    topic: String,
    key: u64,
}

impl Presences {
    /// Starts the refresh and sweep loops; they end when the returned value is dropped.
    pub fn start(
        store: Arc<dyn PresenceStore>,
        gateway: u64,
        timing: PresenceTiming,
    ) -> Arc<Presences> {
        let presences = Arc::new(Presences {
            store,
            gateway,
            timing,
            topics: Mutex::new(HashMap::new()),
            own: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&presences);
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(timing.refresh);
            let mut sweep = tokio::time::interval(timing.sweep);
            loop {
                tokio::select! {
                    _ = refresh.tick() => {
                        let Some(presences) = weak.upgrade() else { break };
                        presences.refresh_own().await;
                    }
                    _ = sweep.tick() => {
                        let Some(presences) = weak.upgrade() else { break };
                        presences.sweep();
                    }
                }
            }
        });
        presences
    }

    /// The store key of one connection's entry in a topic.
    fn store_key(&self, topic: &str, conn: u64) -> Result<String, BusError> {
        let token = kv_token(topic).map_err(|e| BusError::Presence(e.to_string()))?;
        Ok(format!("{token}.g{:x}c{conn}", self.gateway))
    }

    /// Subscribes to a topic's presence. The current state (`presence_state`) is queued to the
    /// subscriber first, then every diff; both wait behind the subscriber's gate.
    pub async fn join(
        self: &Arc<Self>,
        topic: &str,
        subscriber: Arc<Subscriber>,
    ) -> Result<PresenceMembership, BusError> {
        let key = Arc::as_ptr(&subscriber) as usize as u64;
        let membership = PresenceMembership {
            topic: topic.to_string(),
            key,
        };
        // Counted as joining while the watch starts, so a concurrent last leave keeps the topic;
        // not yet a subscriber, so it sees no diff before the state.
        let entry = {
            let mut topics = self.topics.lock().expect("topics lock");
            let entry = topics
                .entry(topic.to_string())
                .or_insert_with(|| {
                    Arc::new(Topic {
                        name: topic.to_string(),
                        members: Mutex::new(HashMap::new()),
                        subscribers: RwLock::new(HashMap::new()),
                        joining: AtomicUsize::new(0),
                        synced: OnceCell::new(),
                        task: Mutex::new(None),
                    })
                })
                .clone();
            entry.joining.fetch_add(1, Ordering::AcqRel);
            entry
        };
        let started = entry
            .synced
            .get_or_try_init(|| self.watch(entry.clone()))
            .await;
        if let Err(e) = started {
            entry.joining.fetch_sub(1, Ordering::AcqRel);
            self.leave(&membership);
            return Err(e);
        }
        {
            let members = entry.members.lock().expect("members lock");
            let frame = match subscriber.wire {
                Wire::Phoenix(vsn) => {
                    let state = state_json(members.values().map(|m| &m.entry));
                    encode(vsn, &subscriber.topic, "presence_state", &state)
                }
                wire => {
                    let list: Vec<PresenceMember> =
                        members.values().map(|m| m.entry.as_member()).collect();
                    wire::presence_state(wire, &subscriber.topic, &list)
                }
            };
            if let Some(frame) = frame {
                subscriber.deliver(frame);
            }
            entry
                .subscribers
                .write()
                .expect("subscribers lock")
                .insert(key, subscriber);
            entry.joining.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(membership)
    }

    /// Starts watching a topic; returns once the initial snapshot is in.
    async fn watch(self: &Arc<Self>, topic: Arc<Topic>) -> Result<(), BusError> {
        let prefix = kv_token(&topic.name).map_err(|e| BusError::Presence(e.to_string()))?;
        let mut changes = self.store.watch(&prefix).await?;
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let weak = Arc::downgrade(&topic);
        let timeout = self.timing.timeout;
        let task = tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            while let Some(change) = changes.next().await {
                let Some(topic) = weak.upgrade() else { break };
                tracing::trace!(topic = %topic.name, ?change, "presence change");
                match change {
                    Ok(PresenceChange::Synced) => {
                        if let Some(tx) = synced_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(change) => apply(&topic, change, timeout),
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, error = %e, "presence watch failed");
                        break;
                    }
                }
            }
        });
        *topic.task.lock().expect("task lock") = Some(task);
        synced_rx.await.map_err(|_| {
            BusError::Presence(format!(
                "the presence watch of {} ended before it synced",
                topic.name
            ))
        })
    }

    /// Leaves a topic's presence (not the member's entry: see [`Presences::untrack`]).
    pub fn leave(&self, membership: &PresenceMembership) {
        let mut topics = self.topics.lock().expect("topics lock");
        let Some(topic) = topics.get(&membership.topic) else {
            return;
        };
        let mut subscribers = topic.subscribers.write().expect("subscribers lock");
        subscribers.remove(&membership.key);
        if subscribers.is_empty() && topic.joining.load(Ordering::Acquire) == 0 {
            drop(subscribers);
            if let Some(task) = topic.task.lock().expect("task lock").take() {
                task.abort();
            }
            topics.remove(&membership.topic);
        }
    }

    /// Tracks (or re-tracks) a connection in a topic under `presence_key` with `payload`.
    pub async fn track(
        &self,
        topic: &str,
        conn: u64,
        presence_key: &str,
        payload: Map<String, Value>,
    ) -> Result<(), BusError> {
        let store_key = self.store_key(topic, conn)?;
        let mut meta = payload;
        meta.insert("phx_ref".into(), Value::String(new_ref()));
        let value = Bytes::from(
            serde_json::to_vec(&Entry {
                key: presence_key.to_string(),
                meta: Value::Object(meta),
            })
            .expect("entries serialize"),
        );
        self.own
            .lock()
            .expect("own lock")
            .insert(store_key.clone(), value.clone());
        self.store.put(&store_key, value).await
    }

    /// Removes a connection's entry from a topic, if it has one.
    pub async fn untrack(&self, topic: &str, conn: u64) -> Result<(), BusError> {
        let store_key = self.store_key(topic, conn)?;
        if self
            .own
            .lock()
            .expect("own lock")
            .remove(&store_key)
            .is_some()
        {
            self.store.delete(&store_key).await?;
        }
        Ok(())
    }

    /// Removes every entry this gateway wrote (graceful shutdown).
    pub async fn untrack_all(&self) {
        let keys: Vec<String> = self
            .own
            .lock()
            .expect("own lock")
            .drain()
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if let Err(e) = self.store.delete(&key).await {
                tracing::warn!(key, error = %e, "could not remove a presence entry at shutdown");
            }
        }
    }

    async fn refresh_own(&self) {
        let own: Vec<(String, Bytes)> = self
            .own
            .lock()
            .expect("own lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let puts = own
            .iter()
            .map(|(key, value)| self.store.put(key, value.clone()));
        for result in futures::future::join_all(puts).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "presence refresh failed");
            }
        }
    }

    fn sweep(&self) {
        let topics: Vec<Arc<Topic>> = self
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        for topic in topics {
            let mut members = topic.members.lock().expect("members lock");
            let expired: Vec<String> = members
                .iter()
                .filter(|(_, m)| now.duration_since(m.refreshed) > self.timing.timeout)
                .map(|(k, _)| k.clone())
                .collect();
            let left: Vec<Entry> = expired
                .iter()
                .filter_map(|k| members.remove(k))
                .map(|m| m.entry)
                .collect();
            if !left.is_empty() {
                tracing::debug!(topic = %topic.name, count = left.len(), "presence entries expired");
                send_diff(&topic, &members, &[], &left);
            }
        }
    }

    /// Every live presence entry of every channel, from the store (for operators: any gateway
    /// answers for all). Entries not refreshed within the timeout are left out.
    pub async fn snapshot(&self) -> Result<Vec<PresenceRecord>, BusError> {
        let now = time::OffsetDateTime::now_utc();
        let timeout = time::Duration::try_from(self.timing.timeout).unwrap_or(time::Duration::MAX);
        let entries = self.store.snapshot().await?;
        Ok(entries
            .into_iter()
            .filter_map(|stored| {
                let (token, member) = stored.key.split_once('.')?;
                let room = nself_realtime_shared::subject::kv_untoken(token).ok()?;
                let channel = crate::auth::channel_access::room_label(&room);
                let entry: Entry = serde_json::from_slice(&stored.value).ok()?;
                let age = stored.written_at.map(|at| now - at);
                if age.is_some_and(|age| age > timeout) {
                    return None;
                }
                Some(PresenceRecord {
                    channel,
                    key: entry.key,
                    member: member.to_string(),
                    meta: entry.meta,
                    age_seconds: age.map(|a| a.as_seconds_f64().max(0.0)),
                })
            })
            .collect())
    }

    /// Members of a topic as this gateway sees them (for tests and the CLI).
    pub fn member_count(&self, topic: &str) -> Option<usize> {
        let topics = self.topics.lock().expect("topics lock");
        topics
            .get(topic)
            .map(|t| t.members.lock().expect("members lock").len())
    }
}

/// Applies one watched change to a topic and tells its subscribers.
fn apply(topic: &Topic, change: PresenceChange, timeout: Duration) {
    let mut members = topic.members.lock().expect("members lock");
    match change {
        PresenceChange::Put {
            key,
            value,
            written_at,
        } => {
            let Ok(entry) = serde_json::from_slice::<Entry>(&value) else {
                tracing::warn!(topic = %topic.name, key, "ignoring a malformed presence entry");
                return;
            };
            let age = written_at
                .map(|t| {
                    (time::OffsetDateTime::now_utc() - t).clamp(
                        time::Duration::ZERO,
                        time::Duration::try_from(timeout * 2).unwrap_or(time::Duration::ZERO),
                    )
                })
                .and_then(|age| Duration::try_from(age).ok())
                .unwrap_or_default();
            let refreshed = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            if age > timeout {
                // A dead owner's leftover in the snapshot: it is not here.
                return;
            }
            match members.insert(
                key,
                Member {
                    entry: entry.clone(),
                    refreshed,
                },
            ) {
                Some(old) if old.entry == entry => {}
                Some(old) => send_diff(
                    topic,
                    &members,
                    std::slice::from_ref(&entry),
                    std::slice::from_ref(&old.entry),
                ),
                None => send_diff(topic, &members, std::slice::from_ref(&entry), &[]),
            }
        }
        PresenceChange::Delete { key } => {
            if let Some(old) = members.remove(&key) {
                send_diff(topic, &members, &[], std::slice::from_ref(&old.entry));
            }
        }
        PresenceChange::Synced => {}
    }
}

/// `{key: {metas: [meta, ...]}}` of some entries.
fn state_json<'a>(entries: impl Iterator<Item = &'a Entry>) -> Value {
    let mut state = Map::new();
    for entry in entries {
        let slot = state
            .entry(entry.key.clone())
            .or_insert_with(|| json!({"metas": []}));
        if let Some(metas) = slot.get_mut("metas").and_then(Value::as_array_mut) {
            metas.push(entry.meta.clone());
        }
    }
    Value::Object(state)
}

/// Tells a topic's subscribers that `joins` arrived and `leaves` left; `members` is the
/// topic's membership after the change. Phoenix subscribers get the raw `presence_diff`; the
/// nself protocols get user-level events (a user joins with their first connection, leaves
/// with their last, and a re-track of a present user is an update).
fn send_diff(topic: &Topic, members: &HashMap<String, Member>, joins: &[Entry], leaves: &[Entry]) {
    let subscribers = topic.subscribers.read().expect("subscribers lock");
    let mut diff: Option<Value> = None;
    let mut user_events: Option<Vec<PresenceEvent>> = None;
    let mut built: Vec<(Wire, Arc<str>, Vec<OutFrame>)> = Vec::new();
    for subscriber in subscribers.values() {
        let cached = built
            .iter()
            .find(|(w, t, _)| *w == subscriber.wire && **t == *subscriber.topic);
        let frames = match cached {
            Some((_, _, frames)) => frames.clone(),
            None => {
                let frames: Vec<OutFrame> = match subscriber.wire {
                    Wire::Phoenix(vsn) => {
                        let diff = diff.get_or_insert_with(|| {
                            json!({
                                "joins": state_json(joins.iter()),
                                "leaves": state_json(leaves.iter()),
                            })
                        });
                        encode(vsn, &subscriber.topic, "presence_diff", diff)
                            .into_iter()
                            .collect()
                    }
                    wire => user_events
                        .get_or_insert_with(|| user_level(members, joins, leaves))
                        .iter()
                        .filter_map(|event| wire::presence_event(wire, &subscriber.topic, event))
                        .collect(),
                };
                built.push((subscriber.wire, subscriber.topic.clone(), frames.clone()));
                frames
            }
        };
        for frame in frames {
            subscriber.deliver(frame);
        }
    }
}

/// The user-level view of a diff (see [`send_diff`]).
fn user_level<'a>(
    members: &HashMap<String, Member>,
    joins: &'a [Entry],
    leaves: &'a [Entry],
) -> Vec<PresenceEvent<'a>> {
    let connections_of = |key: &str| members.values().filter(|m| m.entry.key == key).count();
    let mut events = Vec::new();
    for entry in joins {
        if leaves.iter().any(|l| l.key == entry.key) || connections_of(&entry.key) > 1 {
            events.push(PresenceEvent::Updated(entry.as_member()));
        } else {
            events.push(PresenceEvent::Joined(entry.as_member()));
        }
    }
    for entry in leaves {
        if joins.iter().all(|j| j.key != entry.key) && connections_of(&entry.key) == 0 {
            events.push(PresenceEvent::Left(entry.as_member()));
        }
    }
    events
}

impl Entry {
    fn as_member(&self) -> PresenceMember<'_> {
        PresenceMember {
            key: &self.key,
            meta: &self.meta,
        }
    }
}

fn encode(vsn: frame::Vsn, topic: &str, event: &str, payload: &Value) -> Option<OutFrame> {
    let json = serde_json::value::to_raw_value(payload).ok()?;
    Some(frame::push(vsn, None, topic, event, &json))
}

/// A fresh `phx_ref`: unique enough to tell metas apart.
fn new_ref() -> String {
    format!("{:x}", rand::random::<u64>())
}
