//! postgres_changes end to end: Postgres → CDC → JetStream → gateway → client. Bindings and
//! their ids, typed values, filters, Row Level Security (isolation, batching, a policy that
//! raises), SUBSCRIBED meaning live, and resuming with `since`.

use realtime_tests::{token, PhoenixClient, Stack};
use serde_json::{json, Value};
use std::time::Duration;

fn user(sub: &str) -> String {
    token(json!({"role": "authenticated", "sub": sub}))
}

fn changes(bindings: Value) -> Value {
    json!({"config": {"postgres_changes": bindings}})
}

async fn stack_with_items() -> Stack {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "CREATE TABLE public.items (
                 id int PRIMARY KEY, name text, price numeric, tags text[], data jsonb,
                 ok boolean, at timestamptz, owner text);
             ALTER TABLE public.items REPLICA IDENTITY FULL;
             GRANT SELECT ON public.items TO anon, authenticated;",
        )
        .await;
    stack.publish("public.items").await;
    stack
}

#[tokio::test]
async fn changes_arrive_typed_with_binding_ids_and_filters() {
    let stack = stack_with_items().await;
    let gateway = &stack.gateways[0];
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&user("u1"), "2.0.0"))
        .await
        .unwrap();
    let bindings = json!([
        {"event": "*", "schema": "public", "table": "items"},
        {"event": "INSERT", "schema": "public", "table": "items", "filter": "price=gt.10"},
        {"event": "DELETE", "schema": "public", "table": "items", "filter": "name=in.(a,b)"},
    ]);
    let (_, reply) = client.join("realtime:db", changes(bindings.clone())).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let listed = reply["response"]["postgres_changes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 3);
    for (sent, got) in bindings.as_array().unwrap().iter().zip(&listed) {
        for key in ["event", "schema", "table", "filter"] {
            assert_eq!(sent.get(key), got.get(key), "{key}");
        }
        assert!(got["id"].is_u64());
    }
    let ids: Vec<u64> = listed.iter().map(|b| b["id"].as_u64().unwrap()).collect();
    let system = client.expect(|f| f.event == "system").await;
    assert_eq!(system.payload["status"], "ok");

    stack
        .sql(
            "INSERT INTO public.items VALUES
               (1, 'a', 10.50, '{x,y}', '{\"k\": [1, 2]}', true, '2026-01-30 10:15:23+00', 'u1');
             INSERT INTO public.items VALUES (2, 'c', 99.9, '{}', 'null', false, NULL, 'u1');
             UPDATE public.items SET name = 'b' WHERE id = 2;
             DELETE FROM public.items WHERE id = 2;",
        )
        .await;

    let first = client.expect(|f| f.event == "postgres_changes").await;
    let data = &first.payload["data"];
    assert_eq!(data["type"], "INSERT");
    assert_eq!(
        (data["schema"].as_str(), data["table"].as_str()),
        (Some("public"), Some("items"))
    );
    assert!(data["commit_timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(data["record"]["id"], 1);
    assert_eq!(data["record"]["price"], "10.50");
    assert_eq!(data["record"]["tags"], json!(["x", "y"]));
    assert_eq!(data["record"]["data"], json!({"k": [1, 2]}));
    assert_eq!(data["record"]["ok"], true);
    assert!(data["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "price" && c["type"] == "numeric"));
    // price 10.50 is not > 10? It is: only the catch-all and the price filter match.
    assert_eq!(first.payload["ids"], json!([ids[0], ids[1]]));

    let second = client.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(second.payload["data"]["record"]["id"], 2);
    assert_eq!(second.payload["ids"], json!([ids[0], ids[1]]));
    let update = client.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(update.payload["data"]["type"], "UPDATE");
    assert_eq!(update.payload["data"]["old_record"]["name"], "c");
    assert_eq!(update.payload["ids"], json!([ids[0]]));
    let delete = client.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(delete.payload["data"]["type"], "DELETE");
    assert_eq!(delete.payload["data"]["old_record"]["name"], "b");
    assert_eq!(
        delete.payload["ids"],
        json!([ids[0], ids[2]]),
        "the DELETE filter reads old_record"
    );
}

#[tokio::test]
async fn bad_bindings_and_unknown_tables_are_refused() {
    let stack = stack_with_items().await;
    let mut client = PhoenixClient::connect(&stack.gateways[0].websocket_url(&user("u1"), "1.0.0"))
        .await
        .unwrap();
    for (bindings, expect) in [
        (
            json!([{"event": "*", "schema": "public", "table": "nope"}]),
            "does not exist",
        ),
        (
            json!([{"event": "*", "schema": "public", "table": "items", "filter": "id=like.1"}]),
            "like",
        ),
        (
            json!([{"event": "*", "schema": "public", "table": "items", "filter": "id"}]),
            "filter",
        ),
        (
            json!([{"event": "*", "schema": "public", "table": "items", "select": ["id", "nope"]}]),
            "select: column \"nope\" does not exist",
        ),
        (
            json!([{"event": "MERGE", "schema": "public", "table": "items"}]),
            "unknown event",
        ),
        (json!("all"), "list"),
    ] {
        let (_, reply) = client.join("realtime:bad", changes(bindings.clone())).await;
        assert_eq!(reply["status"], "error", "{bindings}");
        let reason = reply["response"]["reason"].as_str().unwrap();
        assert!(reason.contains(expect), "{bindings}: {reason}");
    }
    // A role that may not read the table.
    stack
        .sql("CREATE TABLE public.hidden (id int PRIMARY KEY)")
        .await;
    let (_, reply) = client
        .join(
            "realtime:bad",
            changes(json!([{"event": "*", "schema": "public", "table": "hidden"}])),
        )
        .await;
    assert_eq!(reply["status"], "error");
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("SELECT"));
}

#[tokio::test]
async fn subscribed_means_live() {
    let stack = stack_with_items().await;
    let gateway = &stack.gateways[0];
    let client_db = stack.db.connect().await;
    // Many rounds: join, and commit a row the instant the reply arrives.
    for round in 0..20 {
        let mut client = PhoenixClient::connect(&gateway.websocket_url(&user("u1"), "2.0.0"))
            .await
            .unwrap();
        let (_, reply) = client
            .join(
                &format!("realtime:live{round}"),
                changes(json!([{"event": "INSERT", "schema": "public", "table": "items"}])),
            )
            .await;
        assert_eq!(reply["status"], "ok");
        client_db
            .execute(
                "INSERT INTO public.items (id, name) VALUES ($1, 'live')",
                &[&(1000 + round)],
            )
            .await
            .unwrap();
        let got = client
            .expect(|f| {
                f.event == "postgres_changes" && f.payload["data"]["record"]["id"] == 1000 + round
            })
            .await;
        assert_eq!(got.payload["data"]["record"]["name"], "live");
    }
}

#[tokio::test]
async fn rls_isolates_users_in_batched_queries_and_a_raising_policy_hurts_only_its_subscriber() {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "CREATE TABLE public.notes (id int PRIMARY KEY, owner text NOT NULL, body text);
             ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
             CREATE FUNCTION public.check_owner(owner text) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               IF realtime.user_id() = 'evil' THEN RAISE EXCEPTION 'policy exploded for %', realtime.user_id(); END IF;
               RETURN owner = realtime.user_id();
             END $$;
             CREATE POLICY notes_owner ON public.notes FOR SELECT TO authenticated USING (public.check_owner(owner));
             GRANT SELECT ON public.notes TO authenticated;
             GRANT EXECUTE ON FUNCTION public.check_owner(text) TO authenticated;",
        )
        .await;
    stack.publish("public.notes").await;
    let gateway = &stack.gateways[0];
    let binding = changes(json!([{"event": "*", "schema": "public", "table": "notes"}]));
    let mut alice = PhoenixClient::connect(&gateway.websocket_url(&user("alice"), "1.0.0"))
        .await
        .unwrap();
    let mut bob = PhoenixClient::connect(&gateway.websocket_url(&user("bob"), "1.0.0"))
        .await
        .unwrap();
    let mut evil = PhoenixClient::connect(&gateway.websocket_url(&user("evil"), "1.0.0"))
        .await
        .unwrap();
    for client in [&mut alice, &mut bob, &mut evil] {
        let (_, reply) = client.join("realtime:notes", binding.clone()).await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    stack
        .sql(
            "INSERT INTO public.notes SELECT n, CASE WHEN n % 2 = 0 THEN 'alice' ELSE 'bob' END, 'note ' || n
             FROM generate_series(1, 200) n;",
        )
        .await;
    for (client, owner, parity) in [(&mut alice, "alice", 0), (&mut bob, "bob", 1)] {
        for n in (1..=200).filter(|n| n % 2 == parity) {
            let got = client.expect(|f| f.event == "postgres_changes").await;
            assert_eq!(got.payload["data"]["record"]["id"], n, "{owner}");
            assert_eq!(got.payload["data"]["record"]["owner"], owner);
        }
        let extra = client
            .expect_within(Duration::from_millis(300), |f| {
                f.event == "postgres_changes"
            })
            .await;
        assert!(
            extra.is_none(),
            "{owner} received someone else's row: {extra:?}"
        );
    }
    // The raising policy: a system error for evil, and nothing else.
    let system = evil
        .expect(|f| f.event == "system" && f.payload["status"] == "error")
        .await;
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .contains("policy exploded"),
        "{}",
        system.payload
    );
    let leaked = evil
        .expect_within(Duration::from_millis(300), |f| {
            f.event == "postgres_changes"
        })
        .await;
    assert!(leaked.is_none());

    // Batching: far fewer visibility queries than rows × subscribers.
    let queries = gateway
        .metric("realtime_gateway_rls_queries_total")
        .await
        .unwrap();
    eprintln!("{queries} RLS queries for 200 rows x 3 subscribers");
    assert!(
        queries < 200.0,
        "{queries} visibility queries for 200 rows: not batched"
    );
}

/// An owner-shaped policy (`owner = realtime.user_id()`) is decided in the gateway from one
/// query per user, not per batch; rows stay isolated, and an UPDATE that hands a row to
/// another user reaches the new owner only.
#[tokio::test]
async fn owner_policies_take_the_fast_path_and_stay_isolated() {
    let stack = Stack::start(1, &[]).await;
    stack
        .sql(
            "CREATE TABLE public.tasks (id int PRIMARY KEY, owner text NOT NULL, title text);
             ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tasks_owner ON public.tasks FOR SELECT TO authenticated
                 USING (owner = realtime.user_id());
             GRANT SELECT ON public.tasks TO authenticated;",
        )
        .await;
    stack.publish("public.tasks").await;
    let gateway = &stack.gateways[0];
    let binding = changes(json!([{"event": "*", "schema": "public", "table": "tasks"}]));
    let mut clients = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let mut client = PhoenixClient::connect(&gateway.websocket_url(&user(name), "2.0.0"))
            .await
            .unwrap();
        let (_, reply) = client.join("realtime:tasks", binding.clone()).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        clients.push((name, client));
    }
    // Ten batches, each delivered before the next is written: the general path would query
    // once per batch and user (30 queries).
    let db = stack.db.connect().await;
    for batch in 0..10 {
        db.batch_execute(&format!(
            "INSERT INTO public.tasks SELECT n, (ARRAY['alice','bob','carol'])[n % 3 + 1], 't'
             FROM generate_series({} * 30 + 1, {} * 30 + 30) n",
            batch, batch
        ))
        .await
        .unwrap();
        for (i, (name, client)) in clients.iter_mut().enumerate() {
            for n in (batch * 30 + 1..=batch * 30 + 30).filter(|n| n % 3 == i) {
                let got = client.expect(|f| f.event == "postgres_changes").await;
                assert_eq!(got.payload["data"]["record"]["id"], n, "{name}");
                assert_eq!(got.payload["data"]["record"]["owner"], *name);
            }
        }
    }
    // Row 3 belongs to alice; handing it to bob reaches bob (and not alice or carol).
    db.batch_execute("UPDATE public.tasks SET owner = 'bob' WHERE id = 3")
        .await
        .unwrap();
    let got = clients[1].1.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(got.payload["data"]["type"], "UPDATE");
    assert_eq!(got.payload["data"]["record"]["owner"], "bob");
    for i in [0, 2] {
        let extra = clients[i]
            .1
            .expect_within(Duration::from_millis(300), |f| {
                f.event == "postgres_changes"
            })
            .await;
        assert!(extra.is_none(), "{} received {extra:?}", clients[i].0);
    }
    let queries = gateway
        .metric("realtime_gateway_rls_queries_total")
        .await
        .unwrap();
    // One per user, again when a value is older than 2 s: a handful, whatever the batches.
    assert!(
        queries <= 12.0,
        "{queries} queries for 3 users: the owner policy was not decided in the gateway"
    );
}

#[tokio::test]
async fn resume_since_a_time_or_an_event_replays_then_goes_live() {
    let stack = stack_with_items().await;
    let gateway = &stack.gateways[0];
    let db = stack.db.connect().await;
    db.batch_execute("INSERT INTO public.items (id, name) VALUES (1, 'before')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // commit timestamps have to differ
    let since: String = db
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for n in 2..=50 {
        db.execute(
            "INSERT INTO public.items (id, name) VALUES ($1, 'missed')",
            &[&n],
        )
        .await
        .unwrap();
    }
    let binding = json!([{"event": "*", "schema": "public", "table": "items"}]);
    let mut client = PhoenixClient::connect(&gateway.websocket_url(&user("u1"), "2.0.0"))
        .await
        .unwrap();
    let (_, reply) = client
        .join("realtime:resume", json!({"config": {"postgres_changes": binding, "postgres_changes_options": {"since": since}}}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // Rows committed during the replay must come after it, once each.
    let writer = tokio::spawn(async move {
        for n in 51..=80 {
            db.execute(
                "INSERT INTO public.items (id, name) VALUES ($1, 'live')",
                &[&n],
            )
            .await
            .unwrap();
        }
        db
    });
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.len() < 79 {
        let got = client.expect(|f| f.event == "postgres_changes").await;
        seen.push(got.payload["data"]["record"]["id"].as_i64().unwrap());
        last_id = got.payload["data"]["id"].as_str().unwrap().to_string();
    }
    assert_eq!(
        seen,
        (2..=80).collect::<Vec<i64>>(),
        "in order, no gap, no duplicate"
    );
    let extra = client
        .expect_within(Duration::from_millis(500), |f| {
            f.event == "postgres_changes"
        })
        .await;
    assert!(extra.is_none(), "duplicate: {extra:?}");
    let db = writer.await.unwrap();

    // Resume after an event id.
    db.batch_execute("INSERT INTO public.items (id, name) VALUES (81, 'after')")
        .await
        .unwrap();
    let mut again = PhoenixClient::connect(&gateway.websocket_url(&user("u1"), "1.0.0"))
        .await
        .unwrap();
    let (_, reply) = again
        .join("realtime:resume2", json!({"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "items"}], "postgres_changes_options": {"since": last_id}}}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let got = again.expect(|f| f.event == "postgres_changes").await;
    assert_eq!(got.payload["data"]["record"]["id"], 81);

    // A bad since is refused.
    let (_, reply) = again
        .join("realtime:resume3", json!({"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "items"}], "postgres_changes_options": {"since": "yesterday"}}}))
        .await;
    assert_eq!(reply["status"], "error");
}
