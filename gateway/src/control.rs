//! The operators' API: live figures and presence administration for `nself-realtime status`,
//! `stats`, `connections` and `presence ...`.
//!
//! Every gateway answers [`Command`]s two ways, with the same [`answer`]:
//!
//! * over the bus (NATS, or the in-process bus of `up`): a request on
//!   `realtime.control.all.<verb>` reaches every gateway, one on
//!   `realtime.control.<gateway id>.<verb>` just that one. The request is `{"reply": <subject>,
//!   "command": {...}}`; each gateway publishes `{"gateway": <id>, "result"|"error": ...}` on the
//!   reply subject, and the asker gathers the answers for a moment (scatter-gather: it need not
//!   know how many gateways there are).
//! * over HTTP: `POST /api/control` with a `service_role` bearer token and the command as the
//!   body, answered by the gateway that receives it (the way in for `up`, or with no NATS
//!   access).
//!
//! `cluster` (the inspector's cluster view) is itself a scatter-gather: the gateway asked
//! gathers every gateway's `stats` and every CDC's health document
//! ([`nself_realtime_shared::bus::control`]), so one HTTP request shows the whole system.
//!
//! Connections and counters are per gateway (the asker sums them); presence is read from the
//! shared store, so any one gateway's answer covers every gateway. `presence track` makes the
//! answering gateway own a presence entry for the user, refreshed like its connections' until
//! `presence offline` (or until that gateway stops).

use crate::auth::channel_access::room_of_label;
use crate::http_auth::{authenticate, refusal, Refusal};
use crate::state::Gateway;
use bytes::Bytes;
use futures::StreamExt;
use nself_realtime_shared::bus::control::{cdc_health_subject, gather, GatherWindow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// The subject prefix of control requests.
pub use nself_realtime_shared::bus::control::CONTROL_PREFIX;

/// A request to a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Command {
    /// This gateway's figures.
    Stats,
    /// This gateway's live connections.
    Connections,
    /// Presence entries of every gateway, optionally of one channel and/or one user.
    Presence {
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        user: Option<String>,
    },
    /// Track `user` in `channel` with `status`, owned by the answering gateway.
    Track {
        user: String,
        channel: String,
        #[serde(default = "online")]
        status: String,
    },
    /// Remove what `presence track` put there, in one channel or all.
    Offline {
        user: String,
        #[serde(default)]
        channel: Option<String>,
    },
    /// The whole system as the bus reaches it: every gateway's `stats` and every CDC's health
    /// (the inspector's cluster view).
    Cluster,
}

fn online() -> String {
    "online".into()
}

impl Command {
    /// The verb, as it appears in the subject.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Stats => "stats",
            Command::Connections => "connections",
            Command::Presence { .. } => "presence",
            Command::Track { .. } => "track",
            Command::Offline { .. } => "offline",
            Command::Cluster => "cluster",
        }
    }
}

/// A control request on the bus.
#[derive(Debug, Serialize, Deserialize)]
pub struct BusRequest {
    pub reply: String,
    pub command: Command,
}

/// A command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("presence store: {0}")]
    Bus(#[from] nself_realtime_shared::bus::BusError),
}

/// The connection id presence entries tracked by operators are stored under: a hash of the
/// user, with the top bit set so it never equals a real connection's (they count up from 1).
fn operator_conn(user: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    ("operator", user).hash(&mut hasher);
    hasher.finish() | (1 << 63)
}

/// Carries out `command` on this gateway.
pub async fn answer(gateway: &Arc<Gateway>, command: Command) -> Result<Value, ControlError> {
    match command {
        Command::Stats => Ok(stats(gateway)),
        Command::Connections => Ok(json!(gateway.registry.list(
            |conn| gateway.connection_id(conn),
            gateway.channels.broadcasts.rooms_by_connection(),
        ))),
        Command::Presence { channel, user } => {
            let records = gateway.channels.presences.snapshot().await?;
            let records: Vec<_> = records
                .into_iter()
                .filter(|r| channel.as_ref().is_none_or(|c| *c == r.channel))
                .filter(|r| user.as_ref().is_none_or(|u| *u == r.key))
                .collect();
            Ok(json!(records))
        }
        Command::Track {
            user,
            channel,
            status,
        } => {
            if !crate::presence::STATUSES.contains(&status.as_str()) {
                return Err(ControlError::Invalid(format!(
                    "status {status:?} is not one of {}",
                    crate::presence::STATUSES.join(", ")
                )));
            }
            if user.is_empty() || channel.is_empty() {
                return Err(ControlError::Invalid("name a user and a channel".into()));
            }
            let mut meta = Map::new();
            meta.insert("userId".into(), Value::String(user.clone()));
            meta.insert("status".into(), Value::String(status.clone()));
            meta.insert("onlineAt".into(), Value::String(crate::wire::now_rfc3339()));
            meta.insert("source".into(), Value::String("cli".into()));
            gateway
                .channels
                .presences
                .track(&room_of_label(&channel), operator_conn(&user), &user, meta)
                .await?;
            Ok(
                json!({ "user": user, "channel": channel, "status": status, "gateway": gateway_id(gateway) }),
            )
        }
        Command::Cluster => cluster(gateway).await,
        Command::Offline { user, channel } => {
            let channels: Vec<String> = match channel {
                Some(channel) => vec![channel],
                None => {
                    let mut channels: Vec<String> = gateway
                        .channels
                        .presences
                        .snapshot()
                        .await?
                        .into_iter()
                        .filter(|r| r.key == user)
                        .map(|r| r.channel)
                        .collect();
                    channels.sort();
                    channels.dedup();
                    channels
                }
            };
            for channel in &channels {
                gateway
                    .channels
                    .presences
                    .untrack(&room_of_label(channel), operator_conn(&user))
                    .await?;
            }
            Ok(json!({ "user": user, "channels": channels }))
        }
    }
}

/// How long the cluster view waits for answers: 150 ms after the last one, 1 s in all.
const CLUSTER_WINDOW: GatherWindow = GatherWindow {
    quiet: Duration::from_millis(150),
    limit: Duration::from_secs(1),
};

/// Every gateway's `stats` (this one's included, through the bus like the others) and every
/// CDC's health document, sorted by id so that a view refreshing them keeps its order.
async fn cluster(gateway: &Arc<Gateway>) -> Result<Value, ControlError> {
    let stats = Map::from_iter([("command".to_string(), json!(Command::Stats))]);
    let broker = gateway.broker.as_ref();
    let (gateways_subject, cdc_subject) =
        (format!("{CONTROL_PREFIX}.all.stats"), cdc_health_subject());
    let (gateways, cdcs) = tokio::join!(
        gather(broker, &gateways_subject, stats, CLUSTER_WINDOW),
        gather(broker, &cdc_subject, Map::new(), CLUSTER_WINDOW),
    );
    let mut gateways: Vec<Value> = gateways?
        .into_iter()
        .filter_map(|answer| answer.get("result").cloned())
        .collect();
    gateways.sort_by_key(|g| g["gateway"].as_str().map(str::to_string));
    let mut cdcs = cdcs?;
    cdcs.sort_by_key(|c| c["id"].as_str().map(str::to_string));
    Ok(json!({ "gateways": gateways, "cdc": cdcs }))
}

fn gateway_id(gateway: &Gateway) -> String {
    format!("{:016x}", gateway.id)
}

/// The `stats` answer of one gateway.
fn stats(gateway: &Arc<Gateway>) -> Value {
    let metrics = &gateway.metrics;
    let sum = |vec: &prometheus::IntCounterVec| -> Value {
        let mut by = Map::new();
        let mut total = 0;
        for family in prometheus::core::Collector::collect(vec) {
            for metric in family.get_metric() {
                let value = metric.get_counter().get_value() as u64;
                total += value;
                let label = metric
                    .get_label()
                    .first()
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                by.insert(label, json!(value));
            }
        }
        json!({ "total": total, "by": by })
    };
    json!({
        "gateway": gateway_id(gateway),
        "uptime_seconds": gateway.started.elapsed().as_secs(),
        "connections": {
            "active": gateway.connection_count(),
            "peak": gateway.registry.peak(),
            "max": gateway.config.max_connections,
            "by_protocol": gateway.registry.count_by_protocol(),
            "accepted_total": metrics.connections_total.get(),
            "refused_total": metrics.connections_refused.get(),
        },
        "channels": {
            "active": gateway.channels.broadcasts.topic_count(),
            "by_name": gateway.channels.broadcasts.topics().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        },
        "messages": sum(&metrics.messages_total),
        "errors": sum(&metrics.errors_total),
        "broadcasts_received": metrics.broadcasts_received.get(),
        "changes": {
            "feeds": gateway.channels.feeds.feed_count(),
            "received_total": metrics.changes_received.get(),
            "delivered_total": metrics.change_deliveries.get(),
        },
    })
}

/// `POST /api/control`: a command from an operator holding a `service_role` token.
pub async fn http(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, Refusal> {
    use axum::http::StatusCode;
    let identity = authenticate(&gateway.verifier, &headers)?;
    if identity.claims.role() != Some("service_role") {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "the control API needs a service_role token (nself-realtime token --role service_role)",
        ));
    }
    let command: Command = serde_json::from_slice(&body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("not a control command: {e}"),
        )
    })?;
    match answer(&gateway, command).await {
        Ok(result) => Ok(axum::Json(
            json!({ "gateway": gateway_id(&gateway), "result": result }),
        )),
        Err(ControlError::Invalid(reason)) => Err(refusal(StatusCode::BAD_REQUEST, reason)),
        Err(e) => Err(refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Answers bus requests for this gateway until it stops.
pub async fn serve_bus(gateway: Arc<Gateway>, broker: Arc<dyn nself_realtime_shared::bus::Broker>) {
    let subjects = [
        format!("{CONTROL_PREFIX}.all.*"),
        format!("{CONTROL_PREFIX}.{}.*", gateway_id(&gateway)),
    ];
    let mut streams = Vec::new();
    for subject in &subjects {
        match broker.subscribe(subject).await {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                tracing::warn!(subject, error = %e, "the control API is not reachable over the bus");
                return;
            }
        }
    }
    let mut requests = futures::stream::select_all(streams);
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    while let Some(message) = requests.next().await {
        let Some(gateway) = weak.upgrade() else { break };
        let request: BusRequest = match serde_json::from_slice(&message.payload) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(subject = %message.subject, error = %e, "ignoring a malformed control request");
                continue;
            }
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let body = match answer(&gateway, request.command).await {
                Ok(result) => json!({ "gateway": gateway_id(&gateway), "result": result }),
                Err(e) => json!({ "gateway": gateway_id(&gateway), "error": e.to_string() }),
            };
            let payload = Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"));
            if let Err(e) = broker.publish(&request.reply, payload).await {
                tracing::debug!(error = %e, "cannot answer a control request");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_the_cli_writes_them() {
        let command: Command =
            serde_json::from_value(json!({"verb": "track", "user": "u1", "channel": "general"}))
                .unwrap();
        assert_eq!(
            command,
            Command::Track {
                user: "u1".into(),
                channel: "general".into(),
                status: "online".into()
            }
        );
        assert_eq!(command.verb(), "track");
        let all: Command = serde_json::from_value(json!({"verb": "presence"})).unwrap();
        assert_eq!(
            all,
            Command::Presence {
                channel: None,
                user: None
            }
        );
        assert!(operator_conn("u1") >= 1 << 63);
    }
}
