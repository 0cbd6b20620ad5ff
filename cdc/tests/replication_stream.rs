//! Streaming from a real Postgres: XLogData for a committed INSERT, keepalives, status updates
//! that move the slot's `confirmed_flush_lsn` (also while not reading), the slot-in-use error a
//! hot standby waits on, and a walsender killed mid-stream.

use nself_realtime_cdc::replication::{
    ConnectOptions, ReplicationClient, ReplicationError, ReplicationEvent, ReplicationStream,
    OBJECT_IN_USE,
};
use nself_realtime_shared::lsn::Lsn;
use realtime_tests::{Postgres, TestDb};
use std::future::Future;
use std::time::Duration;

/// Upper bound for anything a test waits on; generous for a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {LIMIT:?}"))
}

async fn client(db: &TestDb) -> ReplicationClient {
    ReplicationClient::connect(&db.url.parse().unwrap(), &ConnectOptions::default())
        .await
        .expect("replication connect")
}

/// A table in a publication and a slot, created before any change we look for.
async fn setup(db: &TestDb) -> tokio_postgres::Client {
    let sql = db.connect().await;
    sql.batch_execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         CREATE PUBLICATION {} FOR TABLE items;",
        db.publication
    ))
    .await
    .unwrap();
    client(db)
        .await
        .create_slot_if_missing(&db.slot)
        .await
        .unwrap();
    sql
}

async fn start(db: &TestDb) -> ReplicationStream {
    client(db)
        .await
        .start_replication(&db.slot, Lsn(0), &[&db.publication])
        .await
        .expect("START_REPLICATION")
}

async fn confirmed_flush(sql: &tokio_postgres::Client, slot: &str) -> Lsn {
    let text: Option<String> = sql
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    text.expect("a logical slot has a confirmed_flush_lsn")
        .parse()
        .unwrap()
}

/// Polls the slot until its confirmed_flush_lsn reaches `target`.
async fn wait_for_confirmed_flush(sql: &tokio_postgres::Client, slot: &str, target: Lsn) {
    within("confirmed_flush_lsn to advance", async {
        loop {
            if confirmed_flush(sql, slot).await >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads XLogData until one whose pgoutput message starts with `tag`; returns it and the
/// largest wal_end seen.
async fn read_until(stream: &mut ReplicationStream, tag: u8) -> (ReplicationEvent, Lsn) {
    within("a pgoutput message", async {
        let mut wal_end_seen = Lsn(0);
        loop {
            let event = stream
                .next()
                .await
                .expect("stream error")
                .expect("stream ended");
            match &event {
                ReplicationEvent::XLogData { wal_end, data, .. } => {
                    wal_end_seen = wal_end_seen.max(*wal_end);
                    if data.first() == Some(&tag) {
                        return (event, wal_end_seen);
                    }
                }
                ReplicationEvent::Keepalive { wal_end, .. } => {
                    wal_end_seen = wal_end_seen.max(*wal_end)
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn committed_insert_arrives_as_xlogdata() {
    let db = Postgres::shared().fresh_database().await;
    let sql = setup(&db).await;
    let mut stream = start(&db).await;
    sql.execute("INSERT INTO items VALUES (1, 'first')", &[])
        .await
        .unwrap();

    let (begin, _) = read_until(&mut stream, b'B').await;
    let (insert, _) = read_until(&mut stream, b'I').await;
    let ReplicationEvent::XLogData {
        wal_start,
        data,
        server_clock,
        ..
    } = insert
    else {
        unreachable!()
    };
    assert!(wal_start.0 > 0);
    assert!(server_clock > 0);
    assert!(
        data.windows(5).any(|w| w == b"first"),
        "the row's text is in the Insert message: {data:?}"
    );
    assert!(matches!(begin, ReplicationEvent::XLogData { .. }));
    let (commit, _) = read_until(&mut stream, b'C').await;
    assert!(matches!(commit, ReplicationEvent::XLogData { .. }));
    stream.finish().await.expect("finish");
}

#[tokio::test]
async fn next_is_cancel_safe_inside_select() {
    let db = Postgres::shared().fresh_database().await;
    let sql = setup(&db).await;
    let mut stream = start(&db).await;
    let rows = 200;
    sql.execute(
        "INSERT INTO items SELECT g, repeat('x', 500) || g FROM generate_series(1, $1) g",
        &[&rows],
    )
    .await
    .unwrap();

    // A timer that fires constantly cancels next() over and over, also in the middle of
    // messages; every Insert must still arrive, whole and in order.
    let mut inserts = 0;
    let mut cancelled = 0u64;
    within("all inserts through a cancelling select", async {
        while inserts < rows {
            tokio::select! {
                event = stream.next() => {
                    if let ReplicationEvent::XLogData { data, .. } = event.unwrap().unwrap() {
                        if data[0] == b'I' {
                            inserts += 1;
                            let expected = format!("{}{inserts}", "x".repeat(500));
                            // The text column is the last thing in the Insert message.
                            assert!(
                                data.ends_with(expected.as_bytes()),
                                "insert {inserts} arrived intact"
                            );
                        }
                    }
                }
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
    })
    .await;
    assert!(cancelled > 0, "the select did cancel next()");
}

#[tokio::test]
async fn status_updates_advance_the_slot_and_keepalives_answer_them() {
    let db = Postgres::shared().fresh_database().await;
    let sql = setup(&db).await;
    let before = confirmed_flush(&sql, &db.slot).await;
    let mut stream = start(&db).await;
    sql.execute("INSERT INTO items VALUES (1, 'a')", &[])
        .await
        .unwrap();
    let (_, wal_end) = read_until(&mut stream, b'C').await;
    assert!(wal_end > before, "{wal_end} > {before}");

    // Asking for a reply makes the walsender send a keepalive right away.
    stream
        .send_status(wal_end, wal_end, wal_end, true)
        .await
        .unwrap();
    let keepalive = within("a keepalive", async {
        loop {
            if let ReplicationEvent::Keepalive { wal_end, .. } =
                stream.next().await.unwrap().unwrap()
            {
                return wal_end;
            }
        }
    })
    .await;
    assert!(keepalive >= wal_end);
    wait_for_confirmed_flush(&sql, &db.slot, wal_end).await;
    assert_eq!(confirmed_flush(&sql, &db.slot).await, wal_end);

    // Back-pressure: new WAL is pending and we do not read it, yet status updates still go
    // through and the slot still moves.
    sql.execute("INSERT INTO items VALUES (2, 'b')", &[])
        .await
        .unwrap();
    let current: String = sql
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let current: Lsn = current.parse().unwrap();
    stream
        .send_status(current, current, current, false)
        .await
        .unwrap();
    wait_for_confirmed_flush(&sql, &db.slot, current).await;

    stream.finish().await.unwrap();
}

#[tokio::test]
async fn a_second_stream_of_the_same_slot_is_slot_in_use() {
    let db = Postgres::shared().fresh_database().await;
    let _sql = setup(&db).await;
    let mut first = start(&db).await;

    let err = client(&db)
        .await
        .start_replication(&db.slot, Lsn(0), &[&db.publication])
        .await
        .err()
        .expect("the slot is busy");
    match &err {
        ReplicationError::SlotInUse { slot, source } => {
            assert_eq!(slot, &db.slot);
            assert_eq!(source.code, OBJECT_IN_USE);
        }
        other => panic!("expected SlotInUse, got {other:?}"),
    }
    assert_eq!(err.code(), Some(OBJECT_IN_USE));

    // Once the first lets go, the standby takes over.
    first
        .send_status(Lsn(0), Lsn(0), Lsn(0), false)
        .await
        .unwrap();
    first.finish().await.unwrap();
    let standby = within("the standby to take the slot", async {
        loop {
            match client(&db)
                .await
                .start_replication(&db.slot, Lsn(0), &[&db.publication])
                .await
            {
                Ok(stream) => return stream,
                Err(ReplicationError::SlotInUse { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("standby: {e}"),
            }
        }
    })
    .await;
    standby.finish().await.unwrap();
}

#[tokio::test]
async fn a_killed_walsender_is_an_error_not_a_hang() {
    let db = Postgres::shared().fresh_database().await;
    let sql = setup(&db).await;
    let replication = client(&db).await;
    let pid = replication.backend_pid();
    let mut stream = replication
        .start_replication(&db.slot, Lsn(0), &[&db.publication])
        .await
        .unwrap();

    let killed: bool = sql
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    let err = within("the stream to fail", async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a killed walsender is not a clean end"),
                Err(e) => return e,
            }
        }
    })
    .await;
    // The server says why (57P01 admin_shutdown) when the message gets through.
    assert!(
        err.code() == Some("57P01") || matches!(err, ReplicationError::ConnectionClosed),
        "{err:?}"
    );
    assert!(matches!(
        stream.next().await,
        Err(ReplicationError::ConnectionClosed)
    ));
    assert!(stream
        .send_status(Lsn(0), Lsn(0), Lsn(0), false)
        .await
        .is_err());
}

#[tokio::test]
async fn starting_on_a_missing_slot_is_a_server_error() {
    let db = Postgres::shared().fresh_database().await;
    let err = client(&db)
        .await
        .start_replication("no_such_slot", Lsn(0), &["p"])
        .await
        .err()
        .expect("no slot");
    assert_eq!(err.code(), Some("42704"), "{err}");
}
