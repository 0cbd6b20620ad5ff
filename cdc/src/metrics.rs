//! The CDC's counters and gauges (Prometheus), in a registry of its own: the replication
//! session, the publisher and the NOTIFY bridge count into it, and `/health`'s `/metrics`
//! ([`crate::health`]) renders it, with the process' own `process_*` metrics.

use nself_realtime_shared::metrics;
use prometheus::{IntCounter, IntGauge, Registry};

/// The process' counters and gauges, registered in its own registry.
pub struct CdcMetrics {
    pub registry: Registry,
    pub events_published: IntCounter,
    pub bytes_published: IntCounter,
    pub events_skipped: IntCounter,
    pub events_deduplicated: IntCounter,
    pub events_oversized: IntCounter,
    pub publish_errors: IntCounter,
    pub transactions: IntCounter,
    pub in_flight: IntGauge,
    pub confirmed_lsn: IntGauge,
    pub leader: IntGauge,
    pub sessions: IntCounter,
    pub notifications_forwarded: IntCounter,
    pub notification_errors: IntCounter,
}

impl CdcMetrics {
    pub fn new() -> CdcMetrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| metrics::counter(&registry, name, help);
        let gauge = |name: &str, help: &str| metrics::gauge(&registry, name, help);
        CdcMetrics {
            events_published: counter(
                "realtime_cdc_events_published_total",
                "Change events sent to the bus (JetStream, or the in-process log)",
            ),
            bytes_published: counter(
                "realtime_cdc_published_bytes_total",
                "Bytes of change events sent to the bus",
            ),
            events_skipped: counter(
                "realtime_cdc_events_skipped_total",
                "Replayed events skipped because the bus already had them",
            ),
            events_deduplicated: counter(
                "realtime_cdc_events_deduplicated_total",
                "Events the bus reported as duplicates",
            ),
            events_oversized: counter(
                "realtime_cdc_events_oversized_total",
                "Events reduced to their primary key for exceeding the bus message limit (NATS max_payload)",
            ),
            publish_errors: counter(
                "realtime_cdc_publish_errors_total",
                "Failed publications to the bus (each restarts the session)",
            ),
            transactions: counter(
                "realtime_cdc_transactions_total",
                "Committed transactions decoded",
            ),
            in_flight: gauge(
                "realtime_cdc_in_flight",
                "Events sent and not yet acknowledged",
            ),
            confirmed_lsn: gauge(
                "realtime_cdc_confirmed_lsn",
                "Last LSN confirmed to Postgres",
            ),
            leader: gauge(
                "realtime_cdc_leader",
                "1 while this process streams the slot, 0 on standby",
            ),
            sessions: counter(
                "realtime_cdc_sessions_total",
                "Replication sessions started",
            ),
            notifications_forwarded: counter(
                "realtime_cdc_notifications_total",
                "NOTIFY messages forwarded to the bus",
            ),
            notification_errors: counter(
                "realtime_cdc_notification_errors_total",
                "NOTIFY messages that could not be forwarded",
            ),
            registry: {
                // CPU, memory and file descriptors of the process (`process_*`).
                nself_realtime_shared::process_metrics::register(&registry);
                registry
            },
        }
    }
}

impl Default for CdcMetrics {
    fn default() -> Self {
        CdcMetrics::new()
    }
}
