//! The two ways the JavaScript tests run: the machine's `node` with the pinned
//! `@supabase/supabase-js`, and Node 22 from npm (`tests/js/node22`) with the newest
//! supabase-js 2.x (`supabase-js-latest`, an npm alias in `tests/js/package.json`). Both
//! `js_clients.rs` and `readme_examples.rs` run their files once per [`NodeRun`].

use std::path::{Path, PathBuf};

/// One run: which node executable, which supabase-js (a package in `tests/js/node_modules`).
#[derive(Debug, Clone, Copy)]
pub struct NodeRun {
    pub name: &'static str,
    /// `node` (on PATH) or a path relative to `tests/js`.
    pub node: &'static str,
    pub supabase_js: &'static str,
}

/// The machine's node and the pinned supabase-js.
pub const PINNED: NodeRun = NodeRun {
    name: "system node + pinned supabase-js",
    node: "node",
    supabase_js: "@supabase/supabase-js",
};

/// Node 22 from npm and the newest supabase-js 2.x.
pub const NEWEST: NodeRun = NodeRun {
    name: "Node 22 + newest supabase-js",
    node: "node22/node_modules/.bin/node",
    supabase_js: "supabase-js-latest",
};

/// `tests/js`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

impl NodeRun {
    /// The node executable and the supabase-js package directory of this run; panics with the
    /// install command when either is missing.
    pub fn installed(&self) -> (PathBuf, PathBuf) {
        let js = js_dir();
        let node = if self.node.contains('/') {
            js.join(self.node)
        } else {
            PathBuf::from(self.node)
        };
        let package = js.join("node_modules").join(self.supabase_js);
        assert!(
            package.exists() && (!self.node.contains('/') || node.exists()),
            "[{}] {} or {} is not installed: run `npm ci --prefix tests/js` and `npm ci --prefix tests/js/node22` (scripts/test does)",
            self.name,
            node.display(),
            package.display()
        );
        (node, package)
    }
}

/// What `node --version` prints for the executable `node`.
pub fn node_version(node: &Path) -> String {
    let output = std::process::Command::new(node)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (install Node.js: scripts/test does)",
                node.display()
            )
        });
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The `version` of the npm package installed in `dir`.
pub fn package_version(dir: &Path) -> String {
    let manifest = std::fs::read_to_string(dir.join("package.json"))
        .unwrap_or_else(|e| panic!("read {}/package.json: {e}", dir.display()));
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    manifest["version"].as_str().unwrap_or("?").to_string()
}
