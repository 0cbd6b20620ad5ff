//! Runs the inspector's browser test (`tests/js/browser/inspector.mjs`: Debian's chromium driven
//! by playwright-core) against a whole stack: private Postgres and NATS, the CDC and two
//! gateways. The stack's addresses and tokens reach it through the environment variables
//! `tests/js/helpers.mjs` reads, as for `js_clients.rs`.
//!
//! `INSPECTOR_SCREENSHOT=<path>` also saves the README's picture of the page.

use realtime_tests::{token, Stack};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// Where scripts/test installs the browser (Debian's package `chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test]
async fn the_inspector_in_a_real_browser() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("browser/node_modules/playwright-core").exists()
            && js.join("node_modules/@supabase/supabase-js").exists(),
        "run `npm ci --prefix tests/js` and `npm ci --prefix tests/js/browser` (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test does: apt-get install chromium)"
    );
    let stack = Stack::start(2, &[]).await;
    let user = |sub: &str| token(json!({"role": "authenticated", "sub": sub}));
    let tokens = json!({"alice": user("alice"), "bob": user("bob")});
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec", "browser/inspector.mjs"])
        .current_dir(&js)
        .env("CHROMIUM", &chromium)
        .env("GATEWAY_A", stack.gateways[0].http_url())
        .env("GATEWAY_B", stack.gateways[1].http_url())
        .env("DATABASE_URL", &stack.db.url)
        .env("ANON_KEY", token(json!({"role": "anon"})))
        .env("SERVICE_KEY", token(json!({"role": "service_role"})))
        .env("TOKENS", tokens.to_string())
        .env("USER_IDS", "{}");
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("run node (install Node.js: scripts/test does)");
    println!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        for (n, gateway) in stack.gateways.iter().enumerate() {
            eprintln!("--- gateway {n} log ---\n{}", gateway.log());
        }
        panic!("the inspector's browser test failed");
    }
}
