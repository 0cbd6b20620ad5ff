//! Everything two nself-realtime processes must agree on: configuration values read from the
//! environment, the change event every table change becomes, and how names become NATS subjects.
//!
//! The CDC produces [`event::ChangeEvent`]s on the subjects of [`subject`]; gateways and the CLI
//! consume them. Keeping both sides on this one crate keeps the wire contract in one place.

pub mod bus;
pub mod config;
pub mod event;
pub mod jwt;
pub mod lsn;
pub mod metrics;
pub mod nats;
pub mod postgres_error;
pub mod postgres_tls;
pub mod process_metrics;
pub mod sql;
pub mod startup;
pub mod subject;
