//! What an operator sees of a running gateway: the log lines of its authorization decisions,
//! its metrics, and its health endpoints when Postgres or NATS is gone (issue 12).
//!
//! * Logs: every refused join, server-closed channel, refused connection and withheld row is
//!   one line naming the connection (`conn`, from the connection's span, with its protocol),
//!   the channel and the reason, on Phoenix, Socket.IO and `/ws` alike; no token ever appears.
//!   Gateways here log JSON (`LOG_FORMAT=json`) so each line is read as data.
//! * Metrics: seed 003's `realtime_connections_active{protocol,status}`,
//!   `realtime_rooms_active{type}`, `realtime_disconnections_total`, the Postgres pool gauges
//!   and the `process_*` figures, on the gateway and the CDC.
//! * Health: with Postgres stopped, `/health` is 503 but `/health/ready` stays 200 (degraded),
//!   and joined channels keep broadcast and presence while new joins are refused with the
//!   reason; with NATS stopped, `/health/ready` is 503. `/health/live` answers throughout.
//!
//! Log lines are read once the client has its answer: the gateway writes the line before it
//! answers. Only what nothing announces (a metric counted after a socket closed, NATS noticed
//! gone) is polled, as a monitor would.

use futures::{SinkExt, StreamExt};
use realtime_tests::{
    http_get, http_get_json, init, token, ws_connect, CdcProcess, GatewayProcess, Nats,
    PhoenixClient, Postgres, SocketIoClient, Stack, WsMessage,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Channels and tables the log and metrics tests use: a private channel `club` whose members
/// are alice and frank (who may not send), a public one `hall`, a table only `authenticated` may read, and one whose
/// row policy raises.
const SETUP: &str = "
    INSERT INTO realtime.channels (name, slug, type) VALUES ('Club', 'club', 'private'),
                                                           ('Hall', 'hall', 'public');
    INSERT INTO realtime.channel_members (channel_id, user_id, can_send)
        SELECT id, 'alice', true FROM realtime.channels WHERE slug = 'club'
        UNION ALL SELECT id, 'frank', false FROM realtime.channels WHERE slug = 'club';
    CREATE TABLE public.notes (id bigserial PRIMARY KEY, note text);
    GRANT SELECT ON public.notes TO authenticated;
    CREATE FUNCTION public.explode() RETURNS boolean LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'the policy exploded'; END $$;
    CREATE TABLE public.fragile (id bigserial PRIMARY KEY, note text);
    GRANT SELECT ON public.fragile TO authenticated;
    ALTER TABLE public.fragile ENABLE ROW LEVEL SECURITY;
    CREATE POLICY explode ON public.fragile FOR SELECT TO authenticated USING (public.explode());";

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The gateway's JSON log lines.
fn log_lines(gateway: &GatewayProcess) -> Vec<Value> {
    gateway
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The log line with `message` about `channel` on a connection of `protocol`; panics with the
/// log when there is none.
fn logged(gateway: &GatewayProcess, message: &str, channel: &str, protocol: &str) -> Value {
    log_lines(gateway)
        .into_iter()
        .find(|line| {
            line["fields"]["message"] == message
                && line["fields"]["channel"] == channel
                && line["span"]["protocol"] == protocol
        })
        .unwrap_or_else(|| {
            panic!(
                "no {message:?} line for channel {channel:?} on {protocol}; log:\n{}",
                gateway.log()
            )
        })
}

/// Checks that a decision line has its level, a reason containing `reason`, and the
/// connection's span (`conn`, `protocol`).
fn assert_decision(line: &Value, level: &str, reason: &str, protocol: &str) {
    assert_eq!(line["level"], level, "{line}");
    let logged_reason = line["fields"]["reason"].as_str().unwrap_or_default();
    assert!(logged_reason.contains(reason), "{line}");
    assert_eq!(line["span"]["name"], "connection", "{line}");
    assert!(line["span"]["conn"].as_u64().is_some(), "{line}");
    assert_eq!(line["span"]["protocol"], protocol, "{line}");
}

/// A Phoenix client on `gateway` with `apikey`.
async fn phoenix(gateway: &GatewayProcess, apikey: &str) -> PhoenixClient {
    PhoenixClient::connect(&gateway.websocket_url(apikey, "1.0.0"))
        .await
        .expect("connect")
}

/// A `/ws` client (`query`: `?token=...` or empty), past its `connected` frame.
async fn plain_ws(gateway: &GatewayProcess, query: &str) -> realtime_tests::WsStream {
    let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/ws{query}", gateway.port))
        .await
        .expect("connect /ws");
    assert_eq!(next_json(&mut ws).await["type"], "connected");
    ws
}

async fn next_json(ws: &mut realtime_tests::WsStream) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("open")
            .expect("readable");
        if let WsMessage::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

/// Sends a `/ws` request and returns its answer (`ack` or `error`, by `id`).
async fn ws_request(ws: &mut realtime_tests::WsStream, request: Value) -> Value {
    let id = request["id"].clone();
    ws.send(WsMessage::Text(request.to_string().into()))
        .await
        .unwrap();
    loop {
        let frame = next_json(ws).await;
        if frame["id"] == id {
            return frame;
        }
    }
}

#[tokio::test]
async fn decisions_are_logged_with_connection_channel_and_reason() {
    let stack = Stack::start(1, &[("LOG_FORMAT", "json")]).await;
    stack.sql(SETUP).await;
    stack.publish("public.fragile").await;
    let gateway = &stack.gateways[0];
    let expired = token(json!({"role": "authenticated", "sub": "alice", "exp": 1_000_000_000u64}));
    let forged = nself_realtime_shared::jwt::mint_hs256(
        "not-the-secret-not-the-secret-not-the-secret",
        json!({"role": "authenticated", "sub": "eve", "exp": 4_000_000_000u64})
            .as_object()
            .unwrap(),
    );
    let mut tokens = vec![
        user("alice"),
        user("bob"),
        user("frank"),
        expired.clone(),
        forged.clone(),
    ];

    phoenix_refusals(gateway, &expired).await;
    phoenix_write_refusal(gateway).await;
    tokens.extend(phoenix_closes(gateway).await);
    nself_refusals(gateway).await;
    connection_refusal(gateway, &forged).await;
    rows_withheld(&stack).await;

    let log = gateway.log();
    for token in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the log:\n{log}"
        );
    }
}

/// Phoenix: a join the channel rules refuse, and one whose token does not verify.
async fn phoenix_refusals(gateway: &GatewayProcess, expired: &str) {
    let mut bob = phoenix(gateway, &user("bob")).await;
    let (_, reply) = bob
        .join("realtime:club", json!({"config": {"private": true}}))
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    let line = logged(gateway, "join refused", "club", "phoenix");
    assert_decision(&line, "INFO", "Unauthorized", "phoenix");

    let (_, reply) = bob
        .join("realtime:lobby", json!({"access_token": expired}))
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    let line = logged(gateway, "join refused", "lobby", "phoenix");
    assert_decision(&line, "INFO", "Token has expired", "phoenix");
}

/// Phoenix: a member who may not send broadcasts twice; the refusal is logged once.
async fn phoenix_write_refusal(gateway: &GatewayProcess) {
    let mut frank = phoenix(gateway, &user("frank")).await;
    let config = json!({"config": {"private": true, "broadcast": {"ack": true}}});
    let (join_ref, reply) = frank.join("realtime:club", config).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    for n in 0..2 {
        let message = json!({"type": "broadcast", "event": "hi", "payload": {"n": n}});
        let sent = frank
            .push(Some(&join_ref), "realtime:club", "broadcast", message)
            .await;
        let reply = frank.reply_to(&sent).await;
        assert_eq!(reply["status"], "error", "{reply}");
    }
    let line = logged(gateway, "write refused", "club", "phoenix");
    assert_decision(&line, "INFO", "do not allow", "phoenix");
    assert_eq!(line["fields"]["write"], "broadcast", "{line}");
    let lines = log_lines(gateway)
        .into_iter()
        .filter(|l| l["fields"]["message"] == "write refused")
        .count();
    assert_eq!(lines, 1, "{}", gateway.log());
}

/// Phoenix: a channel whose new token lost access, and one whose token expired. Returns the
/// tokens it used.
async fn phoenix_closes(gateway: &GatewayProcess) -> Vec<String> {
    let alice = user("alice");
    let mut client = phoenix(gateway, &alice).await;
    let bindings = json!({"config": {"postgres_changes": [
        {"event": "*", "schema": "public", "table": "notes"}]}});
    let (join_ref, reply) = client.join("realtime:notes", bindings).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let anon = token(json!({"role": "anon"}));
    client
        .push(
            Some(&join_ref),
            "realtime:notes",
            "access_token",
            json!({"access_token": anon}),
        )
        .await;
    client
        .expect(|f| f.topic == "realtime:notes" && f.event == "phx_close")
        .await;
    let line = logged(gateway, "channel closed", "notes", "phoenix");
    assert_decision(&line, "INFO", "the new token lost access", "phoenix");

    // A token with two seconds to live: the server closes the channel when it expires.
    let short = token(json!({"role": "authenticated", "sub": "alice", "exp": unix_now() + 2}));
    let (_, reply) = client
        .join("realtime:brief", json!({"access_token": short}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    client
        .expect(|f| f.topic == "realtime:brief" && f.event == "phx_close")
        .await;
    let line = logged(gateway, "channel closed", "brief", "phoenix");
    assert_decision(&line, "INFO", "Token has expired", "phoenix");
    vec![alice, anon, short]
}

/// Socket.IO and `/ws`: joins the channel rules refuse, and one before authenticating.
async fn nself_refusals(gateway: &GatewayProcess) {
    let mut carol = SocketIoClient::connect(gateway.port, "carol").await;
    carol
        .send(&format!(
            "421{}",
            json!(["room:join", {"roomName": "club"}])
        ))
        .await;
    let ack = carol.next_starting("431[").await;
    assert!(ack.contains("ROOM_ACCESS_DENIED"), "{ack}");
    let line = logged(gateway, "join refused", "club", "socketio");
    assert_decision(&line, "INFO", "", "socketio");

    let mut anonymous = plain_ws(gateway, "").await;
    let answer = ws_request(
        &mut anonymous,
        json!({"type": "subscribe", "channel": "foyer", "id": 1}),
    )
    .await;
    assert_eq!(answer["code"], "AUTHENTICATION_FAILED", "{answer}");
    let line = logged(gateway, "join refused", "foyer", "websocket");
    assert_decision(&line, "INFO", "not authenticated", "websocket");

    let mut dave = plain_ws(gateway, &format!("?token={}", user("dave"))).await;
    let answer = ws_request(
        &mut dave,
        json!({"type": "subscribe", "channel": "club", "id": 2}),
    )
    .await;
    assert_eq!(answer["code"], "ROOM_ACCESS_DENIED", "{answer}");
    let line = logged(gateway, "join refused", "club", "websocket");
    assert_decision(&line, "INFO", "", "websocket");
}

/// An upgrade whose token is forged: 401, and a line saying why.
async fn connection_refusal(gateway: &GatewayProcess, forged: &str) {
    let refused = ws_connect(&format!(
        "ws://127.0.0.1:{}/ws?token={forged}",
        gateway.port
    ))
    .await;
    assert!(refused.is_err(), "a forged token was accepted");
    let line = log_lines(gateway)
        .into_iter()
        .find(|l| l["fields"]["message"] == "connection refused")
        .unwrap_or_else(|| panic!("no refused connection:\n{}", gateway.log()));
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(
        line["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("signature is invalid")),
        "{line}"
    );
}

/// A row whose policy raises: the subscriber is told, and the log names connection, channel
/// and table at warn.
async fn rows_withheld(stack: &Stack) {
    let gateway = &stack.gateways[0];
    let mut erin = phoenix(gateway, &user("erin")).await;
    let bindings = json!({"config": {"postgres_changes": [
        {"event": "INSERT", "schema": "public", "table": "fragile"}]}});
    let (_, reply) = erin.join("realtime:fragile", bindings).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    stack
        .sql("INSERT INTO public.fragile (note) VALUES ('boom')")
        .await;
    let error = erin
        .expect(|f| f.event == "system" && f.payload["status"] == "error")
        .await;
    assert!(
        error.payload["message"]
            .as_str()
            .is_some_and(|m| m.contains("the policy exploded")),
        "{error:?}"
    );
    let line = log_lines(gateway)
        .into_iter()
        .find(|l| l["fields"]["message"] == "rows withheld")
        .unwrap_or_else(|| panic!("no withheld rows:\n{}", gateway.log()));
    assert_eq!(line["fields"]["channel"], "realtime:fragile", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["fields"]["table"], "public.fragile", "{line}");
    assert!(line["fields"]["conn"].as_u64().is_some(), "{line}");
    assert!(
        line["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the policy exploded")),
        "{line}"
    );
}

/// The value of the series `series` (name and labels as the exposition writes them).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

async fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// Scrapes until `holds` is true of the metrics (what nothing announces: a socket's end is
/// counted after it closed), for at most 10 s.
async fn scrape_until(port: u16, holds: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(port).await;
        if holds(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{metrics}"
        );
        // Pacing the scrapes, as Prometheus would.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_report_connections_rooms_pool_and_process() {
    let stack = Stack::start(1, &[("REALTIME_DB_POOL_SIZE", "3")]).await;
    stack.sql(SETUP).await;
    let gateway = &stack.gateways[0];

    // Phoenix: an ad-hoc room and the public channel; Socket.IO: the private channel, away;
    // /ws: the public channel too.
    let mut alice = phoenix(gateway, &user("alice")).await;
    let mut joined = Vec::new();
    for topic in ["realtime:scratch", "realtime:hall"] {
        let (join_ref, reply) = alice.join(topic, json!({})).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        joined.push((topic, join_ref));
    }
    let mut socketio = SocketIoClient::connect(gateway.port, "alice").await;
    socketio.join("club").await;
    socketio
        .send(&format!(
            "422{}",
            json!(["presence:update", {"status": "away"}])
        ))
        .await;
    socketio.next_starting("432[").await;
    let mut ws = plain_ws(gateway, &format!("?token={}", user("bob"))).await;
    let answer = ws_request(
        &mut ws,
        json!({"type": "subscribe", "channel": "hall", "id": 1}),
    )
    .await;
    assert_eq!(answer["type"], "ack", "{answer}");

    let metrics = scrape(gateway.port).await;
    for (series, value) in [
        (
            r#"realtime_connections_active{protocol="phoenix",status="online"}"#,
            1.0,
        ),
        (
            r#"realtime_connections_active{protocol="socketio",status="away"}"#,
            1.0,
        ),
        (
            r#"realtime_connections_active{protocol="socketio",status="online"}"#,
            0.0,
        ),
        (
            r#"realtime_connections_active{protocol="websocket",status="online"}"#,
            1.0,
        ),
        (r#"realtime_rooms_active{type="adhoc"}"#, 1.0),
        (r#"realtime_rooms_active{type="public"}"#, 1.0),
        (r#"realtime_rooms_active{type="private"}"#, 1.0),
        (r#"realtime_rooms_active{type="direct"}"#, 0.0),
        (
            r#"realtime_disconnections_total{reason="client_closed"}"#,
            0.0,
        ),
        ("realtime_db_pool_max_connections", 3.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series}:\n{metrics}"
        );
    }
    let in_use = sample(&metrics, "realtime_db_pool_in_use_connections").unwrap();
    let idle = sample(&metrics, "realtime_db_pool_idle_connections").unwrap();
    assert!(
        in_use <= 3.0 && in_use + idle >= 1.0,
        "joins opened connections:\n{metrics}"
    );
    assert_process_metrics(&metrics);
    assert_process_metrics(&scrape(stack.cdc.http_port).await);

    // The /ws client leaves: counted as a disconnection, its connection and the hall it
    // shared with alice's Phoenix channel (which stays) settle.
    ws.send(WsMessage::Close(None)).await.unwrap();
    // The counter and the registry settle in turn: wait for both.
    let metrics = scrape_until(gateway.port, |m| {
        sample(
            m,
            r#"realtime_disconnections_total{reason="client_closed"}"#,
        ) == Some(1.0)
            && sample(
                m,
                r#"realtime_connections_active{protocol="websocket",status="online"}"#,
            ) == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            r#"realtime_connections_active{protocol="websocket",status="online"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, r#"realtime_rooms_active{type="public"}"#),
        Some(1.0)
    );
    // Alice leaves her channels: the rooms are gone once the leaves are answered.
    for (topic, join_ref) in joined {
        let leave = alice
            .push(Some(&join_ref), topic, "phx_leave", json!({}))
            .await;
        alice.reply_to(&leave).await;
    }
    let metrics = scrape(gateway.port).await;
    assert_eq!(
        sample(&metrics, r#"realtime_rooms_active{type="public"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, r#"realtime_rooms_active{type="adhoc"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, r#"realtime_rooms_active{type="private"}"#),
        Some(1.0)
    );
}

/// CPU, memory, descriptors and start time of the process behind a `/metrics`.
fn assert_process_metrics(metrics: &str) {
    let rss = sample(metrics, "process_resident_memory_bytes").unwrap_or_default();
    assert!(rss > 1_000_000.0, "resident memory {rss}:\n{metrics}");
    assert!(sample(metrics, "process_cpu_seconds_total").is_some_and(|cpu| cpu > 0.0));
    assert!(sample(metrics, "process_open_fds").is_some_and(|fds| fds > 3.0));
    assert!(sample(metrics, "process_max_fds").is_some_and(|fds| fds > 0.0));
    assert!(sample(metrics, "process_threads").is_some_and(|n| n >= 1.0));
    let started = sample(metrics, "process_start_time_seconds").unwrap_or_default();
    let now = unix_now() as f64;
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "start time {started}, now {now}"
    );
}

/// `/health`, `/health/ready` and `/health/live` of `gateway`: (status, body) each.
async fn health(gateway: &GatewayProcess) -> [(u16, Value); 3] {
    let mut answers = Vec::new();
    for path in ["/health", "/health/ready", "/health/live"] {
        answers.push(
            http_get_json(gateway.port, path)
                .await
                .unwrap_or_else(|| panic!("{path} answers JSON")),
        );
    }
    answers.try_into().unwrap()
}

#[tokio::test]
async fn without_postgres_a_gateway_stays_ready_and_keeps_broadcast_and_presence() {
    let postgres = Postgres::start();
    let db = postgres.fresh_database().await;
    init(&db);
    let account = Nats::shared().fresh_account();
    // The CDC creates the change stream joins read from.
    let cdc = CdcProcess::start(&db, &account, &[]);
    cdc.wait_for_role("leader", Duration::from_secs(30)).await;
    let gateway = GatewayProcess::start(&db, &account, &[("LOG_FORMAT", "json")]).await;
    let [(health_code, _), (ready_code, ready), (live_code, _)] = health(&gateway).await;
    assert_eq!(
        (health_code, ready_code, live_code),
        (200, 200, 200),
        "{ready}"
    );
    assert_eq!(
        ready["components"]["postgres"]["connected"], true,
        "{ready}"
    );
    assert_eq!(ready["components"]["bus"]["backend"], "nats", "{ready}");

    let presence = json!({"config": {"presence": {"enabled": true, "key": "k"}}});
    let (mut a, mut b) = (
        phoenix(&gateway, &user("a")).await,
        phoenix(&gateway, &user("b")).await,
    );
    let (a_ref, reply) = a.join("realtime:room", presence.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, reply) = b.join("realtime:room", presence).await;
    assert_eq!(reply["status"], "ok", "{reply}");

    postgres.stop();
    let [(health_code, health_body), (ready_code, ready), (live_code, _)] = health(&gateway).await;
    assert_eq!(health_code, 503, "/health keeps its meaning: {health_body}");
    assert_eq!((ready_code, live_code), (200, 200), "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(
        ready["components"]["postgres"]["connected"], false,
        "{ready}"
    );
    assert!(
        ready["degraded"][0]
            .as_str()
            .is_some_and(|d| d.contains("Postgres")),
        "{ready}"
    );

    // Joined channels keep broadcast and presence.
    let message = json!({"type": "broadcast", "event": "ping", "payload": {"n": 1}});
    a.push(Some(&a_ref), "realtime:room", "broadcast", message)
        .await;
    let got = b.expect(|f| f.event == "broadcast").await;
    assert_eq!(got.payload["payload"]["n"], 1, "{got:?}");
    let track = json!({"type": "presence", "event": "track", "payload": {"mood": "calm"}});
    a.push(Some(&a_ref), "realtime:room", "presence", track)
        .await;
    let diff = b
        .expect(|f| f.event == "presence_diff" && f.payload["joins"]["k"].is_object())
        .await;
    assert_eq!(
        diff.payload["joins"]["k"]["metas"][0]["mood"], "calm",
        "{diff:?}"
    );

    // A new join cannot be authorized: refused with the reason, logged at warn.
    let (_, reply) = b.join("realtime:elsewhere", json!({})).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(
        reply["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unavailable")),
        "{reply}"
    );
    let line = logged(&gateway, "join refused", "elsewhere", "phoenix");
    assert_decision(&line, "WARN", "unavailable", "phoenix");

    postgres.start_again();
    let [(health_code, _), (ready_code, ready), _] = health(&gateway).await;
    assert_eq!((health_code, ready_code), (200, 200), "{ready}");
    assert_eq!(ready["status"], "ok", "{ready}");
    let (_, reply) = b.join("realtime:elsewhere", json!({})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

/// Polls `/health/ready` until it answers `code` (NATS' loss or return is noticed by the
/// gateway's client, not announced), for at most 30 s.
async fn ready_until(gateway: &GatewayProcess, code: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, body)) = http_get_json(gateway.port, "/health/ready").await {
            if status == code {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/health/ready never answered {code}:\n{}",
            gateway.log()
        );
        // Pacing the probe, as a load balancer does.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_nats_a_gateway_is_not_ready_but_live() {
    let nats = Nats::start();
    let account = nats.fresh_account();
    let db = Postgres::shared().fresh_database().await;
    init(&db);
    let gateway = GatewayProcess::start(&db, &account, &[]).await;
    ready_until(&gateway, 200).await;

    nats.stop();
    let body = ready_until(&gateway, 503).await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["components"]["bus"]["connected"], false, "{body}");
    assert!(
        body["degraded"][0]
            .as_str()
            .is_some_and(|d| d.contains("NATS")),
        "{body}"
    );
    let (live, _) = http_get_json(gateway.port, "/health/live").await.unwrap();
    assert_eq!(live, 200);

    nats.start_again();
    let body = ready_until(&gateway, 200).await;
    assert_eq!(body["status"], "ok", "{body}");
}
