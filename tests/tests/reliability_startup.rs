//! Reliability: the CDC and the gateway started before their dependencies.
//!
//! An unreachable NATS or Postgres at start is an outage like any later one, not a reason to
//! exit: both processes bind their ports, answer `/health` with `degraded` and the reason,
//! wait with capped backoff, and serve once the dependency is back. A row inserted afterwards
//! reaches a subscriber end to end. (Configuration errors still exit 2: tests/cdc_config.rs.)

use realtime_tests::{
    http_get_json, init, token, CdcProcess, GatewayProcess, Nats, PhoenixClient, Postgres,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Polls `/health` on `port` until it answers 503 with an error mentioning `waiting`.
async fn degraded(
    port: u16,
    waiting: &str,
    alive: impl Fn() -> bool,
    log: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((503, body)) = http_get_json(port, "/health").await {
            if body["error"].as_str().is_some_and(|e| e.contains(waiting)) {
                assert_eq!(body["status"], "degraded", "{body}");
                return body;
            }
        }
        assert!(
            alive(),
            "the process exited while its dependency was down:\n{}",
            log()
        );
        assert!(
            Instant::now() < deadline,
            "no degraded /health within 30 s:\n{}",
            log()
        );
        // Polling a health endpoint (what a load balancer does): pace it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins a postgres_changes channel on `public.items` and checks that an insert arrives.
async fn a_row_arrives(gateway: &GatewayProcess, db: &realtime_tests::TestDb) {
    let user = token(json!({"role": "authenticated", "sub": "u1"}));
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&user, "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = client
        .join(
            "realtime:items",
            json!({"config": {"postgres_changes": [
                {"event": "INSERT", "schema": "public", "table": "items"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    db.connect()
        .await
        .batch_execute("INSERT INTO public.items (note) VALUES ('after the outage')")
        .await
        .unwrap();
    let change = client.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(change.payload["data"]["record"]["note"], "after the outage");
}

const ITEMS: &str = "CREATE TABLE public.items (id bigserial PRIMARY KEY, note text);
     GRANT SELECT ON public.items TO authenticated;
     ALTER PUBLICATION nself_realtime ADD TABLE public.items;";

#[tokio::test]
async fn cdc_and_gateway_started_before_nats_wait_for_it() {
    let db = Postgres::shared().fresh_database().await;
    init(&db);
    db.connect().await.batch_execute(ITEMS).await.unwrap();
    let nats = Nats::start();
    let account = nats.fresh_account();
    nats.stop();

    let cdc = CdcProcess::start(&db, &account, &[]);
    let gateway = GatewayProcess::spawn(&db, &account, &[]);
    degraded(
        cdc.http_port,
        "waiting for NATS",
        || cdc.running(),
        || cdc.log(),
    )
    .await;
    let body = degraded(
        gateway.port,
        "waiting for NATS",
        || gateway.running(),
        || gateway.log(),
    )
    .await;
    assert_eq!(body["ready"], false, "{body}");
    let (live, _) = http_get_json(gateway.port, "/health/live").await.unwrap();
    assert_eq!(live, 200);
    // A client arriving meanwhile is told why, not left hanging.
    let (status, body) = realtime_tests::http_get(gateway.port, "/realtime/v1/websocket")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting for NATS"), "{body}");

    let back = Instant::now();
    nats.start_again();
    cdc.wait_for_role("leader", Duration::from_secs(30)).await;
    gateway.wait_ready().await;
    println!(
        "RELIABILITY startup-before-nats: CDC leading and gateway ready {:.2} s after NATS came up",
        back.elapsed().as_secs_f64()
    );
    a_row_arrives(&gateway, &db).await;
}

#[tokio::test]
async fn cdc_and_gateway_started_before_postgres_wait_for_it() {
    let postgres = Postgres::start();
    let db = postgres.fresh_database().await;
    init(&db);
    db.connect().await.batch_execute(ITEMS).await.unwrap();
    postgres.stop();
    let account = Nats::shared().fresh_account();

    let cdc = CdcProcess::start(&db, &account, &[]);
    degraded(
        cdc.http_port,
        "waiting for Postgres",
        || cdc.running(),
        || cdc.log(),
    )
    .await;
    // The gateway needs Postgres only to authorize: it serves, and says Postgres is missing.
    let gateway = GatewayProcess::start(&db, &account, &[]).await;
    let (status, body) = http_get_json(gateway.port, "/health").await.unwrap();
    assert_eq!(
        (status, &body["postgres"]["connected"]),
        (503, &json!(false)),
        "{body}"
    );

    let back = Instant::now();
    postgres.start_again();
    cdc.wait_for_role("leader", Duration::from_secs(30)).await;
    println!(
        "RELIABILITY startup-before-postgres: CDC leading {:.2} s after Postgres came up",
        back.elapsed().as_secs_f64()
    );
    a_row_arrives(&gateway, &db).await;
}
