//! The README's client snippets are files of `examples/` that run as shown (issue 12: the
//! supabase-js snippet the README showed said SUBSCRIBED and then delivered nothing).
//!
//! * Every JavaScript block of README.md is an example file, byte for byte (its first line names
//!   the file), every example is in the README, and `examples/package.json` pins the versions
//!   `tests/js` tests with.
//! * Each example runs unmodified, with `node`, against a whole stack (private Postgres and NATS,
//!   the CDC, a gateway, and `up`'s demo table), and prints what the README says it prints. The
//!   examples run twice, like `js_clients.rs`: with the machine's node and the pinned
//!   supabase-js (2.119.1, ws as transport), and with Node 22 and the newest supabase-js 2.x
//!   (Node's own WebSocket). They run from a scratch directory inside `tests/js`, so their
//!   imports resolve to its `node_modules` (in the Node 22 run, `@supabase/supabase-js` there
//!   is a link to `supabase-js-latest`).
//!
//! Each example is followed by reading its output line by line as it comes; the test acts (a row
//! inserted) only once the example has said it is ready (SUBSCRIBED). The pattern the README
//! used to show (`realtime.setAuth(token)` alone) runs too, and must fail as *Tokens* says.

use realtime_tests::node_runs::{js_dir, node_version, package_version, NodeRun, NEWEST, PINNED};
use realtime_tests::{token, Stack};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Mutex;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// The fenced code blocks of `markdown`: (language, content with its final newline).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        open = match open {
            None => line
                .strip_prefix("```")
                .map(|language| (language.trim().to_string(), String::new())),
            Some(block) if line == "```" => {
                blocks.push(block);
                None
            }
            Some((language, mut content)) => {
                content.push_str(line);
                content.push('\n');
                Some((language, content))
            }
        };
    }
    blocks
}

/// The example files: name → content.
fn examples() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "mjs"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_readme_client_snippet_is_an_example_file_verbatim() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let files = examples();
    assert!(files.len() >= 3, "{files:?}");
    let mut shown = Vec::new();
    for (language, block) in code_blocks(&readme) {
        if !matches!(language.as_str(), "js" | "javascript" | "mjs") {
            continue;
        }
        let first = block.lines().next().unwrap_or_default();
        let name = first
            .strip_prefix("// examples/")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| {
                panic!("a README JavaScript block that is no example file:\n{block}")
            });
        let (_, content) = files
            .iter()
            .find(|(file, _)| file == name)
            .unwrap_or_else(|| panic!("the README shows examples/{name}, which does not exist"));
        assert_eq!(
            &block, content,
            "the README's block differs from examples/{name}"
        );
        shown.push(name.to_string());
    }
    for (file, _) in &files {
        assert!(
            shown.contains(file),
            "examples/{file} is not shown in the README"
        );
    }
    pinned_like_the_tests();
}

/// `examples/package.json` pins what `tests/js/package.json` pins, for the packages it names.
fn pinned_like_the_tests() {
    let read = |path: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
    };
    let (examples, tests) = (read("examples/package.json"), read("tests/js/package.json"));
    let dependencies = examples["dependencies"].as_object().expect("dependencies");
    for (package, version) in dependencies {
        assert_eq!(
            version, &tests["dependencies"][package],
            "examples/package.json pins {package} {version}; tests/js tests {}",
            tests["dependencies"][package]
        );
    }
}

/// `up`'s demo table (cli/src/commands/up.rs), which the README's examples follow.
const DEMO_TABLE: &str = "CREATE TABLE public.todos (
         id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         task text NOT NULL,
         done boolean NOT NULL DEFAULT false,
         user_id text NOT NULL DEFAULT realtime.user_id(),
         inserted_at timestamptz NOT NULL DEFAULT now()
     );
     ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
     CREATE POLICY todos_owner ON public.todos FOR ALL TO authenticated
         USING (user_id = realtime.user_id()) WITH CHECK (user_id = realtime.user_id());
     CREATE POLICY todos_service ON public.todos FOR ALL TO service_role USING (true) WITH CHECK (true);
     GRANT SELECT, INSERT, UPDATE, DELETE ON public.todos TO authenticated, service_role;";

/// The runs share the machine's two cores with every other test: one at a time.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[tokio::test]
async fn examples_run_on_system_node_with_pinned_supabase_js() {
    run_examples(PINNED).await;
}

#[tokio::test]
async fn examples_run_on_node22_with_newest_supabase_js() {
    run_examples(NEWEST).await;
}

async fn run_examples(run: NodeRun) {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let js = js_dir();
    let (node, package) = run.installed();
    let scratch = scratch_dir(&js, &package);
    let stack = Stack::start(1, &[]).await;
    stack.sql(DEMO_TABLE).await;
    stack.publish("public.todos").await;
    println!(
        "[{}] node {}, supabase-js {}",
        run.name,
        node_version(&node),
        package_version(&package)
    );
    let env = [
        ("REALTIME_URL", stack.gateways[0].http_url()),
        ("ANON_KEY", token(json!({"role": "anon"}))),
        (
            "USER_TOKEN",
            token(json!({"role": "authenticated", "sub": "demo-user"})),
        ),
    ];
    std::fs::write(scratch.path().join("set-auth-alone.mjs"), SET_AUTH_ALONE).unwrap();
    let start = |file: &str| Example::start(&node, scratch.path(), file, &env);
    set_auth_alone_is_closed(start("set-auth-alone.mjs")).await;
    supabase_js_follows_the_demo_table(start("supabase-js.mjs"), &stack).await;
    socket_io_says_hi_after_joining(start("socket-io.mjs")).await;
    plain_websocket_round_trip(start("websocket.mjs")).await;
}

/// A directory inside `tests/js` holding copies of the examples (imports resolve from there to
/// `tests/js/node_modules`); `@supabase/supabase-js` in it is `package` when that is not the
/// pinned one.
fn scratch_dir(js: &Path, package: &Path) -> tempfile::TempDir {
    let scratch = tempfile::Builder::new()
        .prefix(".examples-")
        .tempdir_in(js)
        .unwrap();
    for (name, _) in examples() {
        std::fs::copy(
            root().join("examples").join(&name),
            scratch.path().join(&name),
        )
        .unwrap();
    }
    if !package.ends_with("@supabase/supabase-js") {
        let supabase = scratch.path().join("node_modules/@supabase");
        std::fs::create_dir_all(&supabase).unwrap();
        std::os::unix::fs::symlink(package, supabase.join("supabase-js")).unwrap();
    }
    scratch
}

/// The pattern the README used to show, and the trap it fell into: the user's JWT given to
/// `setAuth` only. supabase-js re-sends its own token (the anon key, with no Supabase Auth
/// session) right after the join, which re-authorizes the channel as `anon`; the demo table is
/// not readable by `anon`, so the gateway closes the channel.
const SET_AUTH_ALONE: &str = "
import { createClient } from '@supabase/supabase-js'
const realtime = globalThis.WebSocket ? {} : { transport: (await import('ws')).default }
const supabase = createClient(process.env.REALTIME_URL, process.env.ANON_KEY, { realtime })
supabase.realtime.setAuth(process.env.USER_TOKEN)
supabase.channel('todos')
  .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, () => {})
  .subscribe((status) => console.log(status))
";

/// [`SET_AUTH_ALONE`]: SUBSCRIBED, then CLOSED (what the README's *Tokens* says).
async fn set_auth_alone_is_closed(mut trap: Example) {
    trap.line(|l| l == "SUBSCRIBED").await;
    trap.line(|l| l == "CLOSED").await;
    trap.finish().await;
}

/// `examples/supabase-js.mjs`: SUBSCRIBED, then the demo user's row and not another user's.
async fn supabase_js_follows_the_demo_table(mut example: Example, stack: &Stack) {
    example.line(|l| l.starts_with("SUBSCRIBED")).await;
    stack
        .sql(
            "INSERT INTO public.todos (task, user_id) VALUES ('for someone else', 'someone');
             INSERT INTO public.todos (task, user_id) VALUES ('hello', 'demo-user');",
        )
        .await;
    // Changes arrive in commit order: the first one shown must be the demo user's.
    let change = example.line(|l| l.starts_with("INSERT")).await;
    let record: Value = serde_json::from_str(change.trim_start_matches("INSERT ").trim())
        .unwrap_or_else(|e| panic!("{change}: {e}"));
    assert_eq!(record["task"], "hello", "{change}");
    assert_eq!(record["user_id"], "demo-user", "{change}");
    example.finish().await;
}

/// `examples/socket-io.mjs`: authenticated, joined, and its own message back.
async fn socket_io_says_hi_after_joining(mut example: Example) {
    example.line(|l| l == "authenticated as demo-user").await;
    example.line(|l| l == "joined general").await;
    example.line(|l| l == "demo-user: hi").await;
    example.finish().await;
}

/// `examples/websocket.mjs`: the three acks and the message event.
async fn plain_websocket_round_trip(mut example: Example) {
    let frame = |line: &str| serde_json::from_str::<Value>(line).unwrap_or(Value::Null);
    example.line(|l| frame(l)["type"] == "connected").await;
    for (id, request) in [(1, "auth"), (2, "subscribe"), (3, "message")] {
        let ack = example.line(|l| frame(l)["id"] == id).await;
        assert_eq!(frame(&ack)["type"], "ack", "{request}: {ack}");
    }
    let message = example
        .line(|l| frame(l)["type"] == "message" && frame(l)["channel"] == "general")
        .await;
    assert_eq!(
        frame(&message)["payload"]["content"],
        "Hello, world!",
        "{message}"
    );
    example.finish().await;
}

/// A running example: its stdout read line by line, its stderr kept for failures.
struct Example {
    file: String,
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Example {
    fn start(node: &Path, dir: &Path, file: &str, env: &[(&str, String)]) -> Example {
        let mut child = tokio::process::Command::new(node)
            .arg(file)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run {} {file}: {e}", node.display()));
        let stdout = child.stdout.take().unwrap();
        Example {
            file: file.to_string(),
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line of output matching `wanted` (within 30 s); earlier ones are kept for the
    /// failure message.
    async fn line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                outcome => {
                    let ended = matches!(outcome, Ok(Ok(None)));
                    self.fail(if ended { "exited" } else { "timed out" }).await
                }
            }
        }
    }

    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        panic!(
            "{} {why} before printing what the README says; stdout:\n{}\nstderr:\n{stderr}",
            self.file,
            self.seen.join("\n")
        );
    }

    /// Stops the example (it would run until interrupted, as the README says).
    async fn finish(mut self) {
        self.child.kill().await.expect("stop the example");
        println!("{}:\n  {}", self.file, self.seen.join("\n  "));
    }
}
