//! Typing indicators: who is typing in a channel (and thread), the same on every gateway.
//!
//! A client's `typing:start` / `typing:stop` becomes a small signal on the core NATS subject
//! `realtime.typing.<topic>` (ephemeral, like broadcasts). Every gateway with subscribers on the
//! topic holds one subscription for it and keeps the topic's typists: user → deadline, per
//! thread. A start (re)sets the user's deadline to now + `REALTIME_TYPING_TIMEOUT`; a stop, or
//! the deadline passing, removes the user. Whenever the set of typists of a thread changes, the
//! gateway tells its local subscribers `typing:event {roomName, threadId, users}`. All gateways
//! see the same signals and apply the same timeout, so they agree without talking to each
//! other; a typist whose gateway dies simply expires.

use crate::broadcast::{Envelope, FrameCache, Kind};
use crate::phoenix::frame::BroadcastPayload;
use crate::subscriber::Subscriber;
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::{Broker, BusError};
use nself_realtime_shared::subject;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How often deadlines are checked: a typist disappears at most this late.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// One typing signal on the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Signal {
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<String>,
    typing: bool,
}

/// The typists of one topic and its local subscribers.
struct Room {
    name: String,
    subscribers: RwLock<HashMap<u64, Arc<Subscriber>>>,
    /// thread → user → deadline.
    typists: Mutex<HashMap<Option<String>, HashMap<String, Instant>>>,
    subscribed: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Typing state for every topic with local subscribers.
pub struct Typing {
    broker: Arc<dyn Broker>,
    timeout: Duration,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

/// A subscriber's place in a topic's typing, to leave it.
#[derive(Debug, Clone)]
pub struct TypingMembership {
    topic: String,
    key: u64,
}

impl Typing {
    /// Starts the expiry loop; it ends when the returned value is dropped.
    pub fn start(broker: Arc<dyn Broker>, timeout: Duration) -> Arc<Typing> {
        let typing = Arc::new(Typing {
            broker,
            timeout,
            rooms: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&typing);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(typing) = weak.upgrade() else { break };
                typing.expire();
            }
        });
        typing
    }

    /// Adds a subscriber to `topic`'s typing; returns once the topic's subscription is in place.
    pub async fn join(
        self: &Arc<Self>,
        topic: &str,
        subscriber: Arc<Subscriber>,
    ) -> Result<TypingMembership, BusError> {
        let key = Arc::as_ptr(&subscriber) as usize as u64;
        let room = {
            let mut rooms = self.rooms.lock().expect("rooms lock");
            let room = rooms
                .entry(topic.to_string())
                .or_insert_with(|| {
                    Arc::new(Room {
                        name: topic.to_string(),
                        subscribers: RwLock::new(HashMap::new()),
                        typists: Mutex::new(HashMap::new()),
                        subscribed: OnceCell::new(),
                        task: Mutex::new(None),
                    })
                })
                .clone();
            room.subscribers
                .write()
                .expect("subscribers lock")
                .insert(key, subscriber);
            room
        };
        let membership = TypingMembership {
            topic: topic.to_string(),
            key,
        };
        let started = room
            .subscribed
            .get_or_try_init(|| self.subscribe(room.clone()))
            .await;
        if let Err(e) = started {
            self.leave(&membership);
            return Err(e);
        }
        Ok(membership)
    }

    async fn subscribe(self: &Arc<Self>, room: Arc<Room>) -> Result<(), BusError> {
        let subject = subject::typing(&room.name).map_err(|e| BusError::Subscribe {
            subject: room.name.clone(),
            reason: e.to_string(),
        })?;
        let mut signals = self.broker.subscribe(&subject).await?;
        self.broker.flush().await?;
        let weak = Arc::downgrade(&room);
        let timeout = self.timeout;
        let task = tokio::spawn(async move {
            while let Some(message) = signals.next().await {
                let Some(room) = weak.upgrade() else { break };
                match serde_json::from_slice::<Signal>(&message.payload) {
                    Ok(signal) => room.apply(signal, timeout),
                    Err(e) => {
                        tracing::warn!(subject = %message.subject, error = %e, "dropping a malformed typing signal")
                    }
                }
            }
        });
        *room.task.lock().expect("task lock") = Some(task);
        Ok(())
    }

    /// Leaves a topic; the last subscriber out ends its subscription and forgets its typists.
    pub fn leave(&self, membership: &TypingMembership) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let Some(room) = rooms.get(&membership.topic) else {
            return;
        };
        let mut subscribers = room.subscribers.write().expect("subscribers lock");
        subscribers.remove(&membership.key);
        if subscribers.is_empty() {
            drop(subscribers);
            if let Some(task) = room.task.lock().expect("task lock").take() {
                task.abort();
            }
            rooms.remove(&membership.topic);
        }
    }

    /// Publishes that `user` started (`typing`) or stopped typing in `topic` (and `thread`).
    pub async fn signal(
        &self,
        topic: &str,
        user: &str,
        thread: Option<&str>,
        typing: bool,
    ) -> Result<(), BusError> {
        let subject = subject::typing(topic).map_err(|e| BusError::Publish {
            subject: topic.to_string(),
            reason: e.to_string(),
        })?;
        let signal = Signal {
            user: user.to_string(),
            thread: thread.map(str::to_string),
            typing,
        };
        let payload = Bytes::from(serde_json::to_vec(&signal).expect("signals serialize"));
        self.broker.publish(&subject, payload).await
    }

    /// Who is typing in `topic` (any thread) as this gateway sees it.
    pub fn typists(&self, topic: &str) -> Vec<String> {
        let rooms = self.rooms.lock().expect("rooms lock");
        let Some(room) = rooms.get(topic) else {
            return Vec::new();
        };
        let typists = room.typists.lock().expect("typists lock");
        let mut users: Vec<String> = typists.values().flat_map(|u| u.keys().cloned()).collect();
        users.sort();
        users.dedup();
        users
    }

    fn expire(&self) {
        let rooms: Vec<Arc<Room>> = self
            .rooms
            .lock()
            .expect("rooms lock")
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        for room in rooms {
            let mut changed: Vec<(Option<String>, Vec<String>)> = Vec::new();
            {
                let mut typists = room.typists.lock().expect("typists lock");
                for (thread, users) in typists.iter_mut() {
                    let before = users.len();
                    users.retain(|_, deadline| *deadline > now);
                    if users.len() != before {
                        changed.push((thread.clone(), sorted(users)));
                    }
                }
                typists.retain(|_, users| !users.is_empty());
            }
            for (thread, users) in changed {
                room.tell(thread.as_deref(), &users);
            }
        }
    }
}

fn sorted(users: &HashMap<String, Instant>) -> Vec<String> {
    let mut list: Vec<String> = users.keys().cloned().collect();
    list.sort();
    list
}

impl Room {
    /// Applies a signal; tells the subscribers when the thread's typists changed.
    fn apply(&self, signal: Signal, timeout: Duration) {
        let users = {
            let mut typists = self.typists.lock().expect("typists lock");
            let users = typists.entry(signal.thread.clone()).or_default();
            let changed = if signal.typing {
                users
                    .insert(signal.user, Instant::now() + timeout)
                    .is_none()
            } else {
                users.remove(&signal.user).is_some()
            };
            let list = changed.then(|| sorted(users));
            if users.is_empty() {
                typists.remove(&signal.thread);
            }
            list
        };
        if let Some(users) = users {
            self.tell(signal.thread.as_deref(), &users);
        }
    }

    /// `typing:event {roomName, threadId, users}` to every local subscriber.
    fn tell(&self, thread: Option<&str>, users: &[String]) {
        let payload = serde_json::json!({
            "roomName": self.name,
            "threadId": thread,
            "users": users,
        });
        let envelope = Envelope {
            from: None,
            kind: Kind::Typing,
            event: "typing:event".into(),
            payload: BroadcastPayload::Json(Bytes::from(
                serde_json::to_vec(&payload).expect("JSON values serialize"),
            )),
            meta: None,
        };
        let mut frames = FrameCache::new(&envelope);
        let subscribers = self.subscribers.read().expect("subscribers lock");
        for subscriber in subscribers.values() {
            if let Some(frame) = frames.get(subscriber.wire, &subscriber.topic) {
                subscriber.deliver(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip() {
        let signal = Signal {
            user: "u1".into(),
            thread: None,
            typing: true,
        };
        let bytes = serde_json::to_vec(&signal).unwrap();
        assert_eq!(bytes, br#"{"user":"u1","typing":true}"#);
        assert_eq!(serde_json::from_slice::<Signal>(&bytes).unwrap(), signal);
    }
}
