//! `nself-realtime init`: apply the migrations, create the publications and publish
//! `realtime.messages`. Idempotent. [`prepare`] is the one place these steps live; `up` runs it too.
//! The database is `DATABASE_URL`, else the local Postgres of an `up` running in this directory
//! ([`super::database`]).

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_cdc::postgres_error::describe;
use nself_realtime_cdc::subscriptions::{self, Target, DEFAULT_OPERATIONS};
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::config;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    database: super::Database,
    /// Base name of the CDC's publications.
    #[arg(long, env = "REALTIME_PUBLICATION", default_value = config::DEFAULT_PUBLICATION)]
    publication: String,
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let publication = config::plain_identifier("REALTIME_PUBLICATION", &args.publication)
        .map_err(CliError::usage)?;
    let mut client = args.database.connect().await?;
    let applied = prepare(&mut client, &publication).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "applied": applied, "publication": publication, "up_to_date": applied.is_empty() })
        );
    } else if applied.is_empty() {
        println!("Realtime schema is up to date (publication {publication}).");
    } else {
        println!("Realtime schema initialised (publication {publication}). Applied:");
        for name in applied {
            println!("  {name}");
        }
    }
    Ok(())
}

/// Brings a database up to what the CDC and the gateways expect: applies the migrations not yet
/// applied, creates the publications, and publishes `realtime.messages` (persisted chat reaches
/// subscribers through the CDC like any table change). Returns the migrations applied now.
pub async fn prepare(
    client: &mut tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<&'static str>, CliError> {
    let applied = migrations::apply(client).await.map_err(|e| {
        CliError::runtime(anyhow!(
            "{e}; connect as a role that may create schemas, roles and tables"
        ))
    })?;
    publications::ensure_exist(client, publication)
        .await
        .map_err(|e| {
            CliError::runtime(anyhow!(
                "cannot create publication {publication}: {}; connect as the database owner or a superuser",
                describe(&e)
            ))
        })?;
    publish_messages(client, publication).await?;
    Ok(applied)
}

/// Subscribes `realtime.messages` to INSERT, UPDATE and DELETE, keeping any further operation
/// (TRUNCATE) already subscribed. Re-subscribing an unchanged subscription changes nothing
/// (same operations, same publication, `created_at` kept); one removed by `unsubscribe` comes
/// back, since chat delivery depends on it.
async fn publish_messages(
    client: &mut tokio_postgres::Client,
    publication: &str,
) -> Result<(), CliError> {
    let target = Target::table("realtime", "messages");
    let mut operations = DEFAULT_OPERATIONS.to_vec();
    let existing = subscriptions::list(client)
        .await
        .map_err(|e| anyhow!("cannot read realtime.subscriptions: {e}"))?;
    if let Some(current) = existing.iter().find(|s| s.target == target) {
        operations.extend(current.operations.iter().copied());
    }
    subscriptions::subscribe(client, publication, &target, &operations)
        .await
        .map_err(|e| {
            CliError::runtime(anyhow!(
                "cannot publish realtime.messages: {e}; connect as the database owner or a superuser"
            ))
        })?;
    Ok(())
}
