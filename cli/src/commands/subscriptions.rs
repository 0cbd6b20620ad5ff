//! `nself-realtime subscribe <table> [events]`, `unsubscribe <table>` and `subscriptions`
//! (seed 002): manage which tables, and which of their operations, the CDC publishes.
//!
//! The table and events are checked here first, so a typo exits 2 with the fix before any
//! connection is made; the command then goes to the CDC endpoint in its canonical spelling
//! (which the endpoint parses back to the same table).

use super::cdc_client::Endpoint;
use crate::exit::CliError;
use nself_realtime_cdc::subscriptions::{self, Target};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// Table to publish: schema.table, schema.* (every table of the schema) or a table in public.
    table: String,
    /// Comma-separated events: INSERT,UPDATE,DELETE,TRUNCATE (default: INSERT,UPDATE,DELETE).
    events: Option<String>,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(clap::Args, Debug)]
pub struct UnsubscribeArgs {
    /// Table (or schema.*) to stop publishing.
    table: String,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    endpoint: Endpoint,
}

/// Parses a table argument; a bad one is a usage error naming the fix.
pub fn parse_table(table: &str) -> Result<Target, CliError> {
    Target::parse(table).map_err(CliError::usage)
}

pub async fn subscribe(args: SubscribeArgs, json: bool) -> Result<(), CliError> {
    let target = parse_table(&args.table)?;
    let operations = subscriptions::parse_operations(args.events.as_deref().unwrap_or(""))
        .map_err(CliError::usage)?;
    let words: Vec<&str> = operations.iter().map(|op| op.keyword()).collect();
    let session = args.endpoint.connect().await?;
    let rows = session
        .run(&format!("SUBSCRIBE {target} {}", words.join(",")))
        .await?;
    let publication = rows
        .first()
        .and_then(|row| row.get(2))
        .cloned()
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({ "table": target.to_string(), "operations": words, "publication": publication })
        );
    } else {
        println!(
            "✓ Subscribed to {target} ({})",
            subscriptions::format_operations(&operations)
        );
    }
    Ok(())
}

pub async fn unsubscribe(args: UnsubscribeArgs, json: bool) -> Result<(), CliError> {
    let target = parse_table(&args.table)?;
    let session = args.endpoint.connect().await?;
    session.run(&format!("UNSUBSCRIBE {target}")).await?;
    if json {
        println!(
            "{}",
            json!({ "table": target.to_string(), "unsubscribed": true })
        );
    } else {
        println!("✓ Unsubscribed from {target}");
    }
    Ok(())
}

pub async fn list(args: ListArgs, json: bool) -> Result<(), CliError> {
    let session = args.endpoint.connect().await?;
    let rows = session.run("SHOW SUBSCRIPTIONS").await?;
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|row| {
                let operations: Vec<&str> = row[1].split(',').map(str::trim).collect();
                json!({ "table": row[0], "operations": operations, "created_at": row[2] })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!("Active Database Subscriptions:");
    println!();
    if rows.is_empty() {
        println!("  (none: add one with `nself-realtime subscribe public.users`)");
    }
    for row in &rows {
        println!("  {:<25} {}", row[0], row[1]);
    }
    Ok(())
}
