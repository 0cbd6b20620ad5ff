//! The built `nself-realtime` binary's admin commands over SQL (`channel ...`, `messages`,
//! `replay`, `events`, `cleanup`) and `init`'s publication of `realtime.messages`, against a
//! fresh database of the harness' private Postgres: exact text output (the shapes of seed 002),
//! `--json` documents, and exit 2 with a one-line fix on misuse. Rows whose times appear in the
//! output are inserted with fixed times so the output is deterministic.
//!
//! Also the Row Level Security of `realtime.messages` at the SQL level, acting as a user the way
//! the gateway does: `SET LOCAL ROLE authenticated` and `request.jwt.claims` in one transaction.

use realtime_tests::cli_output::{ok, stderr, stdout, usage_error};
use realtime_tests::{Postgres, TestDb};
use serde_json::{json, Value};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;
use tokio_postgres::error::SqlState;

/// Failure guard for anything awaited.
const LIMIT: Duration = Duration::from_secs(60);

struct Admin {
    db: TestDb,
    sql: tokio_postgres::Client,
}

impl Admin {
    /// A fresh database initialised by `nself-realtime init`.
    async fn start() -> Admin {
        let admin = Admin::uninitialised().await;
        ok(admin.run(&["init"]).await);
        admin
    }

    /// A fresh database without the realtime schema.
    async fn uninitialised() -> Admin {
        let db = Postgres::shared().fresh_database().await;
        let sql = db.connect().await;
        Admin { db, sql }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nself-realtime"));
        command
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env_remove("REALTIME_PUBLICATION")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tokio::time::timeout(LIMIT, command.output())
            .await
            .expect("the CLI finished in time")
            .expect("run nself-realtime")
    }

    /// `run` that must succeed; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args).await)
    }

    /// `run` with `--json` that must succeed; returns the one JSON document printed.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{out:?} is not one JSON document: {e}"))
    }

    async fn exec(&self, sql: &str) {
        self.sql
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    async fn text(&self, sql: &str) -> String {
        self.sql
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }

    async fn channel_id(&self, slug: &str) -> String {
        self.text(&format!(
            "SELECT id::text FROM realtime.channels WHERE slug = '{slug}'"
        ))
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_publishes_messages_once() {
    let admin = Admin::start().await;
    let published = "SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication_tables
                      WHERE schemaname = 'realtime' AND tablename = 'messages'";
    let subscription = "SELECT array_to_string(operations, ',') || ' ' || created_at::text
                          FROM realtime.subscriptions
                         WHERE schema_name = 'realtime' AND table_name = 'messages'";
    assert_eq!(admin.text(published).await, "nself_realtime_iud");
    let first = admin.text(subscription).await;
    assert!(first.starts_with("INSERT,UPDATE,DELETE "), "{first}");

    // Again: nothing to apply, nothing changed.
    let report = admin.json(&["init"]).await;
    assert_eq!(report["up_to_date"], true);
    assert_eq!(admin.text(published).await, "nself_realtime_iud");
    assert_eq!(admin.text(subscription).await, first);

    // A TRUNCATE added by hand is kept; an unsubscribed table is published again.
    admin
        .exec(
            "UPDATE realtime.subscriptions SET operations = '{INSERT,UPDATE,DELETE,TRUNCATE}'
              WHERE schema_name = 'realtime' AND table_name = 'messages';
             ALTER PUBLICATION nself_realtime_iud DROP TABLE realtime.messages;
             ALTER PUBLICATION nself_realtime ADD TABLE realtime.messages;",
        )
        .await;
    admin.ok(&["init"]).await;
    assert_eq!(admin.text(published).await, "nself_realtime");
    admin
        .exec(
            "DELETE FROM realtime.subscriptions;
             ALTER PUBLICATION nself_realtime DROP TABLE realtime.messages;",
        )
        .await;
    admin.ok(&["init"]).await;
    assert_eq!(admin.text(published).await, "nself_realtime_iud");

    let identity = admin
        .text("SELECT relreplident::text FROM pg_class WHERE oid = 'realtime.messages'::regclass")
        .await;
    assert_eq!(identity, "f", "REPLICA IDENTITY FULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_commands_print_the_seed_shapes() {
    let admin = Admin::start().await;

    let out = admin.ok(&["channel", "create", "general"]).await;
    let general = admin.channel_id("general").await;
    assert_eq!(out, format!("✓ Channel created: general (ID: {general})\n"));
    let out = admin
        .ok(&["channel", "create", "Team Alpha", "private"])
        .await;
    let team = admin.channel_id("team-alpha").await;
    assert_eq!(out, format!("✓ Channel created: team-alpha (ID: {team})\n"));
    admin
        .ok(&[
            "channel",
            "create",
            "lobby",
            "presence",
            "--max-members",
            "2",
        ])
        .await;

    usage_error(
        admin.run(&["channel", "create", "General"]).await,
        "channel general already exists; pick another name or use --slug",
    );
    usage_error(
        admin.run(&["channel", "create", "x", "publik"]).await,
        "unknown channel type \"publik\": use public, private, presence or direct",
    );
    usage_error(
        admin.run(&["channel", "create", "!!!"]).await,
        "pass one with --slug",
    );
    usage_error(
        admin
            .run(&["channel", "create", "x", "--max-members", "0"])
            .await,
        "--max-members \"0\" must be a whole number from 1",
    );
    usage_error(
        admin
            .run(&["channel", "create", "x", "--metadata", "[1]"])
            .await,
        "--metadata must be a JSON object",
    );

    // Members.
    assert_eq!(
        admin.ok(&["channel", "join", "general", "user-123"]).await,
        "✓ Added user-123 to general (member, can send)\n"
    );
    assert_eq!(
        admin
            .ok(&["channel", "join", "general", "user-456", "--role", "admin"])
            .await,
        "✓ Added user-456 to general (admin, can send)\n"
    );
    assert_eq!(
        admin
            .ok(&[
                "channel",
                "join",
                "general",
                "user-123",
                "--role",
                "moderator"
            ])
            .await,
        "✓ Updated user-123 in general (moderator, can send)\n"
    );
    assert_eq!(
        admin
            .ok(&["channel", "join", "Team Alpha", "user-123", "--read-only"])
            .await,
        "✓ Added user-123 to team-alpha (member, read-only)\n"
    );
    admin.ok(&["channel", "join", "lobby", "a"]).await;
    admin.ok(&["channel", "join", "lobby", "b"]).await;
    usage_error(
        admin.run(&["channel", "join", "lobby", "c"]).await,
        "channel lobby is full (max_members 2): remove a member or raise max_members",
    );
    // A member already in a full channel may still change their membership.
    admin
        .ok(&["channel", "join", "lobby", "b", "--role", "guest"])
        .await;
    usage_error(
        admin
            .run(&["channel", "join", "general", "x", "--role", "king"])
            .await,
        "unknown role \"king\": use owner, admin, moderator, member or guest",
    );
    usage_error(
        admin.run(&["channel", "join", "nope", "x"]).await,
        "channel nope does not exist; `nself-realtime channel list` shows the channels",
    );

    assert_eq!(
        admin.ok(&["channel", "list"]).await,
        "Channels:\n\n\
         \x20 general          public      2 members\n\
         \x20 team-alpha       private     1 member\n\
         \x20 lobby            presence    2 members\n"
    );
    assert_eq!(
        admin.ok(&["channel", "list", "private"]).await,
        "Channels:\n\n\
         \x20 team-alpha       private     1 member\n"
    );
    assert_eq!(
        admin.ok(&["channel", "list", "direct"]).await,
        "Channels:\n\n  (no direct channels)\n"
    );
    usage_error(
        admin.run(&["channel", "list", "secret"]).await,
        "use all, public, private, presence or direct",
    );

    assert_eq!(
        admin.ok(&["channel", "members", "general"]).await,
        "Members of #general (2):\n\n\
         \x20 user-456    admin      can send\n\
         \x20 user-123    moderator  can send\n"
    );
    assert_eq!(
        admin.ok(&["channel", "members", &team]).await,
        "Members of #team-alpha (1):\n\n\
         \x20 user-123    member     read-only\n"
    );

    // get: a fixed creation time, 1,203 messages in the last 24 hours (plus an older one and a
    // deleted one, which do not count).
    admin
        .exec(&format!(
            "UPDATE realtime.channels SET created_at = '2026-01-15 08:30:00+00' WHERE slug = 'general';
             INSERT INTO realtime.messages (channel_id, user_id, content, sent_at)
             SELECT '{general}', 'user-123', 'm' || n, now() - interval '1 minute'
               FROM generate_series(1, 1203) n;
             INSERT INTO realtime.messages (channel_id, user_id, content, sent_at)
             VALUES ('{general}', 'user-123', 'old', now() - interval '2 days');
             INSERT INTO realtime.messages (channel_id, user_id, content, deleted_at)
             VALUES ('{general}', 'user-123', 'gone', now());"
        ))
        .await;
    assert_eq!(
        admin.ok(&["channel", "get", "general"]).await,
        format!(
            "Channel: general\nID: {general}\nType: public\nMembers: 2\n\
             Created: 2026-01-15 08:30:00\nMessages (24h): 1,203\n"
        )
    );
    assert_eq!(
        admin.ok(&["channel", "get", "lobby"]).await.lines().nth(3),
        Some("Members: 2 (max 2)")
    );
    usage_error(
        admin.run(&["channel", "get", "nope"]).await,
        "channel nope does not exist",
    );

    // --json documents.
    let created = admin
        .json(&[
            "channel",
            "create",
            "Releases",
            "public",
            "--slug",
            "room:42",
            "--ephemeral",
            "--metadata",
            r#"{"topic":"releases"}"#,
        ])
        .await;
    let room = admin.channel_id("room:42").await;
    assert_eq!(created["id"], json!(room));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let mut expected = json!({
        "id": room,
        "slug": "room:42",
        "name": "Releases",
        "type": "public",
        "max_members": null,
        "persist_messages": false,
        "metadata": {"topic": "releases"},
        "members": 0,
        "messages_24h": 0,
        "created_at": created["created_at"],
    });
    assert_eq!(created, expected);
    assert_eq!(admin.json(&["channel", "get", "room:42"]).await, expected);
    let list = admin.json(&["channel", "list", "public"]).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["slug"], "general");
    assert_eq!(list[0]["members"], 2);
    expected.as_object_mut().unwrap().remove("messages_24h");
    assert_eq!(list[1], expected);
    let general_json = admin.json(&["channel", "get", &general]).await;
    assert_eq!(general_json["messages_24h"], 1203);
    assert_eq!(general_json["created_at"], "2026-01-15T08:30:00.000000Z");

    let members = admin.json(&["channel", "members", "general"]).await;
    assert_eq!(members["channel"], "general");
    assert_eq!(members["id"], json!(general));
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    assert_eq!(members["members"][0]["user_id"], "user-456");
    assert_eq!(members["members"][0]["role"], "admin");
    assert_eq!(members["members"][0]["can_send"], true);
    assert!(members["members"][0]["joined_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        admin
            .json(&["channel", "join", "room:42", "user-9", "--read-only"])
            .await,
        json!({"channel": "room:42", "user_id": "user-9", "role": "member", "can_send": false, "added": true})
    );
    assert_eq!(
        admin.json(&["channel", "leave", "room:42", "user-9"]).await,
        json!({"channel": "room:42", "user_id": "user-9", "removed": true})
    );

    // leave and delete.
    assert_eq!(
        admin.ok(&["channel", "leave", "general", "user-123"]).await,
        "✓ Removed user-123 from general\n"
    );
    usage_error(
        admin
            .run(&["channel", "leave", "general", "user-123"])
            .await,
        "user-123 is not a member of general; `nself-realtime channel members general` lists them",
    );
    assert_eq!(
        admin.ok(&["channel", "delete", "team-alpha"]).await,
        "✓ Channel deleted: team-alpha (0 messages, 1 member)\n"
    );
    assert_eq!(
        admin.ok(&["channel", "delete", &general]).await,
        "✓ Channel deleted: general (1,205 messages, 1 member)\n"
    );
    assert_eq!(
        admin
            .text("SELECT count(*)::text FROM realtime.messages")
            .await,
        "0"
    );
    assert_eq!(
        admin.json(&["channel", "delete", "room:42"]).await,
        json!({"id": room, "slug": "room:42", "deleted": true, "messages_deleted": 0, "members_removed": 0})
    );
    usage_error(
        admin.run(&["channel", "delete", "general"]).await,
        "channel general does not exist",
    );
    assert_eq!(
        admin.ok(&["channel", "list"]).await,
        "Channels:\n\n\
         \x20 lobby            presence    2 members\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_replay_print_history_oldest_first() {
    let admin = Admin::start().await;
    admin.ok(&["channel", "create", "general"]).await;
    admin.ok(&["channel", "create", "empty"]).await;
    let general = admin.channel_id("general").await;
    admin
        .exec(&format!(
            "INSERT INTO realtime.messages
                 (id, channel_id, user_id, content, sent_at, edited_at, deleted_at, message_type, metadata, thread_id)
             VALUES
                 ('00000000-0000-0000-0000-000000000001', '{general}', 'user-123', 'Hello',
                  '2026-01-30 10:15:23.5+00', NULL, NULL, 'text', '{{}}', NULL),
                 ('00000000-0000-0000-0000-000000000002', '{general}', 'user-456', 'Hi there',
                  '2026-01-30 10:15:45+00', '2026-01-30 10:20:00+00', NULL, 'text', '{{}}', NULL),
                 ('00000000-0000-0000-0000-000000000003', '{general}', 'user-123', 'oops',
                  '2026-01-30 10:16:00+00', NULL, '2026-01-30 10:16:30+00', 'text', '{{}}', NULL),
                 ('00000000-0000-0000-0000-000000000004', '{general}', 'user-789', 'report.pdf',
                  '2026-01-30 10:17:00+00', NULL, NULL, 'file', '{{\"size\": 1024}}', 't-1');"
        ))
        .await;

    assert_eq!(
        admin.ok(&["messages", "general"]).await,
        "[2026-01-30 10:15:23] user-123: Hello\n\
         [2026-01-30 10:15:45] user-456: Hi there (edited)\n\
         [2026-01-30 10:17:00] user-789: report.pdf\n"
    );
    assert_eq!(
        admin.ok(&["messages", &general, "2"]).await,
        "[2026-01-30 10:15:45] user-456: Hi there (edited)\n\
         [2026-01-30 10:17:00] user-789: report.pdf\n"
    );
    assert_eq!(
        admin.ok(&["messages", "empty"]).await,
        "No messages in empty.\n"
    );
    assert_eq!(admin.json(&["messages", "empty"]).await, json!([]));
    let json = admin.json(&["messages", "general", "2"]).await;
    assert_eq!(
        json,
        json!([
            {
                "id": "00000000-0000-0000-0000-000000000002",
                "channel": "general",
                "user_id": "user-456",
                "content": "Hi there",
                "message_type": "text",
                "metadata": {},
                "thread_id": null,
                "sent_at": "2026-01-30T10:15:45.000000Z",
                "edited_at": "2026-01-30T10:20:00.000000Z",
            },
            {
                "id": "00000000-0000-0000-0000-000000000004",
                "channel": "general",
                "user_id": "user-789",
                "content": "report.pdf",
                "message_type": "file",
                "metadata": {"size": 1024},
                "thread_id": "t-1",
                "sent_at": "2026-01-30T10:17:00.000000Z",
                "edited_at": null,
            },
        ])
    );
    for bad in ["0", "1001", "many"] {
        usage_error(
            admin.run(&["messages", "general", bad]).await,
            "must be a number from 1 to 1000",
        );
    }
    usage_error(
        admin.run(&["messages", "nope"]).await,
        "channel nope does not exist",
    );

    // replay: from a time on (inclusive), in order; offsets and offset-less UTC times.
    let tail = "[2026-01-30 10:15:45] user-456: Hi there (edited)\n\
                [2026-01-30 10:17:00] user-789: report.pdf\n";
    assert_eq!(
        admin
            .ok(&["replay", "general", "2026-01-30T10:15:30Z"])
            .await,
        tail
    );
    assert_eq!(
        admin
            .ok(&["replay", "general", "2026-01-30T11:15:45+01:00"])
            .await,
        tail
    );
    assert_eq!(
        admin
            .ok(&["replay", "general", "2026-01-30 10:17:00"])
            .await,
        "[2026-01-30 10:17:00] user-789: report.pdf\n"
    );
    assert_eq!(
        admin
            .ok(&["replay", "general", "2026-01-30"])
            .await
            .lines()
            .count(),
        3
    );
    assert_eq!(
        admin.ok(&["replay", "general", "2026-01-31"]).await,
        "No messages in general since 2026-01-31T00:00:00Z.\n"
    );
    let json = admin
        .json(&["replay", "general", "2026-01-30T10:17:00Z"])
        .await;
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["id"], "00000000-0000-0000-0000-000000000004");
    usage_error(
        admin.run(&["replay", "general", "yesterday"]).await,
        "bad timestamp \"yesterday\": use ISO 8601, as in 2026-01-30T09:00:00Z",
    );

    // replay stops at 10,000 messages and says where to go on.
    admin
        .exec(&format!(
            "INSERT INTO realtime.messages (channel_id, user_id, content, sent_at)
             SELECT '{general}', 'bot', 'n' || n, '2026-02-01 00:00:00+00'::timestamptz + n * interval '1 second'
               FROM generate_series(1, 10005) n;"
        ))
        .await;
    let out = admin
        .ok(&["replay", "general", "2026-02-01T00:00:00Z"])
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10_001);
    assert_eq!(lines[0], "[2026-02-01 00:00:01] bot: n1");
    assert_eq!(lines[9_999], "[2026-02-01 02:46:40] bot: n10000");
    assert_eq!(
        lines[10_000],
        "(stopped after 10,000 messages; replay from 2026-02-01T02:46:40.000000Z for the rest)"
    );
    let capped = admin
        .run(&["--json", "replay", "general", "2026-02-01T00:00:00Z"])
        .await;
    let json: Value = serde_json::from_str(&ok_ref(&capped)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 10_000);
    assert!(stderr(&capped).contains("stopped after 10,000 messages"));
}

/// `ok` for an output that is inspected further afterwards.
fn ok_ref(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    stdout(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_counted_by_type() {
    let admin = Admin::start().await;
    admin.ok(&["channel", "create", "general"]).await;
    let general = admin.channel_id("general").await;
    admin
        .exec(&format!(
            "INSERT INTO realtime.events (type, user_id, channel, created_at)
             SELECT kind, 'user-1', 'general', now() - interval '1 hour'
               FROM (VALUES ('user.joined', 47), ('message.new', 1203), ('user.left', 39),
                            ('typing.start', 567)) AS t(kind, n),
                    generate_series(1, n);
             -- logged under the channel's id: the same channel
             INSERT INTO realtime.events (type, channel, created_at)
             VALUES ('user.left', '{general}', now() - interval '2 hours');
             -- older than a day, another channel, an ad-hoc topic
             INSERT INTO realtime.events (type, channel, created_at)
             VALUES ('user.joined', 'general', now() - interval '3 days'),
                    ('user.joined', 'other', now()),
                    ('cursor.move', 'room:7', now()),
                    ('cursor.move', 'room:7', now());"
        ))
        .await;

    assert_eq!(
        admin.ok(&["events", "general"]).await,
        "Event Types (last 24h):\n\n\
         \x20 message.new       1,203 events\n\
         \x20 typing.start      567 events\n\
         \x20 user.joined       47 events\n\
         \x20 user.left         40 events\n"
    );
    assert_eq!(
        admin.ok(&["events", "general", "168"]).await,
        "Event Types (last 168h):\n\n\
         \x20 message.new       1,203 events\n\
         \x20 typing.start      567 events\n\
         \x20 user.joined       48 events\n\
         \x20 user.left         40 events\n"
    );
    assert_eq!(
        admin.ok(&["events", "room:7"]).await,
        "Event Types (last 24h):\n\n\
         \x20 cursor.move       2 events\n"
    );
    assert_eq!(
        admin.ok(&["events", "quiet"]).await,
        "Event Types (last 24h):\n\n  (none logged for quiet; gateways log events when REALTIME_LOG_EVENTS is on)\n"
    );
    // The events logged an hour before they were inserted are past a one-hour window by now.
    assert_eq!(
        admin.json(&["events", "general", "1"]).await,
        json!({"channel": "general", "hours": 1, "events": []})
    );
    let json = admin.json(&["events", "general", "3"]).await;
    assert_eq!(json["events"][0]["type"], "message.new");
    assert_eq!(json["events"][0]["count"], 1203);
    assert!(json["events"][0]["last_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(json["events"].as_array().unwrap().len(), 4);
    for bad in ["0", "8761", "week"] {
        usage_error(
            admin.run(&["events", "general", bad]).await,
            "must be a number from 1 to 8760",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_reports_what_it_removed() {
    let admin = Admin::start().await;
    admin.ok(&["channel", "create", "general"]).await;
    let general = admin.channel_id("general").await;
    admin
        .exec(&format!(
            "INSERT INTO realtime.connections (id, gateway_id, protocol, last_seen, disconnected_at)
             VALUES ('stale', 'g1', 'phoenix', now() - interval '10 minutes', NULL),
                    ('live', 'g1', 'websocket', now(), NULL),
                    ('closed-long-ago', 'g1', 'socketio', now() - interval '40 days',
                     now() - interval '40 days'),
                    ('closed-recently', 'g1', 'phoenix', now() - interval '1 day',
                     now() - interval '1 day');
             INSERT INTO realtime.broadcasts (channel, event, expires_at)
             VALUES ('general', 'gone', now() - interval '1 second'),
                    ('general', 'kept', now() + interval '5 minutes');
             INSERT INTO realtime.messages (channel_id, user_id, content, sent_at)
             VALUES ('{general}', 'u', 'ancient', now() - interval '31 days'),
                    ('{general}', 'u', 'recent', now() - interval '29 days');
             INSERT INTO realtime.events (type, channel, created_at)
             VALUES ('old', 'general', now() - interval '31 days'),
                    ('new', 'general', now());"
        ))
        .await;

    assert_eq!(
        admin.ok(&["cleanup"]).await,
        "  Stale connections closed:    1\n\
         \x20 Expired broadcasts deleted:  1\n\
         \x20 Old messages deleted:        1\n\
         \x20 Old events deleted:          2\n\
         \n\
         ✓ Cleanup complete\n"
    );
    assert_eq!(
        admin
            .text(
                "SELECT string_agg(id || ':' || (disconnected_at IS NOT DISTINCT FROM last_seen
                                                 AND disconnected_at IS NOT NULL)::text,
                                   ',' ORDER BY id)
                   FROM realtime.connections"
            )
            .await,
        "closed-recently:true,live:false,stale:true"
    );
    assert_eq!(
        admin
            .text("SELECT string_agg(content, ',') FROM realtime.messages")
            .await,
        "recent"
    );

    // Nothing left to do; --json, and shorter windows.
    assert_eq!(
        admin.json(&["cleanup"]).await,
        json!({
            "stale_connections_closed": 0,
            "expired_broadcasts_deleted": 0,
            "old_messages_deleted": 0,
            "old_events_deleted": 0,
            "stale_seconds": 300,
            "retention_seconds": 2_592_000,
        })
    );
    let json = admin
        .json(&["cleanup", "--stale", "30s", "--retention", "2h"])
        .await;
    // The connection closed a day ago; the message of 29 days ago.
    assert_eq!(json["old_events_deleted"], 1, "{json}");
    assert_eq!(json["old_messages_deleted"], 1, "{json}");
    assert_eq!(json["stale_seconds"], 30);
    assert_eq!(json["retention_seconds"], 7_200);

    usage_error(
        admin.run(&["cleanup", "--stale", "5"]).await,
        "--stale \"5\" is not a duration: use a number and s, m, h or d, as in 5m or 30d",
    );
    usage_error(
        admin.run(&["cleanup", "--retention", "0d"]).await,
        "--retention \"0d\" must be more than 0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_without_the_schema_say_run_init() {
    let admin = Admin::uninitialised().await;
    for args in [
        &["channel", "list"][..],
        &["channel", "get", "general"],
        &["messages", "general"],
        &["events", "general"],
        &["cleanup"],
    ] {
        usage_error(admin.run(args).await, "run `nself-realtime init`");
    }
}

/// Runs `sql` in one transaction as `authenticated` with the claims of user `sub`, the way the
/// gateway does; the transaction is rolled back unless `commit`.
async fn as_user(
    client: &mut tokio_postgres::Client,
    sub: &str,
    sql: &str,
    commit: bool,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL ROLE authenticated").await?;
    let claims = json!({ "sub": sub, "role": "authenticated" }).to_string();
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims],
    )
    .await?;
    let rows = tx.query(sql, &[]).await?;
    if commit {
        tx.commit().await?;
    }
    Ok(rows)
}

fn sql_state(result: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> SqlState {
    match result {
        Ok(rows) => panic!("expected an error, got {} rows", rows.len()),
        Err(e) => e.code().expect("a server error").clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_policies_decide_who_reads_and_sends() {
    let mut admin = Admin::start().await;
    admin.ok(&["channel", "create", "general"]).await;
    admin.ok(&["channel", "create", "secret", "private"]).await;
    admin
        .ok(&["channel", "create", "announcements", "private"])
        .await;
    admin.ok(&["channel", "join", "secret", "u2"]).await;
    admin
        .ok(&["channel", "join", "announcements", "u1", "--read-only"])
        .await;
    let general = admin.channel_id("general").await;
    let secret = admin.channel_id("secret").await;
    admin
        .exec(&format!(
            "INSERT INTO realtime.messages (channel_id, user_id, content)
             VALUES ('{secret}', 'u2', 'for members only');"
        ))
        .await;
    let sql = &mut admin.sql;

    // A non-member neither reads a private channel's messages nor sends to it.
    let seen = as_user(
        sql,
        "u1",
        &format!("SELECT count(*) FROM realtime.messages WHERE channel_id = '{secret}'"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(seen[0].get::<_, i64>(0), 0);
    let refused = as_user(
        sql,
        "u1",
        "SELECT * FROM realtime.send_message('secret', 'let me in')",
        false,
    )
    .await;
    let err = refused
        .as_ref()
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_string();
    assert_eq!(err, "channel secret does not exist or you are not a member");
    assert_eq!(sql_state(refused), SqlState::NO_DATA_FOUND);
    // Not by a direct INSERT either.
    assert_eq!(
        sql_state(
            as_user(
                sql,
                "u1",
                &format!(
                    "INSERT INTO realtime.messages (channel_id, content) VALUES ('{secret}', 'x')"
                ),
                false,
            )
            .await
        ),
        SqlState::INSUFFICIENT_PRIVILEGE
    );

    // A member reads them.
    let seen = as_user(
        sql,
        "u2",
        &format!("SELECT content FROM realtime.messages WHERE channel_id = '{secret}'"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get::<_, String>(0), "for members only");

    // A member without can_send cannot send.
    let refused = as_user(
        sql,
        "u1",
        "SELECT * FROM realtime.send_message('announcements', 'hello')",
        false,
    )
    .await;
    let err = refused
        .as_ref()
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_string();
    assert_eq!(err, "you may not send messages to channel announcements");
    assert_eq!(sql_state(refused), SqlState::INSUFFICIENT_PRIVILEGE);

    // Anyone authenticated sends to a public channel, as themselves; the row comes back.
    let sent = as_user(
        sql,
        "u1",
        "SELECT id::text, channel_id::text, user_id, content, message_type, metadata::text,
                thread_id, sent_at IS NOT NULL, edited_at, deleted_at
           FROM realtime.send_message('general', 'hello world', 'event', '{\"k\": 1}', 't-9')",
        true,
    )
    .await
    .unwrap();
    assert_eq!(sent.len(), 1);
    let row = &sent[0];
    assert_eq!(row.get::<_, String>(1), general);
    assert_eq!(row.get::<_, String>(2), "u1");
    assert_eq!(row.get::<_, String>(3), "hello world");
    assert_eq!(row.get::<_, String>(4), "event");
    assert_eq!(row.get::<_, String>(5), r#"{"k": 1}"#);
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("t-9"));
    assert!(row.get::<_, bool>(7));
    let id: String = row.get(0);
    assert_eq!(
        admin
            .text(&format!(
                "SELECT user_id FROM realtime.messages WHERE id = '{id}'"
            ))
            .await,
        "u1"
    );
    let sql = &mut admin.sql;

    // The author cannot be forged, and sent messages cannot be moved to another channel.
    assert_eq!(
        sql_state(
            as_user(
                sql,
                "u1",
                &format!(
                    "INSERT INTO realtime.messages (channel_id, user_id, content)
                     VALUES ('{general}', 'u2', 'as someone else')"
                ),
                false,
            )
            .await
        ),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        sql_state(
            as_user(
                sql,
                "u1",
                &format!("UPDATE realtime.messages SET channel_id = '{secret}' WHERE id = '{id}'"),
                false,
            )
            .await
        ),
        SqlState::INSUFFICIENT_PRIVILEGE
    );

    // Only the author edits and deletes (soft: deleted_at).
    assert_eq!(
        sql_state(
            as_user(
                sql,
                "u2",
                &format!("SELECT * FROM realtime.edit_message('{id}', 'hijacked')"),
                false,
            )
            .await
        ),
        SqlState::NO_DATA_FOUND
    );
    let edited = as_user(
        sql,
        "u1",
        &format!(
            "SELECT content, edited_at IS NOT NULL FROM realtime.edit_message('{id}', 'hello again')"
        ),
        true,
    )
    .await
    .unwrap();
    assert_eq!(edited[0].get::<_, String>(0), "hello again");
    assert!(edited[0].get::<_, bool>(1));
    let deleted = as_user(
        sql,
        "u1",
        &format!("SELECT deleted_at IS NOT NULL FROM realtime.delete_message('{id}')"),
        true,
    )
    .await
    .unwrap();
    assert!(deleted[0].get::<_, bool>(0));
    assert_eq!(
        admin.ok(&["messages", "general"]).await,
        "No messages in general.\n"
    );

    // Members of a channel are listed for its members only.
    let sql = &mut admin.sql;
    let members = as_user(
        sql,
        "u2",
        "SELECT user_id, role FROM realtime.get_channel_members('secret')",
        false,
    )
    .await
    .unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].get::<_, String>(0), "u2");
    assert_eq!(
        sql_state(
            as_user(
                sql,
                "u1",
                "SELECT * FROM realtime.get_channel_members('secret')",
                false
            )
            .await
        ),
        SqlState::NO_DATA_FOUND
    );
}
