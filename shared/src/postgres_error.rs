//! Turning tokio-postgres errors into one readable line.
//!
//! tokio-postgres' `Display` for a server error is just "db error"; the useful part (SQLSTATE,
//! message, detail, hint) sits in the `DbError` source. Every message we show a person goes
//! through [`describe`].

/// `message (detail; hint) [SQLSTATE]` for server errors, the error chain otherwise.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        text.push_str(&format!(" [{}]", db.code().code()));
        // `no pg_hba.conf entry for host ..., no encryption`: the server takes only TLS.
        if db.code().code() == "28000" && db.message().ends_with("no encryption") {
            text.push_str(
                "; the server accepts only TLS connections: add sslmode=require (or verify-full with sslrootcert) to DATABASE_URL",
            );
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
