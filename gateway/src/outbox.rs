//! A connection's outbound queue: what every producer (replies, broadcasts, presence, changes)
//! hands frames to, and what the connection's writer task drains onto the socket.
//!
//! The queue is bounded. A producer never waits on it: a full queue means the client does not
//! read fast enough, and the connection is kicked (closed with a reason) instead of slowing the
//! fanout for everyone else or growing memory without bound. It is a plain `VecDeque` behind a
//! lock rather than a channel: an idle connection's empty queue allocates nothing, where a
//! channel holds a block of slots for each of tens of thousands of connections.

use crate::phoenix::frame::OutFrame;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Process-unique connection id.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Why a connection is being closed by the server: a WebSocket close code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: String,
}

/// The sending side of one connection, shared by everything that pushes to it.
pub struct Outbox {
    pub id: ConnId,
    queue: Mutex<Queue>,
    capacity: usize,
    /// Frames were queued.
    ready: Notify,
    kicked: AtomicBool,
    kick: Mutex<Option<Kick>>,
    kick_signal: Notify,
}

struct Queue {
    frames: VecDeque<OutFrame>,
    /// The writer is gone.
    closed: bool,
}

/// The receiving side, owned by the connection's writer task; dropping it closes the queue.
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
}

impl Outbox {
    /// A new connection's queue of at most `capacity` frames.
    pub fn new(capacity: usize) -> (Arc<Outbox>, OutboxReceiver) {
        let outbox = Arc::new(Outbox {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            kicked: AtomicBool::new(false),
            kick: Mutex::new(None),
            kick_signal: Notify::new(),
        });
        let receiver = OutboxReceiver {
            outbox: outbox.clone(),
        };
        (outbox, receiver)
    }

    /// Queues a frame. Returns false when the connection is gone or was kicked; a full queue
    /// kicks the connection (close 1008, "too slow").
    pub fn send(&self, frame: OutFrame) -> bool {
        if self.kicked.load(Ordering::Relaxed) {
            return false;
        }
        let mut queue = self.queue.lock().expect("outbox lock");
        if queue.closed {
            return false;
        }
        if queue.frames.len() >= self.capacity {
            drop(queue);
            self.kick(Kick {
                code: 1008,
                reason: "too slow: the client did not read its messages fast enough".into(),
            });
            return false;
        }
        queue.frames.push_back(frame);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Asks the writer to close the connection with `kick` after what is already queued. The
    /// first kick wins.
    pub fn kick(&self, kick: Kick) {
        if self.kicked.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.kick.lock().expect("kick lock") = Some(kick);
        self.kick_signal.notify_one();
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Relaxed)
    }

    /// Whether the connection's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.queue.lock().expect("outbox lock").closed
    }
}

impl OutboxReceiver {
    /// The outbox this receiver drains.
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// The next queued frame, waiting for one.
    pub async fn recv(&mut self) -> OutFrame {
        let outbox = self.outbox.clone();
        loop {
            // Created before looking, so a frame queued in between is not missed (notify_one
            // keeps a permit when nobody waits yet).
            let ready = outbox.ready.notified();
            if let Some(frame) = self.try_recv() {
                return frame;
            }
            ready.await;
        }
    }

    /// The next queued frame, if any.
    pub fn try_recv(&mut self) -> Option<OutFrame> {
        self.outbox
            .queue
            .lock()
            .expect("outbox lock")
            .frames
            .pop_front()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.outbox.queue.lock().expect("outbox lock");
        queue.closed = true;
        queue.frames = VecDeque::new();
    }
}

impl Outbox {
    /// Waits for a kick; returns it.
    pub async fn kicked(&self) -> Kick {
        loop {
            let signal = self.kick_signal.notified();
            if let Some(kick) = self.kick.lock().expect("kick lock").clone() {
                return kick;
            }
            signal.await;
        }
    }
}
