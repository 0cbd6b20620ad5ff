//! The gateway's Prometheus metrics (`GET /metrics`). Counters are incremented where things
//! happen; gauges of current sizes are set when scraped.

use nself_realtime_shared::metrics;
use prometheus::{IntCounter, IntGauge, Registry};

/// Every metric of a gateway.
pub struct Metrics {
    pub registry: Registry,
    pub connections_total: IntCounter,
    pub connections_refused: IntCounter,
    pub connections_active: IntGauge,
    pub joins_total: IntCounter,
    pub joins_refused: IntCounter,
    pub broadcasts_received: IntCounter,
    pub frames_rejected: IntCounter,
    pub rate_limited: IntCounter,
    pub changes_received: IntCounter,
    pub change_deliveries: IntCounter,
    pub rls_queries: IntCounter,
    pub rls_denied_rows: IntCounter,
    pub broadcast_topics: IntGauge,
    pub change_feeds: IntGauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| metrics::counter(&registry, name, help);
        let gauge = |name: &str, help: &str| metrics::gauge(&registry, name, help);
        Metrics {
            connections_total: counter(
                "realtime_gateway_connections_total",
                "WebSocket connections accepted",
            ),
            connections_refused: counter(
                "realtime_gateway_connections_refused_total",
                "WebSocket connections refused at REALTIME_MAX_CONNECTIONS",
            ),
            connections_active: gauge(
                "realtime_gateway_connections_active",
                "Open WebSocket connections",
            ),
            joins_total: counter("realtime_gateway_joins_total", "Channel joins asked for"),
            joins_refused: counter(
                "realtime_gateway_joins_refused_total",
                "Channel joins refused",
            ),
            broadcasts_received: counter(
                "realtime_gateway_broadcasts_received_total",
                "Broadcasts sent by clients",
            ),
            frames_rejected: counter(
                "realtime_gateway_frames_rejected_total",
                "Client frames that could not be decoded",
            ),
            rate_limited: counter(
                "realtime_gateway_rate_limited_total",
                "Client messages refused by REALTIME_MAX_EVENTS_PER_SECOND",
            ),
            changes_received: counter(
                "realtime_gateway_changes_received_total",
                "Table changes read from the change log",
            ),
            change_deliveries: counter(
                "realtime_gateway_change_deliveries_total",
                "Table changes delivered to channels",
            ),
            rls_queries: counter(
                "realtime_gateway_rls_queries_total",
                "Row visibility queries (one per table, claims and batch)",
            ),
            rls_denied_rows: counter(
                "realtime_gateway_rls_denied_rows_total",
                "Changes withheld from a channel because its claims cannot see the row",
            ),
            broadcast_topics: gauge(
                "realtime_gateway_broadcast_topics",
                "Broadcast topics with subscribers here",
            ),
            change_feeds: gauge(
                "realtime_gateway_change_feeds",
                "Change-log readers (tables with subscribers here)",
            ),
            registry,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        metrics::encode(&self.registry)
    }
}
