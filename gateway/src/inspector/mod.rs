//! The inspector: a web page every gateway serves at `/`, for developers and operators to join
//! channels, watch their broadcast, presence and postgres_changes events arrive, send broadcasts,
//! track presence, and (with a `service_role` token) see the cluster as the control API does.
//!
//! The page is plain HTML, CSS and JavaScript embedded in the binary (no build step). It speaks
//! to the gateway only through its public protocols: the Phoenix WebSocket (as supabase-js does)
//! and `POST /api/control`. The token it is given stays in the page's memory: never in a URL
//! the page shows or keeps, never in storage.
//!
//! `GET /inspector/welcome` offers what `nself-realtime up` printed (the keys, the local
//! Postgres) to a browser on the same machine only: the TCP peer is loopback, the `Host` is a
//! loopback name (so a page of another site that rebinds its name to 127.0.0.1 gets nothing),
//! and no proxy forwarded the request. Every response carries a Content Security Policy that
//! allows the page's own script and style and connections to this gateway only.

use crate::config::Welcome;
use crate::state::Gateway;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The page's policy: its own script, style and images, and connections back to this origin
/// (WebSocket included); no frames, no plugins, no forms posted elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The inspector's routes, added to the gateway's router.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/inspector/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/inspector/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/inspector/welcome", get(welcome))
}

/// An embedded file with the inspector's headers.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    protect(headers);
    response
}

/// The headers every inspector response carries.
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `GET /inspector/welcome`: what `up` printed, when this gateway runs under `up` and the
/// browser is on this machine; otherwise why not.
async fn welcome(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let body = match (&gateway.config.welcome, local_browser(peer, &headers)) {
        (Some(welcome), true) => offered(welcome),
        (Some(_), false) => json!({
            "offered": false,
            "why": "the keys are offered to a browser on the gateway's own machine only (open http://localhost:<port>/ there), or paste a token",
        }),
        (None, _) => json!({
            "offered": false,
            "why": "this gateway was not started by `nself-realtime up`: paste a token (`nself-realtime token`)",
        }),
    };
    let mut response = axum::Json(body).into_response();
    protect(response.headers_mut());
    response
}

fn offered(welcome: &Welcome) -> serde_json::Value {
    json!({
        "offered": true,
        "anon_key": welcome.anon_key,
        "service_key": welcome.service_key,
        "demo_token": welcome.demo_token,
        "postgres_url": welcome.postgres_url,
        "cdc_url": welcome.cdc_url,
    })
}

/// Whether the request comes from a browser on this machine, directly: a loopback peer, a
/// loopback `Host`, and no proxy's forwarding headers.
fn local_browser(peer: SocketAddr, headers: &HeaderMap) -> bool {
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    peer.ip().is_loopback() && !forwarded && loopback_host(host)
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        for (name, value) in extra {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn keys_are_offered_to_a_browser_on_this_machine_only() {
        let local: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        for host in [
            "localhost:4000",
            "127.0.0.1:4000",
            "[::1]:4000",
            "localhost",
        ] {
            assert!(local_browser(local, &headers(host, &[])), "{host}");
        }
        assert!(!local_browser(remote, &headers("localhost:4000", &[])));
        // A site that rebinds its name to 127.0.0.1 still sends its own name as Host.
        assert!(!local_browser(local, &headers("evil.example:4000", &[])));
        assert!(!local_browser(
            local,
            &headers("localhost.evil.example", &[])
        ));
        // Through a proxy on this machine, the browser is elsewhere.
        let proxied = headers("localhost:4000", &[("x-forwarded-for", "192.0.2.7")]);
        assert!(!local_browser(local, &proxied));
    }
}
