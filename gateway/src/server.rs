//! The HTTP server: the endpoints of DESIGN.md on one axum router, and graceful shutdown.
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /realtime/v1/websocket`, `GET /socket/websocket` | Phoenix WebSocket (realtime-js) |
//! | `POST /realtime/v1/api/broadcast`, `POST /api/broadcast` | REST broadcast |
//! | `POST …/api/broadcast/{topic}/events/{event}` | realtime-js `httpSend` |
//! | `GET /socket.io/?EIO=4&transport=websocket` | Socket.IO (nself plugin events) |
//! | `GET /ws` | the plain WebSocket JSON protocol (seed 004) |
//! | `GET /api/messages/{channel}`, `GET /realtime/v1/api/messages/{channel}` | message history under RLS ([`crate::history`]) |
//! | `POST /api/control` | the operators' API ([`crate::control`], `service_role` only) |
//! | `GET /health`, `/health/ready`, `/health/live` | health JSON ([`crate::health`]: Postgres reachable; readiness; liveness) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /`, `/inspector/*` | the inspector, a web page ([`crate::inspector`]) |
//!
//! Handlers are thin: they check the upgrade (connections per IP, the token it carries) and
//! hand over to [`crate::phoenix`], [`crate::socketio`], [`crate::native`] or [`crate::rest`].

use crate::auth::identity::Identity;
use crate::http_auth::{refusal, upgrade_identity, Refusal};
use crate::phoenix::{self, frame::Vsn};
use crate::rest;
use crate::state::{ConnectionSlot, Gateway};
use crate::{native, socket, socketio};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures::future::Either;
use serde::Deserialize;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// The router of every endpoint.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new()
        .route("/realtime/v1/websocket", get(websocket))
        .route("/socket/websocket", get(websocket))
        .route("/realtime/v1/api/broadcast", post(rest::broadcast_batch))
        .route("/api/broadcast", post(rest::broadcast_batch))
        .route(
            "/realtime/v1/api/broadcast/{topic}/events/{event}",
            post(rest::broadcast_one),
        )
        .route(
            "/api/broadcast/{topic}/events/{event}",
            post(rest::broadcast_one),
        )
        .route("/socket.io/", get(socket_io))
        .route("/socket.io", get(socket_io))
        .route("/ws", get(plain_websocket))
        .route("/api/control", post(crate::control::http))
        .route("/api/messages/{channel}", get(crate::history::messages))
        .route(
            "/realtime/v1/api/messages/{channel}",
            get(crate::history::messages),
        )
        .route("/health", get(crate::health::health))
        .route("/health/ready", get(crate::health::ready))
        .route("/health/live", get(crate::health::live))
        .route("/metrics", get(metrics))
        .merge(crate::inspector::routes());
    if let Some(cors) = cors_layer(gateway.config.cors_origin.as_deref()) {
        router = router.layer(cors);
    }
    router.with_state(gateway)
}

fn cors_layer(origin: Option<&str>) -> Option<CorsLayer> {
    let origin = origin?.trim();
    let allow = if origin == "*" {
        AllowOrigin::any()
    } else {
        let origins: Vec<HeaderValue> = nself_realtime_shared::config::comma_list(origin)
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        AllowOrigin::list(origins)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any),
    )
}

/// Longest a graceful stop waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves until `shutdown` resolves, then closes every socket with 1001, removes this
/// gateway's presence and stops.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The id `connections` and the event log prefix every connection id with; log lines name
    // a connection by the rest (`conn`).
    tracing::info!(gateway_id = %format!("{:016x}", gateway.id), "gateway serving");
    let app = router(gateway.clone());
    let control = tokio::spawn(crate::control::serve_bus(
        gateway.clone(),
        gateway.broker.clone(),
    ));
    let closing = gateway.clone();
    // Frames are small and latency matters: no Nagle delay (a frame held back until the
    // client's delayed ACK of the previous one cost up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            closing.begin_shutdown();
        })
        .await;
    // Connections close themselves on the shutdown signal, each goodbye bounded by the
    // writer's close deadline (1 s); a connection stuck past this grace is not waited for.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while gateway.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.channels.presences.untrack_all().await;
    control.abort();
    result
}

#[derive(Debug, Deserialize)]
struct SocketParams {
    apikey: Option<String>,
    token: Option<String>,
    vsn: Option<String>,
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
}

impl SocketParams {
    /// `?apikey=` (Supabase) or `?token=` (nself).
    fn token(&self) -> Option<&str> {
        self.apikey.as_deref().or(self.token.as_deref())
    }
}

/// The client's address: the TCP peer, or with `REALTIME_TRUST_FORWARDED_FOR` the first
/// address of `X-Forwarded-For`.
pub struct ClientAddr(Option<IpAddr>);

impl FromRequestParts<Arc<Gateway>> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<ClientAddr, Self::Rejection> {
        let forwarded = gateway
            .config
            .trust_forwarded_for
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(forwarded.or(peer)))
    }
}

/// Accepts a WebSocket upgrade for any protocol: counts it against the client's connections
/// per minute, sizes the socket's buffers, takes a connection slot, and runs `connection` on
/// the socket, or closes it with 1013 when the gateway is full.
fn accept<F, Fut>(
    gateway: Arc<Gateway>,
    client: ClientAddr,
    headers: &HeaderMap,
    identity: Option<Arc<Identity>>,
    upgrade: WebSocketUpgrade,
    connection: F,
) -> Result<Response, Refusal>
where
    F: FnOnce(WebSocket, Arc<Gateway>, ConnectionSlot, socket::Peer, Option<Arc<Identity>>) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Some(ip) = client.0 {
        if !gateway.connections_per_ip.admit(ip) {
            gateway.metrics.nself_error("RATE_LIMIT_EXCEEDED");
            return Err(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many connections from {ip}: at most {} per minute (REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE)",
                    gateway.connections_per_ip.limit()
                ),
            ));
        }
    }
    let config = &gateway.config;
    let upgrade = upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes);
    let peer = socket::Peer {
        remote_addr: client.0,
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
        user_id: identity.as_ref().and_then(|i| i.user_id()),
    };
    let slot = gateway.admit();
    // The connection's future is returned as it is (no async block around it), so the task
    // holds only what the connection keeps.
    Ok(upgrade.on_upgrade(move |socket| match slot {
        Some(slot) => Either::Left(connection(socket, gateway, slot, peer, identity)),
        None => {
            let reason = format!(
                "too many connections: this gateway holds {} (REALTIME_MAX_CONNECTIONS)",
                gateway.config.max_connections
            );
            Either::Right(socket::refuse(socket, 1013, reason))
        }
    }))
}

async fn websocket(
    State(gateway): State<Arc<Gateway>>,
    client: ClientAddr,
    Query(params): Query<SocketParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let vsn = Vsn::parse(params.vsn.as_deref())
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    let identity = match upgrade_identity(&gateway.verifier, &headers, params.token()) {
        Ok(Some(identity)) => Some(identity),
        Ok(None) if gateway.config.allow_anonymous => Some(Arc::new(Identity::anonymous())),
        Ok(None) => {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "missing apikey: pass ?apikey=<jwt> (or set REALTIME_ALLOW_ANONYMOUS=true)",
            ))
        }
        Err(refused) => {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                refused
                    .message()
                    .replacen("invalid token", "invalid apikey", 1),
            ))
        }
    };
    accept(
        gateway,
        client,
        &headers,
        identity,
        upgrade,
        move |socket, gateway, slot, peer, identity| {
            phoenix::connection::run(socket, gateway, slot, peer, vsn, identity)
        },
    )
}

/// `/socket.io/`: Engine.IO v4 over the websocket transport only (see [`crate::socketio`]).
async fn socket_io(
    State(gateway): State<Arc<Gateway>>,
    client: ClientAddr,
    Query(params): Query<SocketParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    if params.eio.as_deref() != Some("4") {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported Engine.IO version {:?}: use a Socket.IO v4 client (EIO=4)",
                params.eio.as_deref().unwrap_or("")
            ),
        ));
    }
    let Some(upgrade) = upgrade
        .ok()
        .filter(|_| params.transport.as_deref() == Some("websocket"))
    else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "only the websocket transport is served (no long-polling: it would need sticky sessions); connect with io(url, { transports: [\"websocket\"] })",
        ));
    };
    let identity = upgrade_identity(&gateway.verifier, &headers, params.token())?;
    accept(
        gateway,
        client,
        &headers,
        identity,
        upgrade,
        socketio::connection::run,
    )
}

/// `/ws`: the plain WebSocket JSON protocol (see [`crate::native`]).
async fn plain_websocket(
    State(gateway): State<Arc<Gateway>>,
    client: ClientAddr,
    Query(params): Query<SocketParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let identity = upgrade_identity(&gateway.verifier, &headers, params.token())?.or_else(|| {
        gateway
            .config
            .allow_anonymous
            .then(|| Arc::new(Identity::anonymous()))
    });
    accept(
        gateway,
        client,
        &headers,
        identity,
        upgrade,
        native::connection::run,
    )
}

async fn metrics(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !nself_realtime_shared::metrics::scrape_allowed(
        authorization,
        gateway.config.metrics_token.as_deref(),
    ) {
        return (
            StatusCode::UNAUTHORIZED,
            nself_realtime_shared::metrics::SCRAPE_REFUSED,
        )
            .into_response();
    }
    refresh_gauges(&gateway);
    (
        [("content-type", "text/plain; version=0.0.4")],
        gateway.metrics.encode(),
    )
        .into_response()
}

/// Sets the gauges of current sizes, read when scraped: connections (by protocol and presence
/// status), rooms by type, topics, feeds and the Postgres pool. Every protocol and status is
/// reported, at 0 when none, so dashboards and alerts always find their series.
fn refresh_gauges(gateway: &Gateway) {
    let metrics = &gateway.metrics;
    metrics
        .connections_active
        .set(gateway.connection_count() as i64);
    let by_status = gateway.registry.count_by_protocol_and_status();
    for protocol in ["phoenix", "socketio", "websocket"] {
        for status in crate::presence::STATUSES {
            let open = by_status.get(&(protocol, status)).copied().unwrap_or(0);
            metrics
                .seed_connections_active
                .with_label_values(&[protocol, status])
                .set(open as i64);
        }
    }
    for (room_type, rooms) in gateway.channels.census.by_type() {
        metrics
            .rooms_active
            .with_label_values(&[&room_type])
            .set(rooms as i64);
    }
    metrics
        .broadcast_topics
        .set(gateway.channels.broadcasts.topic_count() as i64);
    metrics
        .change_feeds
        .set(gateway.channels.feeds.feed_count() as i64);
    let pool = gateway.pool.stats();
    metrics.db_pool_in_use.set(pool.in_use as i64);
    metrics.db_pool_idle.set(pool.idle as i64);
    metrics.db_pool_max.set(pool.max as i64);
}
