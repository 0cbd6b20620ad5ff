//! The CDC service on the in-process bus, as `nself-realtime up` runs it without `NATS_URL`:
//! `service::run` in this test process against a private Postgres, publishing table changes to a
//! [`MemoryChangeLog`] and NOTIFY payloads to a [`MemoryBroker`], with no NATS server anywhere.
//!
//! Checked end to end: a table subscribed over the Postgres-wire endpoint streams every row
//! exactly once, in commit order, with typed values; LISTEN on the endpoint follows the log;
//! `/health` says the bus is in process; a configured NOTIFY channel reaches the broker; and
//! neither a graceful restart nor a crash (the service's task aborted, so the slot's confirmed
//! LSN lags what the log holds) puts any event in the log twice.

use futures::StreamExt;
use nself_realtime_cdc::bus::BusConfig;
use nself_realtime_cdc::service::{self, CdcConfig, StartError};
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::bus::{Broker, ChangeLog, MemoryBroker, MemoryChangeLog, StartAt};
use nself_realtime_shared::event::{ChangeEvent, EventType};
use realtime_tests::{free_port, http_get, http_get_json, Postgres, TestDb};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

/// Generous bounds: a loaded 2-core CI machine is slow, and these only guard against hangs.
const LIMIT: Duration = Duration::from_secs(60);

/// A service running in this process, stopped through its shutdown future.
struct Running {
    http_port: u16,
    wire_port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), StartError>>,
}

impl Running {
    /// Starts `service::run` for `db` on the in-process bus, on fresh ports.
    async fn start(
        db: &TestDb,
        log: &MemoryChangeLog,
        broker: &MemoryBroker,
        notify_channels: &[&str],
    ) -> Running {
        let http_port = free_port();
        let wire_port = free_port();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let config = CdcConfig {
            database: db.url.parse().unwrap(),
            bus: BusConfig::InProcess {
                log: log.clone(),
                broker: broker.clone(),
            },
            slot: db.slot.clone(),
            publication: db.publication.clone(),
            message_ttl: Duration::from_secs(3600),
            message_retention: Duration::from_secs(30 * 86_400),
            notify_channels: notify_channels.iter().map(|c| c.to_string()).collect(),
            wire_addr: SocketAddr::new(localhost, wire_port),
            wire_password: None,
            http_addr: SocketAddr::new(localhost, http_port),
            max_in_flight: 64,
            stream_replicas: 1,
            metrics_token: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service::run(config, async {
            let _ = stopped.await;
        }));
        let running = Running {
            http_port,
            wire_port,
            stop,
            task,
        };
        running.wait_for_leader().await;
        running
    }

    async fn wait_for_leader(&self) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            assert!(
                !self.task.is_finished(),
                "the service stopped while starting"
            );
            if let Some((_, body)) = http_get_json(self.http_port, "/health").await {
                if body["role"] == "leader" {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service never led the slot"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Completes the shutdown future and waits for `run` to return.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the service stopped in time")
            .expect("the service task did not panic")
            .expect("the service stopped cleanly");
    }

    /// A counter from `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let (_, text) = http_get(self.http_port, "/metrics")
            .await
            .expect("/metrics answers");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    }

    /// A client of the Postgres-wire endpoint and the notifications it receives.
    async fn wire_client(
        &self,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ) {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.wire_port)
            .user("realtime")
            .dbname("realtime");
        let (client, mut connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let (tx, notifications) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n);
                }
            }
        });
        (client, notifications)
    }
}

/// A fresh database with the realtime schema (what `init` applies) and a table of many types.
async fn items_database() -> (TestDb, tokio_postgres::Client) {
    let db = Postgres::shared().fresh_database().await;
    let mut admin = db.connect().await;
    migrations::apply(&mut admin).await.expect("migrations");
    publications::ensure_exist(&admin, &db.publication)
        .await
        .expect("publications");
    admin
        .batch_execute(
            "CREATE TABLE items (
                 id serial PRIMARY KEY, n int NOT NULL, label text, price numeric(10, 2),
                 flag bool, tags text[], doc jsonb, at timestamptz
             )",
        )
        .await
        .unwrap();
    (db, admin)
}

/// Inserts rows `first..=last`, `per_tx` rows per transaction.
async fn load(client: &tokio_postgres::Client, first: i32, last: i32, per_tx: i32) {
    let mut n = first;
    while n <= last {
        let through = (n + per_tx - 1).min(last);
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO items (n, label, price, flag, tags, doc, at)
                 SELECT g, 'row ' || g, g + 0.5, g % 2 = 0, ARRAY['a', g::text],
                        jsonb_build_object('n', g, 'nested', jsonb_build_array(1, 2)),
                        '2026-01-30 10:15:23.5+00'
                   FROM generate_series({n}, {through}) AS g ORDER BY g;
                 COMMIT;"
            ))
            .await
            .unwrap();
        n = through + 1;
    }
}

/// The first `count` events in the log, from its start, as soon as it holds them.
async fn collect_log(log: &MemoryChangeLog, count: usize) -> Vec<(String, ChangeEvent)> {
    let mut following = log
        .follow(
            "realtime.db.>",
            StartAt::Time(time::OffsetDateTime::UNIX_EPOCH),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < count {
        let change = tokio::time::timeout(LIMIT, following.changes.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events reached the log", events.len()))
            .expect("the reader stays open")
            .expect("the log keeps everything");
        let event: ChangeEvent = serde_json::from_slice(&change.payload).unwrap();
        events.push((change.subject, event));
    }
    events
}

/// Every event in the log once it holds `count` of them, checking a moment later that it holds
/// no more.
async fn read_log(log: &MemoryChangeLog, count: usize) -> Vec<(String, ChangeEvent)> {
    let events = collect_log(log, count).await;
    // Nothing beyond them, a moment later (a duplicate would be an extra entry).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let extra = log
        .follow("realtime.db.>", StartAt::After(events[count - 1].1.id))
        .await
        .unwrap();
    assert_eq!(
        extra.pending_at_start, 0,
        "the log holds more than {count} events"
    );
    events
}

/// The inserts of `n = 1..=total` exactly once, in commit order, and nothing else.
fn assert_inserts_exactly_once_in_order(events: &[(String, ChangeEvent)], total: usize) {
    assert_eq!(events.len(), total);
    for (i, (subject, event)) in events.iter().enumerate() {
        assert_eq!(subject, "realtime.db.public.items.insert");
        assert_eq!(event.operation, EventType::Insert);
        let n = event.record.as_ref().unwrap()["n"].as_i64().unwrap();
        assert_eq!(
            n,
            i as i64 + 1,
            "event {i} holds n={n}: lost, doubled or out of order"
        );
    }
    for pair in events.windows(2) {
        assert!(
            pair[0].1.id < pair[1].1.id,
            "ids {} then {}",
            pair[0].1.id,
            pair[1].1.id
        );
    }
}

/// Sends `probe` notifications until one arrives (the bridge LISTENs once the service leads).
async fn wait_until_bridged(
    client: &tokio_postgres::Client,
    channel: &str,
    messages: &mut futures::stream::BoxStream<'static, nself_realtime_shared::bus::BusMessage>,
) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        client
            .execute("SELECT pg_notify($1, '\"probe\"')", &[&channel])
            .await
            .unwrap();
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), messages.next()).await
        {
            assert_eq!(&message.payload[..], b"\"probe\"");
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), messages.next()).await
            {
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the NOTIFY bridge never forwarded"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_and_notifications_flow_without_nats_and_survive_a_restart() {
    let (db, admin) = items_database().await;
    let log = MemoryChangeLog::new(Duration::from_secs(3600), 100_000);
    let broker = MemoryBroker::new();
    let cdc = Running::start(&db, &log, &broker, &["orders"]).await;

    // /health: one shape for every bus, saying this one is in process.
    let (status, health) = http_get_json(cdc.http_port, "/health").await.unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["nats"],
        json!({"connected": true, "in_process": true})
    );

    // Subscribe and listen through the Postgres-wire endpoint, as `nself-realtime subscribe`
    // and `listen` do.
    let (wire, mut notifications) = cdc.wire_client().await;
    wire.simple_query("SUBSCRIBE public.items").await.unwrap();
    wire.simple_query("LISTEN \"public.items\"").await.unwrap();

    load(&admin, 1, 20, 4).await;
    let events = read_log(&log, 20).await;
    assert_inserts_exactly_once_in_order(&events, 20);

    // Typed values, as in the change event contract.
    let first = &events[0].1;
    assert_eq!(first.schema, "public");
    assert_eq!(first.table, "items");
    assert_eq!(first.primary_key, vec!["id".to_string()]);
    let record = serde_json::Value::Object(first.record.clone().unwrap());
    assert_eq!(record["id"], json!(1));
    assert_eq!(record["n"], json!(1));
    assert_eq!(record["label"], json!("row 1"));
    assert_eq!(record["price"], json!("1.50"));
    assert_eq!(record["flag"], json!(false));
    assert_eq!(record["tags"], json!(["a", "1"]));
    assert_eq!(record["doc"], json!({"n": 1, "nested": [1, 2]}));
    assert_eq!(record["at"], json!("2026-01-30T10:15:23.5+00:00"));

    // LISTEN on the endpoint followed the log: the same events, in the same order.
    for (_, event) in &events {
        let notification = tokio::time::timeout(LIMIT, notifications.recv())
            .await
            .expect("a notification in time")
            .expect("the endpoint connection is open");
        assert_eq!(notification.channel(), "public.items");
        let listened: ChangeEvent = serde_json::from_str(notification.payload()).unwrap();
        assert_eq!(listened.id, event.id);
    }

    // NOTIFY on a configured channel reaches the in-process broker.
    let mut orders = broker.subscribe("realtime.notify.orders").await.unwrap();
    wait_until_bridged(&admin, "orders", &mut orders).await;
    admin
        .batch_execute(r#"SELECT pg_notify('orders', '{"id": 7, "total": 12.5}'); SELECT pg_notify('orders', 'plain text');"#)
        .await
        .unwrap();
    let json_payload = tokio::time::timeout(LIMIT, orders.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json_payload.subject, "realtime.notify.orders");
    assert_eq!(&json_payload.payload[..], br#"{"id": 7, "total": 12.5}"#);
    let text_payload = tokio::time::timeout(LIMIT, orders.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&text_payload.payload[..], br#""plain text""#);

    // A graceful restart with the same log: rows committed while the service was down arrive
    // once, after the others.
    drop(wire);
    cdc.stop().await;
    load(&admin, 21, 30, 3).await;
    let cdc = Running::start(&db, &log, &broker, &["orders"]).await;
    load(&admin, 31, 40, 5).await;
    let events = read_log(&log, 40).await;
    assert_inserts_exactly_once_in_order(&events, 40);

    // Other operations reach their subjects.
    admin
        .batch_execute(
            "UPDATE items SET label = 'changed' WHERE n = 1; DELETE FROM items WHERE n = 2",
        )
        .await
        .unwrap();
    let last = events[39].1.id;
    let mut more = log
        .follow("realtime.db.public.items.*", StartAt::After(last))
        .await
        .unwrap();
    let update = tokio::time::timeout(LIMIT, more.changes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.subject, "realtime.db.public.items.update");
    let update: ChangeEvent = serde_json::from_slice(&update.payload).unwrap();
    assert_eq!(update.record.unwrap()["label"], json!("changed"));
    let delete = tokio::time::timeout(LIMIT, more.changes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delete.subject, "realtime.db.public.items.delete");
    let delete: ChangeEvent = serde_json::from_slice(&delete.payload).unwrap();
    assert_eq!(delete.old_record.unwrap()["id"], json!(2));
    cdc.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_storing_and_confirming_duplicates_nothing() {
    let (db, admin) = items_database().await;
    admin
        .batch_execute(&format!(
            "ALTER PUBLICATION {} ADD TABLE items",
            db.publication
        ))
        .await
        .unwrap();
    let log = MemoryChangeLog::new(Duration::from_secs(3600), 100_000);
    let broker = MemoryBroker::new();
    let mut skipped = 0;
    let mut total = 0;
    for round in 0..3 {
        let cdc = Running::start(&db, &log, &broker, &[]).await;
        load(&admin, total + 1, total + 30, 2).await;
        total += 30;
        // As soon as the last row is stored, before the next status update would likely
        // confirm it.
        collect_log(&log, total as usize).await;
        if round > 0 {
            skipped += cdc.metric("realtime_cdc_events_skipped_total").await;
        }
        // A crash: the service's task is gone at once, with no final status to Postgres, so
        // the slot may confirm less than the log holds and the next start replays it. (Its
        // HTTP and wire listeners are left behind, hence fresh ports for every start.)
        cdc.task.abort();
        let _ = cdc.task.await;
    }
    let events = read_log(&log, total as usize).await;
    assert_inserts_exactly_once_in_order(&events, total as usize);
    eprintln!("replayed events skipped after crashes: {skipped}");
}
