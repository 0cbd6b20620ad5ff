//! A connection's outbound queue: what every producer (replies, broadcasts, presence, changes)
//! hands frames to, and what the connection's writer task drains onto the socket.
//!
//! The queue is bounded. A producer never waits on it: a full queue means the client does not
//! read fast enough, and the connection is kicked (closed with a reason) instead of slowing the
//! fanout for everyone else or growing memory without bound. It is a plain `VecDeque` behind a
//! lock rather than a channel: an idle connection's empty queue allocates nothing, where a
//! channel holds a block of slots for each of tens of thousands of connections.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A server frame, encoded once and cheap to clone for every subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutFrame {
    /// A text frame; the bytes are always valid UTF-8.
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl OutFrame {
    /// The encoded bytes, whatever the frame type.
    pub fn bytes(&self) -> &Bytes {
        match self {
            OutFrame::Text(bytes) | OutFrame::Binary(bytes) => bytes,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Never true for frames this module builds.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }
}

/// Process-unique connection id.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Why a connection is being closed by the server: a WebSocket close code, a reason for the
/// client, and the cause (the `reason` label of `realtime_disconnections_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: String,
    pub cause: Disconnect,
}

/// Why a connection ended, as a metric label and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed, or asked to (a close frame, Socket.IO's disconnect packet).
    ClientClosed,
    /// No message from the client within the idle timeout.
    Idle,
    /// The send queue filled up: the client does not read fast enough.
    SlowConsumer,
    /// A write to the socket did not complete within `REALTIME_WRITE_TIMEOUT`.
    WriteTimeout,
    /// Writing to the socket failed (the peer is gone).
    WriteFailed,
    /// Reading from the socket failed, or the client broke the WebSocket protocol.
    ReadFailed,
    /// A message over `REALTIME_MAX_FRAME_BYTES`.
    TooBig,
    /// The connection's token expired.
    TokenExpired,
    /// The gateway is shutting down.
    Shutdown,
}

impl Disconnect {
    pub const ALL: [Disconnect; 9] = [
        Disconnect::ClientClosed,
        Disconnect::Idle,
        Disconnect::SlowConsumer,
        Disconnect::WriteTimeout,
        Disconnect::WriteFailed,
        Disconnect::ReadFailed,
        Disconnect::TooBig,
        Disconnect::TokenExpired,
        Disconnect::Shutdown,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::ClientClosed => "client_closed",
            Disconnect::Idle => "idle",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::WriteFailed => "write_failed",
            Disconnect::ReadFailed => "read_failed",
            Disconnect::TooBig => "too_big",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Shutdown => "shutdown",
        }
    }

    /// The client is not reading: nothing more is worth sending it before the close.
    pub fn client_stuck(self) -> bool {
        matches!(self, Disconnect::SlowConsumer | Disconnect::WriteTimeout)
    }
}

impl Kick {
    pub fn new(cause: Disconnect, code: u16, reason: impl Into<String>) -> Kick {
        Kick {
            code,
            reason: reason.into(),
            cause,
        }
    }

    /// The queue is full: close 1008, "too slow".
    pub fn too_slow(why: &str) -> Kick {
        Kick::new(Disconnect::SlowConsumer, 1008, format!("too slow: {why}"))
    }
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
            self.kick(Kick::too_slow(
                "the client did not read its messages fast enough",
            ));
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

    /// The kick that won, once there was one.
    pub fn kick_of(&self) -> Option<Kick> {
        self.kick.lock().expect("kick lock").clone()
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
