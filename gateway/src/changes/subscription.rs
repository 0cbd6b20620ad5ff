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

    /// A live change: its frames (one, or one per `select` of the bindings it matches), all
    /// delivered or none.
    pub fn offer(&self, sequence: u64, frames: Vec<OutFrame>) {
        let mut flow = self.flow.lock().expect("flow lock");
        match &mut *flow {
            Flow::Replaying(held) => held.extend(frames.into_iter().map(|f| (sequence, f))),
            Flow::Live { last } if sequence > *last => {
                *last = sequence;
                for frame in frames {
                    self.subscriber.deliver(frame);
                }
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
                if sequence > last_replayed {
                    last = last.max(sequence);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbox, OutboxReceiver};
    use crate::subscriber::Wire;
    use bytes::Bytes;
    use nself_realtime_shared::jwt::Claims;

    fn open(replaying: bool) -> (Arc<TableSubscription>, OutboxReceiver) {
        let (outbox, receiver) = Outbox::new(16);
        let subscriber = Arc::new(Subscriber::new(outbox, Wire::Json, "t".into(), None));
        subscriber.open();
        let identity = Arc::new(Identity::new(Claims::from_map(Default::default())));
        let subscription = TableSubscription::new(subscriber, Vec::new(), identity, replaying);
        (subscription, receiver)
    }

    fn frame(text: &'static str) -> OutFrame {
        OutFrame::Text(Bytes::from_static(text.as_bytes()))
    }

    fn received(receiver: &mut OutboxReceiver) -> Vec<OutFrame> {
        std::iter::from_fn(|| receiver.try_recv()).collect()
    }

    #[test]
    fn a_change_s_frames_go_together_and_once() {
        let (subscription, mut receiver) = open(false);
        subscription.offer(1, vec![frame("a"), frame("b")]);
        subscription.offer(1, vec![frame("again")]);
        subscription.offer(2, vec![frame("c")]);
        assert_eq!(
            received(&mut receiver),
            [frame("a"), frame("b"), frame("c")]
        );
    }

    #[test]
    fn a_replay_hands_over_to_held_changes_without_gap_or_duplicate() {
        let (subscription, mut receiver) = open(true);
        subscription.offer(4, vec![frame("4, replayed too")]);
        subscription.offer(5, vec![frame("5a"), frame("5b")]);
        assert!(received(&mut receiver).is_empty(), "held while replaying");
        subscription.finish_replay(4);
        subscription.offer(5, vec![frame("5, again")]);
        subscription.offer(6, vec![frame("6")]);
        assert_eq!(
            received(&mut receiver),
            [frame("5a"), frame("5b"), frame("6")]
        );
    }
}
