//! The Phoenix protocol against a real gateway (with Postgres, NATS and the CDC behind it):
//! heartbeats, joins and leaves in both encodings, token handling, and every kind of bad input
//! getting a clear error while the connection (and the process) stays healthy.

use realtime_tests::{token, PhoenixClient, Stack, WsMessage as Message};
use serde_json::json;
use std::time::Duration;

fn anon() -> String {
    token(json!({"role": "anon"}))
}

#[tokio::test]
async fn heartbeat_join_leave_in_both_encodings() {
    let stack = Stack::start(1, &[]).await;
    let gateway = &stack.gateways[0];
    for vsn in ["1.0.0", "2.0.0"] {
        let mut client = PhoenixClient::connect(&gateway.websocket_url(&anon(), vsn))
            .await
            .unwrap();
        let heartbeat = client.push(None, "phoenix", "heartbeat", json!({})).await;
        let reply = client.reply_to(&heartbeat).await;
        assert_eq!(reply, json!({"status": "ok", "response": {}}), "{vsn}");

        let (join_ref, reply) = client.join("realtime:room1", json!({"config": {}})).await;
        assert_eq!(reply["status"], "ok", "{vsn}: {reply}");
        assert_eq!(reply["response"]["postgres_changes"], json!([]));

        let leave = client
            .push(Some(&join_ref), "realtime:room1", "phx_leave", json!({}))
            .await;
        assert_eq!(client.reply_to(&leave).await["status"], "ok");
        let close = client.expect(|f| f.event == "phx_close").await;
        assert_eq!(close.join_ref.as_deref(), Some(join_ref.as_str()));

        // After leaving, the topic is no longer joined.
        let stray = client
            .push(
                Some(&join_ref),
                "realtime:room1",
                "broadcast",
                json!({"type": "broadcast", "event": "x", "payload": {}}),
            )
            .await;
        let reply = client.reply_to(&stray).await;
        assert_eq!(reply["status"], "error");
        assert!(reply["response"]["reason"]
            .as_str()
            .unwrap()
            .contains("unmatched topic"));
    }
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays() {
    let stack = Stack::start(1, &[]).await;
    let gateway = &stack.gateways[0];
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&anon(), "2.0.0"))
        .await
        .unwrap();
    for bad in [
        "not json",
        "[1,2,3]",
        r#"{"topic": "x"}"#,
        r#"[null, "1", 5, "phx_join", {}]"#,
        "",
    ] {
        client.send_raw(Message::Text(bad.into())).await;
        let reply = client
            .expect(|f| f.event == "phx_reply" && f.topic == "phoenix")
            .await;
        assert_eq!(reply.payload["status"], "error", "{bad:?}");
        let reason = reply.payload["response"]["reason"].as_str().unwrap();
        assert!(reason.starts_with("malformed message"), "{bad:?}: {reason}");
    }
    for bad in [
        vec![9u8, 1, 2],
        vec![3u8],
        vec![3, 200, 0, 0, 0, 0, 1, b'x'],
    ] {
        client.send_raw(Message::Binary(bad.clone().into())).await;
        let reply = client
            .expect(|f| f.event == "phx_reply" && f.topic == "phoenix")
            .await;
        assert_eq!(reply.payload["status"], "error", "{bad:?}");
    }
    // Unknown events on a joined channel and on the phoenix topic.
    let (join_ref, _) = client.join("realtime:room", json!({})).await;
    let unknown = client
        .push(Some(&join_ref), "realtime:room", "explode", json!({}))
        .await;
    let reply = client.reply_to(&unknown).await;
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown event"));
    // Still alive.
    let heartbeat = client.push(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(client.reply_to(&heartbeat).await["status"], "ok");
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let stack = Stack::start(1, &[]).await;
    let gateway = &stack.gateways[0];
    // Forged (wrong secret), expired, garbage: the upgrade is refused with 401.
    let forged = nself_realtime_shared::jwt::mint_hs256(
        "some-other-secret-some-other-secret!",
        json!({"role": "anon", "exp": 4_000_000_000u64})
            .as_object()
            .unwrap(),
    );
    let expired = token(json!({"role": "anon", "exp": 1_000_000_000u64}));
    for bad in [forged.as_str(), expired.as_str(), "garbage"] {
        let err = PhoenixClient::connect(&gateway.websocket_url(bad, "1.0.0"))
            .await
            .err();
        let text = format!("{err:?}");
        assert!(text.contains("401"), "{bad}: {text}");
    }
    // No token at all.
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?vsn=1.0.0",
        gateway.port
    );
    assert!(PhoenixClient::connect(&url).await.is_err());

    // A join's own access_token is verified too.
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&anon(), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = client
        .join("realtime:r", json!({"access_token": expired}))
        .await;
    assert_eq!(reply["status"], "error");
    assert!(
        reply["response"]["reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{reply}"
    );
}

#[tokio::test]
async fn an_expiring_token_closes_the_channel_with_a_system_message() {
    let stack = Stack::start(1, &[]).await;
    let gateway = &stack.gateways[0];
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&anon(), "2.0.0"))
        .await
        .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let short = token(json!({"role": "authenticated", "sub": "u1", "exp": exp}));
    let (join_ref, reply) = client
        .join("realtime:expiring", json!({"access_token": short}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let system = client
        .expect(|f| f.event == "system" && f.topic == "realtime:expiring")
        .await;
    assert_eq!(system.payload["status"], "error");
    assert!(system.payload["message"]
        .as_str()
        .unwrap()
        .contains("Token has expired"));
    let close = client.expect(|f| f.event == "phx_close").await;
    assert_eq!(close.join_ref.as_deref(), Some(join_ref.as_str()));

    // A refreshed token keeps a channel open: join with a short token, refresh, and see no close.
    let exp = exp + 3;
    let short = token(json!({"role": "authenticated", "sub": "u1", "exp": exp}));
    let (join_ref, _) = client
        .join("realtime:refreshed", json!({"access_token": short}))
        .await;
    let refresh = client
        .push(
            Some(&join_ref),
            "realtime:refreshed",
            "access_token",
            json!({"access_token": token(json!({"role": "authenticated", "sub": "u1"}))}),
        )
        .await;
    assert_eq!(client.reply_to(&refresh).await["status"], "ok");
    let closed = client
        .expect_within(Duration::from_secs(6), |f| {
            f.topic == "realtime:refreshed" && f.event == "phx_close"
        })
        .await;
    assert!(closed.is_none(), "the refreshed channel was closed");

    // An invalid refresh closes the channel.
    let bad = client
        .push(
            Some(&join_ref),
            "realtime:refreshed",
            "access_token",
            json!({"access_token": "garbage"}),
        )
        .await;
    let _ = bad;
    let system = client
        .expect(|f| f.event == "system" && f.topic == "realtime:refreshed")
        .await;
    assert!(system.payload["message"]
        .as_str()
        .unwrap()
        .contains("invalid access token"));
}

#[tokio::test]
async fn limits_are_enforced_with_reasons() {
    let stack = Stack::start(
        1,
        &[
            ("REALTIME_MAX_CHANNELS_PER_CLIENT", "3"),
            ("REALTIME_MAX_FRAME_BYTES", "4096"),
            ("REALTIME_MAX_CONNECTIONS", "3"),
            ("REALTIME_MAX_EVENTS_PER_SECOND", "5"),
        ],
    )
    .await;
    let gateway = &stack.gateways[0];
    let url = gateway.websocket_url(&anon(), "1.0.0");

    // Channels per connection.
    let mut client = PhoenixClient::connect(&url).await.unwrap();
    for n in 0..3 {
        let (_, reply) = client.join(&format!("realtime:c{n}"), json!({})).await;
        assert_eq!(reply["status"], "ok");
    }
    let (_, reply) = client.join("realtime:c3", json!({})).await;
    assert_eq!(reply["status"], "error");
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("REALTIME_MAX_CHANNELS_PER_CLIENT"));

    // Broadcast rate.
    let (join_ref, _) = client
        .join(
            "realtime:c0",
            json!({"config": {"broadcast": {"ack": true}}}),
        )
        .await;
    let mut refused = 0;
    for n in 0..20 {
        let r = client
            .push(
                Some(&join_ref),
                "realtime:c0",
                "broadcast",
                json!({"type": "broadcast", "event": "e", "payload": {"n": n}}),
            )
            .await;
        let reply = client.reply_to(&r).await;
        if reply["status"] == "error" {
            assert!(reply["response"]["reason"]
                .as_str()
                .unwrap()
                .contains("rate limit"));
            refused += 1;
        }
    }
    assert!(
        refused >= 10,
        "only {refused} of 20 rapid broadcasts were refused"
    );

    // Connections: two more fit, the fourth is refused with close 1013 and a reason.
    let _second = PhoenixClient::connect(&url).await.unwrap();
    let _third = PhoenixClient::connect(&url).await.unwrap();
    let mut fourth = PhoenixClient::connect(&url).await.unwrap();
    let closed = fourth.closed().await;
    assert_eq!(closed.code, Some(1013));
    assert!(
        closed.reason.contains("REALTIME_MAX_CONNECTIONS"),
        "{closed:?}"
    );

    // Oversized frame: close 1009.
    client
        .send_raw(Message::Text("x".repeat(10_000).into()))
        .await;
    let closed = client.closed().await;
    assert_eq!(closed.code, Some(1009), "{closed:?}");

    // The gateway is still healthy.
    let (status, _) = realtime_tests::http_get_json(gateway.port, "/health")
        .await
        .unwrap();
    assert_eq!(status, 200);
}
