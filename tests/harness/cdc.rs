//! The CDC in tests: `init`, and `cdc` as a child process that can be killed with SIGKILL,
//! stopped with SIGTERM, and asked for its `/health`; plus reading back what reached JetStream.

use crate::http::http_get_json;
use crate::nats::NatsAccount;
use crate::postgres::TestDb;
use crate::process::free_port;
use crate::service::{run_cli, ServiceProcess};
use futures::StreamExt;
use nself_realtime_shared::event::ChangeEvent;
use std::time::{Duration, Instant};

/// `nself-realtime init` against the test database; panics if it fails.
pub fn init(db: &TestDb) {
    let out = run_cli(&["init"], &[("DATABASE_URL", &db.url)]);
    assert!(
        out.status.success(),
        "init failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `nself-realtime cdc` process. Dropping it kills the process.
pub struct CdcProcess {
    process: ServiceProcess,
    pub http_port: u16,
    pub wire_port: u16,
}

impl CdcProcess {
    /// Starts `cdc` for `db` (its own slot) publishing to `nats`, with extra env overrides.
    pub fn start(db: &TestDb, nats: &NatsAccount, extra_env: &[(&str, &str)]) -> CdcProcess {
        let http_port = free_port();
        let wire_port = free_port();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("NATS_URL", nats.url.as_str()),
            ("REALTIME_SLOT", db.slot.as_str()),
            ("REALTIME_CDC_HOST", "127.0.0.1"),
            ("REALTIME_CDC_PORT", &wire_port.to_string()),
            ("REALTIME_CDC_HTTP_PORT", &http_port.to_string()),
            (
                "LOG_LEVEL",
                &std::env::var("CDC_TEST_LOG")
                    .unwrap_or_else(|_| "info,nself_realtime_cdc=debug".into()),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        CdcProcess {
            process: ServiceProcess::start("cdc", &env, extra_env),
            http_port,
            wire_port,
        }
    }

    /// Starts the process again with the same settings (after [`CdcProcess::kill`]).
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate()
    }

    /// Whether the process is still running.
    pub fn running(&self) -> bool {
        self.process.running()
    }

    /// The process' log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `GET /health`: the HTTP status and the JSON body, or `None` while nothing answers.
    pub async fn health(&self) -> Option<(u16, serde_json::Value)> {
        http_get_json(self.http_port, "/health").await
    }

    /// Waits until `/health` reports `role`; returns how long that took. Panics after `limit`
    /// with the process log.
    pub async fn wait_for_role(&self, role: &str, limit: Duration) -> Duration {
        self.process
            .wait_for_health(self.http_port, limit, |body| body["role"] == role)
            .await
    }
}

/// Reads the `REALTIME_DB` stream from its first message until it holds `expected` events, or
/// panics after `limit` saying how many arrived. Returns them in stream order.
pub async fn read_change_stream(
    nats: &async_nats::Client,
    expected: usize,
    limit: Duration,
) -> Vec<ChangeEvent> {
    let events = try_read_change_stream(nats, expected, limit).await;
    assert_eq!(
        events.len(),
        expected,
        "only {} of {expected} events reached JetStream within {limit:?}",
        events.len()
    );
    events
}

/// Like [`read_change_stream`], but returns what arrived by `limit` instead of panicking.
pub async fn try_read_change_stream(
    nats: &async_nats::Client,
    expected: usize,
    limit: Duration,
) -> Vec<ChangeEvent> {
    let js = async_nats::jetstream::new(nats.clone());
    let deadline = Instant::now() + limit;
    let stream = loop {
        match js.get_stream("REALTIME_DB").await {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "stream REALTIME_DB never appeared: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("create an ordered consumer");
    let mut messages = consumer.messages().await.expect("consume REALTIME_DB");
    let mut events = Vec::with_capacity(expected);
    while events.len() < expected {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, messages.next()).await {
            Ok(Some(Ok(message))) => {
                let event: ChangeEvent = serde_json::from_slice(&message.payload)
                    .unwrap_or_else(|e| panic!("a stream message is not a change event: {e}"));
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_string());
                assert_eq!(
                    id,
                    Some(event.id.to_string()),
                    "Nats-Msg-Id is the event id"
                );
                events.push(event);
            }
            Ok(Some(Err(e))) => panic!("reading REALTIME_DB failed: {e}"),
            Ok(None) => panic!("the REALTIME_DB consumer ended"),
            Err(_) => break,
        }
    }
    events
}

/// How many messages the `REALTIME_DB` stream holds now.
pub async fn stream_message_count(nats: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(nats.clone());
    match js.get_stream("REALTIME_DB").await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}
