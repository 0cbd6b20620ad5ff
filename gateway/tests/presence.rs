//! Presence in NATS KV across gateways: state on join, diffs on track, untrack and leave,
//! several connections under one key, and a killed gateway's members expiring elsewhere.

use realtime_tests::{token, PhoenixClient, Stack};
use serde_json::json;
use std::time::{Duration, Instant};

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

fn presence_config(key: &str) -> serde_json::Value {
    json!({"config": {"presence": {"enabled": true, "key": key}}})
}

#[tokio::test]
async fn state_and_diffs_across_gateways() {
    let stack = Stack::start(2, &[]).await;
    let (a, b) = (&stack.gateways[0], &stack.gateways[1]);
    let mut alice = PhoenixClient::connect(&a.websocket_url(&user("alice"), "2.0.0"))
        .await
        .unwrap();
    let (alice_ref, reply) = alice.join("realtime:lobby", presence_config("alice")).await;
    assert_eq!(reply["status"], "ok");
    let state = alice.expect(|f| f.event == "presence_state").await;
    assert_eq!(state.payload, json!({}));
    let track = alice
        .push(
            Some(&alice_ref),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"status": "online"}}),
        )
        .await;
    assert_eq!(alice.reply_to(&track).await["status"], "ok");
    let diff = alice.expect(|f| f.event == "presence_diff").await;
    assert_eq!(
        diff.payload["joins"]["alice"]["metas"][0]["status"],
        "online"
    );

    // A client on the other gateway sees alice in its initial state.
    let mut bob = PhoenixClient::connect(&b.websocket_url(&user("bob"), "1.0.0"))
        .await
        .unwrap();
    let (bob_ref, _) = bob.join("realtime:lobby", presence_config("bob")).await;
    let state = bob.expect(|f| f.event == "presence_state").await;
    assert_eq!(
        state.payload["alice"]["metas"][0]["status"], "online",
        "{}",
        state.payload
    );
    assert!(state.payload["alice"]["metas"][0]["phx_ref"].is_string());

    // A second connection of alice's adds a meta under the same key.
    let mut alice2 = PhoenixClient::connect(&b.websocket_url(&user("alice"), "1.0.0"))
        .await
        .unwrap();
    let (alice2_ref, _) = alice2
        .join("realtime:lobby", presence_config("alice"))
        .await;
    let track = alice2
        .push(
            Some(&alice2_ref),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"status": "away"}}),
        )
        .await;
    assert_eq!(alice2.reply_to(&track).await["status"], "ok");
    let diff = bob.expect(|f| f.event == "presence_diff").await;
    assert_eq!(diff.payload["joins"]["alice"]["metas"][0]["status"], "away");
    let diff = alice
        .expect(|f| f.event == "presence_diff" && f.payload["joins"]["alice"].is_object())
        .await;
    assert_eq!(diff.payload["joins"]["alice"]["metas"][0]["status"], "away");

    // Untrack: a leave everywhere, at once.
    let untrack = alice
        .push(
            Some(&alice_ref),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
    assert_eq!(alice.reply_to(&untrack).await["status"], "ok");
    let diff = bob
        .expect(|f| f.event == "presence_diff" && f.payload["leaves"]["alice"].is_object())
        .await;
    assert_eq!(
        diff.payload["leaves"]["alice"]["metas"][0]["status"],
        "online"
    );

    // Leaving the channel (or closing the socket) removes the member too.
    let leave = alice2
        .push(Some(&alice2_ref), "realtime:lobby", "phx_leave", json!({}))
        .await;
    alice2.reply_to(&leave).await;
    let diff = bob
        .expect(|f| f.event == "presence_diff" && f.payload["leaves"]["alice"].is_object())
        .await;
    assert_eq!(
        diff.payload["leaves"]["alice"]["metas"][0]["status"],
        "away"
    );
    let _ = bob_ref;
}

#[tokio::test]
async fn a_killed_gateway_s_members_leave_within_two_heartbeats() {
    let heartbeat = 2;
    let stack = Stack::start(2, &[("REALTIME_HEARTBEAT_INTERVAL", "2")]).await;
    let mut stack = stack;
    let observer_url = stack.gateways[1].websocket_url(&user("observer"), "1.0.0");
    let mut observer = PhoenixClient::connect(&observer_url).await.unwrap();
    observer
        .join("realtime:room", presence_config("observer"))
        .await;
    observer.expect(|f| f.event == "presence_state").await;

    let mut doomed =
        PhoenixClient::connect(&stack.gateways[0].websocket_url(&user("doomed"), "1.0.0"))
            .await
            .unwrap();
    let (join_ref, _) = doomed
        .join("realtime:room", presence_config("doomed"))
        .await;
    let track = doomed
        .push(
            Some(&join_ref),
            "realtime:room",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {}}),
        )
        .await;
    assert_eq!(doomed.reply_to(&track).await["status"], "ok");
    observer
        .expect(|f| f.event == "presence_diff" && f.payload["joins"]["doomed"].is_object())
        .await;

    // Stay through a few refreshes: a live member must not expire.
    let early = observer
        .expect_within(Duration::from_secs(heartbeat * 2), |f| {
            f.event == "presence_diff" && f.payload["leaves"]["doomed"].is_object()
        })
        .await;
    assert!(early.is_none(), "a live member expired");

    stack.gateways[0].kill();
    let killed = Instant::now();
    let left = observer
        .expect_within(Duration::from_secs(heartbeat * 2 + 1), |f| {
            f.event == "presence_diff" && f.payload["leaves"]["doomed"].is_object()
        })
        .await;
    let took = killed.elapsed();
    eprintln!("the killed gateway's member left after {took:?} (heartbeat {heartbeat} s)");
    assert!(
        left.is_some(),
        "the member of the killed gateway never left"
    );
    assert!(
        took <= Duration::from_secs(heartbeat * 2),
        "left after {took:?}, more than 2 heartbeats"
    );
}
