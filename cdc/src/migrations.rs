//! The SQL migrations of `migrations/`, embedded in the binary and applied in order by
//! `nself-realtime init` (and `up`).
//!
//! Each file runs once, in its own transaction, and is recorded in `realtime.schema_migrations`;
//! running `init` again changes nothing. A session advisory lock serialises concurrent `init`s
//! (two CDCs starting together). The files are also written to be idempotent on their own, so a
//! database that already has the objects (created by hand or by an older tool) is adopted.

use crate::postgres_error::describe;
use tokio_postgres::Client;

/// One embedded migration file.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_realtime_schema",
        sql: include_str!("../../migrations/0001_realtime_schema.sql"),
    },
    Migration {
        version: 2,
        name: "0002_channels",
        sql: include_str!("../../migrations/0002_channels.sql"),
    },
    Migration {
        version: 3,
        name: "0003_messages",
        sql: include_str!("../../migrations/0003_messages.sql"),
    },
    Migration {
        version: 4,
        name: "0004_database_broadcast",
        sql: include_str!("../../migrations/0004_database_broadcast.sql"),
    },
    Migration {
        version: 5,
        name: "0005_replay_index",
        sql: include_str!("../../migrations/0005_replay_index.sql"),
    },
];

/// Advisory lock key held while migrating ("nselfrt" as bytes).
const MIGRATION_LOCK: i64 = 0x006e_7365_6c66_7274;

/// A migration failed; the message names the file and Postgres' complaint.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot prepare realtime.schema_migrations: {0}")]
    Bookkeeping(String),
    #[error("migration {name} failed: {reason}")]
    Failed { name: &'static str, reason: String },
}

fn bookkeeping(e: tokio_postgres::Error) -> MigrationError {
    MigrationError::Bookkeeping(describe(&e))
}

/// Applies every migration not yet recorded; returns the names of those applied now.
pub async fn apply(client: &mut Client) -> Result<Vec<&'static str>, MigrationError> {
    // `IF NOT EXISTS` logs a NOTICE ("already exists, skipping") for each object on every run
    // after the first: noise in the output of every `init` and `up`.
    let tx = client.transaction().await.map_err(bookkeeping)?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS realtime;
         CREATE TABLE IF NOT EXISTS realtime.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(bookkeeping)?;
    tx.commit().await.map_err(bookkeeping)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(bookkeeping)?;
    let result = apply_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(bookkeeping);
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_locked(client: &mut Client) -> Result<Vec<&'static str>, MigrationError> {
    let done: Vec<i32> = client
        .query("SELECT version FROM realtime.schema_migrations", &[])
        .await
        .map_err(bookkeeping)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let failed = |e: tokio_postgres::Error| MigrationError::Failed {
            name: migration.name,
            reason: describe(&e),
        };
        let tx = client.transaction().await.map_err(failed)?;
        // The migrations' `DROP ... IF EXISTS` would log a NOTICE each ("does not exist,
        // skipping"): noise in every first start's log.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(failed)?;
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO realtime.schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        applied.push(migration.name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_match_file_names() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for m in MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }
}
