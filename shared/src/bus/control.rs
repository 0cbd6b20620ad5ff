//! The operators' control requests on the bus: their subjects, and asking every process that
//! answers one (the gateways' `stats`, the CDCs' `health`) and gathering what comes back.
//!
//! A request is a JSON object with a `reply` subject; each process that answers publishes one
//! JSON document there. How many will answer is not known beforehand, so [`gather`] collects
//! answers until none has come for a quiet spell, or a limit in all.

use super::{Broker, BusError};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The prefix of every control subject: `realtime.control.<who>.<verb>`.
pub const CONTROL_PREFIX: &str = "realtime.control";

/// The subject every CDC answers with its `/health` document.
pub fn cdc_health_subject() -> String {
    format!("{CONTROL_PREFIX}.cdc.health")
}

/// A reply subject no other request uses: this process, the time, and a counter.
fn reply_subject() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{CONTROL_PREFIX}.reply.{}_{nanos}_{n}", std::process::id())
}

/// How long [`gather`] waits.
#[derive(Debug, Clone, Copy)]
pub struct GatherWindow {
    /// After an answer, wait this long for another.
    pub quiet: Duration,
    /// Never wait longer than this in all.
    pub limit: Duration,
}

/// Publishes `request` (an object; its `reply` is set here) on `subject` and returns every JSON
/// answer that came within `window`. Answers that are not JSON are skipped.
pub async fn gather(
    broker: &dyn Broker,
    subject: &str,
    mut request: Map<String, Value>,
    window: GatherWindow,
) -> Result<Vec<Value>, BusError> {
    let reply = reply_subject();
    let mut replies = broker.subscribe(&reply).await?;
    // The reply subscription must reach the server before anyone can answer.
    broker.flush().await?;
    request.insert("reply".into(), Value::String(reply));
    let payload = Bytes::from(serde_json::to_vec(&request).expect("JSON values serialize"));
    broker.publish(subject, payload).await?;
    broker.flush().await?;
    let deadline = tokio::time::Instant::now() + window.limit;
    let mut answers = Vec::new();
    loop {
        let until = if answers.is_empty() {
            deadline
        } else {
            deadline.min(tokio::time::Instant::now() + window.quiet)
        };
        match tokio::time::timeout_at(until, replies.next()).await {
            Ok(Some(message)) => match serde_json::from_slice(&message.payload) {
                Ok(answer) => answers.push(answer),
                Err(e) => tracing::debug!(error = %e, "ignoring a malformed control answer"),
            },
            Ok(None) | Err(_) => break,
        }
    }
    Ok(answers)
}
