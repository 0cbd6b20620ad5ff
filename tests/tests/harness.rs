//! The harness itself: its servers start, isolate tests from one another, and really are
//! Postgres with logical decoding and NATS with JetStream.

use realtime_tests::{Nats, Postgres};

#[tokio::test]
async fn postgres_databases_are_fresh_and_logical() {
    let pg = Postgres::shared();
    let a = pg.fresh_database().await;
    let b = pg.fresh_database().await;
    assert_ne!(a.name, b.name);
    assert_ne!(a.slot, b.slot);
    let client = a.connect().await;
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_level, "logical");
    client
        .batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .unwrap();
    let other = b.connect().await;
    assert!(other
        .batch_execute("SELECT * FROM only_in_a")
        .await
        .is_err());
    // The Unix socket works too.
    let over_socket = realtime_tests::connect_url(&a.socket_url).await;
    over_socket
        .batch_execute("SELECT * FROM only_in_a")
        .await
        .unwrap();
}

#[tokio::test]
async fn nats_accounts_are_isolated_jetstream_spaces() {
    let nats = Nats::shared();
    let a = nats.fresh_account().connect().await;
    let b = nats.fresh_account().connect().await;
    let js_a = async_nats::jetstream::new(a.clone());
    let js_b = async_nats::jetstream::new(b.clone());
    let config = async_nats::jetstream::stream::Config {
        name: "SAME".into(),
        subjects: vec!["x.>".into()],
        ..Default::default()
    };
    js_a.create_stream(config.clone()).await.unwrap();
    js_b.create_stream(config).await.unwrap();
    js_a.publish("x.1", "a".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stream_b = js_b.get_stream("SAME").await.unwrap();
    assert_eq!(stream_b.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn private_postgres_restarts() {
    let pg = Postgres::start();
    let db = pg.fresh_database().await;
    db.connect()
        .await
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    pg.restart();
    let n: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
