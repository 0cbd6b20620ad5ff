//! The gateway: terminates WebSockets, authenticates and authorizes, and relays the bus.
//!
//! Data flows one way through it. A client connects ([`server`]) and speaks a protocol
//! ([`phoenix`] for Supabase's realtime-js); each joined channel registers its interests in
//! the [`registry`]. Broadcasts and presence come from the bus and the presence store of
//! `nself_realtime_shared`, table changes from the change log through [`changes`], which filters
//! and checks Row Level Security before the registry fans them out as shared bytes.
//! [`auth`] turns tokens into claims and claims into Postgres sessions for every authorization
//! query.

pub mod auth;
pub mod changes;
pub mod phoenix;
