//! The pure half of the CDC: pgoutput bytes in,
//! [`ChangeEvent`](nself_realtime_shared::event::ChangeEvent)s out.
//!
//! No I/O happens here except the two catalog lookups the stream cannot answer (user types,
//! the primary key of tables whose replica identity is not it), which the caller runs when a
//! [`Step::NeedCatalog`] asks. Decoding is split the way the protocol is layered:
//!
//! * [`messages`]: bytes of one message → typed [`Message`] (hostile input: typed errors only);
//! * [`relations`]: the tables the stream announced, replaced when they change mid-stream;
//! * [`types`]: type names and how each type's values convert, built in or loaded from `pg_type`;
//! * [`values`]: one value's text → typed JSON, and the session settings that text assumes;
//! * [`events`]: messages of a stream → numbered change events, per transaction.

pub mod events;
pub mod messages;
pub mod relations;
pub mod types;
pub mod values;

pub use events::{CatalogNeeds, EventBuilder, EventError, Step};
pub use messages::{DecodeError, Message};
pub use relations::RelationCache;
pub use types::TypeCache;
pub use values::{Conversion, REQUIRED_SESSION_SETTINGS};
