//! Channels, whatever the protocol: the one join pipeline the Phoenix, Socket.IO and `/ws`
//! adapters share.
//!
//! ```text
//! adapter (phoenix::channel, rooms::session) ─JoinRequest─▶ ChannelService::join
//!     ─▶ authorize (channel rules under the claims; the tables postgres_changes names)
//!     ─▶ Subscriber (gated) ─▶ relays: broadcast, NOTIFY, typing, chat, presence, table feeds
//!     ─JoinedChannel─▶ adapter replies in its protocol, then opens the subscriber
//! ```
//!
//! A new authorization rule is written once, in [`service`] (or in the modules it calls:
//! [`crate::auth::channel_access`] for the channel, [`tables`] for the tables); a new protocol
//! builds [`JoinRequest`]s and words [`JoinError`]s ([`error`]). The service logs its decisions
//! ([`crate::decision_log`]) and counts its rooms by type ([`census`]).

pub mod census;
pub mod error;
pub mod service;
pub mod tables;

pub use error::JoinError;
pub use service::{ChannelService, JoinRequest, JoinedChannel, ReplayRequest};
