//! Prometheus plumbing shared by the processes that export `/metrics` (the CDC and the
//! gateway): registering counters and gauges, and encoding a registry as text.

use prometheus::{IntCounter, IntGauge, Registry};

/// A counter registered in `registry`. Names are literals, so a bad or repeated one is a bug.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(counter.clone()))
        .expect("unique metric");
    counter
}

/// A gauge registered in `registry` (see [`counter`]).
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(gauge.clone()))
        .expect("unique metric");
    gauge
}

/// `registry` in Prometheus' text format.
pub fn encode(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}
