//! The NOTIFY bridge: `pg_notify` on a configured channel reaches core NATS
//! `realtime.notify.<channel>`, JSON staying JSON, and the bridge LISTENs again after its
//! connection is killed.

use futures::StreamExt;
use realtime_tests::{init, CdcProcess, Nats, Postgres};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Sends `probe` notifications until one arrives (the bridge LISTENs asynchronously).
async fn wait_until_bridged(
    client: &tokio_postgres::Client,
    channel: &str,
    sub: &mut async_nats::Subscriber,
) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        client
            .execute("SELECT pg_notify($1, '\"probe\"')", &[&channel])
            .await
            .unwrap();
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        {
            assert_eq!(&message.payload[..], b"\"probe\"");
            // Drain probes still in flight.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {}
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the NOTIFY bridge never forwarded"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_reach_nats_and_survive_a_reconnect() {
    let db = Postgres::shared().fresh_database().await;
    init(&db);
    let account = Nats::shared().fresh_account();
    let nats = account.connect().await;
    let mut orders = nats.subscribe("realtime.notify.orders").await.unwrap();
    let mut odd = nats
        .subscribe("realtime.notify.odd~2Echannel~20~E2~9C~93")
        .await
        .unwrap();
    let cdc = CdcProcess::start(
        &db,
        &account,
        &[("REALTIME_NOTIFY_CHANNELS", "orders, odd.channel ✓")],
    );
    cdc.wait_for_role("leader", LIMIT).await;
    let client = db.connect().await;
    wait_until_bridged(&client, "orders", &mut orders).await;

    client
        .batch_execute(
            r#"SELECT pg_notify('orders', '{"id": 7, "items": [1, 2]}');
               SELECT pg_notify('orders', 'plain text');
               SELECT pg_notify('odd.channel ✓', '42');
               SELECT pg_notify('not_bridged', 'x');"#,
        )
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&next(&mut orders).await.payload).unwrap();
    assert_eq!(json, serde_json::json!({"id": 7, "items": [1, 2]}));
    assert_eq!(&next(&mut orders).await.payload[..], br#""plain text""#);
    assert_eq!(&next(&mut odd).await.payload[..], b"42");

    // Kill the bridge's connection: it must reconnect and LISTEN again.
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'nself-realtime-notify'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    wait_until_bridged(&client, "orders", &mut orders).await;
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(LIMIT, sub.next())
        .await
        .expect("a notification within the limit")
        .expect("the subscription is open")
}
