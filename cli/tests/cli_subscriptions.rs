//! The built `nself-realtime` binary's `subscribe`, `unsubscribe`, `subscriptions` and `listen`
//! against a real CDC endpoint (`nself_realtime_cdc::wire::serve` in this test process) on a
//! private Postgres and NATS: output shapes of seed 002, `--json`, and exit codes.
//!
//! `listen` is synchronised on its own "Listening to" line: events are published only after it
//! appeared, and the test reads the child's output line by line. The events are published on
//! NATS by the test, as the CDC would, for a table that exists and is subscribed (`listen`
//! refuses others).

use nself_realtime_cdc::wire::{self, WireConfig};
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::subject::{self, Operation};
use realtime_tests::cli_output::{ok, stderr, usage_error};
use realtime_tests::{free_port, Nats, Postgres, TestDb};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStderr, ChildStdout, Command};

/// Failure guard for anything awaited.
const LIMIT: Duration = Duration::from_secs(30);

struct Endpoint {
    db: TestDb,
    admin: tokio_postgres::Client,
    nats: async_nats::Client,
    port: u16,
    password: Option<String>,
}

impl Endpoint {
    async fn start(password: Option<&str>) -> Endpoint {
        let db = Postgres::shared().fresh_database().await;
        let mut admin = db.connect().await;
        migrations::apply(&mut admin).await.expect("migrations");
        publications::ensure_exist(&admin, &db.publication)
            .await
            .expect("publications");
        let account = Nats::shared().fresh_account();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(wire::serve(
            listener,
            WireConfig {
                database: db.url.parse().unwrap(),
                publication: db.publication.clone(),
                password: password.map(str::to_string),
            },
            account.connect().await,
            std::future::pending(),
        ));
        Endpoint {
            db,
            admin,
            nats: account.connect().await,
            port,
            password: password.map(str::to_string),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nself-realtime"));
        command
            .args(args)
            .env("REALTIME_CDC_HOST", "127.0.0.1")
            .env("REALTIME_CDC_PORT", self.port.to_string())
            .env_remove("REALTIME_CDC_PASSWORD")
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(password) = &self.password {
            command.env("REALTIME_CDC_PASSWORD", password);
        }
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        run(self.command(args)).await
    }
}

async fn run(mut command: Command) -> Output {
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("the CLI finished in time")
        .expect("run nself-realtime")
}

async fn next_line<R: tokio::io::AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> String {
    tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable output")
        .expect("the listener is still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_subscriptions_and_unsubscribe_print_the_seed_shapes() {
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute(
            "CREATE TABLE public.users (id int PRIMARY KEY);
             CREATE TABLE public.posts (id int PRIMARY KEY);
             CREATE TABLE public.comments (id int PRIMARY KEY);
             CREATE TABLE public.logs (line text);",
        )
        .await
        .unwrap();

    assert_eq!(
        ok(endpoint.run(&["subscribe", "public.users"]).await),
        "✓ Subscribed to public.users (INSERT, UPDATE, DELETE)\n"
    );
    assert_eq!(
        ok(endpoint
            .run(&["subscribe", "public.posts", "INSERT,UPDATE"])
            .await),
        "✓ Subscribed to public.posts (INSERT, UPDATE)\n"
    );
    ok(endpoint
        .run(&["subscribe", "Public.Comments", "insert,delete"])
        .await);

    assert_eq!(
        ok(endpoint.run(&["subscriptions"]).await),
        "Active Database Subscriptions:\n\n\
         \x20 public.comments           INSERT, DELETE\n\
         \x20 public.posts              INSERT, UPDATE\n\
         \x20 public.users              INSERT, UPDATE, DELETE\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(endpoint.run(&["subscriptions", "--json"]).await)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[1]["table"], "public.posts");
    assert_eq!(
        json[1]["operations"],
        serde_json::json!(["INSERT", "UPDATE"])
    );
    assert!(json[1]["created_at"].as_str().unwrap().ends_with('Z'));

    let json: serde_json::Value = serde_json::from_str(&ok(endpoint
        .run(&["--json", "subscribe", "public.users", "insert"])
        .await))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "table": "public.users",
            "operations": ["INSERT"],
            "publication": publications::for_operations(&endpoint.db.publication, &[Operation::Insert]).unwrap().name,
        })
    );

    assert_eq!(
        ok(endpoint.run(&["unsubscribe", "public.users"]).await),
        "✓ Unsubscribed from public.users\n"
    );
    usage_error(
        endpoint.run(&["unsubscribe", "public.users"]).await,
        "not subscribed",
    );

    // Misuse: exit 2 with a one-line fix, before or after reaching the endpoint.
    usage_error(
        endpoint.run(&["subscribe", "public.a.b"]).await,
        "more than two",
    );
    usage_error(
        endpoint.run(&["subscribe", "public.\"users"]).await,
        "unbalanced",
    );
    usage_error(
        endpoint.run(&["subscribe", "public.users", "UPSERT"]).await,
        "unknown event \"UPSERT\"",
    );
    usage_error(
        endpoint.run(&["subscribe", "public.nope"]).await,
        "does not exist",
    );
    usage_error(
        endpoint.run(&["subscribe", "public.logs"]).await,
        "REPLICA IDENTITY FULL",
    );
    usage_error(endpoint.run(&["listen", "a.b.c"]).await, "more than two");
    let missing = endpoint.run(&["subscribe"]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    ok(endpoint.run(&["subscribe", "public.logs", "INSERT"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_locked_endpoint_is_a_configuration_error() {
    let endpoint = Endpoint::start(Some("s3cret")).await;
    let mut nobody = endpoint.command(&["subscriptions"]);
    nobody.env("REALTIME_CDC_PORT", free_port().to_string());
    usage_error(
        run(nobody).await,
        "is `nself-realtime cdc` running? check REALTIME_CDC_HOST/REALTIME_CDC_PORT",
    );

    let mut wrong = endpoint.command(&["subscriptions"]);
    wrong.env("REALTIME_CDC_PASSWORD", "wrong");
    usage_error(run(wrong).await, "REALTIME_CDC_PASSWORD");
    let mut none = endpoint.command(&["subscriptions"]);
    none.env_remove("REALTIME_CDC_PASSWORD");
    usage_error(run(none).await, "REALTIME_CDC_PASSWORD");

    let mut flag = endpoint.command(&["subscriptions", "--cdc-password", "s3cret"]);
    flag.env_remove("REALTIME_CDC_PASSWORD");
    assert!(ok(run(flag).await).starts_with("Active Database Subscriptions:\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_each_change_with_its_commit_time() {
    let endpoint = Endpoint::start(None).await;
    // `listen` refuses a table that does not exist or is not published (nothing would arrive).
    endpoint
        .admin
        .batch_execute("CREATE TABLE public.users (id int PRIMARY KEY)")
        .await
        .unwrap();
    usage_error(
        endpoint.run(&["listen", "public.users", "120"]).await,
        "public.users is not published",
    );
    ok(endpoint.run(&["subscribe", "public.users"]).await);
    let mut child = endpoint
        .command(&["listen", "public.users", "120"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await, "Listening to public.users...");

    publish(
        &endpoint,
        "INSERT",
        r#"{"id": 123, "email": "user@example.com"}"#,
        "null",
    )
    .await;
    assert_eq!(
        next_line(&mut lines).await,
        r#"[2026-01-30 10:15:23] INSERT: {"email": "user@example.com", "id": 123}"#
    );
    publish(
        &endpoint,
        "UPDATE",
        r#"{"id": 123, "name": "John Doe"}"#,
        "null",
    )
    .await;
    assert_eq!(
        next_line(&mut lines).await,
        r#"[2026-01-30 10:15:23] UPDATE: {"id": 123, "name": "John Doe"}"#
    );
    publish(&endpoint, "DELETE", "null", r#"{"id": 123}"#).await;
    assert_eq!(
        next_line(&mut lines).await,
        r#"[2026-01-30 10:15:23] DELETE: {"id": 123}"#
    );
    child.kill().await.unwrap();

    // --json: the events exactly as published, one per line; the duration ends it with 0.
    let mut child = endpoint
        .command(&["--json", "listen", "public.users", "3"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err: Lines<BufReader<ChildStderr>> =
        BufReader::new(child.stderr.take().unwrap()).lines();
    while !next_line(&mut err)
        .await
        .starts_with("Listening to public.users...")
    {}
    let payload = publish(&endpoint, "INSERT", r#"{"id": 1}"#, "null").await;
    assert_eq!(next_line::<ChildStdout>(&mut out).await, payload);
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Publishes a change event of public.users the way the CDC does; returns its JSON.
async fn publish(endpoint: &Endpoint, kind: &str, record: &str, old_record: &str) -> String {
    let payload = format!(
        r#"{{"id":"00000000016B3748-00000000","lsn":"0/16B3748","commit_timestamp":"2026-01-30T10:15:23.123456Z","schema":"public","table":"users","type":"{kind}","columns":[{{"name":"id","type":"int4"}}],"record":{record},"old_record":{old_record},"primary_key":["id"]}}"#
    );
    let op = Operation::parse(kind).unwrap();
    endpoint
        .nats
        .publish(
            subject::table_change("public", "users", op).unwrap(),
            payload.clone().into(),
        )
        .await
        .unwrap();
    endpoint.nats.flush().await.unwrap();
    payload
}
