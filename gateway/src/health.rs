//! The gateway's health endpoints: liveness, readiness, and the original `/health`.
//!
//! What a gateway needs, and what it can still do without each dependency:
//!
//! | down | what still works | what fails |
//! | --- | --- | --- |
//! | Postgres | joined channels keep broadcast and presence, on every gateway; new sockets connect (tokens are checked without Postgres) | new joins and `access_token` refreshes (every channel is authorized in Postgres), postgres_changes (no CDC, no RLS checks), chat persistence, history, the event log |
//! | NATS | new sockets connect (tokens are checked locally) | everything that crosses NATS: broadcast, presence and table changes, even between two clients of this gateway; joins fail or receive nothing until it is back |
//!
//! So the endpoints say:
//!
//! * `GET /health/live`: 200 whenever the process answers HTTP (its event loop runs). For a
//!   restart policy: a gateway that answers is not restarted for a dependency's outage.
//! * `GET /health/ready`: 200 while the bus (NATS, or the in-process one under `up`) is
//!   connected, else 503. Postgres is reported as a component (`components.postgres`), and
//!   `status` is `degraded` with the reason while it is down, but the gateway stays ready: every
//!   gateway shares the one Postgres, so dropping them all from a load balancer would cut the
//!   broadcast and presence that still work and leave clients no better place to go. This is
//!   the probe for load balancers (docker/haproxy.cfg) and container health checks.
//! * `GET /health`: as before, 503 while Postgres is unreachable (for monitors that page on
//!   it, and a balancer that should drop a gateway cut off from Postgres alone).
//!
//! While the gateway waits for NATS at start, [`crate::starting`] answers the same paths.

use crate::state::Gateway;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a probe waits for Postgres to answer `SELECT 1`.
const POSTGRES_PROBE: Duration = Duration::from_secs(2);

/// What breaks while Postgres is down, for the readiness body.
const POSTGRES_DOWN: &str = "Postgres is unreachable: new joins, access_token refreshes, postgres_changes, chat persistence and history fail; joined channels keep broadcast and presence";

/// What breaks while the bus is down.
const BUS_DOWN: &str =
    "NATS is unreachable: broadcast, presence and table changes cannot reach or leave this gateway";

/// Liveness: the process answers. [`crate::starting`] answers `/health/live` with this too.
pub async fn live() -> Response {
    (
        StatusCode::OK,
        Json(json!({"status": "ok", "role": "gateway"})),
    )
        .into_response()
}

/// Readiness: 200 while the bus is connected; Postgres is a component (see the module docs).
pub async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let postgres = postgres_answers(&gateway).await;
    let bus = gateway.broker.is_connected();
    let degraded: Vec<&str> = [
        (!bus).then_some(BUS_DOWN),
        (!postgres).then_some(POSTGRES_DOWN),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut body = summary(&gateway, bus && postgres);
    body["ready"] = json!(bus);
    body["components"] = json!({
        "bus": { "connected": bus, "backend": gateway.broker.backend() },
        "postgres": { "connected": postgres },
    });
    body["degraded"] = json!(degraded);
    let code = if bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `/health` as it always was: 503 while Postgres is unreachable.
pub async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let postgres = postgres_answers(&gateway).await;
    let mut body = summary(&gateway, postgres);
    body["ready"] = json!(true);
    body["postgres"] = json!({ "connected": postgres });
    let code = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// What both health answers share: who this gateway is and what it holds.
fn summary(gateway: &Gateway, healthy: bool) -> Value {
    json!({
        "status": if healthy { "ok" } else { "degraded" },
        "role": "gateway",
        "gateway_id": format!("{:016x}", gateway.id),
        "connections": gateway.connection_count(),
        "max_connections": gateway.config.max_connections,
        "channels": gateway.channels.broadcasts.topic_count(),
        "change_feeds": gateway.channels.feeds.feed_count(),
        "uptime_seconds": gateway.started.elapsed().as_secs(),
    })
}

/// Whether Postgres answers `SELECT 1` on a pool connection within [`POSTGRES_PROBE`].
async fn postgres_answers(gateway: &Gateway) -> bool {
    tokio::time::timeout(POSTGRES_PROBE, async {
        let client = gateway.pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some()
}
