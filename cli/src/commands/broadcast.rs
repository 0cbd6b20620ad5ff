//! `nself-realtime broadcast <channel> <event> <payload JSON>` (seed 002): sends a message to a
//! channel's subscribers on every gateway.
//!
//! It goes through a gateway's REST broadcast endpoint (`POST /api/broadcast` at
//! `REALTIME_URL`, default `http://127.0.0.1:$REALTIME_PORT`) with a `service_role` token (see
//! [`super::live`]), so it works the same with NATS or with `up`'s in-process bus: the gateway
//! publishes it where every gateway's subscribers receive it. Clients get it as a broadcast
//! with that event and payload.
//!
//! With a database (`DATABASE_URL`, or `up`'s local cluster), the broadcast is also recorded in
//! `realtime.broadcasts` (`sent_by` = `cli`), which keeps it until it expires (5 minutes by
//! default; `cleanup` deletes expired ones). It is recorded only once sent.

use super::database::OptionalDatabase;
use super::http;
use super::live::{LiveArgs, Problem};
use crate::exit::CliError;
use anyhow::anyhow;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Channel (topic) name, as clients join it.
    channel: String,
    /// Event name (e.g. user.joined, message.new).
    event: String,
    /// JSON payload, e.g. '{"text": "Hello!"}'.
    payload: String,
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    database: OptionalDatabase,
}

/// Longest channel or event name the gateway accepts.
const MAX_NAME_BYTES: usize = 255;

fn name(what: &str, value: &str) -> Result<String, CliError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(CliError::usage(anyhow!(
            "the {what} must be 1 to {MAX_NAME_BYTES} bytes: broadcast <channel> <event> <payload JSON>"
        )));
    }
    Ok(value.to_string())
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let channel = name("channel", &args.channel)?;
    let event = name("event", &args.event)?;
    let payload: Value = serde_json::from_str(&args.payload).map_err(|e| {
        CliError::usage(anyhow!(
            "the payload is not JSON ({e}); quote it for the shell, e.g. broadcast general message.new '{{\"text\": \"Hello!\"}}'"
        ))
    })?;
    let url = args.live.http_url()?;
    let token = args.live.service_token()?;
    let body = json!({"messages": [{"topic": channel, "event": event, "payload": payload}]});
    let body = serde_json::to_vec(&body).expect("JSON serializes");
    let shown = url.display();
    let response = http::request(
        &url,
        "POST",
        "/api/broadcast",
        Some(&token),
        Some(&body),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| match e {
        http::RequestError::Connect(..) => CliError::from(Problem::Unreachable(e.to_string())),
        e => CliError::runtime(anyhow!("{e}")),
    })?;
    match response.status {
        200..=299 => {}
        401 | 403 => {
            return Err(CliError::usage(anyhow!(
                "the gateway at {shown} refused the broadcast ({}); set REALTIME_JWT_SECRET to the gateways' secret, or REALTIME_SERVICE_KEY to a service_role token",
                response.error_text()
            )))
        }
        400 | 413 => {
            return Err(CliError::usage(anyhow!(
                "the gateway at {shown} refused the broadcast: {}",
                response.error_text()
            )))
        }
        status => {
            return Err(CliError::runtime(anyhow!(
                "the gateway at {shown} answered HTTP {status}: {}",
                response.error_text()
            )))
        }
    }
    let recorded = match args.database.connect(&args.live.dir).await? {
        Some(client) => {
            let payload_text = payload.to_string();
            client
                .execute(
                    "INSERT INTO realtime.broadcasts (channel, event, payload, sent_by)
                     VALUES ($1, $2, $3::text::jsonb, 'cli')",
                    &[&channel, &event, &payload_text],
                )
                .await
                .map_err(|e| {
                    CliError::runtime(anyhow!(
                        "sent, but not recorded in realtime.broadcasts ({}); run `nself-realtime init` if the schema is older than this binary",
                        nself_realtime_cdc::postgres_error::describe(&e)
                    ))
                })?;
            true
        }
        None => false,
    };
    if json {
        println!(
            "{}",
            json!({
                "channel": channel,
                "event": event,
                "payload": payload,
                "sent": true,
                "recorded": recorded,
            })
        );
    } else {
        println!("✓ Broadcast {event} to {channel}");
        if recorded {
            println!("  recorded in realtime.broadcasts");
        }
    }
    Ok(())
}
