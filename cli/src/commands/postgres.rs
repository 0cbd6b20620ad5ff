//! Opening a Postgres connection from `DATABASE_URL` (TLS as its `sslmode` says) with errors
//! that name the fix.

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_shared::postgres_tls::Database;

/// Parses `DATABASE_URL`, `sslmode` and `sslrootcert` included; a malformed URL, a bad
/// `sslmode` or an unreadable root certificate is a usage error.
pub fn parse_url(url: &str) -> Result<Database, CliError> {
    Database::parse(url).map_err(|e| CliError::usage(anyhow!("{e}")))
}

/// Connects and drives the connection in the background. Failing to connect is a configuration
/// problem (exit 2): wrong host, port, credentials, database or TLS settings.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, CliError> {
    connect_with(url, |reason| {
        anyhow!(
            "cannot connect to DATABASE_URL ({reason}); check host, port, user, password and database name"
        )
    })
    .await
}

/// [`connect`], with `failed` wording the error from the reason Postgres or the network gave.
pub async fn connect_with(
    url: &str,
    failed: impl FnOnce(String) -> anyhow::Error,
) -> Result<tokio_postgres::Client, CliError> {
    let database = parse_url(url)?;
    let (client, connection) = database
        .connect()
        .await
        .map_err(|e| CliError::usage(failed(nself_realtime_cdc::postgres_error::describe(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "Postgres connection closed");
        }
    });
    Ok(client)
}
