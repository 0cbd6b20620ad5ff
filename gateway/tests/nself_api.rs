//! The nself API's edges, against real gateways, Postgres and NATS: what the JS clients of
//! `tests/js/` cannot easily show. Raw Engine.IO/Socket.IO packets (handshake shape, other
//! namespaces, malformed and binary packets, the server's pings), the transports and versions
//! refused at the upgrade, connections per IP, the operators' API over NATS across two
//! gateways, and the event log written to Postgres.

use futures::StreamExt;
use realtime_tests::{http_request, token, ws_connect, SocketIoClient, Stack};
use serde_json::{json, Value};
use std::time::Duration;

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

#[tokio::test]
async fn socket_io_packets_at_the_edges() {
    let stack = Stack::start(1, &[("REALTIME_HEARTBEAT_INTERVAL", "2")]).await;
    let port = stack.gateways[0].port;
    let (mut socket, open) = SocketIoClient::open(port).await;
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(
        open["pingInterval"], 2000,
        "the ping follows a short heartbeat"
    );
    assert_eq!(open["pingTimeout"], 20000);
    // Another namespace is refused; the default one still works.
    socket.send(r#"40/admin,{"token":"x"}"#).await;
    let refused = socket.next_text().await;
    assert!(refused.starts_with("44/admin,"), "{refused}");
    socket
        .send(&format!("40{}", json!({"token": user("u1")})))
        .await;
    socket.next_starting("40{").await;
    // Malformed and binary packets get an error event and the socket stays.
    for bad in ["4", "42[oops", "47", "42{}"] {
        socket.send(bad).await;
        let error = socket.next_starting(r#"42["error""#).await;
        assert!(error.contains("VALIDATION_ERROR"), "{bad}: {error}");
    }
    socket.send_binary(vec![1, 2, 3]).await;
    let error = socket.next_starting(r#"42["error""#).await;
    assert!(error.contains("binary"), "{error}");
    // An event with an ack id is answered on that id.
    socket.send(r#"427["ping"]"#).await;
    let ack = socket.next_starting("437[").await;
    assert!(ack.contains("timestamp"), "{ack}");
    // The server pings every pingInterval; answering keeps the socket.
    let ping = socket.next_starting("2").await;
    assert_eq!(ping, "2");
    socket.send("3").await;
    socket.send(r#"42["ping"]"#).await;
    socket.next_starting(r#"42["pong""#).await;
}

#[tokio::test]
async fn upgrades_refused_with_the_fix() {
    let stack = Stack::start(1, &[("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "3")]).await;
    let port = stack.gateways[0].port;
    let get = |path: &'static str| async move {
        http_request(port, "GET", path, &[], "")
            .await
            .expect("the gateway answers")
    };
    let (status, body) = get("/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 400);
    assert!(body.contains("websocket"), "{body}");
    let (status, body) = get("/socket.io/?EIO=3&transport=websocket").await;
    assert_eq!(status, 400);
    assert!(body.contains("EIO=4"), "{body}");
    // Three connections a minute from one address, then 429 whatever the endpoint.
    let mut open = Vec::new();
    for path in [
        "/socket.io/?EIO=4&transport=websocket".to_string(),
        format!("/ws?token={}", user("u1")),
        format!("/realtime/v1/websocket?apikey={}&vsn=1.0.0", user("u1")),
    ] {
        open.push(
            ws_connect(&format!("ws://127.0.0.1:{port}{path}"))
                .await
                .unwrap(),
        );
    }
    let refused = ws_connect(&format!("ws://127.0.0.1:{port}/ws?token={}", user("u1"))).await;
    let error = refused.expect_err("the fourth connection is refused");
    assert!(error.to_string().contains("429"), "{error}");
}

#[tokio::test]
async fn operators_see_every_gateway_over_nats_and_the_event_log_is_written() {
    let stack = Stack::start(
        2,
        &[(
            "REALTIME_LOG_EVENT_TYPES",
            "connect,disconnect,error,join,message",
        )],
    )
    .await;
    let mut alice = SocketIoClient::connect(stack.gateways[0].port, "alice").await;
    alice.join("ops").await;
    let mut bob = SocketIoClient::connect(stack.gateways[1].port, "bob").await;
    bob.join("ops").await;
    bob.send(r#"422["message:send",{"roomName":"ops","content":"hi"}]"#)
        .await;
    bob.next_starting("432[").await;

    // Scatter-gather over NATS: every gateway answers `connections`.
    let nats = stack.nats.connect().await;
    let ask = |command: Value| {
        let nats = nats.clone();
        async move {
            let inbox = nats.new_inbox();
            let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
            nats.flush().await.unwrap();
            let verb = command["verb"].as_str().unwrap().to_string();
            let request = json!({"reply": inbox, "command": command});
            nats.publish(
                format!("realtime.control.all.{verb}"),
                request.to_string().into(),
            )
            .await
            .unwrap();
            let mut answers = Vec::new();
            while answers.len() < 2 {
                let message = tokio::time::timeout(Duration::from_secs(10), replies.next())
                    .await
                    .expect("both gateways answer")
                    .unwrap();
                answers.push(serde_json::from_slice::<Value>(&message.payload).unwrap());
            }
            answers
        }
    };
    let answers = ask(json!({"verb": "connections"})).await;
    let mut users: Vec<String> = answers
        .iter()
        .flat_map(|a| a["result"].as_array().unwrap().clone())
        .map(|c| {
            assert_eq!(c["protocol"], "socketio");
            assert_eq!(c["rooms"], json!(["ops"]));
            c["user_id"].as_str().unwrap().to_string()
        })
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    // Presence comes from the shared store: one gateway's answer has both users.
    let answers = ask(json!({"verb": "presence", "channel": "ops"})).await;
    for answer in &answers {
        let mut keys: Vec<&str> = answer["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        keys.sort();
        assert_eq!(keys, ["alice", "bob"], "{answer}");
    }
    let stats = ask(json!({"verb": "stats"})).await;
    let sent: u64 = stats
        .iter()
        .map(|s| s["result"]["messages"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 1);

    // The event log reaches Postgres within its flush interval (1 s).
    let db = stack.db.connect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = db
            .query(
                "SELECT type, user_id FROM realtime.events WHERE channel = 'ops' OR type = 'connect' ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        let seen: Vec<(String, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if seen
            .iter()
            .any(|(t, u)| t == "message" && u.as_deref() == Some("bob"))
            && seen.iter().filter(|(t, _)| t == "join").count() == 2
            && seen.iter().filter(|(t, _)| t == "connect").count() == 2
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "events: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connections: i64 = db
        .query_one(
            "SELECT count(*) FROM realtime.connections WHERE protocol = 'socketio' AND user_id IN ('alice', 'bob')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(connections, 2);
}

#[tokio::test]
async fn history_over_http_follows_rls() {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "INSERT INTO realtime.channels (name, slug, type, persist_messages)
                 VALUES ('Team', 'team', 'private', true), ('Hall', 'hall', 'public', true);
             INSERT INTO realtime.channel_members (channel_id, user_id)
                 SELECT id, 'member' FROM realtime.channels WHERE slug = 'team';
             INSERT INTO realtime.messages (channel_id, user_id, content, sent_at)
                 SELECT c.id, 'member', 'm' || n, '2026-01-30T10:00:00Z'::timestamptz + n * interval '1 minute'
                 FROM realtime.channels c, generate_series(1, 5) n WHERE c.slug = 'team';
             INSERT INTO realtime.messages (channel_id, user_id, content, deleted_at)
                 SELECT id, 'member', 'gone', now() FROM realtime.channels WHERE slug = 'team';",
        )
        .await;
    let port = stack.gateways[0].port;
    let get = |path: String, sub: &'static str| async move {
        let auth = format!("Bearer {}", user(sub));
        let (status, body) = http_request(port, "GET", &path, &[("Authorization", &auth)], "")
            .await
            .expect("the gateway answers");
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    // A member pages back from the newest: oldest first within a page, deleted ones left out.
    let (status, page) = get("/api/messages/team?limit=2".into(), "member").await;
    assert_eq!(status, 200, "{page}");
    let contents = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(contents(&page), ["m4", "m5"]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["messages"][0]["roomName"], "team");
    let before = page["messages"][0]["sentAt"].as_str().unwrap().to_string();
    let (_, older) = get(
        format!(
            "/realtime/v1/api/messages/team?limit=10&before={}",
            before.replace('+', "%2B")
        ),
        "member",
    )
    .await;
    assert_eq!(contents(&older), ["m1", "m2", "m3"], "{older}");
    assert_eq!(older["has_more"], false);
    let (_, since) = get(
        "/api/messages/team?since=2026-01-30T10:04:00Z".into(),
        "member",
    )
    .await;
    assert_eq!(contents(&since), ["m4", "m5"]);
    // Someone else cannot tell the private channel from a missing one.
    let (status, body) = get("/api/messages/team".into(), "outsider").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = get("/api/messages/nowhere".into(), "member").await;
    assert_eq!(status, 404);
    let (status, empty) = get("/api/messages/hall".into(), "outsider").await;
    assert_eq!((status, empty["messages"].clone()), (200, json!([])));
    // Bad parameters and tokens name the fix.
    for (path, wanted) in [
        ("/api/messages/team?limit=0", 400),
        ("/api/messages/team?limit=5000", 400),
        ("/api/messages/team?since=yesterday", 400),
    ] {
        let (status, body) = get(path.into(), "member").await;
        assert_eq!(status, wanted, "{path}: {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    let (status, _) = http_request(port, "GET", "/api/messages/team", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 401);
}

/// Seed 000's pattern: a trigger's `pg_notify('table_users', ...)` reaches the clients in room
/// `table_users` as `db:notification`, through the CDC's NOTIFY bridge and NATS.
#[tokio::test]
async fn notify_payloads_reach_socket_io_rooms() {
    let db = realtime_tests::Postgres::shared().fresh_database().await;
    realtime_tests::init(&db);
    let nats = realtime_tests::Nats::shared().fresh_account();
    let cdc = realtime_tests::CdcProcess::start(
        &db,
        &nats,
        &[("REALTIME_NOTIFY_CHANNELS", "table_users")],
    );
    cdc.wait_for_role("leader", Duration::from_secs(30)).await;
    let gateway = realtime_tests::GatewayProcess::start(&db, &nats, &[]).await;
    let mut client = SocketIoClient::connect(gateway.port, "u1").await;
    client.join("table_users").await;
    let notified = db.connect().await;
    // The bridge's LISTEN may not be in place the instant the CDC leads: notify until one
    // arrives (each is a distinct payload, so what arrives is known to be ours).
    let mut attempt = 0;
    let event = loop {
        attempt += 1;
        notified
            .execute(
                "SELECT pg_notify('table_users', json_build_object('operation', 'INSERT', 'record', json_build_object('id', $1::int))::text)",
                &[&attempt],
            )
            .await
            .unwrap();
        let wait = tokio::time::timeout(
            Duration::from_millis(500),
            client.next_starting(r#"42["db:notification""#),
        )
        .await;
        if let Ok(event) = wait {
            break event;
        }
        assert!(attempt < 40, "no db:notification after {attempt} NOTIFYs");
    };
    let payload: Value = serde_json::from_str(&event[2..]).unwrap();
    assert_eq!(payload[1]["operation"], "INSERT");
    assert!(payload[1]["record"]["id"].as_i64().unwrap() >= 1);
}
