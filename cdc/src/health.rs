//! The CDC's `/health` (JSON) and `/metrics` (Prometheus text) on `REALTIME_CDC_HTTP_PORT`.
//!
//! The replication session writes what it knows into [`HealthState`] (role, last confirmed
//! LSN, last error) and counts into [`CdcMetrics`]; the HTTP handlers read them. Postgres' view
//! (slot lag, whether the slot is active) is asked on each `/health` request over a plain
//! connection, so a standby reports real figures too.
//!
//! `"nats": {"connected"}` is the NATS connection's state; with the in-process bus of
//! `nself-realtime up` it reads `{"connected": true, "in_process": true}` (there is no server
//! to lose), so the document keeps one shape for every deployment.

use crate::bus::CdcBus;
use crate::metrics::CdcMetrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use nself_realtime_shared::bus::control::cdc_health_subject;
use nself_realtime_shared::bus::Broker;
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::metrics;
use nself_realtime_shared::postgres_tls::Database;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers the operators' `health` requests on the bus ([`cdc_health_subject`]) with the
/// `/health` document and an `id` telling this process from the other CDCs of the slot, until
/// the bus ends. This is how a gateway's cluster view learns the CDC's role, lag and health
/// without reaching its HTTP port.
pub async fn serve_bus(health: Arc<HealthState>, broker: Arc<dyn Broker>) {
    let subject = cdc_health_subject();
    let mut requests = match broker.subscribe(&subject).await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::warn!(subject, error = %e, "the CDC's health is not reachable over the bus");
            return;
        }
    };
    let id = format!("{}:{}", health.slot, std::process::id());
    while let Some(message) = futures::StreamExt::next(&mut requests).await {
        let reply = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|request| request["reply"].as_str().map(str::to_string));
        let Some(reply) = reply else {
            tracing::debug!("ignoring a malformed health request");
            continue;
        };
        let (healthy, mut body) = health.report().await;
        body["id"] = json!(id);
        body["healthy"] = json!(healthy);
        let payload = bytes::Bytes::from(body.to_string());
        if let Err(e) = broker.publish(&reply, payload).await {
            tracing::debug!(error = %e, "cannot answer a health request");
        }
    }
}

/// Which part this process plays for the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Starting,
    /// Another process streams the slot; this one waits to take over.
    Standby,
    Leader,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }
}

#[derive(Debug)]
struct Status {
    last_confirmed: Option<Lsn>,
    last_error: Option<String>,
}

/// What the replication session reports about itself.
pub struct HealthState {
    status: Mutex<Status>,
    role: tokio::sync::watch::Sender<Role>,
    started: Instant,
    slot: String,
    database: Database,
    /// The bus, once connected.
    bus: std::sync::OnceLock<CdcBus>,
    monitor: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl HealthState {
    pub fn new(slot: String, database: Database) -> Self {
        HealthState {
            status: Mutex::new(Status {
                last_confirmed: None,
                last_error: None,
            }),
            role: tokio::sync::watch::Sender::new(Role::Starting),
            started: Instant::now(),
            slot,
            database,
            bus: std::sync::OnceLock::new(),
            monitor: tokio::sync::Mutex::new(None),
        }
    }

    /// The bus is connected: `/health` reports on it from now on.
    pub fn set_bus(&self, bus: CdcBus) {
        let _ = self.bus.set(bus);
    }

    /// Records the role. Reaching leader or standby means the last failure is over (a leader
    /// streams; a standby reached Postgres and NATS), so its error no longer degrades health.
    pub fn set_role(&self, role: Role) {
        if role != Role::Starting {
            self.status.lock().unwrap().last_error = None;
        }
        self.role.send_replace(role);
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Follows role changes (the NOTIFY bridge runs only while this process leads).
    pub fn watch_role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub fn confirmed(&self, lsn: Lsn) {
        let mut status = self.status.lock().unwrap();
        status.last_confirmed = Some(lsn);
        status.last_error = None;
    }

    /// Records why the service is degraded; cleared by the next confirmed LSN.
    pub fn error(&self, message: String) {
        self.status.lock().unwrap().last_error = Some(message);
    }

    /// Postgres' view of the slot: (current WAL LSN, slot's confirmed LSN, slot active).
    async fn slot_view(&self) -> Result<(Lsn, Option<Lsn>, bool), String> {
        let mut monitor = self.monitor.lock().await;
        if monitor.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = self
                .database
                .connect()
                .await
                .map_err(|e| crate::postgres_error::describe(&e))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *monitor = Some(client);
        }
        let client = monitor.as_ref().expect("connected above");
        let current: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| crate::postgres_error::describe(&e))?
            .get(0);
        let slot = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| crate::postgres_error::describe(&e))?;
        let parse = |text: &str| text.parse::<Lsn>().map_err(|e| e.to_string());
        let current = parse(&current)?;
        match slot {
            None => Ok((current, None, false)),
            Some(row) => {
                let confirmed: Option<String> = row.get(0);
                let confirmed = confirmed.as_deref().map(parse).transpose()?;
                Ok((current, confirmed, row.get(1)))
            }
        }
    }

    /// The `/health` document and whether the service is healthy.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        let view = tokio::time::timeout(Duration::from_secs(2), self.slot_view())
            .await
            .unwrap_or_else(|_| Err("timed out after 2 s".into()));
        let nats_connected = self.bus.get().is_some_and(CdcBus::is_connected);
        let nats = match self.bus.get() {
            None => json!({"connected": false}),
            Some(CdcBus::Nats(_)) => json!({"connected": nats_connected}),
            Some(CdcBus::InProcess { .. }) => {
                json!({"connected": nats_connected, "in_process": true})
            }
        };
        let role = self.role();
        let (last_confirmed, last_error) = {
            let s = self.status.lock().unwrap();
            (s.last_confirmed, s.last_error.clone())
        };
        let (postgres, lag, slot_active) = match &view {
            Ok((current, confirmed, active)) => (
                json!({"connected": true}),
                confirmed.map(|c| current.0.saturating_sub(c.0)),
                *active,
            ),
            Err(e) => (json!({"connected": false, "error": e}), None, false),
        };
        let healthy = view.is_ok() && nats_connected && last_error.is_none();
        let body = json!({
            "status": if healthy { "ok" } else { "degraded" },
            "role": role.as_str(),
            "postgres": postgres,
            "nats": nats,
            "slot": self.slot,
            "slot_active": slot_active,
            "last_confirmed_lsn": last_confirmed.map(|l| l.to_string()),
            "lag_bytes": lag,
            "error": last_error,
            "uptime_seconds": self.started.elapsed().as_secs(),
        });
        (healthy, body)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<HealthState>,
    metrics: Arc<CdcMetrics>,
    /// `REALTIME_METRICS_TOKEN`.
    metrics_token: Option<Arc<str>>,
}

/// The router serving `/health` and `/metrics` (behind `metrics_token` when one is set).
pub fn router(
    health: Arc<HealthState>,
    metrics: Arc<CdcMetrics>,
    metrics_token: Option<&str>,
) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState {
            health,
            metrics,
            metrics_token: metrics_token.map(Arc::from),
        })
}

async fn health_handler(State(state): State<AppState>) -> impl IntoResponse {
    let (healthy, body) = state.health.report().await;
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics_handler(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !metrics::scrape_allowed(authorization, state.metrics_token.as_deref()) {
        return (StatusCode::UNAUTHORIZED, metrics::SCRAPE_REFUSED).into_response();
    }
    let text = metrics::encode(&state.metrics.registry);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
