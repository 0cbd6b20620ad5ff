//! Opening a plain Postgres connection from `DATABASE_URL` with errors that name the fix.

use crate::exit::CliError;
use anyhow::anyhow;

/// Parses `DATABASE_URL`; a malformed URL is a usage error.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, CliError> {
    url.parse::<tokio_postgres::Config>().map_err(|e| {
        CliError::usage(anyhow!(
            "DATABASE_URL is not a valid Postgres URL ({e}); use postgres://user:password@host:5432/dbname"
        ))
    })
}

/// Connects and drives the connection in the background. Failing to connect is a configuration
/// problem (exit 2): wrong host, port, credentials or database.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, CliError> {
    let config = parse_url(url)?;
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        CliError::usage(anyhow!(
            "cannot connect to DATABASE_URL ({}); check host, port, user, password and database name",
            nself_realtime_cdc::postgres_error::describe(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "Postgres connection closed");
        }
    });
    Ok(client)
}
