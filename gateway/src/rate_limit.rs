//! Rate limits: a token bucket per connection and kind of request, and a per-IP window on new
//! connections. A request over a limit is answered with an error and the connection stays.
//!
//! | limit | default | env |
//! | --- | --- | --- |
//! | client messages (any) per second, Phoenix | 100 | `REALTIME_MAX_EVENTS_PER_SECOND` |
//! | chat messages per connection per minute | 60 | `REALTIME_MAX_MESSAGES_PER_MINUTE` |
//! | presence updates per connection per minute | 10 | `REALTIME_MAX_PRESENCE_UPDATES_PER_MINUTE` |
//! | new connections per IP per minute | 100 | `REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE` |

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `capacity` requests at once, refilled at `capacity` per `period`.
#[derive(Debug)]
pub struct RateLimit {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `count` per `period` (at least one).
    pub fn new(count: u32, period: Duration) -> RateLimit {
        let capacity = f64::from(count.max(1));
        RateLimit {
            capacity,
            per_second: capacity / period.as_secs_f64().max(0.001),
            tokens: capacity,
            at: Instant::now(),
        }
    }

    pub fn per_second(count: u32) -> RateLimit {
        RateLimit::new(count, Duration::from_secs(1))
    }

    pub fn per_minute(count: u32) -> RateLimit {
        RateLimit::new(count, Duration::from_secs(60))
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Seconds until the next token (for `retryAfter`).
    pub fn retry_after(&self) -> u64 {
        ((1.0 - self.tokens).max(0.0) / self.per_second).ceil() as u64
    }
}

/// Connections accepted per client IP in the current minute. `0` turns the limit off.
pub struct ConnectionsPerIp {
    limit: u32,
    window: Mutex<(Instant, HashMap<IpAddr, u32>)>,
}

impl ConnectionsPerIp {
    pub fn new(limit: u32) -> ConnectionsPerIp {
        ConnectionsPerIp {
            limit,
            window: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    /// Counts a new connection from `ip`; false when `ip` is over its limit this minute.
    pub fn admit(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut window = self.window.lock().expect("window lock");
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), HashMap::new());
        }
        let count = window.1.entry(ip).or_insert(0);
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_their_burst_then_refuse() {
        let mut limit = RateLimit::per_minute(3);
        assert!(limit.allow() && limit.allow() && limit.allow());
        assert!(!limit.allow());
        assert!(limit.retry_after() >= 1);
    }

    #[test]
    fn connections_per_ip_count_each_address() {
        let per_ip = ConnectionsPerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(per_ip.admit(a) && per_ip.admit(a));
        assert!(!per_ip.admit(a));
        assert!(per_ip.admit(b));
        let off = ConnectionsPerIp::new(0);
        assert!((0..1000).all(|_| off.admit(a)));
    }
}
