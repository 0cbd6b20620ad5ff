//! One joined channel of one connection, as the fanout sees it.
//!
//! Broadcast rooms, presence topics and table feeds hold `Arc<Subscriber>`s and hand them
//! frames. A subscriber starts *gated*: frames are held until the join reply has been queued
//! (the client ignores a channel's messages before it has the reply, so anything delivered
//! earlier would be lost), then the gate opens and the held frames follow in order. This is what
//! lets the gateway register interest *before* it replies, so that "SUBSCRIBED" means live.
//!
//! A subscriber also names its [`Wire`]: the relays build each frame once per (wire, topic) and
//! share the bytes among every subscriber that reads the same encoding.

use crate::outbox::OutFrame;
use crate::outbox::{ConnId, Outbox};
use crate::phoenix::frame::Vsn;
use std::sync::{Arc, Mutex};

/// The protocol a subscriber's connection speaks, which decides how its frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// Supabase's Phoenix channels (realtime-js), in one of its two serializations.
    Phoenix(Vsn),
    /// Socket.IO v4 over the websocket transport (the nself plugin's event names).
    SocketIo,
    /// The plain WebSocket JSON protocol of `/ws` (seed 004).
    Json,
}

/// Most frames held for a subscriber whose join reply is not out yet.
const GATE_LIMIT: usize = 4096;

enum Gate {
    Held(Vec<OutFrame>),
    Open,
    Closed,
}

/// One joined channel of one connection.
pub struct Subscriber {
    pub outbox: Arc<Outbox>,
    pub wire: Wire,
    /// The channel topic as the client wrote it (`realtime:room1` for Phoenix, the room name
    /// for the nself protocols).
    pub topic: Arc<str>,
    /// The join's ref: frames only for this join instance carry it.
    pub join_ref: Option<String>,
    gate: Mutex<Gate>,
}

impl Subscriber {
    /// A gated subscriber (see the module docs).
    pub fn new(
        outbox: Arc<Outbox>,
        wire: Wire,
        topic: Arc<str>,
        join_ref: Option<String>,
    ) -> Subscriber {
        Subscriber {
            outbox,
            wire,
            topic,
            join_ref,
            gate: Mutex::new(Gate::Held(Vec::new())),
        }
    }

    pub fn conn_id(&self) -> ConnId {
        self.outbox.id
    }

    /// Delivers a frame, or holds it while the gate is shut. Returns false once the subscriber
    /// is closed or its connection is gone.
    pub fn deliver(&self, frame: OutFrame) -> bool {
        let mut gate = self.gate.lock().expect("gate lock");
        match &mut *gate {
            Gate::Open => {
                drop(gate);
                self.outbox.send(frame)
            }
            Gate::Held(held) if held.len() < GATE_LIMIT => {
                held.push(frame);
                true
            }
            Gate::Held(_) => {
                drop(gate);
                self.outbox.kick(crate::outbox::Kick::too_slow(
                    "too many messages arrived while the channel was joining",
                ));
                false
            }
            Gate::Closed => false,
        }
    }

    /// Opens the gate: held frames go out in order, later ones directly. Call right after the
    /// join reply was queued.
    pub fn open(&self) {
        let mut gate = self.gate.lock().expect("gate lock");
        if let Gate::Held(held) = std::mem::replace(&mut *gate, Gate::Open) {
            for frame in held {
                if !self.outbox.send(frame) {
                    break;
                }
            }
        }
    }

    /// Stops every delivery (the channel was left or closed).
    pub fn close(&self) {
        *self.gate.lock().expect("gate lock") = Gate::Closed;
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.gate.lock().expect("gate lock"), Gate::Closed) || self.outbox.is_closed()
    }
}
