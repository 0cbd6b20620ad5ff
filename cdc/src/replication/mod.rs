//! The Postgres logical replication connection: a `replication=database` session that creates
//! the slot, starts pgoutput streaming and acknowledges WAL with standby status updates.
//!
//! Split as Supabase's etl crate splits it: `client` (connect, simple queries,
//! `IDENTIFY_SYSTEM`, slot creation) hands over to `stream` (CopyBoth: XLogData and
//! keepalives in, status updates out). Beneath them, `startup` authenticates, `connection`
//! frames messages cancel-safely with a size cap, `socket` picks TCP or the Unix socket, and
//! `command` writes and quotes the replication commands. The pgoutput decoder
//! (`crate::pgoutput`) consumes [`ReplicationEvent::XLogData`]'s bytes.
//!
//! Why postgres-protocol 0.6 and not the `pgwire-replication` 0.5 crate: both cover Unix sockets
//! and trust/cleartext/md5/SCRAM, but pgwire-replication owns the session in a spawned worker
//! behind a channel, sends feedback on its own timer, reports server errors as strings (no
//! SQLSTATE, so 55006 slot-in-use, 42710 and 28P01 could only be matched on text), decodes
//! pgoutput itself (overlapping our decoder) and needs Rust 1.88 (workspace MSRV is 1.85).
//! postgres-protocol is already in the tree (tokio-postgres), gives encoders, parsers, md5 and
//! SCRAM, and leaves flow (read vs. acknowledge, cancel-safe reads) to us, which is the point.

mod client;
mod command;
mod connection;
mod error;
mod socket;
mod startup;
mod stream;

pub use client::{
    ConnectOptions, IdentifySystem, ReplicationClient, SlotCreation, DEFAULT_CONNECT_TIMEOUT,
};
pub use connection::DEFAULT_MAX_MESSAGE_SIZE;
pub use error::{
    ReplicationError, ServerError, DUPLICATE_OBJECT, INVALID_AUTHORIZATION, INVALID_PASSWORD,
    OBJECT_IN_USE,
};
pub use stream::{ReplicationEvent, ReplicationStream};
