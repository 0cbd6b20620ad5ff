//! `nself-realtime up` as a newcomer runs it: no DATABASE_URL, no NATS_URL, no secret. It must
//! create a local Postgres, print working URLs and tokens, deliver the demo table's changes to a
//! Phoenix client under RLS, accept tokens from `nself-realtime token`, and on Ctrl-C stop
//! everything, the local Postgres included; a second `up` in the same directory reuses it all.

use realtime_tests::{free_port, PhoenixClient, ServiceProcess};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts `up --json` in `dir`; returns the process, its gateway port and the banner.
async fn start_up(dir: &Path) -> (ServiceProcess, u16, Value) {
    let port = free_port();
    let env = [
        ("NSELF_REALTIME_DIR", dir.to_str().expect("UTF-8 dir")),
        ("REALTIME_HOST", "127.0.0.1"),
        ("REALTIME_PORT", &port.to_string()),
        ("REALTIME_CDC_PORT", &free_port().to_string()),
        ("REALTIME_CDC_HTTP_PORT", &free_port().to_string()),
        ("LOG_LEVEL", "info"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let process = ServiceProcess::start_with_args("up", &["--json"], &env, &[]);
    process
        .wait_for_health(port, Duration::from_secs(90), |body| {
            body["role"] == "gateway"
        })
        .await;
    let banner = process
        .log()
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<Value>(line).expect("the banner is JSON"))
        .expect("up --json prints its banner once healthy");
    (process, port, banner)
}

fn mint_with_cli(dir: &Path, sub: &str) -> String {
    let output = std::process::Command::new(realtime_tests::binary())
        .args(["token", "--sub", sub, "--exp", "1h"])
        .env("NSELF_REALTIME_DIR", dir)
        .env_remove("REALTIME_JWT_SECRET")
        .output()
        .expect("run nself-realtime token");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Joins the demo table's changes as `token`; returns the client and its join ref.
async fn follow_todos(port: u16, anon_key: &str, token: &str) -> (PhoenixClient, String) {
    let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={anon_key}&vsn=1.0.0");
    let mut client = PhoenixClient::connect(&url).await.expect("connect");
    let (join_ref, reply) = client
        .join(
            "realtime:todos",
            json!({
                "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "todos"}]},
                "access_token": token,
            }),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    (client, join_ref)
}

#[tokio::test]
async fn up_from_nothing_serves_changes_and_stops_everything() {
    let dir = tempfile::Builder::new()
        .prefix("nself-realtime-up-")
        .tempdir_in("/tmp")
        .unwrap();
    let (mut up, port, banner) = start_up(dir.path()).await;
    let database_url = banner["database_url"].as_str().unwrap().to_string();
    let anon_key = banner["anon_key"].as_str().unwrap().to_string();
    assert_eq!(banner["url"], format!("http://127.0.0.1:{port}"));

    // The demo user (banner token) and a user minted by `token`: RLS keeps their rows apart.
    let (mut demo, _) =
        follow_todos(port, &anon_key, banner["demo_user_token"].as_str().unwrap()).await;
    let (mut other, _) = follow_todos(port, &anon_key, &mint_with_cli(dir.path(), "someone")).await;
    let db = realtime_tests::connect_url(&database_url).await;
    db.batch_execute(
        "INSERT INTO public.todos (task, user_id) VALUES ('for demo', 'demo-user');
         INSERT INTO public.todos (task, user_id) VALUES ('for someone', 'someone');",
    )
    .await
    .unwrap();
    let change = demo.expect(|f| f.event == "postgres_changes").await.payload;
    assert_eq!(change["data"]["record"]["task"], "for demo", "{change}");
    let change = other
        .expect(|f| f.event == "postgres_changes")
        .await
        .payload;
    assert_eq!(change["data"]["record"]["task"], "for someone", "{change}");
    drop(db);

    // Ctrl-C stops the gateway, the CDC and the local Postgres, and exits 0.
    let stopped = Instant::now();
    let status = up.interrupt();
    assert!(
        status.success(),
        "up exited with {status}; log:\n{}",
        up.log()
    );
    assert!(
        !dir.path().join("postgres/postmaster.pid").exists(),
        "the local Postgres still runs after up stopped; log:\n{}",
        up.log()
    );
    assert!(
        tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .is_err(),
        "the local Postgres still accepts connections"
    );
    println!("up stopped in {:?}", stopped.elapsed());

    // A second `up` in the same directory finds the same cluster, secret and table.
    let (_up, port, again) = start_up(dir.path()).await;
    assert_eq!(again["database_url"], banner["database_url"]);
    let (mut demo, _) = follow_todos(
        port,
        again["anon_key"].as_str().unwrap(),
        &mint_with_cli(dir.path(), "demo-user"),
    )
    .await;
    let db = realtime_tests::connect_url(&database_url).await;
    db.batch_execute("INSERT INTO public.todos (task, user_id) VALUES ('again', 'demo-user')")
        .await
        .unwrap();
    let change = demo.expect(|f| f.event == "postgres_changes").await.payload;
    assert_eq!(change["data"]["record"]["task"], "again", "{change}");
}

/// The inspector under `up`, in a real browser (`tests/js/browser/inspector_up.mjs`): it offers
/// the demo user token on loopback, and every snippet of its "Get started" screen runs as shown.
#[tokio::test]
async fn the_inspector_under_up_offers_its_keys_and_its_snippets_run() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    let node22 = js.join("node22/node_modules/.bin/node");
    assert!(
        js.join("browser/node_modules/playwright-core").exists() && node22.exists(),
        "run `npm ci` in tests/js, tests/js/node22 and tests/js/browser (scripts/test does)"
    );
    let dir = tempfile::Builder::new()
        .prefix("nself-realtime-up-")
        .tempdir_in("/tmp")
        .unwrap();
    let (_up, port, _) = start_up(dir.path()).await;
    let mut node = std::process::Command::new("node");
    node.args(["--test", "--test-reporter=spec", "browser/inspector_up.mjs"])
        .current_dir(&js)
        .env("INSPECTOR_URL", format!("http://127.0.0.1:{port}"))
        .env("NODE22", &node22);
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("run node");
    println!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the inspector under up failed");
}
