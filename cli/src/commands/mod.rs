//! One module per subcommand; `postgres` holds the connection step they share.

// pending: pub mod cdc;
pub mod init;
pub mod postgres;
