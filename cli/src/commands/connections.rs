//! `nself-realtime connections` (seed 002): the live WebSocket connections of every gateway
//! (Phoenix, Socket.IO and plain JSON alike), from the gateways' own registries through their
//! control API, oldest first.
//!
//! Each line shows the connection id, the user it acts for (`anonymous` without one), the
//! channels it joined and how long ago it connected. With `--json`, the same with the gateway,
//! protocol and remote address of each connection.

use super::live::{self, Gateways, LiveArgs};
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::control::Command;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    live: LiveArgs,
}

/// One connection as a gateway reports it, with the gateway's id.
struct Connection {
    gateway: String,
    info: Value,
}

impl Connection {
    fn field(&self, name: &str) -> &str {
        self.info[name].as_str().unwrap_or_default()
    }

    fn user(&self) -> &str {
        self.info["user_id"].as_str().unwrap_or("anonymous")
    }

    fn rooms(&self) -> String {
        let rooms: Vec<&str> = self.info["rooms"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if rooms.is_empty() {
            "-".into()
        } else {
            rooms.join(", ")
        }
    }
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    let gateways = Gateways::connect(&args.live).await?;
    let answers = gateways.ask_all(&Command::Connections).await?;
    let mut connections = Vec::new();
    for answer in &answers {
        match &answer.outcome {
            Ok(Value::Array(list)) => connections.extend(list.iter().map(|info| Connection {
                gateway: answer.gateway.clone(),
                info: info.clone(),
            })),
            Ok(other) => {
                return Err(CliError::runtime(anyhow!(
                    "gateway {} answered `connections` with {other}",
                    answer.gateway
                )))
            }
            Err(e) => {
                return Err(CliError::runtime(anyhow!(
                    "gateway {} could not list its connections: {e}",
                    answer.gateway
                )))
            }
        }
    }
    connections.sort_by(|a, b| {
        (a.field("connected_at"), a.field("id")).cmp(&(b.field("connected_at"), b.field("id")))
    });
    if json {
        let list: Vec<Value> = connections
            .iter()
            .map(|c| {
                let mut value = c.info.clone();
                value["gateway"] = json!(c.gateway);
                value
            })
            .collect();
        let ids: Vec<&str> = answers.iter().map(|a| a.gateway.as_str()).collect();
        println!(
            "{}",
            json!({ "active": list.len(), "gateways": ids, "connections": list })
        );
        return Ok(());
    }
    println!(
        "Active Connections: {}",
        super::thousands(connections.len() as i64)
    );
    println!();
    let id_width = live::column(15, 4, connections.iter().map(|c| c.field("id")));
    let user_width = live::column(12, 4, connections.iter().map(|c| c.user()));
    let rooms: Vec<String> = connections.iter().map(Connection::rooms).collect();
    let rooms_width = live::column(24, 5, rooms.iter().map(String::as_str));
    for (connection, rooms) in connections.iter().zip(&rooms) {
        let connected = match live::seconds_since(connection.field("connected_at")) {
            Some(seconds) if seconds >= 1.0 => format!("Connected {}", live::ago(seconds)),
            Some(_) => "Connected just now".to_string(),
            None => "Connected (time unknown)".to_string(),
        };
        println!(
            "  {}{}{}{connected}",
            live::pad(connection.field("id"), id_width),
            live::pad(connection.user(), user_width),
            live::pad(rooms, rooms_width),
        );
    }
    Ok(())
}
