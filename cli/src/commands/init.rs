//! `nself-realtime init`: apply the migrations and create the publications. Idempotent.

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::config;

#[derive(clap::Args)]
pub struct Args {
    /// Postgres to initialise.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Base name of the CDC's publications.
    #[arg(long, env = "REALTIME_PUBLICATION", default_value = config::DEFAULT_PUBLICATION)]
    publication: String,
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let publication = config::plain_identifier("REALTIME_PUBLICATION", &args.publication)
        .map_err(CliError::usage)?;
    let mut client = super::postgres::connect(&args.database_url).await?;
    let applied = migrations::apply(&mut client).await.map_err(|e| {
        CliError::runtime(anyhow!(
            "{e}; connect as a role that may create schemas, roles and tables"
        ))
    })?;
    publications::ensure_exist(&client, &publication).await.map_err(|e| {
        CliError::runtime(anyhow!(
            "cannot create publication {publication}: {}; connect as the database owner or a superuser",
            nself_realtime_cdc::postgres_error::describe(&e)
        ))
    })?;
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
