//! Runs the real JavaScript clients of `tests/js/` (supabase-js, socket.io-client, ws and pg,
//! pinned in its package.json) against a whole stack: private Postgres and NATS, the CDC and two gateways. The stack's
//! addresses and tokens reach the JS tests through environment variables; node's test runner
//! reports each case, and this test fails if any of them does.

use realtime_tests::{token, Stack};
use serde_json::json;
use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn js_clients_against_two_gateways() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/@supabase/supabase-js").exists(),
        "tests/js has no node_modules: run `npm ci --prefix tests/js` (scripts/test does)"
    );
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
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([
                "--test",
                "--test-concurrency=1",
                "--test-timeout=120000",
                "--test-reporter=spec",
            ])
            .args(&only)
            .current_dir(&js)
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
    let (output, stack) = output.expect("run node (install Node.js: scripts/test does)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        for (n, gateway) in stack.gateways.iter().enumerate() {
            eprintln!("--- gateway {n} log ---\n{}", gateway.log());
        }
        panic!("the JS client tests failed");
    }
}
