//! Which Postgres a command works on, decided in one place for every command that has a
//! database: `DATABASE_URL` (or `--database-url`) when set; else the local cluster that
//! `nself-realtime up` runs in `NSELF_REALTIME_DIR` (default `./.nself-realtime`), so that right
//! after `up` the admin commands work in the same directory without configuration, the way the
//! live commands find `up`'s gateway; else nothing.
//!
//! [`locate`] is that rule. [`Database`] is the option of the commands that need a database
//! (`init`, `channel ...`, `messages`, `replay`, `events`, `cleanup`): with none, they stop with
//! exit 2 naming both fixes. [`OptionalDatabase`] is the option of those for which the database
//! only adds figures (`status`, `stats`, `broadcast`'s record): with none, they leave those out.

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_local_postgres::Found;
use std::path::{Path, PathBuf};

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `DATABASE_URL` or `--database-url`.
    Given(String),
    /// The local cluster of `up`, running.
    Local(String),
    /// The local cluster of `up` exists but does not run.
    LocalStopped,
    /// Neither.
    Nowhere,
}

/// The rule of the module docs: a non-empty `given` URL wins, else `up`'s running cluster in
/// `dir`.
pub fn locate(given: Option<&str>, dir: &Path) -> Location {
    if let Some(url) = given.map(str::trim).filter(|url| !url.is_empty()) {
        return Location::Given(url.to_string());
    }
    match nself_realtime_local_postgres::find(dir) {
        Found::Running { url } => Location::Local(url),
        Found::Stopped { .. } => Location::LocalStopped,
        Found::Absent => Location::Nowhere,
    }
}

/// The database an admin command reads and changes. It connects as given (normally the owner
/// of the realtime schema, which Row Level Security does not restrict).
#[derive(clap::Args, Debug)]
pub struct Database {
    /// Postgres holding the realtime schema [default: the local Postgres of `nself-realtime up`
    /// running in --dir].
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where `nself-realtime up` keeps its local Postgres (used when DATABASE_URL is unset).
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    dir: PathBuf,
}

impl Database {
    /// Connects to the database [`locate`] finds; none is a configuration error (exit 2).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, CliError> {
        let dir = self.dir.display();
        match locate(self.database_url.as_deref(), &self.dir) {
            Location::Given(url) => super::postgres::connect(&url).await,
            Location::Local(url) => super::postgres::connect_with(&url, |reason| {
                anyhow!(
                    "cannot connect to the local Postgres of `nself-realtime up` in {dir} ({url}: {reason}); is `up` still running? Or set DATABASE_URL"
                )
            })
            .await,
            Location::LocalStopped => Err(CliError::usage(anyhow!(
                "no database: DATABASE_URL is unset and the local Postgres of `nself-realtime up` in {dir} is not running; start `nself-realtime up` (or `nself-realtime start`) in this directory, or set DATABASE_URL"
            ))),
            Location::Nowhere => Err(CliError::usage(anyhow!(
                "no database: set DATABASE_URL (or --database-url) to your Postgres, or run `nself-realtime up` in this directory first (its local Postgres in {dir} is then used; NSELF_REALTIME_DIR names another directory)"
            ))),
        }
    }
}

/// The database of the realtime schema, when there is one.
#[derive(clap::Args, Debug)]
pub struct OptionalDatabase {
    /// Postgres holding the realtime schema [default: the local Postgres of `up` in --dir, if it
    /// runs; else none, and what only the database knows is left out].
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

impl OptionalDatabase {
    /// Connects: to `DATABASE_URL` (failing is exit 2, as for every admin command), else to the
    /// local cluster of `dir` (failing means none), else none.
    pub async fn connect(&self, dir: &Path) -> Result<Option<tokio_postgres::Client>, CliError> {
        match locate(self.database_url.as_deref(), dir) {
            Location::Given(url) => super::postgres::connect(&url).await.map(Some),
            Location::Local(url) => {
                match super::postgres::connect_with(&url, |reason| anyhow!("{reason}")).await {
                    Ok(client) => Ok(Some(client)),
                    Err(e) => {
                        tracing::debug!(url, error = ?e, "the local cluster does not answer");
                        Ok(None)
                    }
                }
            }
            Location::LocalStopped | Location::Nowhere => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_url_wins_and_blank_means_unset() {
        let nowhere = Path::new("/nonexistent/.nself-realtime");
        assert_eq!(
            locate(Some(" postgres://h/db "), nowhere),
            Location::Given("postgres://h/db".into())
        );
        assert_eq!(locate(Some("  "), nowhere), Location::Nowhere);
        assert_eq!(locate(None, nowhere), Location::Nowhere);
    }
}
