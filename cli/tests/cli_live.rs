//! The built `nself-realtime` binary's operators' commands against real running gateways:
//! `connections`, `stats`, `status`, `presence ...` and `broadcast`, over NATS across two
//! gateways (every gateway answers; figures are summed) and over HTTP to one gateway (no
//! NATS_URL, as under `up`); `start`/`status`/`logs`/`restart`/`stop` running a real `up` in
//! the background; and exit 2 with the fix on misuse.
//!
//! Clients are real: Socket.IO sockets (whose room joins track presence with `{userId,
//! status}`) and Phoenix sockets (realtime-js' protocol, tracking presence themselves). Text
//! output is compared with ids, uptimes and relative times masked and runs of spaces collapsed
//! ([`normalize`]); column alignment is checked on its own.

use realtime_tests::cli_output::{ok, stderr, stdout, usage_error};
use realtime_tests::cli_project::{ProjectDir, CLI_VARIABLES};
use realtime_tests::{free_port, token, PhoenixClient, SocketIoClient, Stack, TEST_JWT_SECRET};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

/// Failure guard for anything awaited.
const LIMIT: Duration = Duration::from_secs(90);

/// The CLI with a given environment, run in its own empty directory.
struct Cli {
    env: Vec<(String, String)>,
    cwd: ProjectDir,
}

impl Cli {
    fn new(env: &[(&str, &str)]) -> Cli {
        Cli {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: ProjectDir::new("cli-live", "cwd"),
        }
    }

    /// Every gateway of `stack` over NATS; its database; broadcasts through gateway 0.
    fn nats(stack: &Stack) -> Cli {
        Cli::new(&[
            ("NATS_URL", &stack.nats.url),
            ("DATABASE_URL", &stack.db.url),
            ("REALTIME_URL", &stack.gateways[0].http_url()),
            ("REALTIME_JWT_SECRET", TEST_JWT_SECRET),
        ])
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nself-realtime"));
        command.args(args).current_dir(&self.cwd.0);
        for var in CLI_VARIABLES {
            command.env_remove(var);
        }
        command
            .env("LOG_LEVEL", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(LIMIT, self.command(args).output())
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
}

/// Whether `word` is a gateway id (16 hex digits), optionally with `-<connection number>`.
fn id_kind(word: &str) -> Option<&'static str> {
    let (gateway, conn) = match word.split_once('-') {
        Some((g, c)) => (g, Some(c)),
        None => (word, None),
    };
    if gateway.len() != 16 || !gateway.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match conn {
        None => Some("<gw>"),
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => Some("<conn>"),
        Some(_) => None,
    }
}

/// `5s`, `12m`, `3h`, `2d`.
fn is_span(word: &str) -> bool {
    word.is_ascii()
        && word.len() >= 2
        && word[..word.len() - 1].chars().all(|c| c.is_ascii_digit())
        && word.ends_with(['s', 'm', 'h', 'd'])
}

/// Masks ids, uptimes and relative times, and collapses runs of spaces inside lines.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut out: Vec<String> = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let word = words[i];
                let bare = word.trim_end_matches([')', ',']);
                if let Some(kind) = id_kind(bare) {
                    out.push(format!("{kind}{}", &word[bare.len()..]));
                } else if word == "up" && words.get(i + 1).is_some_and(|w| is_span(w)) {
                    // `up 5m 12s`
                    i += 1;
                    while words.get(i + 1).is_some_and(|w| is_span(w)) {
                        i += 1;
                    }
                    out.push("up <t>".into());
                } else if is_span(word) && words.get(i + 1) == Some(&"ago") {
                    i += 1;
                    out.push("<ago>".into());
                } else if word == "now" || (word == "just" && words.get(i + 1) == Some(&"now")) {
                    if word == "just" {
                        i += 1;
                    }
                    out.push("<ago>".into());
                } else {
                    out.push(word.into());
                }
                i += 1;
            }
            format!("{}{}", " ".repeat(indent), out.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The char column where `needle` starts on each line that has it.
fn columns(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.find(needle).map(|at| l[..at].chars().count()))
        .collect()
}

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

/// A Phoenix client as `sub` on `realtime:<channel>`, tracking presence under its name with
/// `status`.
async fn phoenix_tracking(url: &str, channel: &str, sub: &str, status: &str) -> PhoenixClient {
    let mut client = PhoenixClient::connect(url).await.unwrap();
    let topic = format!("realtime:{channel}");
    let (join_ref, reply) = client
        .join(
            &topic,
            json!({"config": {"presence": {"enabled": true, "key": sub}}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let track = client
        .push(
            Some(&join_ref),
            &topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"status": status}}),
        )
        .await;
    assert_eq!(client.reply_to(&track).await["status"], "ok");
    client
}

#[tokio::test]
async fn over_nats_every_gateway_answers_and_figures_are_summed() {
    let stack = Stack::start(2, &[]).await;
    let (g0, g1) = (&stack.gateways[0], &stack.gateways[1]);
    stack
        .sql(
            "INSERT INTO realtime.channels (name, slug, type) VALUES
                 ('ops', 'ops', 'public'), ('lobby', 'lobby', 'presence'), ('team', 'team', 'private')",
        )
        .await;
    let mut alice = SocketIoClient::connect(g0.port, "alice").await;
    alice.join("ops").await;
    let mut bob = SocketIoClient::connect(g1.port, "bob").await;
    bob.join("ops").await;
    bob.send(r#"422["message:send",{"roomName":"ops","content":"hi"}]"#)
        .await;
    bob.next_starting("432[").await;
    let mut carol = phoenix_tracking(
        &g1.websocket_url(&user("carol"), "1.0.0"),
        "lobby",
        "carol",
        "away",
    )
    .await;
    let cli = Cli::nats(&stack);

    // connections: three sockets on two gateways.
    let text = cli.ok(&["connections"]).await;
    println!("{text}");
    let normalized = normalize(&text);
    let mut lines: Vec<&str> = normalized.lines().collect();
    assert_eq!(lines[..2], ["Active Connections: 3", ""], "{text}");
    lines.drain(..2);
    lines.sort();
    assert_eq!(
        lines,
        [
            "  <conn> alice ops Connected <ago>",
            "  <conn> bob ops Connected <ago>",
            "  <conn> carol lobby Connected <ago>",
        ],
        "{text}"
    );
    assert_eq!(
        columns(&text, "Connected")
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "{text}"
    );
    let json = cli.json(&["connections"]).await;
    assert_eq!(json["active"], 3, "{json}");
    assert_eq!(json["gateways"].as_array().unwrap().len(), 2, "{json}");
    let mut users: Vec<&str> = json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob", "carol"]);
    let protocols: Vec<&str> = json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["protocol"].as_str().unwrap())
        .collect();
    assert!(
        protocols.contains(&"socketio") && protocols.contains(&"phoenix"),
        "{json}"
    );

    // Presence from the shared store, whichever gateway answers.
    let text = cli.ok(&["presence", "online", "ops"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        "Online Users (ops): 2\n\n  alice online <ago>\n  bob online <ago>",
        "{text}"
    );
    let text = cli.ok(&["presence", "online"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        "Online Users: 3\n\n  alice online <ago> ops\n  bob online <ago> ops\n  carol away <ago> lobby",
        "{text}"
    );
    assert_eq!(columns(&text, "ops").len(), 2);
    let text = cli.ok(&["presence", "count"]).await;
    assert_eq!(text, "Online: 2\nAway: 1\nBusy: 0\nOffline: 0\nTotal: 3\n");
    let text = cli.ok(&["presence", "get", "carol"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        "Presence: carol\n\n  lobby away Last seen: <ago>",
        "{text}"
    );
    let text = cli.ok(&["presence", "stats"]).await;
    println!("{text}");
    assert_eq!(
        text,
        "Presence Statistics:\n\n  Total users tracked:     3\n  Currently online:        2\n  Currently away:          1\n  Currently busy:          0\n  Currently offline:       0\n\n  Channels with presence:  2\n  Average presence/channel: 2\n"
    );

    // presence track: one owner, the same one every time, so the status changes in place.
    let text = cli.ok(&["presence", "track", "dave", "ops", "busy"]).await;
    assert_eq!(
        normalize(&text),
        "✓ Tracking dave in ops as busy (gateway <gw>)",
        "{text}"
    );
    let first_owner = cli
        .json(&["presence", "track", "dave", "ops", "offline"])
        .await;
    let got = cli.json(&["presence", "get", "dave"]).await;
    assert_eq!(got["presence"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["presence"][0]["status"], "offline", "{got}");
    assert_eq!(got["presence"][0]["connections"], 1, "{got}");
    let second_owner = cli
        .json(&["presence", "track", "dave", "ops", "away"])
        .await;
    assert_eq!(first_owner["gateway"], second_owner["gateway"]);
    let count = cli.json(&["presence", "count", "ops"]).await;
    assert_eq!(
        count,
        json!({"channel": "ops", "online": 2, "away": 1, "busy": 0, "offline": 0, "total": 3})
    );
    // Alice's client sees dave through the presence events of its room.
    loop {
        let event = alice.next_starting(r#"42["presence:"#).await;
        if event.contains(r#""dave""#) {
            break;
        }
    }
    let text = cli.ok(&["presence", "offline", "dave"]).await;
    assert_eq!(text, "✓ dave is offline in every channel\n");
    let text = cli.ok(&["presence", "get", "dave"]).await;
    assert_eq!(text, "Presence: dave\n\n  (not present in any channel)\n");
    // What a live connection tracks stays until it leaves.
    let text = cli.ok(&["presence", "offline", "alice", "ops"]).await;
    assert_eq!(
        text,
        "✓ alice is offline in ops\n  still present through live connections in: ops (they leave when those connections do)\n"
    );

    // stats: connections and messages summed over both gateways, channels from the database.
    let stats = cli.json(&["stats"]).await;
    println!("{stats}");
    assert_eq!(stats["gateways"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["connections"]["active"], 3, "{stats}");
    assert_eq!(
        stats["connections"]["by_protocol"],
        json!({"phoenix": 1, "socketio": 2})
    );
    assert_eq!(stats["messages_since_start"]["sent"], 1, "{stats}");
    assert_eq!(stats["channels"]["total"], 3, "{stats}");
    assert_eq!(
        stats["channels"]["by_type"],
        json!({"presence": 1, "private": 1, "public": 1})
    );
    assert_eq!(
        stats["presence"],
        json!({"users": 3, "online": 2}),
        "{stats}"
    );
    assert_eq!(stats["per_gateway"].as_array().unwrap().len(), 2);
    let text = cli.ok(&["stats"]).await;
    println!("{text}");
    let text = normalize(&text);
    let expected_start = "Real-Time Statistics:\n\nWebSocket Connections:\n  Active: 3\n  Peak (since start): 3 (sum of 2 gateways' peaks)\n  Gateways: 2\n\nChannels:\n  Total: 3\n  Public: 1\n  Private: 1\n  Presence: 1\n  With subscribers now: 2\n\nMessages (since start):\n  Sent: 1\n  Client broadcasts: 0\n  Failed: 0\n";
    assert!(text.starts_with(expected_start), "{text}");
    // `init` subscribes realtime.messages.
    assert!(
        text.contains(
            "\nDatabase Subscriptions:\n  Active: 1\n  Tables monitored: 1\n  Changes delivered: "
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\nPresence:\n  Users tracked: 3\n  Currently online: 2"),
        "{text}"
    );

    // status: both gateways, the database's counts, presence.
    let text = cli.ok(&["status"]).await;
    println!("{text}");
    let normalized = normalize(&text);
    let lines: Vec<&str> = normalized.lines().collect();
    assert_eq!(lines[..2], ["Real-Time System Status", ""]);
    assert_eq!(
        lines[2],
        // The account's credentials are not shown.
        format!(
            "✓ WebSocket server running (2 gateways via NATS nats://***@127.0.0.1:{})",
            stack.nats.port
        )
    );
    let mut per_gateway = lines[3..5].to_vec();
    per_gateway.sort();
    assert_eq!(
        per_gateway,
        [
            "    <gw> up <t> 1 connection",
            "    <gw> up <t> 2 connections"
        ]
    );
    assert_eq!(
        lines[5..],
        [
            "✓ 3 active connections",
            "✓ 3 channels (1 public, 1 private, 1 presence)",
            "✓ 1 active subscription",
            "✓ Presence tracking enabled (3 users in 2 channels)",
        ]
    );

    // broadcast through gateway 0 reaches carol on gateway 1, and is recorded.
    let text = cli
        .ok(&["broadcast", "lobby", "message.new", r#"{"text": "Hello!"}"#])
        .await;
    assert_eq!(
        text,
        "✓ Broadcast message.new to lobby\n  recorded in realtime.broadcasts\n"
    );
    let got = carol.expect(|f| f.event == "broadcast").await;
    assert_eq!(
        got.payload,
        json!({"type": "broadcast", "event": "message.new", "payload": {"text": "Hello!"}})
    );
    let db = stack.db.connect().await;
    let row = db
        .query_one(
            "SELECT channel, event, payload::text, sent_by FROM realtime.broadcasts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3)
        ),
        (
            "lobby".into(),
            "message.new".into(),
            r#"{"text": "Hello!"}"#.into(),
            "cli".into()
        )
    );
    drop(alice);
}

#[tokio::test]
async fn over_http_one_gateway_answers_with_a_service_role_token() {
    let stack = Stack::start(1, &[]).await;
    let gateway = &stack.gateways[0];
    let url = gateway.http_url();
    let mut watcher = PhoenixClient::connect(&gateway.websocket_url(&user("watcher"), "2.0.0"))
        .await
        .unwrap();
    let (_, reply) = watcher.join("realtime:general", json!({})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let cli = Cli::new(&[
        ("REALTIME_URL", &url),
        ("REALTIME_JWT_SECRET", TEST_JWT_SECRET),
    ]);

    let connections = cli.json(&["connections"]).await;
    assert_eq!(connections["active"], 1, "{connections}");
    assert_eq!(connections["connections"][0]["user_id"], "watcher");
    assert_eq!(connections["connections"][0]["protocol"], "phoenix");
    let text = cli.ok(&["connections"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        "Active Connections: 1\n\n  <conn> watcher general Connected <ago>"
    );

    // track, get, offline.
    let text = cli.ok(&["presence", "track", "user-123", "general"]).await;
    assert_eq!(
        normalize(&text),
        "✓ Tracking user-123 in general as online (gateway <gw>)"
    );
    cli.ok(&["presence", "track", "user-123", "team-alpha", "away"])
        .await;
    let text = cli.ok(&["presence", "get", "user-123"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        "Presence: user-123\n\n  general online Last seen: <ago>\n  team-alpha away Last seen: <ago>"
    );
    assert_eq!(columns(&text, "Last seen"), [30, 30], "{text}");
    let got = cli.json(&["presence", "get", "user-123", "general"]).await;
    assert_eq!(got["presence"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["presence"][0]["metas"][0]["source"], "cli", "{got}");
    let text = cli
        .ok(&["presence", "offline", "user-123", "general"])
        .await;
    assert_eq!(text, "✓ user-123 is offline in general\n");
    let text = cli.ok(&["presence", "get", "user-123"]).await;
    assert_eq!(
        normalize(&text),
        "Presence: user-123\n\n  team-alpha away Last seen: <ago>"
    );
    cli.ok(&["presence", "offline", "user-123"]).await;
    assert_eq!(
        cli.ok(&["presence", "count"]).await,
        "Online: 0\nAway: 0\nBusy: 0\nOffline: 0\nTotal: 0\n"
    );

    // broadcast reaches the subscribed client; without a database nothing is recorded.
    let sent = cli
        .json(&[
            "broadcast",
            "general",
            "user.joined",
            r#"{"user_id": "123"}"#,
        ])
        .await;
    assert_eq!(sent["recorded"], false, "{sent}");
    let got = watcher.expect(|f| f.event == "broadcast").await;
    assert_eq!(got.payload["event"], "user.joined");
    assert_eq!(got.payload["payload"], json!({"user_id": "123"}));

    // status over HTTP, without a database.
    let text = cli.ok(&["status"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        format!(
            "Real-Time System Status\n\n✓ WebSocket server running (1 gateway via {url})\n    <gw> up <t> 1 connection\n✓ 1 active connection\n- Channels and subscriptions: n/a (set DATABASE_URL)\n✓ Presence tracking enabled (0 users in 0 channels)"
        )
    );
    let status = cli.json(&["status"]).await;
    assert_eq!(status["running"], true);
    assert_eq!(status["connections"], 1);
    assert_eq!(status["channels"], Value::Null);

    // stats without a database says what is missing instead of inventing figures.
    let text = normalize(&cli.ok(&["stats"]).await);
    assert!(
        text.contains("Channels:\n  Total: n/a (set DATABASE_URL)\n  With subscribers now: 1\n"),
        "{text}"
    );
    assert!(
        text.contains("Database Subscriptions:\n  Active: n/a (set DATABASE_URL)\n"),
        "{text}"
    );

    // Without a secret, status still sees the gateway through /health; the rest needs one.
    let anonymous = Cli::new(&[("REALTIME_URL", &url)]);
    let text = anonymous.ok(&["status"]).await;
    assert!(
        normalize(&text).contains("✓ 1 active connection\n"),
        "{text}"
    );
    assert!(text.ends_with("✓ Presence tracking enabled\n"), "{text}");
    usage_error(
        anonymous.run(&["connections"]).await,
        "set REALTIME_JWT_SECRET to the gateways' secret",
    );
    let wrong = Cli::new(&[
        ("REALTIME_URL", &url),
        (
            "REALTIME_JWT_SECRET",
            "not-the-secret-not-the-secret-not-the-secret",
        ),
    ]);
    usage_error(
        wrong.run(&["presence", "count"]).await,
        "refused the service_role token",
    );
    usage_error(
        wrong.run(&["broadcast", "general", "e", "{}"]).await,
        "refused the broadcast",
    );
    // The kept secret of `up` in the working directory is used when no secret is set.
    let kept = Cli::new(&[("REALTIME_URL", &url)]);
    std::fs::create_dir_all(kept.cwd.0.join(".nself-realtime")).unwrap();
    std::fs::write(
        kept.cwd.0.join(".nself-realtime/jwt_secret"),
        format!("{TEST_JWT_SECRET}\n"),
    )
    .unwrap();
    assert_eq!(kept.json(&["connections"]).await["active"], 1);
}

#[tokio::test]
async fn misuse_exits_2_with_the_fix_and_nothing_running_is_said() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let cli = Cli::new(&[
        ("REALTIME_URL", &nowhere),
        ("REALTIME_JWT_SECRET", TEST_JWT_SECRET),
    ]);
    usage_error(
        cli.run(&["presence", "track", "user-123", "general", "idle"])
            .await,
        "unknown status \"idle\": use online, away, busy or offline",
    );
    usage_error(
        cli.run(&["broadcast", "general", "message.new", "{text: hi}"])
            .await,
        r#"the payload is not JSON (key must be a string at line 1 column 2); quote it for the shell, e.g. broadcast general message.new '{"text": "Hello!"}'"#,
    );
    usage_error(
        cli.run(&["presence", "track", "", "general"]).await,
        "name a user: presence track <user> <channel>",
    );
    // Missing arguments: one line, exit 2, with the usage that fixes it.
    for (args, usage) in [
        (
            &["presence", "track", "user-123"][..],
            "<USER> <CHANNEL> [STATUS]",
        ),
        (
            &["broadcast", "general", "message.new"][..],
            "<CHANNEL> <EVENT> <PAYLOAD>",
        ),
        (&["presence", "get"][..], "<USER> [CHANNEL]"),
    ] {
        let output = cli.run(args).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(
            err.trim().ends_with(&format!("{usage} (see --help)")),
            "{args:?}: {err}"
        );
    }
    usage_error(
        Cli::new(&[("REALTIME_URL", "https://gateway.example.com")])
            .run(&["presence", "count"])
            .await,
        "use the gateway's plain http address, or NATS_URL",
    );
    usage_error(
        Cli::new(&[("NATS_URL", "not a url")])
            .run(&["connections"])
            .await,
        "use nats://host:4222",
    );

    // Nothing listens: status says how it tried and exits 1; so do the others.
    let output = cli.run(&["status"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        format!("Real-Time System Status\n\n✗ WebSocket server not reachable (cannot connect to {nowhere}: Connection refused (os error 111))\n- Channels and subscriptions: n/a (set DATABASE_URL)\n")
    );
    assert!(stderr(&output).contains("start one (`nself-realtime start`, `up` or `gateway`)"));
    let status =
        serde_json::from_str::<Value>(&stdout(&cli.run(&["--json", "status"]).await)).unwrap();
    assert_eq!(status["running"], false);
    assert!(status["reason"]
        .as_str()
        .unwrap()
        .contains("Connection refused"));
    let output = cli.run(&["connections"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("cannot connect to {nowhere}")),
        "{}",
        stderr(&output)
    );
    let nats = Cli::new(&[("NATS_URL", &format!("nats://127.0.0.1:{}", free_port()))]);
    let output = nats.run(&["stats"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot connect to NATS"),
        "{}",
        stderr(&output)
    );

    // The background service is not running here.
    assert_eq!(cli.ok(&["stop"]).await, "nself-realtime is not running\n");
    assert_eq!(
        cli.json(&["stop"]).await,
        json!({"was_running": false, "pid": null, "forced": false})
    );
    let output = cli.run(&["logs"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("it is written by `nself-realtime start`"),
        "{}",
        stderr(&output)
    );
}

/// Stops whatever a test's `start` left running, even when the test failed: `stop`, then
/// SIGKILL for the pid file's process and `pg_ctl stop` for the local cluster.
struct Background<'a> {
    cli: &'a Cli,
}

impl Drop for Background<'_> {
    fn drop(&mut self) {
        let dir = self.cli.cwd.0.join(".nself-realtime");
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_nself-realtime"))
            .args(["stop", "--timeout", "10"])
            .current_dir(&self.cli.cwd.0)
            .env_remove("NSELF_REALTIME_DIR")
            .status();
        if let Ok(pid) = std::fs::read_to_string(dir.join("realtime.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
        stop_local_postgres(&dir);
    }
}

fn stop_local_postgres(dir: &Path) {
    let data = dir.join("postgres");
    if !data.join("postmaster.pid").exists() {
        return;
    }
    if let Ok(bin) = nself_realtime_local_postgres::bin_dir() {
        let _ = nself_realtime_local_postgres::postgres_user_command(&bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data)
            .status();
    }
}

#[tokio::test]
async fn start_runs_up_in_the_background_until_stop() {
    let port = free_port();
    let cli = Cli::new(&[
        ("REALTIME_HOST", "127.0.0.1"),
        ("REALTIME_PORT", &port.to_string()),
        ("REALTIME_CDC_PORT", &free_port().to_string()),
        ("REALTIME_CDC_HTTP_PORT", &free_port().to_string()),
        ("LOG_LEVEL", "info"),
    ]);
    let _cleanup = Background { cli: &cli };
    let dir = cli.cwd.0.join(".nself-realtime");

    let text = cli.ok(&["start", "--timeout", "90"]).await;
    println!("{text}");
    let pid: u32 = std::fs::read_to_string(dir.join("realtime.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(text.starts_with("nself-realtime is up\n"), "{text}");
    assert!(
        text.contains(&format!("  Supabase URL     http://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.ends_with(&format!(
        "✓ Running in the background (pid {pid}); logs: .nself-realtime/realtime.log (`nself-realtime logs`); stop: `nself-realtime stop`\n"
    )), "{text}");
    assert!(!text.contains("Ctrl-C"), "{text}");

    // A second start is refused; status finds it with the secret and cluster `up` keeps.
    usage_error(
        cli.run(&["start"]).await,
        "stop it with `nself-realtime stop`",
    );
    let text = cli.ok(&["status"]).await;
    println!("{text}");
    assert_eq!(
        normalize(&text),
        format!(
            "Real-Time System Status\n\n✓ WebSocket server running (1 gateway via http://127.0.0.1:{port})\n    <gw> up <t> 0 connections\n✓ Running in the background (pid {pid}, log .nself-realtime/realtime.log)\n✓ 0 active connections\n✓ 0 channels (0 public, 0 private, 0 presence)\n✓ 2 active subscriptions\n✓ Presence tracking enabled (0 users in 0 channels)"
        )
    );
    cli.ok(&["presence", "track", "user-1", "general"]).await;
    assert!(cli
        .ok(&["presence", "count"])
        .await
        .starts_with("Online: 1\n"));
    let text = cli.ok(&["logs", "-n", "3"]).await;
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in the log: {text:?}"
    );
    let logs = cli.json(&["logs", "-n", "1000"]).await;
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("nself-realtime is up")),
        "{logs}"
    );

    // logs --follow prints what is appended.
    let mut follow = cli
        .command(&["logs", "-n", "0", "--follow"])
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("realtime.log"))
            .unwrap();
        writeln!(log, "a line for --follow").unwrap();
    }
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("logs --follow prints the new line")
            .unwrap()
            .expect("logs --follow still runs");
        if line == "a line for --follow" {
            break;
        }
    }
    follow.kill().await.unwrap();

    // restart: a new process, the same service.
    let text = cli.ok(&["restart"]).await;
    assert!(
        text.starts_with(&format!(
            "✓ Stopped nself-realtime (pid {pid})\nnself-realtime is up\n"
        )),
        "{text}"
    );
    let pid: u32 = std::fs::read_to_string(dir.join("realtime.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(cli.ok(&["status"]).await.contains(&format!("(pid {pid}, ")));

    let text = cli.ok(&["stop"]).await;
    assert_eq!(text, format!("✓ Stopped nself-realtime (pid {pid})\n"));
    assert!(!dir.join("realtime.pid").exists());
    assert!(
        !dir.join("postgres/postmaster.pid").exists(),
        "up's local Postgres still runs"
    );
    let output = cli.run(&["status"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert_eq!(cli.ok(&["stop"]).await, "nself-realtime is not running\n");
}
