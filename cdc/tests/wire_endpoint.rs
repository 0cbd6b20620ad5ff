//! The Postgres-wire endpoint against real servers: a private Postgres (subscriptions and
//! publications), a private NATS (LISTEN), and real clients (tokio-postgres and psql).
//!
//! Each test starts `wire::serve` on 127.0.0.1:0 for its own fresh database and NATS account.
//! Change events for LISTEN are published by the test with core NATS on the subjects the CDC
//! uses, so these tests need no replication stream.

use futures::StreamExt;
use nself_realtime_cdc::wire::{self, WireConfig};
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::event::{ChangeEvent, Column, EventId, EventType};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::subject::{self, Operation};
use realtime_tests::{Nats, Postgres, TestDb};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};

/// Failure guard for anything awaited; never a stand-in for synchronization.
const LIMIT: Duration = Duration::from_secs(30);

/// A running endpoint with its database and NATS account.
struct Endpoint {
    db: TestDb,
    admin: Client,
    nats: async_nats::Client,
    port: u16,
}

impl Endpoint {
    async fn start(password: Option<&str>) -> Endpoint {
        Endpoint::start_until(password, std::future::pending())
            .await
            .0
    }

    /// An endpoint that stops when `shutdown` completes; the handle ends when `serve` returned.
    async fn start_until(
        password: Option<&str>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Endpoint, tokio::task::JoinHandle<()>) {
        let db = Postgres::shared().fresh_database().await;
        let mut admin = db.connect().await;
        migrations::apply(&mut admin).await.expect("migrations");
        publications::ensure_exist(&admin, &db.publication)
            .await
            .expect("publications");
        let account = Nats::shared().fresh_account();
        let nats = account.connect().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = WireConfig {
            database: db.url.parse().unwrap(),
            publication: db.publication.clone(),
            password: password.map(str::to_string),
        };
        let served = tokio::spawn(wire::serve(
            listener,
            config,
            account.connect().await,
            shutdown,
        ));
        let endpoint = Endpoint {
            db,
            admin,
            nats,
            port,
        };
        (endpoint, served)
    }

    fn config(&self, password: Option<&str>) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("realtime")
            .dbname("realtime");
        if let Some(password) = password {
            config.password(password);
        }
        config
    }

    /// A client whose notifications arrive on the returned channel.
    async fn connect(&self) -> Listener {
        self.try_connect(None)
            .await
            .expect("connect to the endpoint")
    }

    async fn try_connect(&self, password: Option<&str>) -> Result<Listener, tokio_postgres::Error> {
        let (client, mut connection) = self.config(password).connect(tokio_postgres::NoTls).await?;
        let (tx, notifications) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n);
                }
            }
        });
        Ok(Listener {
            client,
            notifications,
        })
    }

    /// The op-set publications holding `schema.table` (directly or through its schema).
    async fn publications_of(&self, schema: &str, table: &str) -> Vec<String> {
        let ours: Vec<String> = publications::all(&self.db.publication)
            .into_iter()
            .map(|p| p.name)
            .collect();
        self.admin
            .query(
                "SELECT pubname::text FROM pg_publication_tables
                  WHERE schemaname = $1 AND tablename = $2 AND pubname = ANY($3)
                  ORDER BY 1",
                &[&schema, &table, &ours],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn publication(&self, ops: &[Operation]) -> String {
        publications::for_operations(&self.db.publication, ops)
            .unwrap()
            .name
    }

    /// `realtime.subscriptions` as (schema, table, operations).
    async fn subscription_rows(&self) -> Vec<(String, Option<String>, Vec<String>)> {
        self.admin
            .query(
                "SELECT schema_name, table_name, operations FROM realtime.subscriptions
                  ORDER BY 1, 2 NULLS FIRST",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn publish(&self, event: &ChangeEvent) -> Vec<u8> {
        let payload = serde_json::to_vec(event).unwrap();
        let subject =
            subject::table_change(&event.schema, &event.table, event.operation.into()).unwrap();
        self.nats
            .publish(subject, payload.clone().into())
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
        payload
    }
}

struct Listener {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl Listener {
    async fn next_notification(&mut self) -> Notification {
        tokio::time::timeout(LIMIT, self.notifications.recv())
            .await
            .expect("a notification in time")
            .expect("the connection is open")
    }

    /// Runs one statement; returns its rows as text.
    async fn run(&self, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
        let messages = tokio::time::timeout(LIMIT, self.client.simple_query(sql))
            .await
            .expect("an answer in time")?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    async fn ok(&self, sql: &str) -> Vec<Vec<String>> {
        self.run(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
    }

    /// Runs a statement that must fail; returns (SQLSTATE, message).
    async fn refused(&self, sql: &str) -> (String, String) {
        match self.run(sql).await {
            Ok(rows) => panic!("{sql} succeeded with {rows:?}"),
            Err(e) => {
                let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
                (db.code().code().to_string(), db.message().to_string())
            }
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    nself_realtime_cdc::postgres_error::describe(e)
}

fn event(schema: &str, table: &str, operation: EventType, id: i64) -> ChangeEvent {
    let row = serde_json::json!({ "id": id, "email": "user@example.com" });
    let (record, old_record) = match operation {
        EventType::Delete => (None, Some(row)),
        _ => (Some(row), None),
    };
    ChangeEvent {
        id: EventId {
            commit_lsn: Lsn(0x16B_3748),
            position: id as u32,
        },
        lsn: Lsn(0x16B_3748).to_string(),
        commit_timestamp: "2026-01-30T10:15:23.123456Z".into(),
        schema: schema.into(),
        table: table.into(),
        operation,
        columns: vec![Column {
            name: "id".into(),
            type_name: "int4".into(),
        }],
        record: record.map(|r| r.as_object().unwrap().clone()),
        old_record: old_record.map(|r| r.as_object().unwrap().clone()),
        primary_key: vec!["id".into()],
        unchanged_toast: vec![],
        errors: vec![],
    }
}

#[tokio::test]
async fn subscribe_show_and_unsubscribe_keep_table_and_publications_in_step() {
    use Operation::*;
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute("CREATE TABLE public.users (id int PRIMARY KEY, email text)")
        .await
        .unwrap();
    let cli = endpoint.connect().await;

    let rows = cli.ok("SUBSCRIBE public.users").await;
    let iud = endpoint.publication(&[Insert, Update, Delete]);
    assert_eq!(
        rows,
        vec![vec![
            "public.users".to_string(),
            "INSERT, UPDATE, DELETE".to_string(),
            iud.clone()
        ]]
    );
    assert_eq!(
        endpoint.subscription_rows().await,
        vec![(
            "public".into(),
            Some("users".into()),
            vec!["INSERT".into(), "UPDATE".into(), "DELETE".into()]
        )]
    );
    assert_eq!(endpoint.publications_of("public", "users").await, vec![iud]);

    // Changing the operations moves the table to the matching publication only.
    cli.ok("subscribe Public.Users update, INSERT").await;
    assert_eq!(
        endpoint.publications_of("public", "users").await,
        vec![endpoint.publication(&[Insert, Update])]
    );
    let shown = cli.ok("SHOW SUBSCRIPTIONS").await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0][0], "public.users");
    assert_eq!(shown[0][1], "INSERT, UPDATE");
    assert!(
        shown[0][2].ends_with('Z') && shown[0][2].contains('T'),
        "{shown:?}"
    );

    cli.ok("UNSUBSCRIBE public.users").await;
    assert!(endpoint.subscription_rows().await.is_empty());
    assert!(endpoint.publications_of("public", "users").await.is_empty());
    assert!(cli.ok("SHOW SUBSCRIPTIONS").await.is_empty());

    let (code, message) = cli.refused("UNSUBSCRIBE public.users").await;
    assert_eq!(code, "42704", "{message}");
    let (code, message) = cli.refused("SUBSCRIBE public.nope").await;
    assert_eq!(code, "42P01", "{message}");
    assert!(message.contains("public.nope"), "{message}");
    let (code, _) = cli.refused("SUBSCRIBE nowhere.users").await;
    assert_eq!(code, "3F000");

    // Statements run in order and stop at the first error; the session stays usable.
    let (code, message) = cli.refused("SUBSCRIBE public.users; SELECT 1").await;
    assert_eq!(code, "42601");
    assert!(message.contains("SHOW SUBSCRIPTIONS"), "{message}");
    assert_eq!(cli.ok("SHOW SUBSCRIPTIONS").await.len(), 1);
    cli.client
        .batch_execute("UNSUBSCRIBE public.users; SUBSCRIBE public.users TRUNCATE")
        .await
        .unwrap();
    assert_eq!(
        endpoint.publications_of("public", "users").await,
        vec![endpoint.publication(&[Truncate])]
    );
}

#[tokio::test]
async fn whole_schemas_subscribe_with_tables_in_schema() {
    use Operation::*;
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute(
            "CREATE TABLE public.a (id int PRIMARY KEY);
             CREATE TABLE public.b (id int PRIMARY KEY);
             CREATE TABLE public.keyless (note text);",
        )
        .await
        .unwrap();
    let cli = endpoint.connect().await;

    // A key-less table in the schema blocks UPDATE/DELETE for the schema, naming the fix.
    let (code, message) = cli.refused("SUBSCRIBE public.*").await;
    assert_eq!(code, "55000");
    assert!(message.contains("public.keyless"), "{message}");
    assert!(message.contains("REPLICA IDENTITY FULL"), "{message}");
    assert!(endpoint.subscription_rows().await.is_empty());

    let rows = cli.ok("SUBSCRIBE public.* INSERT").await;
    assert_eq!(rows[0][0], "public.*");
    let i = endpoint.publication(&[Insert]);
    for table in ["a", "b", "keyless"] {
        assert_eq!(
            endpoint.publications_of("public", table).await,
            vec![i.clone()]
        );
    }
    assert_eq!(
        endpoint.subscription_rows().await,
        vec![("public".into(), None, vec!["INSERT".into()])]
    );
    assert_eq!(cli.ok("SHOW SUBSCRIPTIONS").await[0][0], "public.*");

    endpoint
        .admin
        .batch_execute("ALTER TABLE public.keyless REPLICA IDENTITY FULL")
        .await
        .unwrap();
    cli.ok("SUBSCRIBE public.*").await;
    assert_eq!(
        endpoint.publications_of("public", "a").await,
        vec![endpoint.publication(&[Insert, Update, Delete])]
    );
    cli.ok("UNSUBSCRIBE public.*").await;
    assert!(endpoint.publications_of("public", "a").await.is_empty());
    assert!(endpoint.subscription_rows().await.is_empty());
}

#[tokio::test]
async fn tables_without_replica_identity_are_refused_for_update_and_delete() {
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute("CREATE TABLE public.logs (line text); INSERT INTO public.logs VALUES ('a')")
        .await
        .unwrap();
    let cli = endpoint.connect().await;
    for sql in ["SUBSCRIBE public.logs", "SUBSCRIBE public.logs DELETE"] {
        let (code, message) = cli.refused(sql).await;
        assert_eq!(code, "55000", "{message}");
        assert!(
            message.contains(r#"ALTER TABLE "public"."logs" REPLICA IDENTITY FULL"#)
                && message.contains("INSERT only"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }
    // INSERT only is fine, and the application's UPDATEs keep working.
    cli.ok("SUBSCRIBE public.logs INSERT,TRUNCATE").await;
    endpoint
        .admin
        .batch_execute("UPDATE public.logs SET line = 'b'")
        .await
        .expect("Postgres still accepts UPDATEs");
    endpoint
        .admin
        .batch_execute("ALTER TABLE public.logs REPLICA IDENTITY FULL")
        .await
        .unwrap();
    cli.ok("SUBSCRIBE public.logs").await;
    let (code, _) = cli.refused("SUBSCRIBE public.logs UPSERT").await;
    assert_eq!(code, "22023");
}

#[tokio::test]
async fn hostile_names_are_quoted_identifiers_or_clear_errors_never_sql() {
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute(
            r#"CREATE TABLE public.canary (id int PRIMARY KEY);
               CREATE TABLE public.users (id int PRIMARY KEY);
               CREATE TABLE public."weird.name" (id int PRIMARY KEY);
               CREATE TABLE public."spaced table" (id int PRIMARY KEY);
               CREATE TABLE public."*" (id int PRIMARY KEY);
               CREATE TABLE public."Odd ""Quoted"" Name" (id int PRIMARY KEY);
               CREATE TABLE public."café" (id int PRIMARY KEY);
               CREATE TABLE public."x; DROP TABLE public.canary; --" (id int PRIMARY KEY);
               CREATE SCHEMA "evil; schema";
               CREATE TABLE "evil; schema"."t" (id int PRIMARY KEY);"#,
        )
        .await
        .unwrap();
    let cli = endpoint.connect().await;

    // Real tables with awkward names are reachable as quoted identifiers.
    let cases = [
        (r#"public."weird.name""#, "public", "weird.name"),
        (r#"public."spaced table""#, "public", "spaced table"),
        (r#"public."*""#, "public", "*"),
        (
            r#"public."Odd ""Quoted"" Name""#,
            "public",
            r#"Odd "Quoted" Name"#,
        ),
        ("public.café", "public", "café"),
        (
            r#""public"."x; DROP TABLE public.canary; --""#,
            "public",
            "x; DROP TABLE public.canary; --",
        ),
        (r#""evil; schema".t"#, "evil; schema", "t"),
    ];
    for (spec, schema, table) in cases {
        let rows = cli.ok(&format!("SUBSCRIBE {spec}")).await;
        assert_eq!(
            nself_realtime_cdc::subscriptions::Target::parse(&rows[0][0]).unwrap(),
            nself_realtime_cdc::subscriptions::Target::table(schema, table),
            "{spec} shown as {}",
            rows[0][0]
        );
        assert_eq!(
            endpoint.publications_of(schema, table).await.len(),
            1,
            "{spec} is published"
        );
    }
    cli.ok(r#"SUBSCRIBE "evil; schema".*"#).await;
    cli.ok(r#"UNSUBSCRIBE "evil; schema".*"#).await;

    // Hostile input is a clear error, never executed.
    let hostile = [
        (
            r#"SUBSCRIBE public.users"; DROP TABLE public.canary; --"#,
            "42602",
        ),
        (
            r#"SUBSCRIBE public."users; DROP TABLE public.canary"#,
            "42602",
        ),
        (
            "SUBSCRIBE public.users INSERT); DROP TABLE public.canary; --",
            "22023",
        ),
        (
            "SUBSCRIBE public.canary'; DROP TABLE public.canary; --",
            "42602",
        ),
        (
            r#"SUBSCRIBE "public"."nope""; DROP TABLE public.canary; --""#,
            "42P01",
        ),
        ("SUBSCRIBE public.users.extra", "42602"),
        ("SUBSCRIBE *.users", "42602"),
        ("SUBSCRIBE public.", "42602"),
        ("SUBSCRIBE public.my table", "22023"),
        ("SUBSCRIBE public.pg_class", "42P01"),
        ("SUBSCRIBE pg_catalog.pg_class", "XX000"),
        ("DROP TABLE public.canary", "42601"),
        ("LISTEN public.users; DROP TABLE public.canary", "42601"),
        (
            r#"LISTEN "public.users"; DROP TABLE public.canary"#,
            "42601",
        ),
    ];
    for (sql, expected) in hostile {
        let (code, message) = cli.refused(sql).await;
        if expected != "XX000" {
            assert_eq!(code, expected, "{sql}: {message}");
        }
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{sql}: {message}"
        );
    }
    let canary: i64 = endpoint
        .admin
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'canary' AND relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(canary, 1, "the canary table survived");
    let tables: i64 = endpoint
        .admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'evil; schema')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 9, "no table was created or dropped");
}

#[tokio::test]
async fn listen_delivers_change_events_as_notifications() {
    let endpoint = Endpoint::start(None).await;
    let mut first = endpoint.connect().await;
    let mut second = endpoint.connect().await;

    first.ok(r#"LISTEN "public.users""#).await;
    first.ok(r#"LISTEN "public.""weird.name""""#).await;
    first.ok(r#"LISTEN "public.users""#).await; // listening twice is harmless
    second.ok("listen public.users").await;

    // Every listener of a table gets each change, with the channel as given and the payload
    // exactly as published.
    let insert = endpoint
        .publish(&event("public", "users", EventType::Insert, 1))
        .await;
    for listener in [&mut first, &mut second] {
        let n = listener.next_notification().await;
        assert_eq!(n.channel(), "public.users");
        assert_eq!(n.payload().as_bytes(), insert.as_slice());
    }
    let weird = endpoint
        .publish(&event("public", "weird.name", EventType::Update, 2))
        .await;
    let n = first.next_notification().await;
    assert_eq!(n.channel(), r#"public."weird.name""#);
    assert_eq!(n.payload().as_bytes(), weird.as_slice());
    let delete = endpoint
        .publish(&event("public", "users", EventType::Delete, 3))
        .await;
    assert_eq!(
        first.next_notification().await.payload().as_bytes(),
        delete.as_slice()
    );
    assert_eq!(
        second.next_notification().await.payload().as_bytes(),
        delete.as_slice()
    );

    // After UNLISTEN, the table's changes stop; the other channel still flows.
    first.ok(r#"UNLISTEN "public.users""#).await;
    endpoint
        .publish(&event("public", "users", EventType::Insert, 4))
        .await;
    assert_eq!(second.next_notification().await.channel(), "public.users");
    let weird = endpoint
        .publish(&event("public", "weird.name", EventType::Insert, 5))
        .await;
    let n = first.next_notification().await;
    assert_eq!(
        n.payload().as_bytes(),
        weird.as_slice(),
        "no public.users after UNLISTEN"
    );
    first.ok("SHOW SUBSCRIPTIONS").await;
    assert!(first.notifications.try_recv().is_err());

    // UNLISTEN * stops everything; a schema channel covers every table of the schema.
    first.ok("UNLISTEN *").await;
    first.ok("LISTEN app.*").await;
    let other = endpoint
        .publish(&event("app", "orders", EventType::Insert, 6))
        .await;
    endpoint
        .publish(&event("public", "weird.name", EventType::Insert, 7))
        .await;
    let n = first.next_notification().await;
    assert_eq!(
        (n.channel(), n.payload().as_bytes()),
        ("app.*", other.as_slice())
    );
    first.ok("SHOW SUBSCRIPTIONS").await;
    assert!(
        first.notifications.try_recv().is_err(),
        "nothing after UNLISTEN *"
    );
}

#[tokio::test]
async fn a_listener_that_falls_behind_is_disconnected() {
    let endpoint = Endpoint::start(None).await;
    let (client, mut connection) = endpoint
        .config(None)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    // The driver hands notifications over one at a time and stops reading the socket while the
    // test does not take them, like a client that stopped consuming.
    let (tx, mut rx) = mpsc::channel::<Result<(), String>>(1);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(Ok(())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(describe(&e))).await;
                    return;
                }
            }
        }
    });
    tokio::time::timeout(LIMIT, client.simple_query("LISTEN public.flood"))
        .await
        .unwrap()
        .unwrap();

    // More than the queue plus every socket buffer on the way can hold.
    let payload = serde_json::to_vec(&serde_json::json!({ "pad": "x".repeat(2048) })).unwrap();
    let subject = subject::table_change("public", "flood", Operation::Insert).unwrap();
    let sent = wire::NOTIFICATION_QUEUE * 3;
    for _ in 0..sent {
        endpoint
            .nats
            .publish(subject.clone(), payload.clone().into())
            .await
            .unwrap();
    }
    endpoint.nats.flush().await.unwrap();

    // Now read: what was buffered arrives, then the endpoint's goodbye or EOF.
    let mut received = 0;
    let mut error = None;
    let drained = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(item) = rx.recv().await {
            match item {
                Ok(()) => received += 1,
                Err(e) => error = Some(e),
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the endpoint kept the slow listener connected"
    );
    assert!(
        received < sent,
        "received all {sent}: the listener never fell behind"
    );
    // The goodbye is a FATAL "fell behind" error when the socket had room for it; when the
    // client's socket was full the endpoint just drops it mid-stream.
    if let Some(error) = &error {
        assert!(
            error.contains("fell behind")
                || error.contains("closed")
                || error.contains("bytes remaining"),
            "{error}"
        );
    }
    assert!(client.is_closed() || client.simple_query("SHOW SUBSCRIPTIONS").await.is_err());
}

#[tokio::test]
async fn passwords_are_checked() {
    let endpoint = Endpoint::start(Some("s3cret")).await;
    for wrong in [Some("wrong"), None] {
        let error = endpoint.try_connect(wrong).await.err().expect("refused");
        match error.as_db_error() {
            Some(db) => assert_eq!(db.code().code(), "28P01", "{}", db.message()),
            // Without a password tokio-postgres gives up before asking the server.
            None => assert!(wrong.is_none(), "{error}"),
        }
    }
    let cli = endpoint
        .try_connect(Some("s3cret"))
        .await
        .expect("accepted");
    assert!(cli.ok("SHOW SUBSCRIPTIONS").await.is_empty());
}

#[tokio::test]
async fn extended_protocol_and_other_sql_get_clear_errors() {
    let endpoint = Endpoint::start(None).await;
    let cli = endpoint.connect().await;
    let error = tokio::time::timeout(LIMIT, cli.client.query("SHOW SUBSCRIPTIONS", &[]))
        .await
        .unwrap()
        .unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("simple_query"), "{}", db.message());
    // The session is still in sync afterwards.
    assert!(cli.ok("SHOW SUBSCRIPTIONS").await.is_empty());
    let (code, message) = cli.refused("SELECT 1").await;
    assert_eq!(code, "42601");
    assert!(message.contains("LISTEN"), "{message}");
    assert!(cli.run("").await.unwrap().is_empty());
}

/// LISTEN on a table that does not exist, or that no publication holds, succeeds as in
/// Postgres but comes with a WARNING saying why nothing will arrive; psql prints it.
#[tokio::test]
async fn a_listen_that_can_receive_nothing_gets_a_warning() {
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute(
            "CREATE TABLE public.users (id int PRIMARY KEY);
             CREATE TABLE public.drafts (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let port = endpoint.port.to_string();
    let output = tokio::process::Command::new(Postgres::shared().bin("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", "realtime", "-d", "realtime"])
        .args(["-c", "SUBSCRIBE public.users"])
        .args(["-c", r#"LISTEN "public.nosuch""#])
        .args(["-c", r#"LISTEN "public.drafts""#])
        .args(["-c", r#"LISTEN "public.users""#])
        .args(["-c", "LISTEN public.*"])
        .args(["-c", "LISTEN nosuch.*"])
        .env("PGSSLMODE", "disable")
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed: {stderr}");
    assert_eq!(
        stderr,
        "WARNING:  LISTEN public.nosuch: table public.nosuch does not exist: check the name (unquoted names are folded to lower case; quote mixed-case ones, as in public.\"Users\")\n\
         WARNING:  LISTEN public.drafts: public.drafts is not published, so none of its changes reach a listener: publish it with SUBSCRIBE public.drafts (nself-realtime subscribe public.drafts)\n\
         WARNING:  LISTEN nosuch.*: schema \"nosuch\" does not exist: check the name (unquoted names are folded to lower case; quote mixed-case ones)\n"
    );
}

#[tokio::test]
async fn psql_can_subscribe_and_show_subscriptions() {
    let endpoint = Endpoint::start(Some("psql-pass")).await;
    endpoint
        .admin
        .batch_execute("CREATE TABLE public.users (id int PRIMARY KEY)")
        .await
        .unwrap();
    let port = endpoint.port.to_string();
    let output = tokio::process::Command::new(Postgres::shared().bin("psql"))
        .args(["-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "realtime",
            "-d",
            "realtime",
        ])
        .args(["-c", "SUBSCRIBE public.users INSERT,UPDATE"])
        .args(["-c", "SHOW SUBSCRIPTIONS"])
        .env("PGPASSWORD", "psql-pass")
        .env("PGSSLMODE", "prefer")
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "public.users|INSERT, UPDATE|{}",
            endpoint.publication(&[Operation::Insert, Operation::Update])
        )),
        "{stdout}"
    );
    assert!(stdout.contains("table|operations|created_at"), "{stdout}");
    assert!(
        stdout.contains("public.users|INSERT, UPDATE|20"),
        "{stdout}"
    );

    // (tokio's Command: the endpoint runs on this test's runtime and must keep answering.)
    let wrong = tokio::process::Command::new(Postgres::shared().bin("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "realtime",
            "-d",
            "realtime",
        ])
        .args(["-c", "SHOW SUBSCRIPTIONS"])
        .env("PGPASSWORD", "nope")
        .stdin(std::process::Stdio::null())
        .output();
    let wrong = tokio::time::timeout(LIMIT, wrong).await.unwrap().unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .to_lowercase()
            .contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[tokio::test]
async fn concurrent_subscribes_of_one_table_leave_it_in_exactly_one_publication() {
    let endpoint = Endpoint::start(None).await;
    endpoint
        .admin
        .batch_execute("CREATE TABLE public.hot (id int PRIMARY KEY)")
        .await
        .unwrap();
    let op_sets = [
        "INSERT",
        "INSERT,UPDATE",
        "DELETE",
        "UPDATE,DELETE",
        "TRUNCATE",
        "INSERT,DELETE",
    ];
    let mut clients = Vec::new();
    for _ in op_sets {
        clients.push(endpoint.connect().await);
    }
    let runs = clients.iter().zip(op_sets).map(|(client, ops)| async move {
        client.ok(&format!("SUBSCRIBE public.hot {ops}")).await;
    });
    futures::future::join_all(runs).await;
    let holding = endpoint.publications_of("public", "hot").await;
    assert_eq!(holding.len(), 1, "{holding:?}");
    let rows = endpoint.subscription_rows().await;
    assert_eq!(rows.len(), 1);
    let ops: Vec<Operation> = rows[0]
        .2
        .iter()
        .map(|w| Operation::parse(w).unwrap())
        .collect();
    assert_eq!(
        holding[0],
        endpoint.publication(&ops),
        "row and publication agree"
    );
}

#[tokio::test]
async fn shutdown_ends_connections_with_a_reason_and_serve_returns() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (endpoint, served) = Endpoint::start_until(None, async move {
        let _ = stopped.await;
    })
    .await;
    let (client, mut connection) = endpoint
        .config(None)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let mut outcome = String::from("closed");
        while let Some(message) = messages.next().await {
            if let Err(e) = message {
                outcome = describe(&e);
                break;
            }
        }
        let _ = tx.send(outcome);
    });
    client
        .simple_query(r#"LISTEN "public.users""#)
        .await
        .unwrap();
    stop.send(()).unwrap();
    let outcome = tokio::time::timeout(LIMIT, ended).await.unwrap().unwrap();
    assert!(
        outcome.contains("shutting down") && outcome.contains("57P01"),
        "{outcome}"
    );
    tokio::time::timeout(LIMIT, served).await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", endpoint.port))
            .await
            .is_err(),
        "the listener is closed"
    );
}
