//! Channel authorization through the socket: `private: true` joins checked with RLS on
//! `realtime.channels`, and decisions re-checked when the token changes.

use realtime_tests::{token, PhoenixClient, Stack};
use serde_json::json;

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

#[tokio::test]
async fn private_channels_admit_members_only() {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "INSERT INTO realtime.channels (name, slug, type) VALUES ('Team', 'team', 'private'), ('Hall', 'hall', 'public');
             INSERT INTO realtime.channel_members (channel_id, user_id)
                 SELECT id, 'member' FROM realtime.channels WHERE slug = 'team';",
        )
        .await;
    let gateway = &stack.gateways[0];
    let private = json!({"config": {"private": true}});

    let mut outsider = PhoenixClient::connect(&gateway.websocket_url(&user("outsider"), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = outsider.join("realtime:team", private.clone()).await;
    assert_eq!(reply["status"], "error", "{reply}");
    // Joining it as a public topic does not get around the channel row either.
    let (_, reply) = outsider.join("realtime:team", json!({})).await;
    assert_eq!(reply["status"], "error", "{reply}");
    // A private join of a topic with no channel row and no messages policy granting it is
    // refused in Supabase's words; a public one is an open topic.
    let (_, reply) = outsider.join("realtime:nowhere", private.clone()).await;
    assert_eq!(reply["status"], "error");
    assert_eq!(
        reply["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: nowhere"
    );
    let (_, reply) = outsider.join("realtime:nowhere", json!({})).await;
    assert_eq!(reply["status"], "ok");
    let (_, reply) = outsider.join("realtime:hall", private.clone()).await;
    assert_eq!(
        reply["status"], "ok",
        "public channels admit every authenticated user"
    );

    let mut member = PhoenixClient::connect(&gateway.websocket_url(&user("member"), "2.0.0"))
        .await
        .unwrap();
    let (join_ref, reply) = member.join("realtime:team", private.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}");

    // Losing membership takes effect on the next access_token: the channel closes.
    stack.sql("DELETE FROM realtime.channel_members").await;
    member
        .push(
            Some(&join_ref),
            "realtime:team",
            "access_token",
            json!({"access_token": user("member")}),
        )
        .await;
    let system = member
        .expect(|f| f.event == "system" && f.topic == "realtime:team")
        .await;
    assert_eq!(system.payload["status"], "error");
    member
        .expect(|f| f.event == "phx_close" && f.topic == "realtime:team")
        .await;

    // REALTIME_REQUIRE_CHANNELS closes open topics.
    let strict = Stack::start(1, &[("REALTIME_REQUIRE_CHANNELS", "true")]).await;
    let mut client = PhoenixClient::connect(&strict.gateways[0].websocket_url(&user("x"), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = client.join("realtime:adhoc", json!({})).await;
    assert_eq!(reply["status"], "error");
}
