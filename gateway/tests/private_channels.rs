//! Channel authorization through the socket: `private: true` joins checked with RLS on
//! `realtime.channels`, and decisions re-checked when the token changes.

use realtime_tests::{http_post, token, PhoenixClient, Stack};
use serde_json::{json, Value};

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

/// Supabase's "Broadcast and Presence Authorization" policies on `realtime.messages`, verbatim,
/// with `rooms_users` memberships; plus a policy that lets one user only read broadcasts.
const MESSAGES_POLICIES: &str = "
    create table public.rooms_users (user_id uuid, topic text);
    grant select on public.rooms_users to authenticated;
    create policy \"authenticated can read broadcast and presence state\"
      on realtime.messages for select to authenticated
      using (exists (select user_id from rooms_users
                      where user_id = (select auth.uid()) and topic = (select realtime.topic())
                        and realtime.messages.extension in ('broadcast', 'presence')));
    create policy \"authenticated can send broadcast and presence state\"
      on realtime.messages for insert to authenticated
      with check (exists (select user_id from rooms_users
                           where user_id = (select auth.uid()) and topic = (select realtime.topic())
                             and realtime.messages.extension in ('broadcast', 'presence')));
    create policy \"reader reads room:1 broadcasts\" on realtime.messages for select to authenticated
      using ((select auth.uid()) = '00000000-0000-4000-8000-00000000000b'
             and realtime.topic() = 'room:1' and extension = 'broadcast');
    insert into public.rooms_users values ('00000000-0000-4000-8000-00000000000a', 'room:1');";

const MEMBER: &str = "00000000-0000-4000-8000-00000000000a";
const READER: &str = "00000000-0000-4000-8000-00000000000b";

/// Pushes a broadcast (acknowledged) and a presence track on `topic`; returns both replies.
async fn send_and_track(client: &mut PhoenixClient, join_ref: &str, topic: &str) -> (Value, Value) {
    let sent = client
        .push(
            Some(join_ref),
            topic,
            "broadcast",
            json!({"type": "broadcast", "event": "hello", "payload": {"n": 1}}),
        )
        .await;
    let sent = client.reply_to(&sent).await;
    let tracked = client
        .push(
            Some(join_ref),
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"online": true}}),
        )
        .await;
    (sent, client.reply_to(&tracked).await)
}

/// The messages policies decide a private join (SELECT) and, at the first send or track, the
/// writes (INSERT), in Supabase's words; the seeds' channel rules still grant where they do,
/// even for a user whose non-UUID `sub` makes those policies fail; and replay is refused on a
/// public channel by the server itself (realtime-js refuses it before sending).
#[tokio::test]
async fn messages_policies_decide_joins_sends_and_tracks() {
    let stack = Stack::start(1, &[]).await;
    stack.sql(MESSAGES_POLICIES).await;
    stack
        .sql(
            "INSERT INTO realtime.channels (name, slug, type) VALUES ('Team', 'team', 'private');
             INSERT INTO realtime.channel_members (channel_id, user_id)
                 SELECT id, 'member' FROM realtime.channels WHERE slug = 'team';",
        )
        .await;
    let gateway = &stack.gateways[0];
    let config = json!({"config": {
        "private": true, "broadcast": {"ack": true}, "presence": {"enabled": true, "key": ""}}});
    let connect = |sub: &str| {
        let url = gateway.websocket_url(&user(sub), "1.0.0");
        async move { PhoenixClient::connect(&url).await }
    };

    // A member of room:1 joins, sends and tracks.
    let mut member = connect(MEMBER).await.unwrap();
    let (join_ref, reply) = member.join("realtime:room:1", config.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (sent, tracked) = send_and_track(&mut member, &join_ref, "realtime:room:1").await;
    assert_eq!(sent["status"], "ok", "{sent}");
    assert_eq!(tracked["status"], "ok", "{tracked}");

    // An operator tracks someone in the private room (the control API names it as its
    // listings do, `private:<topic>`); the member sees them come and go.
    let service = token(json!({"role": "service_role"}));
    let control = |body: Value| {
        let service = service.clone();
        async move {
            let (status, text) =
                http_post(gateway.port, "/api/control", &service, &body.to_string())
                    .await
                    .expect("the control API answers");
            assert_eq!(status, 200, "{text}");
        }
    };
    control(json!({"verb": "track", "user": "ops", "channel": "private:room:1"})).await;
    member
        .expect(|f| f.event == "presence_diff" && f.payload["joins"].get("ops").is_some())
        .await;
    control(json!({"verb": "offline", "user": "ops"})).await;
    member
        .expect(|f| f.event == "presence_diff" && f.payload["leaves"].get("ops").is_some())
        .await;

    // A reader may join (it may read broadcasts) but neither send nor track.
    let mut reader = connect(READER).await.unwrap();
    let (join_ref, reply) = reader.join("realtime:room:1", config.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (sent, tracked) = send_and_track(&mut reader, &join_ref, "realtime:room:1").await;
    assert_eq!(sent["status"], "error", "{sent}");
    assert_eq!(
        sent["response"]["reason"],
        "Unauthorized: you may not send to channel room:1"
    );
    assert_eq!(tracked["status"], "error", "{tracked}");
    assert_eq!(
        tracked["response"]["reason"],
        "Unauthorized: you may not track presence in channel room:1"
    );

    // Neither a member nor a reader: refused in Supabase's words.
    let mut outsider = connect("00000000-0000-4000-8000-00000000000c")
        .await
        .unwrap();
    let (_, reply) = outsider.join("realtime:room:1", config.clone()).await;
    assert_eq!(
        reply["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: room:1"
    );

    // A seeds user (`sub` "member", not a UUID) in a private channel of the seeds: the channel
    // rules grant it, though auth.uid() fails for it in the messages policies.
    let mut seed_member = connect("member").await.unwrap();
    let (join_ref, reply) = seed_member.join("realtime:team", config.clone()).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (sent, tracked) = send_and_track(&mut seed_member, &join_ref, "realtime:team").await;
    assert_eq!(sent["status"], "ok", "{sent}");
    assert_eq!(tracked["status"], "ok", "{tracked}");
    // Where only the policies could grant, their failure is the reason given.
    let (_, reply) = seed_member.join("realtime:room:1", config.clone()).await;
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["response"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid input syntax for type uuid"),
        "{reason}"
    );

    // Replay asks for stored broadcasts, which only private channels have.
    let (_, reply) = member
        .join(
            "realtime:room:2",
            json!({"config": {"private": false, "broadcast": {"replay": {"since": 0, "limit": 5}}}}),
        )
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(
        reply["response"]["reason"],
        "UnableToReplayMessages: Replay is not allowed for public channels"
    );
}
