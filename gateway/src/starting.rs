//! The gateway's HTTP answers while it waits for its dependencies at start.
//!
//! A gateway started before NATS is reachable binds its port at once and waits (see
//! `nself_realtime_shared::startup`): meanwhile [`while_starting`] answers on that port, so a
//! load balancer or an operator sees why instead of a refused connection. `/health` and
//! `/health/ready` say `degraded` with the reason (503), `/health/live` says the process is up
//! (200), and every other request, WebSocket upgrades included, gets 503 naming what the
//! gateway waits for. When the wait ends, the real server takes over the same socket; requests
//! queued in its backlog meanwhile are served by it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Why the gateway is not serving yet, shared with the wait that updates it.
#[derive(Clone, Default)]
pub struct Starting(Arc<Mutex<String>>);

impl Starting {
    /// Records the latest reason.
    pub fn set(&self, why: &str) {
        *self.0.lock().expect("starting lock") = why.to_string();
    }

    fn why(&self) -> String {
        let why = self.0.lock().expect("starting lock").clone();
        if why.is_empty() {
            "starting".into()
        } else {
            why
        }
    }
}

/// Answers HTTP on `listener` as described in the module docs while `ready` runs; returns what
/// `ready` returned and the listener, for the real server.
pub async fn while_starting<T>(
    listener: TcpListener,
    starting: Starting,
    ready: impl Future<Output = T>,
) -> std::io::Result<(T, TcpListener)> {
    // Two handles on one listening socket: the interim server's is closed when it stops, the
    // socket (and its backlog) stays open for the real server.
    let listener = listener.into_std()?;
    let interim = TcpListener::from_std(listener.try_clone()?)?;
    let listener = TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/health", get(not_ready))
        .route("/health/ready", get(not_ready))
        .route("/health/live", get(crate::health::live))
        .fallback(not_ready)
        .with_state(starting);
    let (done, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(interim, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
    });
    let output = ready.await;
    let _ = done.send(());
    let _ = server.await;
    Ok((output, listener))
}

async fn not_ready(State(starting): State<Starting>) -> Response {
    let body = json!({
        "status": "degraded",
        "role": "gateway",
        "ready": false,
        "error": starting.why(),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
