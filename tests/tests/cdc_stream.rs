//! The CDC process end to end: real Postgres → `nself-realtime cdc` → real JetStream, through
//! crashes (kill -9), restarts of Postgres and NATS, and a hot-standby takeover. Every test
//! checks that each row arrives exactly once and in commit order.

use nself_realtime_shared::event::{ChangeEvent, EventType};
use realtime_tests::{init, read_change_stream, CdcProcess, Nats, NatsAccount, Postgres, TestDb};
use std::time::Duration;

/// Generous bounds: a loaded 2-core CI machine is slow, and these only guard against hangs.
const LEADER_LIMIT: Duration = Duration::from_secs(30);
const STREAM_LIMIT: Duration = Duration::from_secs(120);

/// A fresh database with the realtime schema and a table `items (id serial, n int, label)`
/// published for every operation.
async fn items_database(pg: &Postgres) -> (TestDb, tokio_postgres::Client) {
    let db = pg.fresh_database().await;
    init(&db);
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, n int NOT NULL, label text);
             ALTER PUBLICATION nself_realtime ADD TABLE items;",
        )
        .await
        .unwrap();
    (db, client)
}

/// Inserts rows `first..=last` of `n`, `per_tx` rows per transaction, one statement per row.
async fn load(client: &tokio_postgres::Client, first: i32, last: i32, per_tx: i32) {
    let insert = client
        .prepare("INSERT INTO items (n, label) VALUES ($1, $2)")
        .await
        .unwrap();
    let mut n = first;
    while n <= last {
        client.batch_execute("BEGIN").await.unwrap();
        for _ in 0..per_tx {
            if n > last {
                break;
            }
            client
                .execute(&insert, &[&n, &format!("row {n}")])
                .await
                .unwrap();
            n += 1;
        }
        client.batch_execute("COMMIT").await.unwrap();
    }
}

/// Waits until the stream holds at least `count` messages.
async fn wait_for_stream_count(nats: &async_nats::Client, count: u64) {
    let deadline = std::time::Instant::now() + STREAM_LIMIT;
    while realtime_tests::stream_message_count(nats).await < count {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never reached {count} messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every insert of `n = 1..=total` exactly once, in commit order, and nothing else.
async fn assert_exactly_once_in_order(nats: &async_nats::Client, total: usize) {
    let events = realtime_tests::try_read_change_stream(nats, total, STREAM_LIMIT).await;
    if events.len() != total {
        let seen: std::collections::BTreeSet<i64> = events
            .iter()
            .filter_map(|e| e.record.as_ref()?["n"].as_i64())
            .collect();
        let missing: Vec<i64> = (1..=total as i64).filter(|n| !seen.contains(n)).collect();
        let js = async_nats::jetstream::new(nats.clone());
        let state = js
            .get_stream("REALTIME_DB")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .clone();
        let around: Vec<String> = events
            .iter()
            .skip_while(|e| e.record.as_ref().unwrap()["n"].as_i64().unwrap() < missing[0] - 3)
            .take(6)
            .map(|e| format!("{}:{}", e.id, e.record.as_ref().unwrap()["n"]))
            .collect();
        panic!(
            "{} of {total} rows reached JetStream; missing n = {missing:?}; stream {state:?}; around the gap: {around:?}",
            events.len()
        );
    }
    for (i, event) in events.iter().enumerate() {
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
            pair[0].id < pair[1].id,
            "ids {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
    // Nothing beyond them (a duplicate would be an extra message).
    assert_eq!(
        realtime_tests::stream_message_count(nats).await,
        total as u64,
        "the stream holds more messages than rows"
    );
}

async fn shared_setup() -> (
    TestDb,
    tokio_postgres::Client,
    NatsAccount,
    async_nats::Client,
) {
    let (db, client) = items_database(Postgres::shared()).await;
    let account = Nats::shared().fresh_account();
    let nats = account.connect().await;
    (db, client, account, nats)
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_jetstream_typed_and_in_commit_order() {
    let (db, client, account, nats) = shared_setup().await;
    let cdc = CdcProcess::start(&db, &account, &[]);
    cdc.wait_for_role("leader", LEADER_LIMIT).await;

    // One transaction per call (a multi-statement simple query is one implicit transaction).
    for sql in [
        "INSERT INTO items (n, label) VALUES (1, 'héllo ✓')",
        "BEGIN; INSERT INTO items (n) VALUES (2); UPDATE items SET label = NULL WHERE n = 1; COMMIT",
        "DELETE FROM items WHERE n = 2",
        "TRUNCATE items",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let events: Vec<ChangeEvent> = read_change_stream(&nats, 5, STREAM_LIMIT).await;
    let kinds: Vec<EventType> = events.iter().map(|e| e.operation).collect();
    assert_eq!(
        kinds,
        [
            EventType::Insert,
            EventType::Insert,
            EventType::Update,
            EventType::Delete,
            EventType::Truncate
        ]
    );
    let first = &events[0];
    assert_eq!(
        (first.schema.as_str(), first.table.as_str()),
        ("public", "items")
    );
    assert_eq!(first.record.as_ref().unwrap()["n"], 1);
    assert_eq!(first.record.as_ref().unwrap()["label"], "héllo ✓");
    assert_eq!(first.primary_key, ["id"]);
    assert!(first.commit_timestamp.ends_with('Z'));
    // Two events of one transaction share its commit LSN, in order.
    assert_eq!(events[1].id.commit_lsn, events[2].id.commit_lsn);
    assert_eq!((events[1].id.position, events[2].id.position), (0, 1));
    assert_eq!(
        events[2].record.as_ref().unwrap()["label"],
        serde_json::Value::Null
    );
    assert_eq!(events[3].old_record.as_ref().unwrap()["id"], 2);
    assert!(events[4].record.is_none());

    // /health reports the leader and a confirmed LSN once the events are acknowledged.
    let deadline = std::time::Instant::now() + LEADER_LIMIT;
    loop {
        let (status, body) = cdc.health().await.expect("/health answers");
        if status == 200 && body["last_confirmed_lsn"].is_string() {
            assert_eq!(body["status"], "ok");
            assert_eq!(body["postgres"]["connected"], true);
            assert_eq!(body["nats"]["connected"], true);
            assert_eq!(body["slot"], db.slot.as_str());
            assert!(body["lag_bytes"].is_u64());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never confirmed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, metrics) = realtime_tests::http_get(cdc.http_port, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("realtime_cdc_events_published_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_load_loses_and_duplicates_nothing() {
    let (db, client, account, nats) = shared_setup().await;
    let mut cdc = CdcProcess::start(&db, &account, &[]);
    cdc.wait_for_role("leader", LEADER_LIMIT).await;

    const TOTAL: i32 = 20_000;
    let loader = tokio::spawn(async move {
        load(&client, 1, TOTAL, 50).await;
        client
    });
    // Kill the CDC once it is well into the load, while the loader still runs.
    wait_for_stream_count(&nats, 4_000).await;
    cdc.kill();
    assert!(
        !loader.is_finished(),
        "the load ended before the crash; make it longer"
    );
    cdc.restart();
    let _client = loader.await.unwrap();
    assert_exactly_once_in_order(&nats, TOTAL as usize).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_standby_takes_over_within_ten_seconds() {
    let (db, client, account, nats) = shared_setup().await;
    let mut first = CdcProcess::start(&db, &account, &[]);
    first.wait_for_role("leader", LEADER_LIMIT).await;
    let second = CdcProcess::start(&db, &account, &[]);
    second.wait_for_role("standby", LEADER_LIMIT).await;

    const TOTAL: i32 = 6_000;
    let loader = tokio::spawn(async move {
        load(&client, 1, TOTAL, 20).await;
        client
    });
    wait_for_stream_count(&nats, 1_000).await;
    first.kill();
    let took = second
        .wait_for_role("leader", Duration::from_secs(10))
        .await;
    eprintln!("standby took over {took:?} after the leader was killed");
    let _client = loader.await.unwrap();
    assert_exactly_once_in_order(&nats, TOTAL as usize).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_while_streaming_loses_nothing() {
    let pg = Postgres::start();
    let (db, client) = items_database(&pg).await;
    let account = Nats::shared().fresh_account();
    let nats = account.connect().await;
    let cdc = CdcProcess::start(&db, &account, &[]);
    cdc.wait_for_role("leader", LEADER_LIMIT).await;

    load(&client, 1, 3_000, 10).await;
    wait_for_stream_count(&nats, 500).await;
    pg.restart();
    let client = db.connect().await;
    load(&client, 3_001, 5_000, 10).await;
    assert_exactly_once_in_order(&nats, 5_000).await;
    cdc.wait_for_role("leader", LEADER_LIMIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_outage_degrades_health_then_resumes_losing_nothing() {
    let nats_server = Nats::start();
    let (db, client) = items_database(Postgres::shared()).await;
    let account = nats_server.fresh_account();
    // A small window, so the outage fills it and reading must stop.
    let cdc = CdcProcess::start(&db, &account, &[("REALTIME_CDC_MAX_IN_FLIGHT", "200")]);
    cdc.wait_for_role("leader", LEADER_LIMIT).await;

    let loader = tokio::spawn(async move {
        load(&client, 1, 3_000, 10).await;
        client
    });
    {
        let nats = account.connect().await;
        wait_for_stream_count(&nats, 500).await;
    }
    nats_server.stop();
    // Rows keep being committed while NATS is gone; the CDC reports it and holds the slot.
    let deadline = std::time::Instant::now() + LEADER_LIMIT;
    loop {
        if let Some((status, body)) = cdc.health().await {
            if status == 503 && body["nats"]["connected"] == false {
                assert_eq!(body["status"], "degraded");
                assert_eq!(body["postgres"]["connected"], true);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never reported the NATS outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _client = loader.await.unwrap();
    let (_, metrics) = realtime_tests::http_get(cdc.http_port, "/metrics")
        .await
        .unwrap();
    let in_flight: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("realtime_cdc_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .expect("in-flight gauge");
    assert!(
        in_flight <= 200,
        "{in_flight} events in flight with a window of 200"
    );

    nats_server.start_again();
    let nats = account.connect().await;
    assert_exactly_once_in_order(&nats, 3_000).await;
    // Healthy again once the backlog is confirmed.
    let deadline = std::time::Instant::now() + LEADER_LIMIT;
    loop {
        if let Some((200, body)) = cdc.health().await {
            assert_eq!(body["role"], "leader");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts NATS in the middle of a load: with `crash`, with SIGKILL, else with SIGTERM.
async fn nats_restart_during_load(crash: bool) {
    let nats_server = Nats::start();
    let (db, client) = items_database(Postgres::shared()).await;
    let account = nats_server.fresh_account();
    let cdc = CdcProcess::start(&db, &account, &[]);
    cdc.wait_for_role("leader", LEADER_LIMIT).await;

    let loader = tokio::spawn(async move {
        load(&client, 1, 6_000, 10).await;
        client
    });
    {
        let nats = account.connect().await;
        wait_for_stream_count(&nats, 1_000).await;
    }
    if crash {
        nats_server.kill();
        nats_server.start_again();
    } else {
        nats_server.restart();
    }
    let _client = loader.await.unwrap();
    let nats = account.connect().await;
    assert_exactly_once_in_order(&nats, 6_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_while_streaming_loses_nothing() {
    nats_restart_during_load(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_crash_while_streaming_loses_nothing() {
    nats_restart_during_load(true).await;
}
