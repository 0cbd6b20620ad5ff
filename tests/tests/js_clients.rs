//! Runs the real JavaScript clients of `tests/js/` (supabase-js, socket.io-client, ws and pg,
//! pinned in its package.json) against a whole stack: private Postgres and NATS, the CDC and two
//! gateways. The stack's addresses and tokens reach the JS tests through environment variables;
//! node's test runner reports each case, and a test here fails if any of them does.
//!
//! The suite runs twice, each time against a stack of its own: with the machine's `node` and the
//! pinned `@supabase/supabase-js` (what scripts/test has always run), and with Node 22 from npm
//! (`tests/js/node22`) and the newest supabase-js 2.x (`supabase-js-latest`, an npm alias), which
//! needs Node >= 22 and there uses Node's own WebSocket. Each run prints the versions it used.

use realtime_tests::node_runs::{js_dir, node_version, package_version, NodeRun, NEWEST, PINNED};
use realtime_tests::{token, Stack};
use serde_json::json;
use std::process::Command;
use std::time::Instant;
use tokio::sync::Mutex;

#[tokio::test]
async fn js_clients_system_node_pinned_supabase_js() {
    run_suite(PINNED).await;
}

#[tokio::test]
async fn js_clients_node22_newest_supabase_js() {
    run_suite(NEWEST).await;
}

/// The two runs take turns: each is a whole stack plus a node process, and the suite's
/// time-bound checks (typing expiry, presence leave) should not compete with the other run.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn run_suite(run: NodeRun) {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let js = js_dir();
    let (node, package) = run.installed();
    let node_version = node_version(&node);
    // realtime-js resolves as node resolves it: nested under the package, else hoisted.
    let nested = package.join("node_modules/@supabase/realtime-js");
    let realtime_js = if nested.exists() {
        nested
    } else {
        js.join("node_modules/@supabase/realtime-js")
    };
    let versions = format!(
        "node {node_version}, {} {} (@supabase/supabase-js), @supabase/realtime-js {}",
        run.supabase_js,
        package_version(&package),
        package_version(&realtime_js)
    );
    println!("[{}] {versions}", run.name);

    // Typing indicators expire after 1 s instead of 3 s, to keep the expiry test short.
    let stack = Stack::start(2, &[("REALTIME_TYPING_TIMEOUT", "1000")]).await;
    // Supabase users' ids are UUIDs, which the policies of Supabase's docs cast (auth.uid()).
    let user_ids = json!({
        "ana": "7d0f3f7e-6a51-4d0c-9a43-000000000001",
        "ben": "7d0f3f7e-6a51-4d0c-9a43-000000000002",
        "rita": "7d0f3f7e-6a51-4d0c-9a43-000000000003",
        "otto": "7d0f3f7e-6a51-4d0c-9a43-000000000004",
    });
    let supabase_user = |name: &str| token(json!({"role": "authenticated", "sub": user_ids[name]}));
    let tokens = json!({
        "ana": supabase_user("ana"),
        "ben": supabase_user("ben"),
        "rita": supabase_user("rita"),
        "otto": supabase_user("otto"),
        "alice": token(json!({"role": "authenticated", "sub": "alice"})),
        "bob": token(json!({"role": "authenticated", "sub": "bob"})),
        "expired": token(json!({"role": "authenticated", "sub": "alice", "exp": 1_000_000_000u64})),
        "forged": nself_realtime_shared::jwt::mint_hs256(
            "not-the-secret-not-the-secret-not-the-secret",
            json!({"role": "authenticated", "sub": "alice", "exp": 4_000_000_000u64}).as_object().unwrap(),
        ),
    });
    // JS_TEST_FILES (space-separated) runs only those files, for working on one of them.
    let only: Vec<String> = std::env::var("JS_TEST_FILES")
        .map(|files| files.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&node)
            .args([
                "--test",
                "--test-concurrency=1",
                "--test-timeout=120000",
                "--test-reporter=spec",
            ])
            .args(&only)
            .current_dir(&js)
            .env("SUPABASE_JS_PACKAGE", run.supabase_js)
            .env("GATEWAY_A", stack.gateways[0].http_url())
            .env("GATEWAY_B", stack.gateways[1].http_url())
            .env("DATABASE_URL", &stack.db.url)
            .env("ANON_KEY", token(json!({"role": "anon"})))
            .env("SERVICE_KEY", token(json!({"role": "service_role"})))
            .env("TOKENS", tokens.to_string())
            .env("USER_IDS", user_ids.to_string())
            .output()
            .map(|output| (output, stack))
    })
    .await
    .unwrap();
    let (output, stack) = output.unwrap_or_else(|e| panic!("[{}] run node: {e}", run.name));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    println!(
        "[{}] {versions}: node's test run took {:.1?}",
        run.name,
        started.elapsed()
    );
    if !output.status.success() {
        for (n, gateway) in stack.gateways.iter().enumerate() {
            eprintln!("--- gateway {n} log ---\n{}", gateway.log());
        }
        panic!("the JS client tests failed with {} ({versions})", run.name);
    }
}
