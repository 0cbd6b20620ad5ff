//! Broadcast across gateways sharing one NATS: `self` and `ack`, JSON and binary payloads in
//! both encodings, and the REST endpoints.

use realtime_tests::{http_post, token, PhoenixClient, Stack};
use serde_json::json;
use std::time::Duration;

fn anon() -> String {
    token(json!({"role": "anon"}))
}

#[tokio::test]
async fn broadcasts_cross_gateways_with_self_and_ack() {
    let stack = Stack::start(2, &[]).await;
    let (a, b) = (&stack.gateways[0], &stack.gateways[1]);
    let mut sender = PhoenixClient::connect(&a.websocket_url(&anon(), "1.0.0"))
        .await
        .unwrap();
    let mut receiver = PhoenixClient::connect(&b.websocket_url(&anon(), "2.0.0"))
        .await
        .unwrap();
    let mut quiet = PhoenixClient::connect(&a.websocket_url(&anon(), "1.0.0"))
        .await
        .unwrap();
    let (send_ref, _) = sender
        .join(
            "realtime:chat",
            json!({"config": {"broadcast": {"self": true, "ack": true}}}),
        )
        .await;
    receiver.join("realtime:chat", json!({"config": {}})).await;
    let (quiet_ref, _) = quiet
        .join(
            "realtime:chat",
            json!({"config": {"broadcast": {"self": false}}}),
        )
        .await;

    let push = sender
        .push(
            Some(&send_ref),
            "realtime:chat",
            "broadcast",
            json!({"type": "broadcast", "event": "msg", "payload": {"text": "héllo"}}),
        )
        .await;
    assert_eq!(sender.reply_to(&push).await["status"], "ok", "ack");
    let own = sender.expect(|f| f.event == "broadcast").await;
    assert_eq!(
        own.payload,
        json!({"type": "broadcast", "event": "msg", "payload": {"text": "héllo"}})
    );
    // vsn 2 receivers get user broadcasts as binary userBroadcast frames with a JSON payload.
    let got = receiver.expect(|f| f.event == "broadcast").await;
    assert_eq!(got.topic, "realtime:chat");
    assert_eq!(got.payload["event"], "msg");
    assert_eq!(got.payload["payload"], json!({"text": "héllo"}));
    let other = quiet.expect(|f| f.event == "broadcast").await;
    assert_eq!(other.payload["payload"]["text"], "héllo");

    // self: false — the sender does not hear itself.
    let push = quiet
        .push(
            Some(&quiet_ref),
            "realtime:chat",
            "broadcast",
            json!({"type": "broadcast", "event": "q", "payload": {}}),
        )
        .await;
    let _ = push;
    receiver
        .expect(|f| f.event == "broadcast" && f.payload["event"] == "q")
        .await;
    let echoed = quiet
        .expect_within(Duration::from_millis(500), |f| {
            f.event == "broadcast" && f.payload["event"] == "q"
        })
        .await;
    assert!(echoed.is_none(), "self: false still echoed");
}

#[tokio::test]
async fn binary_broadcasts_travel_both_ways() {
    let stack = Stack::start(2, &[]).await;
    let mut sender = PhoenixClient::connect(&stack.gateways[0].websocket_url(&anon(), "2.0.0"))
        .await
        .unwrap();
    let mut v2 = PhoenixClient::connect(&stack.gateways[1].websocket_url(&anon(), "2.0.0"))
        .await
        .unwrap();
    let mut v1 = PhoenixClient::connect(&stack.gateways[1].websocket_url(&anon(), "1.0.0"))
        .await
        .unwrap();
    let (join_ref, _) = sender
        .join(
            "realtime:bin",
            json!({"config": {"broadcast": {"ack": true}}}),
        )
        .await;
    v2.join("realtime:bin", json!({})).await;
    v1.join("realtime:bin", json!({})).await;

    // A JSON payload in a binary frame reaches both encodings.
    let r = sender
        .push_binary_broadcast(&join_ref, "realtime:bin", "pos", br#"{"x":1}"#, true)
        .await;
    assert_eq!(sender.reply_to(&r).await["status"], "ok");
    assert_eq!(
        v2.expect(|f| f.event == "broadcast").await.payload["payload"],
        json!({"x": 1})
    );
    assert_eq!(
        v1.expect(|f| f.event == "broadcast").await.payload["payload"],
        json!({"x": 1})
    );

    // Raw bytes reach vsn 2 clients unchanged.
    let bytes = [0u8, 255, 1, 2, 254];
    let r = sender
        .push_binary_broadcast(&join_ref, "realtime:bin", "blob", &bytes, false)
        .await;
    assert_eq!(sender.reply_to(&r).await["status"], "ok");
    let got = v2
        .expect(|f| f.event == "broadcast" && f.payload["event"] == "blob")
        .await;
    assert_eq!(got.binary.as_deref(), Some(&bytes[..]));
}

#[tokio::test]
async fn rest_broadcast_reaches_sockets_and_checks_rights() {
    let stack = Stack::start(2, &[]).await;
    let mut listener = PhoenixClient::connect(&stack.gateways[1].websocket_url(&anon(), "1.0.0"))
        .await
        .unwrap();
    listener.join("realtime:news", json!({})).await;
    let port = stack.gateways[0].port;
    let post = |path: &'static str, token: String, body: &'static str| async move {
        http_post(port, path, &token, body)
            .await
            .expect("the gateway answers")
    };

    let service = token(json!({"role": "service_role"}));
    let (status, body) = post(
        "/api/broadcast",
        service.clone(),
        r#"{"messages":[{"topic":"news","event":"headline","payload":{"n":1}}]}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let got = listener.expect(|f| f.event == "broadcast").await;
    assert_eq!(
        got.payload,
        json!({"type": "broadcast", "event": "headline", "payload": {"n": 1}})
    );

    // httpSend's endpoint.
    let (status, body) = post(
        "/realtime/v1/api/broadcast/news/events/flash",
        service.clone(),
        r#"{"n":2}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let got = listener
        .expect(|f| f.event == "broadcast" && f.payload["event"] == "flash")
        .await;
    assert_eq!(got.payload["payload"], json!({"n": 2}));

    // Bad token, bad body, private channel without rights.
    let (status, _) = post("/api/broadcast", "garbage".into(), r#"{"messages":[]}"#).await;
    assert_eq!(status, 401);
    let (status, body) = post("/api/broadcast", service.clone(), r#"{"nope":1}"#).await;
    assert_eq!(status, 400, "{body}");
    let user = token(json!({"role": "authenticated", "sub": "u1"}));
    let (status, body) = post(
        "/api/broadcast",
        user,
        r#"{"messages":[{"topic":"secret","event":"e","payload":{},"private":true}]}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}
