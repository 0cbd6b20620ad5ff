//! The gateway: terminates WebSockets, authenticates and authorizes, and relays the bus.
//!
//! Data flows one way through it. A client connects ([`server`]) and speaks a protocol
//! ([`phoenix`] for Supabase's realtime-js); each joined channel becomes a [`subscriber`] that
//! registers with the relays it needs: [`broadcast`] rooms, [`presence`] topics, and
//! [`changes`] feeds, which read table changes from the change log, filter them, check Row
//! Level Security in batches and fan them out as shared bytes. Everything reaches the client
//! through its [`outbox`]. [`auth`] turns tokens into claims and claims into Postgres sessions
//! for every authorization query; [`state`] ties it together.

pub mod auth;
pub mod broadcast;
pub mod changes;
pub mod config;
pub mod db;
pub mod metrics;
pub mod outbox;
pub mod phoenix;
pub mod presence;
pub mod rest;
pub mod server;
pub mod state;
pub mod subscriber;
