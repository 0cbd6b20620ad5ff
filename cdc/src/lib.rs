//! The CDC service: Postgres logical replication (pgoutput) and NOTIFY into NATS.
//!
//! Data flows one way: [`replication`] streams WAL from a slot, [`pgoutput`] decodes it into
//! change events, the publisher puts them on JetStream and only then confirms the LSN back to
//! Postgres. Around that core: the NOTIFY bridge, the hot-standby leader election, the health
//! endpoint, the Postgres-wire endpoint for `SUBSCRIBE`/`LISTEN`, and the migrations `init` applies.

pub mod bus;
pub mod health;
pub mod metrics;
pub mod migrations;
pub mod notify;
pub mod partitions;
pub mod pgoutput;
pub mod pipeline;
pub mod publications;
pub mod publisher;
pub mod replication;
pub mod service;
pub mod subscriptions;
pub mod wire;

// Shared with the gateway; re-exported so `crate::sql` and `crate::postgres_error` keep working.
pub use nself_realtime_shared::{postgres_error, sql};
