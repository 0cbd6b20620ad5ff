//! One channel's interest in a table feed: its subscriber, the bindings the feed serves, the
//! identity it reads rows as (replaced on `access_token`), and its flow: live, replaying a
//! resumed range while live changes wait, or failed (told once, then silent).
//!
//! Resume (`postgres_changes_options.since`): the subscription starts replaying. Live changes
//! are held ([`TableSubscription::offer`]) while the feed replays the log for it; once the
//! replay has caught up, [`TableSubscription::finish_replay`] sends the held changes past its
//! last sequence, and the subscription is live: no gap and no duplicate.

use super::binding::Binding;
use crate::auth::identity::Identity;
use crate::outbox::OutFrame;
use crate::subscriber::Subscriber;
use crate::wire;
use std::sync::{Arc, Mutex, RwLock};

/// Where a subscription's deliveries stand.
enum Flow {
    /// Replaying: live changes wait here with their sequences.
    Replaying(Vec<(u64, OutFrame)>),
    /// Live: changes at or below `last` were already delivered by the replay.
    Live { last: u64 },
    /// The claims' checks failed; the channel was told and gets nothing more.
    Failed,
}

/// One channel's interest in one feed.
pub struct TableSubscription {
    pub subscriber: Arc<Subscriber>,
    /// The channel's bindings served by this feed.
    pub bindings: Vec<Binding>,
    identity: RwLock<Arc<Identity>>,
    flow: Mutex<Flow>,
}

impl TableSubscription {
    pub fn new(
        subscriber: Arc<Subscriber>,
        bindings: Vec<Binding>,
        identity: Arc<Identity>,
        replaying: bool,
    ) -> Arc<TableSubscription> {
        Arc::new(TableSubscription {
            subscriber,
            bindings,
            identity: RwLock::new(identity),
            flow: Mutex::new(if replaying {
                Flow::Replaying(Vec::new())
            } else {
                Flow::Live { last: 0 }
            }),
        })
    }

    /// Switches to new claims (after `access_token`); through
    /// [`super::feed::ChangeFeeds::set_identity`], which invalidates owner indexes.
    pub(super) fn set_identity(&self, identity: Arc<Identity>) {
        *self.identity.write().expect("identity lock") = identity;
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity.read().expect("identity lock").clone()
    }

    pub fn failed(&self) -> bool {
        matches!(*self.flow.lock().expect("flow lock"), Flow::Failed)
    }

    /// A live change.
    pub fn offer(&self, sequence: u64, frame: OutFrame) {
        let mut flow = self.flow.lock().expect("flow lock");
        match &mut *flow {
            Flow::Replaying(held) => held.push((sequence, frame)),
            Flow::Live { last } if sequence > *last => {
                *last = sequence;
                self.subscriber.deliver(frame);
            }
            Flow::Live { .. } | Flow::Failed => {}
        }
    }

    /// Ends the replay at `last_replayed`: held changes after it go out, then live.
    pub fn finish_replay(&self, last_replayed: u64) {
        let mut flow = self.flow.lock().expect("flow lock");
        if let Flow::Replaying(held) = std::mem::replace(
            &mut *flow,
            Flow::Live {
                last: last_replayed,
            },
        ) {
            let mut last = last_replayed;
            for (sequence, frame) in held {
                if sequence > last {
                    last = sequence;
                    self.subscriber.deliver(frame);
                }
            }
            *flow = Flow::Live { last };
        }
    }

    /// Marks the subscription failed and tells the client why, once.
    pub fn fail(&self, message: &str) {
        let mut flow = self.flow.lock().expect("flow lock");
        if matches!(*flow, Flow::Failed) {
            return;
        }
        *flow = Flow::Failed;
        drop(flow);
        self.subscriber
            .deliver(system_error(&self.subscriber, message));
    }
}

/// A `system` message with status `error` for the postgres_changes extension.
pub fn system_error(subscriber: &Subscriber, message: &str) -> OutFrame {
    wire::channel_error(
        subscriber.wire,
        subscriber.join_ref.as_deref(),
        &subscriber.topic,
        "postgres_changes",
        message,
    )
}
