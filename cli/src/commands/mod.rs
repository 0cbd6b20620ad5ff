//! One module per subcommand; `postgres` holds the connection step they share.

pub mod cdc;
pub mod cdc_client;
pub mod gateway;
pub mod init;
pub mod listen;
pub mod postgres;
pub mod subscriptions;
pub mod token;
pub mod up;
