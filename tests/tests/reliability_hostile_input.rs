//! Reliability: hostile or mistaken input gets a clear answer that names the problem.
//!
//! Filters that could never match are refused at the join (a column the table lacks, a value
//! that does not convert to the column's type); a binding on an unpublished table gets a
//! warning naming the fix; one JSON depth limit holds for every endpoint; a NUL in a channel
//! name is refused by the gateway's own rule, never with Postgres' error text; a frame holding
//! a lone surrogate (which `JSON.stringify` produces) is answered under its own `ref`; and
//! `REALTIME_METRICS_TOKEN` guards `/metrics` of both processes.

use realtime_tests::{http_get, http_post, http_request, token, PhoenixClient, Stack, WsMessage};
use serde_json::json;

fn user() -> String {
    token(json!({"role": "authenticated", "sub": "u1"}))
}

async fn stack() -> Stack {
    let stack = Stack::start(1, &[("REALTIME_METRICS_TOKEN", "s3cret")]).await;
    stack
        .sql(
            "CREATE TABLE public.items (id int PRIMARY KEY, note text, created_at timestamptz);
             GRANT SELECT ON public.items TO anon, authenticated;
             CREATE TABLE public.unpublished (id int PRIMARY KEY);
             GRANT SELECT ON public.unpublished TO authenticated;",
        )
        .await;
    stack.publish("public.items").await;
    stack
}

#[tokio::test]
async fn filters_that_cannot_match_are_refused_and_unpublished_tables_warned() {
    let stack = stack().await;
    let mut client = PhoenixClient::connect(&stack.gateways[0].websocket_url(&user(), "1.0.0"))
        .await
        .unwrap();
    for (filter, reason) in [
        ("idd=eq.1", "idd"),
        ("id;drop table x=eq.1", "id;drop table x"),
        ("id=eq.abc", "abc"),
        ("id=eq.1e999999", "1e999999"),
        ("created_at=gt.99999-99-99", "99999-99-99"),
    ] {
        let (_, reply) = client
            .join(
                "realtime:f",
                json!({"config": {"postgres_changes": [
                    {"event": "*", "schema": "public", "table": "items", "filter": filter}]}}),
            )
            .await;
        assert_eq!(reply["status"], "error", "{filter}: {reply}");
        let text = reply["response"]["reason"].as_str().unwrap();
        assert!(
            text.contains("invalid filter") && text.contains(reason),
            "{filter}: {text}"
        );
    }
    // Filters that can match still join.
    let (_, reply) = client
        .join(
            "realtime:f",
            json!({"config": {"postgres_changes": [
                {"event": "*", "schema": "public", "table": "items",
                 "filter": "created_at=gt.2026-01-01T00:00:00Z"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");

    // A table no publication carries: joined, with a warning naming the command that fixes it.
    let (_, reply) = client
        .join(
            "realtime:u",
            json!({"config": {"postgres_changes": [
                {"event": "*", "schema": "public", "table": "unpublished"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let warning = client
        .expect(|f| {
            f.topic == "realtime:u" && f.event == "system" && f.payload["status"] == "warning"
        })
        .await;
    assert!(
        warning.payload["message"]
            .as_str()
            .unwrap()
            .contains("nself-realtime subscribe public.unpublished"),
        "{warning:?}"
    );
}

#[tokio::test]
async fn names_and_json_are_checked_before_anything_else_sees_them() {
    let stack = stack().await;
    let gateway = &stack.gateways[0];
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&user(), "1.0.0"))
        .await
        .unwrap();

    // A NUL in a topic: the gateway's rule, not Postgres' "invalid byte sequence".
    client
        .send_raw(WsMessage::Text(
            r#"{"topic":"realtime:a\u0000b","event":"phx_join","payload":{"config":{"private":true}},"ref":"7","join_ref":"7"}"#.into(),
        ))
        .await;
    let reply = client.reply_to("7").await;
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["response"]["reason"].as_str().unwrap();
    assert!(reason.contains("without control characters"), "{reason}");
    assert!(!reason.contains("byte sequence"), "{reason}");

    // A lone surrogate, as JSON.stringify writes one: the join is answered under its ref.
    client
        .send_raw(WsMessage::Text(
            r#"{"topic":"realtime:s","event":"phx_join","payload":{"config":{},"note":"\ud800"},"ref":"8","join_ref":"8"}"#.into(),
        ))
        .await;
    assert_eq!(client.reply_to("8").await["status"], "ok");

    // One depth limit: REST bodies are refused like frames.
    let service = token(json!({"role": "service_role"}));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) = http_post(
        gateway.port,
        "/api/broadcast/room/events/e",
        &service,
        &deep,
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 128"), "{body}");
    let batch = format!(r#"{{"messages":[{{"topic":"room","event":"e","payload":{deep}}}]}}"#);
    let (status, body) = http_post(gateway.port, "/api/broadcast", &service, &batch)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let nul_topic = r#"{"messages":[{"topic":"a\u0000b","event":"e","payload":{}}]}"#;
    let (status, body) = http_post(gateway.port, "/api/broadcast", &service, nul_topic)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("without control characters"), "{body}");
    let deep_frame = format!(
        r#"{{"topic":"realtime:s","event":"broadcast","payload":{{"type":"broadcast","event":"e","payload":{deep}}},"ref":"9","join_ref":"8"}}"#
    );
    client.send_raw(WsMessage::Text(deep_frame.into())).await;
    let refused = client
        .expect(|f| f.event == "phx_reply" && f.payload["status"] == "error")
        .await;
    assert!(
        refused.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 128"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let stack = stack().await;
    let gateway = &stack.gateways[0];
    let (status, body) = http_get(gateway.port, "/metrics").await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("REALTIME_METRICS_TOKEN"), "{body}");
    let wrong = [("Authorization", "Bearer nope")];
    let (status, _) = http_request(gateway.port, "GET", "/metrics", &wrong, "")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let right = [("Authorization", "Bearer s3cret")];
    let (status, body) = http_request(gateway.port, "GET", "/metrics", &right, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("realtime_disconnections_total{reason=\"slow_consumer\"} 0"),
        "{body}"
    );

    // The CDC's /metrics: open here (its process has no token), guarded with one.
    let (status, _) = http_get(stack.cdc.http_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let guarded = realtime_tests::CdcProcess::start(
        &stack.db,
        &stack.nats,
        &[("REALTIME_METRICS_TOKEN", "s3cret")],
    );
    // Same slot: it stands by, serving /health and /metrics.
    guarded
        .wait_for_role("standby", std::time::Duration::from_secs(30))
        .await;
    let (status, _) = http_get(guarded.http_port, "/metrics").await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = http_request(guarded.http_port, "GET", "/metrics", &right, "")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// Tokens with malformed registered claims are refused at the upgrade and at a join, naming the
/// claim (a string `exp` used to be a token that never expired; a non-string role became anon).
#[tokio::test]
async fn tokens_with_malformed_claims_are_refused_with_the_claim_named() {
    let stack = stack().await;
    let gateway = &stack.gateways[0];
    let far = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    for (claims, claim) in [
        (json!({"role": "authenticated", "exp": far}), "exp"),
        (
            json!({"role": "authenticated", "nbf": "0", "exp": 9_999_999_999u64}),
            "nbf",
        ),
        (json!({"role": 1, "exp": 9_999_999_999u64}), "role"),
        (
            json!({"role": ["service_role"], "exp": 9_999_999_999u64}),
            "role",
        ),
    ] {
        let jwt = nself_realtime_shared::jwt::mint_hs256(
            realtime_tests::TEST_JWT_SECRET,
            claims.as_object().unwrap(),
        );
        let refused = realtime_tests::ws_connect(&gateway.websocket_url(&jwt, "1.0.0")).await;
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
            panic!("{claims}: the upgrade was not refused: {refused:?}");
        };
        assert_eq!(response.status().as_u16(), 401, "{claims}");
        let body =
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
        assert!(
            body.contains(claim) && body.contains("claim must be"),
            "{claims}: {body}"
        );

        // The same token as a join's access_token, on a socket opened with a good one.
        let mut client = PhoenixClient::connect(&gateway.websocket_url(&user(), "1.0.0"))
            .await
            .unwrap();
        let (_, reply) = client
            .join("realtime:t", json!({"access_token": jwt}))
            .await;
        assert_eq!(reply["status"], "error", "{claims}: {reply}");
        assert!(
            reply["response"]["reason"]
                .as_str()
                .unwrap()
                .contains("claim"),
            "{claims}: {reply}"
        );
    }
}
