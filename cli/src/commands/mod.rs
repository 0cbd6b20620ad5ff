//! One module per subcommand; `postgres` holds the connection step they share.

// pending: pub mod cdc;
pub mod init;
pub mod postgres;
pub mod cdc_client;
pub mod listen;
pub mod subscriptions;
