//! The gateway's Prometheus metrics (`GET /metrics`). Counters are incremented where things
//! happen; gauges of current sizes are set when scraped (`server::metrics`).
//!
//! Three families: `realtime_gateway_*` (this gateway's internals); seed 003's names, which
//! the nself plugin's dashboards and alerts query: `realtime_connections_total{type}`,
//! `realtime_connections_active{protocol, status}`, `realtime_disconnections_total{reason}`,
//! `realtime_messages_total{room_type}`, `realtime_message_latency_seconds`,
//! `realtime_rooms_active{type}`, `realtime_errors_total{error_code}`, the Postgres pool's
//! `realtime_db_pool_{in_use,idle,max}_connections`; and the process' own `process_*` (CPU,
//! memory, file descriptors: [`nself_realtime_shared::process_metrics`]).

use nself_realtime_shared::metrics;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
    pub event_log_written: IntCounter,
    pub event_log_dropped: IntCounter,
    /// Seed 003: connections accepted, by `type` (authenticated, anonymous).
    pub seed_connections_total: IntCounterVec,
    /// Seed 003: open connections, by `protocol` (phoenix, socketio, websocket) and presence
    /// `status` (online, away, busy, offline; see [`crate::registry`]).
    pub seed_connections_active: IntGaugeVec,
    /// Seed 003: chat messages sent, by `room_type` (public, private, presence, direct, adhoc).
    pub messages_total: IntCounterVec,
    /// Seed 003: persisted message commit → fan-out on this gateway.
    pub message_latency: Histogram,
    /// Seed 003: rooms (channels) with subscribers on this gateway, by `type`
    /// ([`crate::channels::census`]).
    pub rooms_active: IntGaugeVec,
    /// Seed 003: errors answered to clients, by `error_code`.
    pub errors_total: IntCounterVec,
    /// Connections ended, by `reason` ([`crate::outbox::Disconnect`]).
    pub disconnections_total: IntCounterVec,
    /// The authorization pool: connections taken by a query.
    pub db_pool_in_use: IntGauge,
    /// The authorization pool: open connections waiting for a query (seed 003's alert).
    pub db_pool_idle: IntGauge,
    /// The authorization pool's size (`REALTIME_DB_POOL_SIZE`).
    pub db_pool_max: IntGauge,
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
            event_log_written: counter(
                "realtime_gateway_event_log_written_total",
                "Event log entries written to Postgres",
            ),
            event_log_dropped: counter(
                "realtime_gateway_event_log_dropped_total",
                "Event log entries dropped (queue full or Postgres failing)",
            ),
            seed_connections_total: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("realtime_connections_total", "Total number of connections"),
                    &["type"],
                )
                .expect("valid metric"),
            ),
            seed_connections_active: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "realtime_connections_active",
                        "Currently active connections",
                    ),
                    &["protocol", "status"],
                )
                .expect("valid metric"),
            ),
            messages_total: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("realtime_messages_total", "Total messages sent"),
                    &["room_type"],
                )
                .expect("valid metric"),
            ),
            message_latency: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "realtime_message_latency_seconds",
                        "Message delivery latency (persisted: commit to fan-out on this gateway)",
                    )
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
                )
                .expect("valid metric"),
            ),
            rooms_active: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("realtime_rooms_active", "Number of active rooms"),
                    &["type"],
                )
                .expect("valid metric"),
            ),
            errors_total: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("realtime_errors_total", "Total errors"),
                    &["error_code"],
                )
                .expect("valid metric"),
            ),
            disconnections_total: {
                let vec = register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new(
                            "realtime_disconnections_total",
                            "Connections ended, by why (client_closed, idle, slow_consumer, write_timeout, ...)",
                        ),
                        &["reason"],
                    )
                    .expect("valid metric"),
                );
                // Every reason is exported from the start, at 0, so alerts can rate() them.
                for cause in crate::outbox::Disconnect::ALL {
                    vec.with_label_values(&[cause.label()]);
                }
                vec
            },
            db_pool_in_use: gauge(
                "realtime_db_pool_in_use_connections",
                "Postgres connections of the authorization pool taken by a query",
            ),
            db_pool_idle: gauge(
                "realtime_db_pool_idle_connections",
                "Open Postgres connections of the authorization pool waiting for a query (opened lazily: headroom is max - in_use)",
            ),
            db_pool_max: gauge(
                "realtime_db_pool_max_connections",
                "Size of the authorization pool (REALTIME_DB_POOL_SIZE)",
            ),
            registry: {
                nself_realtime_shared::process_metrics::register(&registry);
                registry
            },
        }
    }

    /// A connection was accepted (open connections are counted at each scrape).
    pub fn connection_opened(&self, authenticated: bool) {
        let kind = if authenticated {
            "authenticated"
        } else {
            "anonymous"
        };
        self.seed_connections_total.with_label_values(&[kind]).inc();
    }

    /// An error was answered to a client.
    pub fn nself_error(&self, code: &str) {
        self.errors_total.with_label_values(&[code]).inc();
    }

    /// A chat message was sent to a room of `room_type`.
    pub fn nself_message(&self, room_type: &str) {
        self.messages_total.with_label_values(&[room_type]).inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        metrics::encode(&self.registry)
    }
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}
