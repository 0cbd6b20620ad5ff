//! Configuration errors: `nself-realtime cdc` exits with code 2 and one line naming the fix,
//! instead of retrying forever or panicking.

use realtime_tests::{free_port, init, run_cli, Nats, Postgres};

/// Runs `cdc` with `env` and returns (exit code, stderr).
fn cdc_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let http = free_port().to_string();
    let wire = free_port().to_string();
    let mut all = vec![
        ("REALTIME_CDC_HTTP_PORT", http.as_str()),
        ("REALTIME_CDC_PORT", wire.as_str()),
    ];
    all.extend_from_slice(env);
    let out = run_cli(&["cdc"], &all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cdc` against `database_url` with slot `slot` and a fresh NATS account.
fn cdc_against(database_url: &str, slot: &str) -> (Option<i32>, String) {
    let nats = Nats::shared().fresh_account();
    cdc_with(&[
        ("DATABASE_URL", database_url),
        ("NATS_URL", &nats.url),
        ("REALTIME_SLOT", slot),
    ])
}

fn assert_fix(result: (Option<i32>, String), needle: &str) {
    let (code, stderr) = result;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_database_url_exits_2() {
    let nats = Nats::shared().fresh_account();
    assert_fix(
        cdc_with(&[("DATABASE_URL", "not a url"), ("NATS_URL", &nats.url)]),
        "DATABASE_URL",
    );
    // A server that answers and refuses the settings is a configuration error (an unreachable
    // one is an outage the CDC waits for: tests/reliability_startup.rs).
    let missing = Postgres::shared().url("no_such_database");
    assert_fix(
        cdc_with(&[("DATABASE_URL", &missing), ("NATS_URL", &nats.url)]),
        "DATABASE_URL",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_nats_credentials_exit_2() {
    let db = Postgres::shared().fresh_database().await;
    init(&db);
    let nats = format!("nats://nobody:wrong@127.0.0.1:{}", Nats::shared().port());
    assert_fix(
        cdc_with(&[("DATABASE_URL", &db.url), ("NATS_URL", &nats)]),
        "NATS_URL",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_schema_says_run_init() {
    let db = Postgres::shared().fresh_database().await;
    assert_fix(cdc_against(&db.url, &db.slot), "nself-realtime init");
}

#[tokio::test(flavor = "multi_thread")]
async fn role_without_replication_exits_2() {
    let db = Postgres::shared().fresh_database().await;
    init(&db);
    let client = db.connect().await;
    let role = format!("{}_plain", db.name);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT ALL ON DATABASE {} TO {role}",
            db.name
        ))
        .await
        .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_fix(cdc_against(&url, &db.slot), "REPLICATION");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_not_logical_exits_2() {
    let pg = Postgres::start();
    let db = pg.fresh_database().await;
    init(&db);
    db.connect()
        .await
        .batch_execute("ALTER SYSTEM SET wal_level = replica")
        .await
        .unwrap();
    pg.restart();
    assert_fix(cdc_against(&db.url, &db.slot), "wal_level");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_exit_2() {
    let db = Postgres::shared().fresh_database().await;
    let nats = Nats::shared().fresh_account();
    let base = [
        ("DATABASE_URL", db.url.as_str()),
        ("NATS_URL", nats.url.as_str()),
    ];
    for (var, value, needle) in [
        ("REALTIME_SLOT", "Bad-Slot", "REALTIME_SLOT"),
        ("REALTIME_PUBLICATION", "x;drop", "REALTIME_PUBLICATION"),
        ("REALTIME_MESSAGE_TTL", "soon", "REALTIME_MESSAGE_TTL"),
        ("REALTIME_CDC_HOST", "0.0.0.0", "REALTIME_CDC_PASSWORD"),
        ("REALTIME_STREAM_REPLICAS", "7", "REALTIME_STREAM_REPLICAS"),
    ] {
        let mut env = base.to_vec();
        env.push((var, value));
        assert_fix(cdc_with(&env), needle);
    }
}

#[test]
fn init_is_idempotent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(Postgres::shared().fresh_database());
    let first = run_cli(&["init"], &[("DATABASE_URL", &db.url)]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("0001_realtime_schema"));
    let second = run_cli(&["--json", "init"], &[("DATABASE_URL", &db.url)]);
    assert!(second.status.success());
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["up_to_date"], true);
    assert_eq!(report["applied"], serde_json::json!([]));
    let publications = Postgres::shared().psql(
        &db.name,
        "SELECT count(*) FROM pg_publication WHERE pubname LIKE 'nself_realtime%'",
    );
    assert_eq!(publications.trim(), "15");
    let roles = Postgres::shared().psql(
        &db.name,
        "SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles \
         WHERE rolname IN ('anon', 'authenticated', 'service_role')",
    );
    assert_eq!(
        roles.trim(),
        "anon:false,authenticated:false,service_role:false"
    );
}
