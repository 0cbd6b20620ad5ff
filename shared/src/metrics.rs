//! Prometheus plumbing shared by the processes that export `/metrics` (the CDC and the
//! gateway): registering counters and gauges, encoding a registry as text, and the optional
//! bearer token (`REALTIME_METRICS_TOKEN`) a scraper must present.

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

/// Whether a scrape may read `/metrics`: always when no token is configured, else only with
/// `Authorization: Bearer <token>` (compared in constant time).
pub fn scrape_allowed(authorization: Option<&str>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(presented) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a scrape without the right token.
pub const SCRAPE_REFUSED: &str = "metrics need Authorization: Bearer <REALTIME_METRICS_TOKEN>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_need_the_token_only_when_one_is_set() {
        assert!(scrape_allowed(None, None));
        assert!(scrape_allowed(Some("Bearer x"), None));
        assert!(scrape_allowed(Some("Bearer s3cret"), Some("s3cret")));
        for refused in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cretX"),
            Some("Basic s3cret"),
        ] {
            assert!(!scrape_allowed(refused, Some("s3cret")), "{refused:?}");
        }
    }
}
