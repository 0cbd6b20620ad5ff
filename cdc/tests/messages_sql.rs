//! Supabase's database surface as migration 0004 builds it, asked directly in SQL against a real
//! Postgres: `realtime.send`, `realtime.send_binary`, `realtime.topic()` and the trigger helper
//! `realtime.broadcast_changes` store the rows Supabase stores, with the caller's rights (a
//! refused send is a warning, never an error); `realtime.messages` keeps day partitions that
//! `maintain_messages_partitions` creates ahead and drops after the retention; and a database
//! with the seeds' unpartitioned table of migration 0003 keeps its rows and publications when
//! 0004 converts it.
//!
//! The gateway's side of the same surface (delivery, private joins, replay) is tested in
//! `tests/tests/private_channels.rs` and with supabase-js in `tests/js/database_broadcast.test.mjs`.

use nself_realtime_cdc::migrations::{self, MIGRATIONS};
use realtime_tests::{Postgres, TestDb};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// A fresh database with every migration applied.
async fn migrated() -> (TestDb, Client) {
    let db = Postgres::shared().fresh_database().await;
    let mut client = db.connect().await;
    migrations::apply(&mut client).await.expect("migrations");
    (db, client)
}

/// A connection whose notices (warnings among them) are collected, as `psql` would print them.
async fn with_notices(db: &TestDb) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (client, mut connection) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let kept = notices.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notice(notice) = message {
                kept.lock().unwrap().push(notice.message().to_string());
            }
        }
    });
    (client, notices)
}

/// The stored broadcasts of `topic`: (event, private, payload, binary payload, partition).
async fn stored(
    client: &Client,
    topic: &str,
) -> Vec<(String, bool, Option<Value>, Option<Vec<u8>>, String)> {
    client
        .query(
            "SELECT event, private, payload::text, binary_payload, tableoid::regclass::text
               FROM realtime.messages WHERE topic = $1 AND extension = 'broadcast'
              ORDER BY inserted_at, id",
            &[&topic],
        )
        .await
        .expect("read realtime.messages")
        .iter()
        .map(|row| {
            let payload: Option<String> = row.get(2);
            let payload = payload.map(|text| serde_json::from_str(&text).expect("JSON"));
            (row.get(0), row.get(1), payload, row.get(3), row.get(4))
        })
        .collect()
}

#[tokio::test]
async fn send_stores_private_broadcasts_with_their_id_in_todays_partition() {
    let (_db, client) = migrated().await;
    client
        .batch_execute(
            r#"SELECT realtime.send('{"body": "hi"}', 'message', 'room:1');
               SELECT realtime.send('{"id": "mine", "body": "public"}', 'message', 'room:2', false);
               SELECT realtime.send_binary('\x00ff10'::bytea, 'blob', 'room:3');"#,
        )
        .await
        .expect("send");
    let today: String = client
        .query_one(
            "SELECT 'realtime.messages_' || to_char(now() AT TIME ZONE 'utc', 'YYYY_MM_DD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let rows = stored(&client, "room:1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (event, private, payload, binary, partition) = &rows[0];
    assert_eq!((event.as_str(), *private), ("message", true));
    let payload = payload.as_ref().expect("a JSON payload");
    assert_eq!(payload["body"], "hi");
    // Supabase adds the row's id to the payload (clients dedupe by it).
    let id: String = client
        .query_one(
            "SELECT id::text FROM realtime.messages WHERE topic = 'room:1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["id"], json!(id));
    assert!(binary.is_none());
    assert_eq!(partition, &today, "stored in today's day partition");

    let rows = stored(&client, "room:2").await;
    assert!(!rows[0].1, "private => false is a public broadcast");
    assert_eq!(
        rows[0].2.as_ref().unwrap(),
        &json!({"id": "mine", "body": "public"}),
        "a payload with its own id keeps it"
    );

    let rows = stored(&client, "room:3").await;
    assert_eq!(rows[0].0, "blob");
    assert_eq!(rows[0].2, None, "a binary broadcast has no JSON payload");
    assert_eq!(rows[0].3.as_deref(), Some(&[0x00, 0xff, 0x10][..]));
}

#[tokio::test]
async fn send_has_the_callers_rights_and_warns_where_it_may_not_insert() {
    let (db, admin) = migrated().await;
    admin
        .batch_execute(
            "CREATE POLICY send_to_allowed ON realtime.messages FOR INSERT TO authenticated
                 WITH CHECK (realtime.topic() LIKE 'allowed:%' AND extension = 'broadcast');",
        )
        .await
        .unwrap();
    let (client, notices) = with_notices(&db).await;
    let as_user = |topic: &str| {
        format!(
            "BEGIN;
             SELECT set_config('role', 'authenticated', true),
                    set_config('request.jwt.claims', '{{\"role\":\"authenticated\",\"sub\":\"u1\"}}', true);
             SELECT realtime.send('{{\"n\": 1}}', 'e', '{topic}');
             COMMIT;"
        )
    };
    client
        .batch_execute(&as_user("allowed:1"))
        .await
        .expect("an allowed send");
    assert_eq!(stored(&admin, "allowed:1").await.len(), 1);
    assert!(notices.lock().unwrap().is_empty(), "{notices:?}");

    // Refused by the policies: the caller's transaction goes on and commits; a warning says why.
    client
        .batch_execute(&as_user("denied:1"))
        .await
        .expect("a refused send does not fail the transaction");
    assert!(stored(&admin, "denied:1").await.is_empty());
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].starts_with("WarnSendingBroadcastMessage: new row violates row-level security"),
        "{notices:?}"
    );
}

#[tokio::test]
async fn topic_reads_the_setting_the_gateway_and_send_set() {
    let (_db, client) = migrated().await;
    let topic = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };
    assert_eq!(topic("SELECT realtime.topic()").await, None, "unset: NULL");
    client
        .batch_execute("SELECT set_config('realtime.topic', 'room:7', false)")
        .await
        .unwrap();
    assert_eq!(
        topic("SELECT realtime.topic()").await.as_deref(),
        Some("room:7")
    );
}

#[tokio::test]
async fn broadcast_changes_sends_supabases_row_payload_from_a_trigger() {
    let (_db, client) = migrated().await;
    // The trigger of Supabase's docs ("Broadcast from Database"), verbatim.
    client
        .batch_execute(
            "create table public.your_table (id int primary key, topic int, body text);
             create or replace function public.your_table_changes()
             returns trigger
             security definer
             language plpgsql
             as $$
             begin
               perform realtime.broadcast_changes(
                 'topic:' || coalesce(NEW.topic, OLD.topic) ::text,
                 TG_OP,
                 TG_OP,
                 TG_TABLE_NAME,
                 TG_TABLE_SCHEMA,
                 NEW,
                 OLD
               );
               return null;
             end;
             $$;
             create trigger handle_your_table_changes
             after insert or update or delete
             on public.your_table
             for each row
             execute function your_table_changes ();",
        )
        .await
        .expect("the docs' trigger");
    // Three transactions, so the rows' inserted_at order them.
    for change in [
        "INSERT INTO public.your_table VALUES (1, 5, 'first')",
        "UPDATE public.your_table SET body = 'second' WHERE id = 1",
        "DELETE FROM public.your_table WHERE id = 1",
    ] {
        client.batch_execute(change).await.expect(change);
    }
    let rows = stored(&client, "topic:5").await;
    let events: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(events, ["INSERT", "UPDATE", "DELETE"]);
    assert!(rows.iter().all(|r| r.1), "private by default");
    let payload = |i: usize| {
        let mut payload = rows[i].2.clone().unwrap();
        payload.as_object_mut().unwrap().remove("id");
        payload
    };
    let first = json!({"id": 1, "topic": 5, "body": "first"});
    let second = json!({"id": 1, "topic": 5, "body": "second"});
    let common = |operation: &str, record: Value, old: Value| {
        json!({"schema": "public", "table": "your_table", "operation": operation,
               "record": record, "old_record": old})
    };
    assert_eq!(payload(0), common("INSERT", first.clone(), Value::Null));
    assert_eq!(payload(1), common("UPDATE", second.clone(), first));
    assert_eq!(payload(2), common("DELETE", Value::Null, second));

    // As a statement trigger it refuses, as Supabase's does.
    let refused = client
        .batch_execute(
            "create function public.per_statement() returns trigger language plpgsql as $$
             begin
               perform realtime.broadcast_changes('t', TG_OP, TG_OP, TG_TABLE_NAME,
                                                  TG_TABLE_SCHEMA, NULL, NULL, TG_LEVEL);
               return null;
             end $$;
             create trigger per_statement after insert on public.your_table
             for each statement execute function public.per_statement();
             INSERT INTO public.your_table VALUES (2, 6, 'x');",
        )
        .await
        .expect_err("a statement-level trigger is refused");
    let message = refused.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("function can only be triggered for each row"),
        "{message}"
    );
}

/// The partitions of realtime.messages, by name.
async fn partitions(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'realtime.messages'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The name of the partition of the UTC day `offset` days from today.
async fn day(client: &Client, offset: i32) -> String {
    client
        .query_one(
            "SELECT 'messages_' || to_char((now() AT TIME ZONE 'utc')::date + $1::int, 'YYYY_MM_DD')",
            &[&offset],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn day_partitions_are_kept_ahead_and_dropped_after_the_retention() {
    let (_db, client) = migrated().await;
    // The migration made today and three days ahead, beside the default partition.
    let mut expected = vec!["messages_default".to_string()];
    for offset in 0..=3 {
        expected.push(day(&client, offset).await);
    }
    expected.sort();
    assert_eq!(partitions(&client).await, expected);

    // An old day with a partition, and an older one only in the default partition.
    client
        .batch_execute(
            "SELECT realtime.create_messages_partition((now() AT TIME ZONE 'utc')::date - 10);
             INSERT INTO realtime.messages (topic, extension, event, payload, inserted_at) VALUES
                 ('old', 'broadcast', 'e', '{}', (now() AT TIME ZONE 'utc') - interval '10 days'),
                 ('older', 'broadcast', 'e', '{}', (now() AT TIME ZONE 'utc') - interval '20 days'),
                 ('new', 'broadcast', 'e', '{}', now() AT TIME ZONE 'utc');",
        )
        .await
        .unwrap();
    assert!(partitions(&client).await.contains(&day(&client, -10).await));
    let placed: Vec<(String, String)> = client
        .query(
            "SELECT topic, tableoid::regclass::text FROM realtime.messages ORDER BY topic",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        placed,
        [
            (
                "new".to_string(),
                format!("realtime.{}", day(&client, 0).await)
            ),
            (
                "old".to_string(),
                format!("realtime.{}", day(&client, -10).await)
            ),
            ("older".to_string(), "realtime.messages_default".to_string()),
        ]
    );
    // A day the default partition holds rows of stays there: no partition is made for it.
    let made: Option<String> = client
        .query_one(
            "SELECT realtime.create_messages_partition((now() AT TIME ZONE 'utc')::date - 20)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, None);

    // Keep five days of messages and five days ahead: the two old messages go, the new one stays.
    let gone: i32 = client
        .query_one(
            "SELECT realtime.maintain_messages_partitions('5 days', 5)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 2);
    let left: Vec<String> = client
        .query("SELECT topic FROM realtime.messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, ["new"]);
    let now = partitions(&client).await;
    assert!(!now.contains(&day(&client, -10).await), "{now:?}");
    assert!(now.contains(&day(&client, 5).await), "{now:?}");
}

#[tokio::test]
async fn the_seed_messages_table_is_converted_with_its_rows_and_publications() {
    let db = Postgres::shared().fresh_database().await;
    let mut client = db.connect().await;
    // A database as migrations 0001 to 0003 left it, with a chat message and a publication of
    // the seeds' unpartitioned realtime.messages.
    client
        .batch_execute(
            "CREATE SCHEMA realtime;
             CREATE TABLE realtime.schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .unwrap();
    for migration in &MIGRATIONS[..3] {
        client
            .batch_execute(migration.sql)
            .await
            .expect(migration.name);
        client
            .execute(
                "INSERT INTO realtime.schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO realtime.channels (id, name, slug, type, persist_messages)
                 VALUES ('00000000-0000-4000-8000-0000000000c1', 'General', 'general', 'public', true);
             INSERT INTO realtime.messages (id, channel_id, user_id, content, thread_id, sent_at)
                 VALUES ('00000000-0000-4000-8000-0000000000a1',
                         '00000000-0000-4000-8000-0000000000c1', 'alice', 'kept', 't1',
                         '2026-11-30 12:00:00+00');
             CREATE PUBLICATION seed_pub FOR TABLE realtime.messages;",
        )
        .await
        .unwrap();

    let applied = migrations::apply(&mut client)
        .await
        .expect("migration 0004");
    assert_eq!(applied, ["0004_database_broadcast", "0005_replay_index"]);

    let relkind: String = client
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE oid = 'realtime.messages'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(relkind, "p", "realtime.messages is partitioned");
    let row = client
        .query_one(
            "SELECT id::text, channel_id::text, user_id, content, thread_id, topic, extension,
                    inserted_at = '2026-11-30 12:00:00'::timestamp
               FROM realtime.messages",
            &[],
        )
        .await
        .expect("the message is still there");
    assert_eq!(
        row.get::<_, String>(0),
        "00000000-0000-4000-8000-0000000000a1"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "00000000-0000-4000-8000-0000000000c1"
    );
    assert_eq!(row.get::<_, String>(2), "alice");
    assert_eq!(row.get::<_, String>(3), "kept");
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("t1"));
    assert_eq!(row.get::<_, String>(6), "broadcast");
    assert!(
        row.get::<_, bool>(7),
        "inserted_at is the message's sent_at, in UTC"
    );
    let published: Vec<String> = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables
              WHERE pubname = 'seed_pub'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Without publish_via_partition_root the publication lists the partitions.
    assert!(
        !published.is_empty() && published.iter().all(|t| t.starts_with("realtime.messages")),
        "the publication still carries the messages: {published:?}"
    );
    let old_table: Option<String> = client
        .query_one(
            "SELECT to_regclass('realtime.messages_unpartitioned')::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old_table, None, "the old table is gone");
}
