//! The gateway: terminates WebSockets, authenticates and authorizes, and relays the bus.
//!
//! Data flows one way through it. A client connects ([`server`]) and speaks a protocol:
//! [`phoenix`] for Supabase's realtime-js, [`socketio`] and [`native`] (`/ws`) for the nself
//! API, whose rooms, chat, typing and presence requests live in [`rooms`]. Each joined channel
//! becomes a [`subscriber`] that registers with the relays it needs: [`broadcast`] rooms,
//! [`presence`] topics, [`typing`], persisted chat [`messages`], and [`changes`] feeds, which
//! read table changes from the change log, filter them, check Row Level Security in batches and
//! fan them out. Each event is encoded once per protocol by [`wire`] and shared as bytes;
//! everything reaches the client through its [`outbox`], drained onto the socket by
//! [`socket`]. [`auth`] turns tokens into claims and claims into Postgres sessions for every
//! authorization query; [`state`] ties it together.

pub mod auth;
pub mod broadcast;
pub mod changes;
pub mod channels;
pub mod config;
pub mod control;
pub mod database_broadcasts;
pub mod db;
pub mod decision_log;
pub mod envelope;
pub mod event_log;
pub mod health;
pub mod history;
pub mod http_auth;
pub mod inspector;
pub mod json_input;
pub mod json_write;
pub mod messages;
pub mod metrics;
pub mod native;
pub mod outbox;
pub mod phoenix;
pub mod presence;
pub mod rate_limit;
pub mod registry;
pub mod rest;
pub mod rooms;
pub mod server;
pub mod socket;
pub mod socketio;
pub mod starting;
pub mod state;
pub mod subscriber;
pub mod typing;
pub mod wire;
