//! The pgoutput decoder against a real Postgres: real pgoutput bytes, from a real slot, decoded
//! into change events.
//!
//! No replication connection is needed for this: `pg_logical_slot_get_binary_changes` returns
//! the same protocol version 1 messages the walsender streams, one per row. It decodes with the
//! calling session's settings, so each test first sets [`REQUIRED_SESSION_SETTINGS`], exactly as
//! the replication connection must.

use bytes::Bytes;
use nself_realtime_cdc::pgoutput::types::BUILTIN;
use nself_realtime_cdc::pgoutput::{EventBuilder, Message, Step, REQUIRED_SESSION_SETTINGS};
use nself_realtime_shared::event::{ChangeEvent, EventType};
use realtime_tests::{Postgres, TestDb};
use serde_json::{json, Value};

/// A test database with a publication of every table and a pgoutput slot.
struct Stream {
    db: TestDb,
    client: tokio_postgres::Client,
    builder: EventBuilder,
    steps: Vec<Step>,
}

impl Stream {
    /// Runs `schema` (DDL), then creates the publication and the slot: DML after this is
    /// decoded by [`Stream::events`].
    async fn new(schema: &str) -> Stream {
        let db = Postgres::shared().fresh_database().await;
        let client = db.connect().await;
        let settings: String = REQUIRED_SESSION_SETTINGS
            .iter()
            .map(|(name, value)| format!("SET {name} = '{value}';"))
            .collect();
        client.batch_execute(&settings).await.unwrap();
        // The harness runs the cluster with synchronous_commit=off, and the slot functions
        // decode only up to the flushed WAL: wait for our commits to be flushed.
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        client.batch_execute(schema).await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR ALL TABLES",
                db.publication
            ))
            .await
            .unwrap();
        client
            .query(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&db.slot],
            )
            .await
            .unwrap();
        Stream {
            db,
            client,
            builder: EventBuilder::new(),
            steps: Vec::new(),
        }
    }

    async fn sql(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap();
    }

    /// Decodes everything the slot has, as the pipeline would: catalog loads when asked.
    async fn events(&mut self) -> Vec<ChangeEvent> {
        let rows = self
            .client
            .query(
                "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $2)",
                &[&self.db.slot, &self.db.publication],
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        for row in rows {
            let data: Vec<u8> = row.get(0);
            let message = Message::decode(Bytes::from(data)).expect("decode");
            let step = self.builder.handle(message, &mut out).expect("handle");
            if let Step::NeedCatalog(needs) = &step {
                self.builder
                    .load_catalog(&self.client, needs)
                    .await
                    .unwrap();
            }
            self.steps.push(step);
        }
        // Every event serializes (the publisher's next step).
        for event in &out {
            serde_json::to_vec(event).unwrap();
        }
        out
    }
}

fn obj(value: Value) -> Option<serde_json::Map<String, Value>> {
    Some(value.as_object().expect("an object").clone())
}

fn column_types(event: &ChangeEvent) -> Vec<(&str, &str)> {
    event
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect()
}

const ALL_TYPES: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN price AS numeric(12,2) CHECK (VALUE >= 0);
    CREATE DOMAIN small AS int4;
    CREATE TABLE every_type (
        id int4 PRIMARY KEY,
        b bool, i2 int2, i8 int8, o oid, f4 float4, f8 float8, n numeric,
        j json, jb jsonb, t text, vc varchar(20), bp char(5), nm name, u uuid, c \"char\",
        tstz timestamptz, ts timestamp, d date, tm time, tmtz timetz, iv interval, by bytea,
        ai int4[], at text[], ai2 int4[], ab int4[], ats timestamptz[], ajb jsonb[],
        m mood, am mood[], p price, ap price[], s small, inet_ inet, pt point, rng int4range
    );";

#[tokio::test]
async fn every_type_converts_to_its_json() {
    let mut s = Stream::new(ALL_TYPES).await;
    s.sql(
        r#"INSERT INTO every_type VALUES (
        1, true, -32768, 9223372036854775807, 4294967295, 1.1, 0.1,
        12345678901234567890.123456789012345678901,
        '{"a": [1, 2.5, null], "b": {"c": "d"}}', '{"z": 1, "a": [true, false]}',
        'héllo ✓ "quoted" \ back', 'vc', 'ab', 'nm', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'x',
        '2026-01-30 12:15:23.123456+02', '2026-01-30 10:15:23.5', '2026-01-30', '10:15:23.25',
        '10:15:23+05:30', '1 day 02:03:04', '\xdeadbeef00',
        '{1,NULL,3}', '{plain,"with space",NULL,"NULL","q\"uote","back\\slash","a,b","{x}",""}',
        '{{1,2},{3,4}}', '[0:2]={7,8,9}', '{"2026-01-30 10:15:23+00",infinity}',
        ARRAY['{"k": [1]}'::jsonb, NULL],
        'happy', '{sad,NULL,happy}', 12.5, '{1.00,2.5}', 7, '10.0.0.1/8', '(1.5,2)', '[1,5)'
    )"#,
    )
    .await;
    s.sql(
        "INSERT INTO every_type (id, f4, f8, n, tstz, ts, d)
         VALUES (2, 'NaN', 'Infinity', 'NaN', 'infinity', '-infinity', '0044-03-15 BC'),
                (3, '-Infinity', -1.5e-300, '-0.000001', '0044-03-15 12:00:00+00 BC',
                 '2026-01-30 10:15:23', 'infinity');
         INSERT INTO every_type (id) VALUES (4);",
    )
    .await;
    let events = s.events().await;
    assert_eq!(events.len(), 4);
    let first = &events[0];
    assert_eq!(
        column_types(first),
        vec![
            ("id", "int4"),
            ("b", "bool"),
            ("i2", "int2"),
            ("i8", "int8"),
            ("o", "oid"),
            ("f4", "float4"),
            ("f8", "float8"),
            ("n", "numeric"),
            ("j", "json"),
            ("jb", "jsonb"),
            ("t", "text"),
            ("vc", "varchar"),
            ("bp", "bpchar"),
            ("nm", "name"),
            ("u", "uuid"),
            ("c", "char"),
            ("tstz", "timestamptz"),
            ("ts", "timestamp"),
            ("d", "date"),
            ("tm", "time"),
            ("tmtz", "timetz"),
            ("iv", "interval"),
            ("by", "bytea"),
            ("ai", "_int4"),
            ("at", "_text"),
            ("ai2", "_int4"),
            ("ab", "_int4"),
            ("ats", "_timestamptz"),
            ("ajb", "_jsonb"),
            ("m", "mood"),
            ("am", "_mood"),
            ("p", "price"),
            ("ap", "_price"),
            ("s", "small"),
            ("inet_", "inet"),
            ("pt", "point"),
            ("rng", "int4range"),
        ]
    );
    assert_eq!(first.primary_key, vec!["id"]);
    assert_eq!(
        first.record,
        obj(json!({
            "id": 1, "b": true, "i2": -32768, "i8": 9223372036854775807i64, "o": 4294967295u32,
            "f4": 1.1, "f8": 0.1, "n": "12345678901234567890.123456789012345678901",
            "j": {"a": [1, 2.5, null], "b": {"c": "d"}}, "jb": {"z": 1, "a": [true, false]},
            "t": "héllo ✓ \"quoted\" \\ back", "vc": "vc", "bp": "ab   ", "nm": "nm",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "c": "x",
            "tstz": "2026-01-30T10:15:23.123456+00:00", "ts": "2026-01-30T10:15:23.5",
            "d": "2026-01-30", "tm": "10:15:23.25", "tmtz": "10:15:23+05:30",
            "iv": "1 day 02:03:04", "by": "\\xdeadbeef00",
            "ai": [1, null, 3],
            "at": ["plain", "with space", null, "NULL", "q\"uote", "back\\slash", "a,b", "{x}", ""],
            "ai2": [[1, 2], [3, 4]], "ab": [7, 8, 9],
            "ats": ["2026-01-30T10:15:23+00:00", "infinity"],
            "ajb": [{"k": [1]}, null],
            "m": "happy", "am": ["sad", null, "happy"], "p": "12.50", "ap": ["1.00", "2.50"],
            "s": 7, "inet_": "10.0.0.1/8", "pt": "(1.5,2)", "rng": "[1,5)",
        }))
    );
    let special = |e: &ChangeEvent, col: &str| e.record.as_ref().unwrap()[col].clone();
    assert_eq!(special(&events[1], "f4"), json!("NaN"));
    assert_eq!(special(&events[1], "f8"), json!("Infinity"));
    assert_eq!(special(&events[1], "n"), json!("NaN"));
    assert_eq!(special(&events[1], "tstz"), json!("infinity"));
    assert_eq!(special(&events[1], "ts"), json!("-infinity"));
    assert_eq!(special(&events[1], "d"), json!("0044-03-15 BC"));
    assert_eq!(special(&events[2], "f4"), json!("-Infinity"));
    assert_eq!(special(&events[2], "f8"), json!(-1.5e-300));
    assert_eq!(special(&events[2], "n"), json!("-0.000001"));
    assert_eq!(
        special(&events[2], "tstz"),
        json!("0044-03-15 12:00:00+00 BC")
    );
    assert_eq!(special(&events[2], "ts"), json!("2026-01-30T10:15:23"));
    // All NULLs are nulls, present in the record.
    let nulls = events[3].record.as_ref().unwrap();
    assert_eq!(nulls.len(), 37);
    assert!(nulls.iter().all(|(k, v)| k == "id" || v.is_null()));
}

/// Where our rules and Postgres' own `to_jsonb` agree by design, the two must give the same
/// JSON for the same row (timestamps, arrays, json, bytea, booleans, integers, text).
#[tokio::test]
async fn values_match_postgres_to_jsonb() {
    let mut s = Stream::new(ALL_TYPES).await;
    s.sql(
        r#"INSERT INTO every_type (id, b, i2, i8, j, jb, t, u, tstz, ts, d, by, ai, at, ai2, ats, m, am)
        SELECT g, g % 2 = 0, g, g * 1000000000000, '{"g": [1, {"h": null}]}',
               jsonb_build_object('g', g, 'list', jsonb_build_array(g, 'x', true)),
               'row ' || g || ' ✓', gen_random_uuid(),
               '2026-01-30 10:15:23.123456+00'::timestamptz + g * interval '1 hour 0.5 second',
               '2026-01-30 10:15:23'::timestamp + g * interval '1 day',
               '2026-01-30'::date + g, decode(md5(g::text), 'hex'),
               ARRAY[g, NULL, -g], ARRAY['a b', NULL, 'c"d', g::text],
               ARRAY[[g, g], [g, g]],
               ARRAY['2026-01-30 10:15:23+00'::timestamptz + g * interval '1 minute'],
               'ok', '{happy,sad}'
        FROM generate_series(1, 50) g"#,
    )
    .await;
    let events = s.events().await;
    assert_eq!(events.len(), 50);
    let rows = s
        .client
        .query(
            "SELECT (to_jsonb(e) - 'n' - 'f4' - 'f8' - 'p' - 'ap')::text FROM every_type e ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    for (event, row) in events.iter().zip(rows) {
        let expected: Value = serde_json::from_str(&row.get::<_, String>(0)).unwrap();
        let expected = expected.as_object().unwrap();
        let record = event.record.as_ref().unwrap();
        for (column, value) in expected {
            // to_jsonb's bytea is the same \x hex; everything else listed must be equal.
            assert_eq!(&record[column], value, "column {column} of {record:?}");
        }
    }
}

#[tokio::test]
async fn large_jsonb_and_unicode_round_trip() {
    let mut s = Stream::new("CREATE TABLE docs (id int PRIMARY KEY, body jsonb, note text)").await;
    s.sql(
        "INSERT INTO docs SELECT 1, jsonb_build_object('items', jsonb_agg(jsonb_build_object(
             'i', g, 'name', 'ñame ' || g || ' 日本語 🎉', 'price', g * 1.25, 'tags', jsonb_build_array('a', g)))),
             '日本語 🎉 ' || repeat('ü', 1000)
         FROM generate_series(1, 15000) g",
    )
    .await;
    let row = s
        .client
        .query_one("SELECT body::text, length(body::text), note FROM docs", &[])
        .await
        .unwrap();
    assert!(
        row.get::<_, i32>(1) > 1_000_000,
        "the document is over 1 MB"
    );
    let expected: Value = serde_json::from_str(row.get(0)).unwrap();
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    let record = events[0].record.as_ref().unwrap();
    assert_eq!(record["body"], expected);
    assert_eq!(record["note"], json!(row.get::<_, String>(2)));
}

/// A text too large to stay inline and not compressible below the TOAST threshold.
const BIG: &str = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3000) g)";

#[tokio::test]
async fn unchanged_toast_is_never_a_fake_null() {
    let mut s = Stream::new("CREATE TABLE posts (id int PRIMARY KEY, big text, views int)").await;
    s.sql(&format!("INSERT INTO posts VALUES (1, {BIG}, 0)"))
        .await;
    s.sql("UPDATE posts SET views = 1").await;
    s.sql("ALTER TABLE posts REPLICA IDENTITY FULL").await;
    s.sql("UPDATE posts SET views = 2").await;
    let big: String = s
        .client
        .query_one("SELECT big FROM posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big.len(), 96_000);
    let events = s.events().await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].record.as_ref().unwrap()["big"], json!(big));
    // DEFAULT: Postgres does not send the unchanged value, so it is left out and named.
    let default = &events[1];
    assert_eq!(default.record, obj(json!({"id": 1, "views": 1})));
    assert_eq!(default.unchanged_toast, vec!["big"]);
    // The key did not change, so the old key is the new one.
    assert_eq!(default.old_record, obj(json!({"id": 1})));
    let json = serde_json::to_value(default).unwrap();
    assert_eq!(json["unchanged_toast"], json!(["big"]));
    assert!(json["record"].get("big").is_none());
    // FULL: the old row carries it, so the new record has it too.
    let full = &events[2];
    assert_eq!(full.record, obj(json!({"id": 1, "big": big, "views": 2})));
    assert!(full.unchanged_toast.is_empty());
    assert_eq!(
        full.old_record,
        obj(json!({"id": 1, "big": big, "views": 1}))
    );
    assert_eq!(full.primary_key, vec!["id"]);
}

#[tokio::test]
async fn old_records_follow_the_replica_identity() {
    let mut s = Stream::new(
        "CREATE TABLE d (id int PRIMARY KEY, v text);
         CREATE TABLE f (id int PRIMARY KEY, v text);
         ALTER TABLE f REPLICA IDENTITY FULL;
         CREATE TABLE n (id int PRIMARY KEY, v text);
         ALTER TABLE n REPLICA IDENTITY NOTHING;
         CREATE TABLE i (id int PRIMARY KEY, code text NOT NULL, v text);
         CREATE UNIQUE INDEX i_code ON i (code);
         ALTER TABLE i REPLICA IDENTITY USING INDEX i_code;",
    )
    .await;
    s.sql(
        "INSERT INTO d VALUES (1, 'a'); UPDATE d SET v = 'b'; UPDATE d SET id = 2; DELETE FROM d;
         INSERT INTO f VALUES (1, 'a'); UPDATE f SET v = 'b'; DELETE FROM f;
         INSERT INTO n VALUES (1, 'a');
         INSERT INTO i VALUES (1, 'x', 'a'); UPDATE i SET v = 'b'; UPDATE i SET code = 'y';
         DELETE FROM i;",
    )
    .await;
    // NOTHING cannot publish updates or deletes: Postgres refuses the statements themselves.
    for dml in ["UPDATE n SET v = 'b'", "DELETE FROM n"] {
        let refused = s.client.batch_execute(dml).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{dml}"
        );
    }
    let events = s.events().await;
    let summary: Vec<(&str, EventType, Option<Value>)> = events
        .iter()
        .map(|e| {
            (
                e.table.as_str(),
                e.operation,
                e.old_record.clone().map(Value::Object),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("d", EventType::Insert, None),
            // Key unchanged: no old tuple is sent, and the old key is the new one.
            ("d", EventType::Update, Some(json!({"id": 1}))),
            ("d", EventType::Update, Some(json!({"id": 1}))),
            ("d", EventType::Delete, Some(json!({"id": 2}))),
            ("f", EventType::Insert, None),
            ("f", EventType::Update, Some(json!({"id": 1, "v": "a"}))),
            ("f", EventType::Delete, Some(json!({"id": 1, "v": "b"}))),
            ("n", EventType::Insert, None),
            ("i", EventType::Insert, None),
            ("i", EventType::Update, Some(json!({"code": "x"}))),
            ("i", EventType::Update, Some(json!({"code": "x"}))),
            ("i", EventType::Delete, Some(json!({"code": "y"}))),
        ]
    );
    // The primary key, whatever the replica identity.
    for e in &events {
        assert_eq!(e.primary_key, vec!["id"], "{}", e.table);
    }
    assert_eq!(events[11].record, None);
}

#[tokio::test]
async fn a_table_without_a_primary_key() {
    let mut s = Stream::new("CREATE TABLE logs (at timestamptz, line text)").await;
    s.sql("INSERT INTO logs VALUES ('2026-01-30 10:00:00+00', 'one'), (NULL, 'two')")
        .await;
    // Without a replica identity, a published table refuses UPDATE and DELETE.
    for dml in ["UPDATE logs SET line = 'x'", "DELETE FROM logs"] {
        let refused = s.client.batch_execute(dml).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{dml}"
        );
    }
    let events = s.events().await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.primary_key.is_empty()));
    assert_eq!(
        events[0].record,
        obj(json!({"at": "2026-01-30T10:00:00+00:00", "line": "one"}))
    );
    assert_eq!(events[1].record, obj(json!({"at": null, "line": "two"})));
}

#[tokio::test]
async fn alter_table_mid_stream() {
    let mut s = Stream::new("CREATE TABLE items (id int PRIMARY KEY, qty int)").await;
    s.sql(
        "INSERT INTO items VALUES (1, 10);
         ALTER TABLE items ADD COLUMN label text DEFAULT 'new';
         INSERT INTO items VALUES (2, 20, 'two');
         UPDATE items SET qty = 11 WHERE id = 1;
         ALTER TABLE items DROP COLUMN qty;
         INSERT INTO items VALUES (3, 'three');
         ALTER TABLE items ALTER COLUMN label DROP DEFAULT;
         ALTER TABLE items ALTER COLUMN label TYPE int USING length(label);
         INSERT INTO items VALUES (4, 4444);
         BEGIN;
         INSERT INTO items VALUES (5, 5);
         ALTER TABLE items ADD COLUMN flag bool;
         INSERT INTO items VALUES (6, 6, true);
         COMMIT;",
    )
    .await;
    let events = s.events().await;
    let shapes: Vec<(Vec<(&str, &str)>, Value)> = events
        .iter()
        .map(|e| (column_types(e), Value::Object(e.record.clone().unwrap())))
        .collect();
    let id_qty = vec![("id", "int4"), ("qty", "int4")];
    let with_label = vec![("id", "int4"), ("qty", "int4"), ("label", "text")];
    let no_qty = vec![("id", "int4"), ("label", "text")];
    let label_int = vec![("id", "int4"), ("label", "int4")];
    let with_flag = vec![("id", "int4"), ("label", "int4"), ("flag", "bool")];
    assert_eq!(
        shapes,
        vec![
            (id_qty, json!({"id": 1, "qty": 10})),
            (
                with_label.clone(),
                json!({"id": 2, "qty": 20, "label": "two"})
            ),
            (with_label, json!({"id": 1, "qty": 11, "label": "new"})),
            (no_qty, json!({"id": 3, "label": "three"})),
            (label_int.clone(), json!({"id": 4, "label": 4444})),
            (label_int, json!({"id": 5, "label": 5})),
            (with_flag, json!({"id": 6, "label": 6, "flag": true})),
        ]
    );
}

#[tokio::test]
async fn truncate_of_two_tables_in_one_statement() {
    let mut s =
        Stream::new("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id bigint PRIMARY KEY);")
            .await;
    s.sql("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)")
        .await;
    s.sql("TRUNCATE a, b RESTART IDENTITY").await;
    let events = s.events().await;
    let truncates: Vec<&ChangeEvent> = events
        .iter()
        .filter(|e| e.operation == EventType::Truncate)
        .collect();
    assert_eq!(truncates.len(), 2);
    let mut tables: Vec<&str> = truncates.iter().map(|e| e.table.as_str()).collect();
    tables.sort_unstable();
    assert_eq!(tables, vec!["a", "b"]);
    // One statement, one transaction: consecutive positions of one commit.
    assert_eq!(truncates[0].id.commit_lsn, truncates[1].id.commit_lsn);
    assert_eq!(truncates[0].id.position, 0);
    assert_eq!(truncates[1].id.position, 1);
    for e in truncates {
        assert_eq!((e.record.as_ref(), e.old_record.as_ref()), (None, None));
        assert_eq!(e.primary_key, vec!["id"]);
    }
}

#[tokio::test]
async fn a_big_transaction_numbers_its_events_in_order() {
    let mut s = Stream::new("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    s.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g")
        .await;
    s.sql("BEGIN; UPDATE t SET v = 'w' WHERE id <= 10; DELETE FROM t WHERE id > 1990; COMMIT;")
        .await;
    let events = s.events().await;
    assert_eq!(events.len(), 2020);
    let (first, second) = events.split_at(2000);
    for (i, e) in first.iter().enumerate() {
        assert_eq!(e.id.position as usize, i);
        assert_eq!(e.id.commit_lsn, first[0].id.commit_lsn);
        assert_eq!(e.record.as_ref().unwrap()["id"], json!(i + 1));
    }
    for (i, e) in second.iter().enumerate() {
        assert_eq!(e.id.position as usize, i);
    }
    assert!(second[0].id.commit_lsn > first[0].id.commit_lsn);
    // Ids, as text too, increase strictly across the stream.
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(events
        .windows(2)
        .all(|w| w[0].id.to_string() < w[1].id.to_string()));
    assert!(events.iter().all(|e| e.lsn == e.id.commit_lsn.to_string()));
    // Begin/Commit pairs report the same commit LSN, and the end LSN lies past it.
    let commits: Vec<&Step> = s
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Commit { .. }))
        .collect();
    assert_eq!(commits.len(), 2);
    let Step::Commit {
        commit_lsn,
        end_lsn,
        events: n,
    } = commits[0]
    else {
        unreachable!()
    };
    assert_eq!(*commit_lsn, first[0].id.commit_lsn);
    assert!(end_lsn > commit_lsn);
    assert_eq!(*n, 2000);
    let before: String = first[0].commit_timestamp.clone();
    assert!(before.ends_with('Z') && before.starts_with("20"));
}

#[tokio::test]
async fn user_types_load_in_one_step() {
    let mut s = Stream::new(
        "CREATE SCHEMA app;
         CREATE TYPE app.mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN app.price AS numeric CHECK (VALUE >= 0);
         CREATE DOMAIN app.prices AS app.price[];
         CREATE TABLE app.t (id int PRIMARY KEY, m app.mood, ms app.mood[], p app.price, ps app.prices);",
    )
    .await;
    s.sql("INSERT INTO app.t VALUES (1, 'sad', '{happy,sad}', 10.10, '{1,2.5}')")
        .await;
    let events = s.events().await;
    assert_eq!(events[0].schema, "app");
    assert_eq!(
        column_types(&events[0]),
        vec![
            ("id", "int4"),
            ("m", "mood"),
            ("ms", "_mood"),
            ("p", "price"),
            ("ps", "prices")
        ]
    );
    assert_eq!(
        events[0].record,
        obj(json!({"id": 1, "m": "sad", "ms": ["happy", "sad"], "p": "10.10", "ps": ["1", "2.5"]}))
    );
    let catalog_steps = s
        .steps
        .iter()
        .filter(|s| matches!(s, Step::NeedCatalog(_)))
        .count();
    assert_eq!(catalog_steps, 1);
}

/// The static table of built-in types is what this server's `pg_type` says.
#[tokio::test]
async fn builtin_table_matches_the_server() {
    let db = Postgres::shared().fresh_database().await;
    let client = db.connect().await;
    let oids: Vec<u32> = BUILTIN.iter().map(|&(oid, _, _)| oid).collect();
    let rows = client
        .query(
            "SELECT oid, typname::text, CASE WHEN typname LIKE '\\_%' THEN typelem ELSE 0::oid END
             FROM pg_type WHERE oid = ANY($1)",
            &[&oids],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), BUILTIN.len(), "every built-in oid exists");
    for row in rows {
        let oid: u32 = row.get(0);
        let entry = BUILTIN.iter().find(|e| e.0 == oid).unwrap();
        assert_eq!(
            (entry.1, entry.2),
            (row.get::<_, String>(1).as_str(), row.get::<_, u32>(2))
        );
    }
}
