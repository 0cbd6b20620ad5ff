//! The NOTIFY bridge: `pg_notify(channel, payload)` → the bus' `realtime.notify.<channel>`.
//!
//! The bus is a [`Broker`]: core NATS ([`NatsBroker`](nself_realtime_shared::bus::NatsBroker))
//! for a CDC sidecar, the in-process [`MemoryBroker`](nself_realtime_shared::bus::MemoryBroker)
//! for `nself-realtime up` without NATS; the gateways subscribe there either way.
//!
//! While this process leads the slot (a standby would double every notification), it holds a
//! plain Postgres connection that LISTENs on each `REALTIME_NOTIFY_CHANNELS` channel and
//! forwards each notification: a payload that is JSON is sent as that JSON, any other payload
//! as a JSON string. After a lost connection it reconnects with capped backoff and LISTENs
//! again. NOTIFY is fire-and-forget in Postgres too: notifications sent while no bridge listens
//! (during a reconnect or a failover) are not replayed.

use crate::health::Role;
use crate::metrics::CdcMetrics;
use crate::postgres_error::describe;
use crate::sql::quote_ident;
use futures::StreamExt;
use nself_realtime_shared::bus::Broker;
use nself_realtime_shared::postgres_tls::Database;
use nself_realtime_shared::subject;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

/// The message body for a NOTIFY payload.
pub fn body(payload: &str) -> bytes::Bytes {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(_) => bytes::Bytes::copy_from_slice(payload.as_bytes()),
        Err(_) => serde_json::to_vec(payload)
            .expect("a string always serializes")
            .into(),
    }
}

/// Runs the bridge whenever `role` is [`Role::Leader`], until `role`'s sender is dropped.
pub async fn run(
    database: Database,
    channels: Vec<String>,
    broker: Arc<dyn Broker>,
    metrics: Arc<CdcMetrics>,
    mut role: watch::Receiver<Role>,
) {
    if channels.is_empty() {
        return;
    }
    let mut failures = 0u32;
    loop {
        if role.wait_for(|r| *r == Role::Leader).await.is_err() {
            return;
        }
        let session = bridge(&database, &channels, broker.as_ref(), &metrics);
        let demoted = async {
            let _ = role.wait_for(|r| *r != Role::Leader).await;
        };
        let ended = tokio::select! {
            result = session => Some(result),
            _ = demoted => None,
        };
        match ended {
            None => continue,
            Some(Ok(())) => failures = 0,
            Some(Err(e)) => {
                failures += 1;
                tracing::warn!(error = %e, "NOTIFY bridge lost its connection; reconnecting");
            }
        }
        tokio::time::sleep(nself_realtime_shared::startup::backoff(failures)).await;
    }
}

/// One connection's worth of bridging; returns when the connection ends.
async fn bridge(
    database: &Database,
    channels: &[String],
    broker: &dyn Broker,
    metrics: &CdcMetrics,
) -> Result<(), String> {
    let mut database = database.clone();
    database
        .config_mut()
        .application_name("nself-realtime-notify");
    let (client, mut connection) = database.connect().await.map_err(|e| describe(&e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(describe(&e)),
            }
        }
        Ok(())
    });
    let listen: String = channels
        .iter()
        .map(|c| format!("LISTEN {};", quote_ident(c)))
        .collect();
    client
        .batch_execute(&listen)
        .await
        .map_err(|e| describe(&e))?;
    tracing::info!(channels = ?channels, "NOTIFY bridge listening");
    while let Some(notification) = rx.recv().await {
        let channel = notification.channel();
        let Ok(subject) = subject::notify(channel) else {
            metrics.notification_errors.inc();
            continue;
        };
        match broker.publish(&subject, body(notification.payload())).await {
            Ok(()) => metrics.notifications_forwarded.inc(),
            Err(e) => {
                metrics.notification_errors.inc();
                tracing::warn!(channel, error = %e, "cannot forward a notification to the bus");
            }
        }
    }
    drop(client);
    driver.await.map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_stay_json_and_others_become_strings() {
        assert_eq!(&body(r#"{"id": 1}"#)[..], br#"{"id": 1}"#);
        assert_eq!(&body("42")[..], b"42");
        assert_eq!(&body("hello")[..], br#""hello""#);
        assert_eq!(&body("")[..], br#""""#);
        assert_eq!(&body("say \"hi\"")[..], br#""say \"hi\"""#);
    }
}
