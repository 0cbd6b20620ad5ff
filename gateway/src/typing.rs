//! Typing indicators: who is typing in a channel (and thread), the same on every gateway.
//!
//! A client's `typing:start` / `typing:stop` becomes a small [`Signal`] on the core NATS
//! subject `realtime.typing.<topic>` (ephemeral, like broadcasts). Every gateway with
//! subscribers on the topic follows it through a broadcast room fed by [`TypingFeed`], which
//! keeps each room's [`Typists`] (user → deadline per thread): a start (re)sets the user's deadline to now +
//! `REALTIME_TYPING_TIMEOUT`, a stop or the deadline passing removes the user. Whenever the set
//! of a thread's typists changes, the room tells its local subscribers
//! `typing:event {roomName, threadId, users}`. All gateways see the same signals and apply the
//! same timeout, so they agree without talking to each other; a typist whose gateway dies simply
//! expires.

use crate::broadcast::{Broadcasts, RoomFeed};
use crate::envelope::{BroadcastPayload, Envelope, EnvelopeError, Kind};
use bytes::Bytes;
use nself_realtime_shared::bus::{Broker, BusError};
use nself_realtime_shared::subject::{self, SubjectError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often deadlines are checked: a typist disappears at most this late.
pub const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// One typing signal on the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    pub typing: bool,
}

impl Signal {
    pub fn decode(bytes: &[u8]) -> Result<Signal, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Who is typing in one room: thread (`None`: the room itself) → user → deadline.
#[derive(Debug, Default)]
pub struct Typists(HashMap<Option<String>, HashMap<String, Instant>>);

impl Typists {
    /// Applies a signal; returns the thread's typists when they changed (a start that only
    /// extends a deadline changes nothing).
    pub fn apply(&mut self, signal: Signal, timeout: Duration) -> Option<Vec<String>> {
        let users = self.0.entry(signal.thread.clone()).or_default();
        let changed = if signal.typing {
            users
                .insert(signal.user, Instant::now() + timeout)
                .is_none()
        } else {
            users.remove(&signal.user).is_some()
        };
        let list = changed.then(|| sorted(users));
        if users.is_empty() {
            self.0.remove(&signal.thread);
        }
        list
    }

    /// Removes typists whose deadline passed; returns each changed thread and who remains.
    pub fn expire(&mut self, now: Instant) -> Vec<(Option<String>, Vec<String>)> {
        let mut changed = Vec::new();
        for (thread, users) in self.0.iter_mut() {
            let before = users.len();
            users.retain(|_, deadline| *deadline > now);
            if users.len() != before {
                changed.push((thread.clone(), sorted(users)));
            }
        }
        self.0.retain(|_, users| !users.is_empty());
        changed
    }
}

fn sorted(users: &HashMap<String, Instant>) -> Vec<String> {
    let mut list: Vec<String> = users.keys().cloned().collect();
    list.sort();
    list
}

/// The `typing:event {roomName, threadId, users}` of a room (`roomName` is its topic, whether
/// the room is the topic's public or private one).
pub fn envelope(room: &str, thread: Option<&str>, users: &[String]) -> Envelope {
    let (topic, _) = crate::auth::channel_access::room_topic(room);
    let payload = serde_json::json!({ "roomName": topic, "threadId": thread, "users": users });
    Envelope {
        from: None,
        kind: Kind::Typing,
        event: "typing:event".into(),
        payload: BroadcastPayload::Json(Bytes::from(
            serde_json::to_vec(&payload).expect("JSON values serialize"),
        )),
        meta: None,
    }
}

/// `realtime.typing.<topic>`: signals change the room's typists, and only a change is told.
pub struct TypingFeed {
    timeout: Duration,
    /// Room name → who is typing there. A room's entry goes when its last typist does.
    typists: Mutex<HashMap<String, Typists>>,
}

impl RoomFeed for TypingFeed {
    fn subject(&self, topic: &str) -> Result<String, SubjectError> {
        subject::typing(topic)
    }

    fn receive(&self, room: &str, payload: Bytes) -> Result<Option<Envelope>, EnvelopeError> {
        let signal = Signal::decode(&payload).map_err(|e| EnvelopeError(e.to_string()))?;
        let thread = signal.thread.clone();
        let mut rooms = self.typists.lock().expect("typists lock");
        let typists = rooms.entry(room.to_string()).or_default();
        let changed = typists.apply(signal, self.timeout);
        if typists.0.is_empty() {
            rooms.remove(room);
        }
        Ok(changed.map(|users| envelope(room, thread.as_deref(), &users)))
    }
}

impl TypingFeed {
    /// Removes typists whose deadline passed: each changed (room, thread) and who remains.
    fn expire(&self, now: Instant) -> Vec<(String, Option<String>, Vec<String>)> {
        let mut rooms = self.typists.lock().expect("typists lock");
        let mut changed = Vec::new();
        for (room, typists) in rooms.iter_mut() {
            for (thread, users) in typists.expire(now) {
                changed.push((room.clone(), thread, users));
            }
        }
        rooms.retain(|_, typists| !typists.0.is_empty());
        changed
    }
}

/// Rooms of typing signals, with the loop that expires typists (it ends when the returned
/// rooms are dropped). A typist whose deadline passes is told to the room's local subscribers.
pub fn rooms(broker: Arc<dyn Broker>, gateway: u64, timeout: Duration) -> Arc<Broadcasts> {
    let feed = Arc::new(TypingFeed {
        timeout,
        typists: Mutex::new(HashMap::new()),
    });
    let rooms = Arc::new(Broadcasts::new(broker, gateway, feed.clone()));
    let weak = Arc::downgrade(&rooms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(rooms) = weak.upgrade() else {
                break;
            };
            for (room, thread, users) in feed.expire(Instant::now()) {
                rooms.deliver_local(&room, &envelope(&room, thread.as_deref(), &users), None);
            }
        }
    });
    rooms
}

/// Publishes that `user` started (`typing`) or stopped typing in `topic` (and `thread`).
pub async fn signal(
    rooms: &Broadcasts,
    topic: &str,
    user: &str,
    thread: Option<&str>,
    typing: bool,
) -> Result<(), BusError> {
    let signal = Signal {
        user: user.to_string(),
        thread: thread.map(str::to_string),
        typing,
    };
    let payload = Bytes::from(serde_json::to_vec(&signal).expect("signals serialize"));
    rooms.publish_bytes(topic, payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(user: &str, typing: bool) -> Signal {
        Signal {
            user: user.into(),
            thread: None,
            typing,
        }
    }

    #[test]
    fn signals_round_trip() {
        let bytes = serde_json::to_vec(&signal("u1", true)).unwrap();
        assert_eq!(bytes, br#"{"user":"u1","typing":true}"#);
        assert_eq!(Signal::decode(&bytes).unwrap(), signal("u1", true));
    }

    #[test]
    fn typists_change_on_start_stop_and_expiry_only() {
        let mut typists = Typists::default();
        let timeout = Duration::from_millis(50);
        assert_eq!(
            typists.apply(signal("b", true), timeout),
            Some(vec!["b".into()])
        );
        assert_eq!(
            typists.apply(signal("a", true), timeout),
            Some(vec!["a".into(), "b".into()])
        );
        // A refresh extends the deadline and tells nobody.
        assert_eq!(typists.apply(signal("a", true), timeout), None);
        assert_eq!(
            typists.apply(signal("b", false), timeout),
            Some(vec!["a".into()])
        );
        assert_eq!(typists.apply(signal("b", false), timeout), None);
        assert!(typists.expire(Instant::now()).is_empty());
        let later = Instant::now() + Duration::from_millis(100);
        assert_eq!(typists.expire(later), vec![(None, vec![])]);
        assert!(typists.0.is_empty());
    }
}
