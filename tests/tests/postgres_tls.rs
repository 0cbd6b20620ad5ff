//! Postgres over TLS, end to end, against a private cluster that accepts only `hostssl`
//! connections (what managed services run): tokio-postgres connections for every `sslmode`
//! and certificate check, then the binary itself — `init`, the CDC (replication, catalog and
//! NOTIFY connections) publishing an insert to JetStream, and a gateway whose pool authorizes a
//! private channel over `verify-full`.

use futures::StreamExt;
use nself_realtime_shared::postgres_error::describe;
use nself_realtime_shared::postgres_tls::Database;
use realtime_tests::{
    read_change_stream, run_cli, token, CdcProcess, GatewayProcess, Nats, PhoenixClient, Postgres,
    TestDb,
};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Connects as the binary does; the error is the line a person would see.
async fn try_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let database = Database::parse(url).map_err(|e| e.to_string())?;
    let (client, connection) = database.connect().await.map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// `db` with `params` added to its URL (which has no query yet).
fn with_params(db: &TestDb, params: &str) -> TestDb {
    let mut db = db.clone();
    db.url = format!("{}?{params}", db.url);
    db
}

#[tokio::test]
async fn every_sslmode_against_a_tls_only_server() {
    let pg = Postgres::shared_tls_only();
    let db = pg.fresh_database().await;
    let ca = pg.tls_files().ca_cert.display().to_string();
    let other = pg.tls_files().other_ca_cert.display().to_string();

    let err = try_connect(&format!("{}?sslmode=disable", db.url))
        .await
        .expect_err("hostnossl is rejected");
    assert!(
        err.contains("no encryption") && err.contains("sslmode=require"),
        "{err}"
    );

    for url in [
        db.url.clone(), // prefer, the default
        format!("{}?sslmode=require", db.url),
        format!("{}?sslmode=verify-ca&sslrootcert={ca}", db.url),
        format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url),
        format!(
            "host=localhost port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{ca}'",
            pg.port(),
            db.name
        ),
    ] {
        let client = try_connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(uses_tls(&client).await, "{url}");
    }

    // The certificate is for localhost and 127.0.0.1, not db.invalid.
    let wrong_name = |mode: &str| {
        format!(
            "postgres://postgres@db.invalid:{}/{}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}",
            pg.port(),
            db.name
        )
    };
    try_connect(&wrong_name("verify-ca"))
        .await
        .expect("verify-ca does not check the name");
    let err = try_connect(&wrong_name("verify-full"))
        .await
        .expect_err("verify-full checks the name");
    assert!(
        err.contains("TLS handshake") && err.contains("db.invalid"),
        "{err}"
    );

    for mode in ["verify-ca", "verify-full"] {
        let err = try_connect(&format!("{}?sslmode={mode}&sslrootcert={other}", db.url))
            .await
            .err()
            .unwrap_or_else(|| panic!("{mode} trusted a certificate of another CA"));
        assert!(err.contains("UnknownIssuer"), "{mode}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_cdc_and_gateway_work_over_tls() {
    let pg = Postgres::shared_tls_only();
    let db = pg.fresh_database().await;
    let ca = pg.tls_files().ca_cert.display().to_string();

    // init: refused clearly without TLS, fine with it.
    let out = run_cli(
        &["init"],
        &[("DATABASE_URL", &format!("{}?sslmode=disable", db.url))],
    );
    assert_eq!(out.status.code(), Some(2), "init without TLS must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sslmode=require"), "{stderr}");
    let require = with_params(&db, "sslmode=require");
    let out = run_cli(&["init"], &[("DATABASE_URL", &require.url)]);
    assert!(
        out.status.success(),
        "init over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, label text);
         ALTER PUBLICATION nself_realtime ADD TABLE items;
         INSERT INTO realtime.channels (name, slug, type) VALUES ('Team', 'team', 'private');
         INSERT INTO realtime.channel_members (channel_id, user_id)
             SELECT id, 'member' FROM realtime.channels WHERE slug = 'team';",
    )
    .await
    .unwrap();

    // The CDC: replication, catalog, health and NOTIFY connections all on sslmode=require.
    let account = Nats::shared().fresh_account();
    let nats = account.connect().await;
    let mut notified = nats.subscribe("realtime.notify.tls_test").await.unwrap();
    let cdc = CdcProcess::start(
        &require,
        &account,
        &[("REALTIME_NOTIFY_CHANNELS", "tls_test")],
    );
    cdc.wait_for_role("leader", LIMIT).await;
    sql.execute("INSERT INTO items (label) VALUES ('over tls')", &[])
        .await
        .unwrap();
    let events = read_change_stream(&nats, 1, LIMIT).await;
    assert_eq!(
        events[0].record.as_ref().unwrap()["label"],
        "over tls",
        "{:?}",
        events[0]
    );
    let bridged = tokio::time::timeout(LIMIT, async {
        loop {
            sql.execute("SELECT pg_notify('tls_test', '{\"ok\":true}')", &[])
                .await
                .unwrap();
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(300), notified.next()).await
            {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the NOTIFY bridge never forwarded:\n{}", cdc.log()));
    assert_eq!(&bridged.payload[..], br#"{"ok":true}"#);
    let walsender_tls: bool = sql
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(walsender_tls, "the replication connection is not TLS");

    // A gateway checking the server's certificate and name: its pool authorizes private joins.
    let verify_full = with_params(&db, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let gateway = GatewayProcess::start(&verify_full, &account, &[]).await;
    let user = |sub: &str| token(json!({"role": "authenticated", "sub": sub}));
    let private = json!({"config": {"private": true}});
    let mut member = PhoenixClient::connect(&gateway.websocket_url(&user("member"), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = member.join("realtime:team", private.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}\n{}", gateway.log());
    let mut outsider = PhoenixClient::connect(&gateway.websocket_url(&user("outsider"), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = outsider.join("realtime:team", private).await;
    assert_eq!(reply["status"], "error", "{reply}");
    // pg_hba.conf rejects every TCP connection without TLS, so the pool's queries ran over TLS.
}
