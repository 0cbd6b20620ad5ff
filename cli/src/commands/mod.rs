//! One module per subcommand; `database` decides which Postgres a command works on
//! (`DATABASE_URL`, else `up`'s local cluster) and `postgres` holds the connection step they
//! share, `live` the way to the running gateways (and `http` its small HTTP client) for the
//! operators' commands.
//!
//! The admin commands that work on the realtime tables over plain SQL (`channel`, `messages`,
//! `replay`, `events`, `cleanup`) also share what is below: the mapping of query failures to
//! exit codes, UTC timestamps formatted by Postgres, and numbers written the way seed 002 prints
//! them (`1,203 members`).

pub mod broadcast;
pub mod cdc;
pub mod cdc_client;
pub mod channel;
pub mod cleanup;
pub mod connections;
pub mod database;
pub mod events;
pub mod gateway;
pub mod http;
pub mod init;
pub mod listen;
pub mod live;
pub mod messages;
pub mod postgres;
pub mod presence;
pub mod secret;
pub mod service;
pub mod stats;
pub mod status;
pub mod subscriptions;
pub mod token;
pub mod up;

pub use database::Database;

use crate::exit::CliError;
use anyhow::anyhow;
use tokio_postgres::error::SqlState;

/// A failed admin query: a missing schema, table or function means the schema is missing or older than
/// this binary (exit 2, run `init`); anything else is a runtime failure (exit 1).
pub fn query_failed(error: tokio_postgres::Error) -> CliError {
    let text = nself_realtime_cdc::postgres_error::describe(&error);
    let missing = [
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_FUNCTION,
    ];
    match error.code() {
        Some(code) if missing.contains(code) => {
            CliError::usage(anyhow!(
                "{text}: the realtime schema is missing or older than this binary; run `nself-realtime init` against this database"
            ))
        }
        _ => CliError::runtime(anyhow!("{text}")),
    }
}

/// SQL for `column` as `2026-01-30 10:15:23` in UTC (the text output's timestamps).
pub fn utc_seconds(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
}

/// SQL for `column` as RFC 3339 in UTC with microseconds (the JSON output's timestamps).
pub fn utc_rfc3339(column: &str) -> String {
    format!(r#"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
}

/// `1203` as `1,203`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        grouped.push('-');
    }
    // The first group has 1 to 3 digits, every later one 3.
    let first = (digits.len() - 1) % 3 + 1;
    grouped.push_str(&digits[..first]);
    for group in digits.as_bytes()[first..].chunks(3) {
        grouped.push(',');
        grouped.extend(group.iter().map(|&b| char::from(b)));
    }
    grouped
}

/// `1 member`, `1,203 members`.
pub fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1203), "1,203");
        assert_eq!(thousands(45203), "45,203");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-1234), "-1,234");
        assert_eq!(counted(1, "member", "members"), "1 member");
        assert_eq!(counted(1203, "member", "members"), "1,203 members");
    }
}
