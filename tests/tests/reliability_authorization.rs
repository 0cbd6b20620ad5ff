//! Reliability: what a role may read through postgres_changes, whatever its bindings name.
//!
//! A binding on `*` (every schema, or every table of one) must not widen what a role may read:
//! every row it delivers passes the same table-privilege and Row Level Security checks as an
//! explicit binding on the table, for anon, authenticated and service_role alike, and a table
//! published after the join is checked when its first change appears.
//!
//! Completion is awaited, not slept: the last statement of each round inserts a marker row into
//! a table every role may read, and changes reach a channel in commit order, so once the marker
//! has arrived every earlier change has been decided.

use realtime_tests::{token, Frame, PhoenixClient, Stack};
use serde_json::{json, Value};

const SETUP: &str = "
    CREATE TABLE public.hidden (id bigserial PRIMARY KEY, secret text);
    CREATE TABLE public.open (id bigserial PRIMARY KEY, note text);
    GRANT SELECT ON public.open TO anon, authenticated, service_role;
    CREATE TABLE public.owned (id bigserial PRIMARY KEY, owner text, note text);
    GRANT SELECT ON public.owned TO anon, authenticated, service_role;
    ALTER TABLE public.owned ENABLE ROW LEVEL SECURITY;
    CREATE POLICY owned_read ON public.owned FOR SELECT TO authenticated
        USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
    CREATE SCHEMA private;
    CREATE TABLE private.ledger (id bigserial PRIMARY KEY, amount int);
    GRANT USAGE ON SCHEMA private TO service_role;
    GRANT SELECT ON private.ledger TO service_role;";

/// One round of changes, ended by the marker.
const ROUND: &str = "
    INSERT INTO public.hidden (secret) VALUES ('s1');
    INSERT INTO public.owned (owner, note) VALUES ('u1', 'mine'), ('u2', 'theirs');
    INSERT INTO private.ledger (amount) VALUES (7);
    UPDATE public.hidden SET secret = 's2';
    DELETE FROM public.hidden;
    INSERT INTO public.open (note) VALUES ('marker');";

/// The (schema.table, type) of every change a client received up to and including the marker.
async fn changes_until_marker(client: &mut PhoenixClient) -> Vec<(String, String, Value)> {
    let mut seen = Vec::new();
    loop {
        let frame: Frame = client.expect(|f| f.event == "postgres_changes").await;
        let data = &frame.payload["data"];
        let table = format!(
            "{}.{}",
            data["schema"].as_str().unwrap(),
            data["table"].as_str().unwrap()
        );
        let kind = data["type"].as_str().unwrap().to_string();
        let record = data["record"].clone();
        let marker = table == "public.open" && record["note"] == "marker";
        seen.push((table, kind, record));
        if marker {
            return seen;
        }
    }
}

fn tables(seen: &[(String, String, Value)]) -> Vec<String> {
    let mut tables: Vec<String> = seen.iter().map(|(t, _, _)| t.clone()).collect();
    tables.sort();
    tables.dedup();
    tables
}

#[tokio::test]
async fn wildcard_bindings_deliver_only_what_the_role_may_read() {
    let stack = Stack::start(1, &[]).await;
    stack.sql(SETUP).await;
    for table in [
        "public.hidden",
        "public.open",
        "public.owned",
        "private.ledger",
    ] {
        stack.publish(table).await;
    }
    let gateway = &stack.gateways[0];
    let roles = [
        ("anon", json!({"role": "anon"})),
        (
            "authenticated",
            json!({"role": "authenticated", "sub": "u1"}),
        ),
        ("service_role", json!({"role": "service_role"})),
    ];
    let wildcards = [
        json!({"event": "*", "schema": "*", "table": "*"}),
        json!({"event": "*", "schema": "public", "table": "*"}),
        json!({"event": "*", "schema": "*"}),
    ];
    let mut clients = Vec::new();
    for (name, claims) in &roles {
        for (w, binding) in wildcards.iter().enumerate() {
            let mut client =
                PhoenixClient::connect(&gateway.websocket_url(&token(claims.clone()), "1.0.0"))
                    .await
                    .unwrap();
            let (_, reply) = client
                .join(
                    &format!("realtime:wild-{name}-{w}"),
                    json!({"config": {"postgres_changes": [binding]}}),
                )
                .await;
            assert_eq!(reply["status"], "ok", "{name} {binding}: {reply}");
            client.expect(|f| f.event == "system").await;
            clients.push((*name, binding.clone(), client));
        }
        // The explicit binding on the ungranted table is refused at the join, as before.
        let mut client =
            PhoenixClient::connect(&gateway.websocket_url(&token(claims.clone()), "1.0.0"))
                .await
                .unwrap();
        let (_, reply) = client
            .join(
                "realtime:explicit-hidden",
                json!({"config": {"postgres_changes": [
                    {"event": "*", "schema": "public", "table": "hidden"}]}}),
            )
            .await;
        assert_eq!(reply["status"], "error", "{name}: {reply}");
        assert!(
            reply["response"]["reason"]
                .as_str()
                .unwrap()
                .contains("may not SELECT from public.hidden"),
            "{reply}"
        );
    }

    stack.sql(ROUND).await;
    for (name, binding, client) in &mut clients {
        let seen = changes_until_marker(client).await;
        let public_only = binding["schema"] == "public";
        let expected: Vec<&str> = match (*name, public_only) {
            ("anon", _) => vec!["public.open"],
            ("authenticated", _) => vec!["public.open", "public.owned"],
            ("service_role", false) => vec!["private.ledger", "public.open"],
            ("service_role", true) => vec!["public.open"],
            _ => unreachable!(),
        };
        assert_eq!(tables(&seen), expected, "{name} {binding}: {seen:?}");
        // Row Level Security still decides rows of readable tables.
        for (table, _, record) in &seen {
            if table == "public.owned" {
                assert_eq!(record["owner"], "u1", "{name} {binding}: {seen:?}");
            }
        }
    }

    // A table published after the joins is checked when its first change appears.
    stack
        .sql(
            "CREATE TABLE public.later (id bigserial PRIMARY KEY, secret text);
             CREATE TABLE public.later_open (id bigserial PRIMARY KEY, note text);
             GRANT SELECT ON public.later_open TO anon, authenticated, service_role;",
        )
        .await;
    stack.publish("public.later").await;
    stack.publish("public.later_open").await;
    stack
        .sql(
            "INSERT INTO public.later (secret) VALUES ('late');
             INSERT INTO public.later_open (note) VALUES ('visible');
             INSERT INTO public.open (note) VALUES ('marker');",
        )
        .await;
    for (name, binding, client) in &mut clients {
        let seen = changes_until_marker(client).await;
        assert_eq!(
            tables(&seen),
            vec!["public.later_open", "public.open"],
            "{name} {binding}: {seen:?}"
        );
    }

    // A GRANT takes effect for wildcards within the catalog's refresh, without rejoining.
    stack.sql("GRANT SELECT ON public.later TO anon").await;
    let (name, binding, client) = &mut clients[0];
    assert_eq!(*name, "anon");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        stack
            .sql(
                "INSERT INTO public.later (secret) VALUES ('granted');
                 INSERT INTO public.open (note) VALUES ('marker');",
            )
            .await;
        let seen = changes_until_marker(client).await;
        if tables(&seen).contains(&"public.later".to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "anon {binding}: the GRANT never took effect"
        );
        // Polling a cache's expiry (no event announces it): pace the rounds.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// An `access_token` push is a new identity for the channel: if it may no longer read a table a
/// binding names, or the private channel, the channel is closed with a `system` error saying
/// why, never answered `ok`.
#[tokio::test]
async fn an_access_token_that_loses_access_closes_the_channel() {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "CREATE TABLE public.staff (id bigserial PRIMARY KEY, note text);
             GRANT SELECT ON public.staff TO authenticated;
             INSERT INTO realtime.channels (name, slug, type) VALUES ('Team', 'team', 'private');
             INSERT INTO realtime.channel_members (channel_id, user_id)
                 SELECT id, 'member' FROM realtime.channels WHERE slug = 'team';",
        )
        .await;
    stack.publish("public.staff").await;
    let gateway = &stack.gateways[0];
    let member = || token(json!({"role": "authenticated", "sub": "member"}));
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&member(), "1.0.0"))
        .await
        .unwrap();
    let (table_ref, reply) = client
        .join(
            "realtime:staff",
            json!({"config": {"postgres_changes": [
                {"event": "*", "schema": "public", "table": "staff"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    client
        .expect(|f| f.event == "system" && f.topic == "realtime:staff")
        .await;
    // A witness on the same table, whose token keeps its rights.
    let (_, reply) = client
        .join(
            "realtime:witness",
            json!({"config": {"postgres_changes": [
                {"event": "*", "schema": "public", "table": "staff"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (team_ref, reply) = client
        .join("realtime:team", json!({"config": {"private": true}}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");

    // A token that keeps every right is accepted.
    let ref_ = client
        .push(
            Some(&table_ref),
            "realtime:staff",
            "access_token",
            json!({"access_token": member()}),
        )
        .await;
    assert_eq!(client.reply_to(&ref_).await["status"], "ok");

    // anon may not SELECT from public.staff: the channel closes, naming the table.
    client
        .push(
            Some(&table_ref),
            "realtime:staff",
            "access_token",
            json!({"access_token": token(json!({"role": "anon"}))}),
        )
        .await;
    let system = client
        .expect(|f| f.event == "system" && f.topic == "realtime:staff")
        .await;
    assert_eq!(system.payload["status"], "error", "{system:?}");
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .contains("may not SELECT from public.staff"),
        "{system:?}"
    );
    client
        .expect(|f| f.event == "phx_close" && f.topic == "realtime:staff")
        .await;
    // Closed means closed: a row inserted now does not reach the client.
    stack
        .sql("INSERT INTO public.staff (note) VALUES ('after close')")
        .await;

    // Another user's token on the private channel: not a member, so the channel closes.
    client
        .push(
            Some(&team_ref),
            "realtime:team",
            "access_token",
            json!({"access_token": token(json!({"role": "authenticated", "sub": "outsider"}))}),
        )
        .await;
    let system = client
        .expect(|f| f.event == "system" && f.topic == "realtime:team")
        .await;
    assert_eq!(system.payload["status"], "error", "{system:?}");
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .contains("You do not have permissions to read from this Channel topic: team"),
        "{system:?}"
    );
    // The witness gets the row; by then the closed channel would have had it too.
    let mut frames = Vec::new();
    loop {
        let frame = client.expect(|f| f.event == "postgres_changes").await;
        let witnessed = frame.topic == "realtime:witness";
        frames.push(frame);
        if witnessed {
            break;
        }
    }
    assert!(
        frames.iter().all(|f| f.topic != "realtime:staff"),
        "a closed channel still delivers: {frames:?}"
    );
    let log = gateway.log();
    // One `channel closed` line per channel (decision_log), naming it and why.
    for channel in ["\"staff\"", "\"team\""] {
        assert!(
            log.lines().any(|l| l.contains("channel closed")
                && l.contains(channel)
                && l.contains("the new token lost access")),
            "{log}"
        );
    }
}
