//! The traps a new user met in the first hour (issue 12), each run the way the user ran it:
//!
//! * right after `nself-realtime up`, in the same directory and with no configuration, the admin
//!   commands find `up`'s Postgres: seed 002's "Complete Setup", "User Joins Channel" and
//!   "Monitor Activity" sequences run verbatim; without `up` they name both fixes;
//! * `token` signs with the running system's secret or refuses, never a secret of its own, and
//!   `token --check` says why a token is refused;
//! * `listen` on a missing or unpublished table says so instead of waiting in silence;
//! * `stats` says what "Failed" counts and shows the latest failures;
//! * a command group without its subcommand prints its help;
//! * `LOG_LEVEL` is checked, driver chatter and Postgres NOTICEs stay out of the log, no colour
//!   codes go to a file; the seeds' settings are named with their replacement at start.
//!
//! Everything runs the built binary against a real `up` (its own local Postgres) or the
//! harness' Postgres; output is compared exactly where it is ours.

use futures::{SinkExt, StreamExt};
use realtime_tests::cli_output::{ok, stderr, stdout, usage_error};
use realtime_tests::cli_project::{ProjectDir, CLI_VARIABLES};
use realtime_tests::TEST_JWT_SECRET;
use realtime_tests::{free_port, token, ws_connect, Postgres, ServiceProcess, WsMessage, WsStream};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

/// Failure guard for anything awaited.
const LIMIT: Duration = Duration::from_secs(90);

/// The binary run in `dir` with nothing of the test's environment but `env`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nself-realtime"));
    command.args(args).current_dir(dir);
    for var in CLI_VARIABLES {
        command.env_remove(var);
    }
    command
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::time::timeout(LIMIT, command(dir, args, env).output())
        .await
        .expect("the CLI finished in time")
        .expect("run nself-realtime")
}

/// `up` running in a project directory, as a user starts it: no DATABASE_URL, no secret.
struct System {
    project: ProjectDir,
    up: ServiceProcess,
    port: u16,
    cdc_port: u16,
    /// The local Postgres `up` made (from its banner).
    database_url: String,
}

impl System {
    async fn up() -> System {
        let project = ProjectDir::new("first-hour", "project");
        let (port, cdc_port) = (free_port(), free_port());
        let dir = project.0.join(".nself-realtime");
        let env: Vec<(String, String)> = [
            ("NSELF_REALTIME_DIR", dir.to_str().expect("a UTF-8 path")),
            ("REALTIME_HOST", "127.0.0.1"),
            ("REALTIME_PORT", &port.to_string()),
            ("REALTIME_CDC_PORT", &cdc_port.to_string()),
            ("REALTIME_CDC_HTTP_PORT", &free_port().to_string()),
            ("LOG_LEVEL", "info"),
            // Settings carried over from the seeds' .env.
            ("REALTIME_PRESENCE_HEARTBEAT", "30000"),
            ("WEBSOCKET_PORT", "3100"),
            ("REALTIME_MAX_CONECTIONS", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let up = ServiceProcess::start_with_args("up", &["--json"], &env, &[]);
        up.wait_for_health(port, LIMIT, |body| body["role"] == "gateway")
            .await;
        let banner: Value = up
            .log()
            .lines()
            .find(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str(line).expect("the banner is JSON"))
            .expect("up --json prints its banner once healthy");
        System {
            project,
            up,
            port,
            cdc_port,
            database_url: banner["database_url"].as_str().unwrap().to_string(),
        }
    }

    /// The CLI in the project directory, told only where `up`'s ports are (as a user who
    /// started `up` with REALTIME_PORT and REALTIME_CDC_PORT exported would be).
    async fn run(&self, args: &[&str]) -> Output {
        let (port, cdc_port) = (self.port.to_string(), self.cdc_port.to_string());
        let env = [
            ("REALTIME_PORT", port.as_str()),
            ("REALTIME_CDC_PORT", &cdc_port),
        ];
        run_in(&self.project.0, args, &env).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args).await)
    }

    async fn sql(&self, sql: &str) {
        realtime_tests::connect_url(&self.database_url)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

impl Drop for System {
    /// Ctrl-C, so that `up` stops its local Postgres even when the test failed.
    fn drop(&mut self) {
        if self.up.running() {
            let _ = self.up.interrupt();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_up_every_command_finds_the_running_system() {
    let system = System::up().await;
    up_names_the_seed_settings_it_does_not_read(&system);
    complete_setup_runs_verbatim(&system).await;
    user_joins_and_monitoring_run_verbatim(&system).await;
    listen_says_why_nothing_would_arrive(&system).await;
    token_signs_with_the_running_secret_or_refuses(&system).await;
    stats_say_what_failed(&system).await;
}

fn up_names_the_seed_settings_it_does_not_read(system: &System) {
    let log = system.up.log();
    for warning in [
        "REALTIME_MAX_CONECTIONS is not a nself-realtime setting and is ignored; the nearest one is REALTIME_MAX_CONNECTIONS",
        "REALTIME_PRESENCE_HEARTBEAT is a setting of the nself realtime plugin that nself-realtime does not read: use REALTIME_HEARTBEAT_INTERVAL, in seconds (this one was milliseconds); presence is refreshed every half interval",
        "WEBSOCKET_PORT is a setting of the nself realtime plugin that nself-realtime does not read: use REALTIME_PORT",
    ] {
        assert!(
            log.lines().any(|l| l.contains(" WARN ") && l.ends_with(warning)),
            "{warning:?} not in the log:\n{log}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

/// Seed 002, "Complete Setup", in the directory where `up` runs (the app's tables exist).
async fn complete_setup_runs_verbatim(system: &System) {
    system
        .sql(
            "CREATE TABLE public.users (id bigint PRIMARY KEY, email text);
             CREATE TABLE public.posts (id bigint PRIMARY KEY, title text);",
        )
        .await;
    assert_eq!(
        system.ok(&["init"]).await,
        "Realtime schema is up to date (publication nself_realtime).\n"
    );
    for (name, kind) in [
        ("general", "public"),
        ("announcements", "public"),
        ("support", "private"),
    ] {
        let out = system.ok(&["channel", "create", name, kind]).await;
        assert!(
            out.starts_with(&format!("✓ Channel created: {name} (ID: ")),
            "{out}"
        );
    }
    assert_eq!(
        system
            .ok(&["subscribe", "public.users", "INSERT,UPDATE,DELETE"])
            .await,
        "✓ Subscribed to public.users (INSERT, UPDATE, DELETE)\n"
    );
    assert_eq!(
        system
            .ok(&["subscribe", "public.posts", "INSERT,UPDATE"])
            .await,
        "✓ Subscribed to public.posts (INSERT, UPDATE)\n"
    );
    let status = system.ok(&["status"]).await;
    for expected in [
        "✓ 3 channels (2 public, 1 private, 0 presence)",
        "✓ 4 active subscriptions",
    ] {
        assert!(status.contains(expected), "{expected:?} not in:\n{status}");
    }
}

/// Seed 002, "User Joins Channel" and "Monitor Activity".
async fn user_joins_and_monitoring_run_verbatim(system: &System) {
    assert_eq!(
        system.ok(&["channel", "join", "general", "user-123"]).await,
        "✓ Added user-123 to general (member, can send)\n"
    );
    system
        .ok(&["presence", "track", "user-123", "general", "online"])
        .await;
    let payload = r#"{"user_id": "user-123", "name": "John Doe"}"#;
    assert_eq!(
        system
            .ok(&["broadcast", "general", "user.joined", payload])
            .await,
        "✓ Broadcast user.joined to general\n  recorded in realtime.broadcasts\n"
    );

    let (port, cdc_port) = (system.port.to_string(), system.cdc_port.to_string());
    let env = [
        ("REALTIME_PORT", port.as_str()),
        ("REALTIME_CDC_PORT", &cdc_port),
    ];
    let mut listen = command(&system.project.0, &["listen", "public.users", "300"], &env)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(listen.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("listen starts in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("Listening to public.users..."));
    system
        .sql("INSERT INTO public.users (id, email) VALUES (123, 'user@example.com')")
        .await;
    let change = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("the change arrives in time")
        .unwrap()
        .expect("listen still runs");
    assert!(
        change.ends_with(r#"] INSERT: {"email": "user@example.com", "id": 123}"#),
        "{change}"
    );
    listen.kill().await.unwrap();

    assert_eq!(
        system.ok(&["messages", "general", "50"]).await,
        "No messages in general.\n"
    );
}

async fn listen_says_why_nothing_would_arrive(system: &System) {
    usage_error(
        system.run(&["listen", "public.nosuch", "5"]).await,
        r#"LISTEN public.nosuch: table public.nosuch does not exist: check the name (unquoted names are folded to lower case; quote mixed-case ones, as in public."Users")"#,
    );
    system
        .sql("CREATE TABLE public.drafts (id bigint PRIMARY KEY)")
        .await;
    let output = system.run(&["listen", "public.drafts", "5"]).await;
    assert_eq!(
        stderr(&output),
        "error: LISTEN public.drafts: public.drafts is not published, so none of its changes reach a listener: publish it with SUBSCRIBE public.drafts (nself-realtime subscribe public.drafts)\n"
    );
    usage_error(output, "");
    usage_error(
        system.run(&["listen", "nosuch.*", "5"]).await,
        r#"LISTEN nosuch.*: schema "nosuch" does not exist"#,
    );
}

/// Reads frames until one of `type`; returns it.
async fn frame_of(ws: &mut WsStream, kind: &str) -> Value {
    loop {
        let message = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let WsMessage::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

async fn token_signs_with_the_running_secret_or_refuses(system: &System) {
    let minted = system
        .ok(&["token", "--sub", "user-123", "--exp", "1h"])
        .await;
    let minted = minted.trim();
    // The gateway accepts it.
    let url = format!("ws://127.0.0.1:{}/ws?token={minted}", system.port);
    let mut ws = ws_connect(&url).await.expect("connect /ws");
    let connected = frame_of(&mut ws, "connected").await;
    assert_eq!(connected["authenticated"], true, "{connected}");
    assert_eq!(connected["userId"], "user-123", "{connected}");

    let checked = system.ok(&["token", "--check", minted]).await;
    let lines: Vec<&str> = checked.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "✓ Token accepted (checked with .nself-realtime/jwt_secret)",
            "  role     authenticated",
            "  sub      user-123",
        ],
        "{checked}"
    );
    assert!(lines[3].starts_with("  expires  "), "{checked}");

    // In another directory there is no secret: refused, and none is made up.
    let elsewhere = ProjectDir::new("first-hour", "elsewhere");
    usage_error(
        run_in(&elsewhere.0, &["token", "--sub", "user-123"], &[]).await,
        "no JWT secret: REALTIME_JWT_SECRET is unset and .nself-realtime/jwt_secret does not exist; set REALTIME_JWT_SECRET to the gateways' secret, or run this where `nself-realtime up` keeps it (or set NSELF_REALTIME_DIR to that directory)",
    );
    assert!(!elsewhere.0.join(".nself-realtime").exists());
    // Pointed at the system's directory, it finds the secret.
    let dir = system.project.0.join(".nself-realtime");
    let env = [("NSELF_REALTIME_DIR", dir.to_str().unwrap())];
    ok(run_in(&elsewhere.0, &["token", "--check", minted], &env).await);
    // Signed with another secret: refused with the reason.
    let output = run_in(
        &system.project.0,
        &["--json", "token", "--check", minted],
        &[(
            "REALTIME_JWT_SECRET",
            "another-secret-of-at-least-32-bytes!",
        )],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let verdict: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(verdict["accepted"], false);
    assert_eq!(verdict["problem"], "bad_signature");
    assert_eq!(verdict["checked_with"], "REALTIME_JWT_SECRET");
}

/// A request the gateway refuses (a message to a room not joined) shows in `stats` by code,
/// with its message.
async fn stats_say_what_failed(system: &System) {
    let user = system
        .ok(&["token", "--sub", "user-9", "--exp", "1h"])
        .await;
    let url = format!("ws://127.0.0.1:{}/ws?token={}", system.port, user.trim());
    let mut ws = ws_connect(&url).await.expect("connect /ws");
    frame_of(&mut ws, "connected").await;
    let send = json!({"type": "message", "channel": "general", "content": "hi", "id": 1});
    ws.send(WsMessage::Text(send.to_string().into()))
        .await
        .unwrap();
    let error = frame_of(&mut ws, "error").await;
    assert_eq!(error["code"], "ROOM_ACCESS_DENIED", "{error}");

    // The event log is written once a second: wait until the failure is in it.
    let deadline = Instant::now() + LIMIT;
    let stats = loop {
        let stats: Value = serde_json::from_str(&system.ok(&["--json", "stats"]).await).unwrap();
        if stats["latest_failures"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break stats;
        }
        assert!(Instant::now() < deadline, "no failure logged: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats["messages_since_start"]["failed"], 1, "{stats}");
    assert_eq!(
        stats["messages_since_start"]["failed_by_code"],
        json!({"ROOM_ACCESS_DENIED": 1})
    );
    let failure = &stats["latest_failures"][0];
    assert_eq!(failure["error_code"], "ROOM_ACCESS_DENIED");
    assert_eq!(failure["user_id"], "user-9");
    assert_eq!(failure["channel"], "general");

    let text = system.ok(&["stats"]).await;
    let failed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("  Failed:"))
        .take(3)
        .collect();
    assert_eq!(
        failed[0],
        "  Failed:                  1 client request refused (ROOM_ACCESS_DENIED 1)"
    );
    assert_eq!(failed[1], "  Latest (realtime.events, type error):");
    assert!(
        failed[2].ends_with("] ROOM_ACCESS_DENIED (user-9 in general): join room general first (room:join / subscribe)"),
        "{text}"
    );
}

#[tokio::test]
async fn without_up_or_database_url_admin_commands_name_both_fixes() {
    let project = ProjectDir::new("first-hour", "nothing");
    for args in [
        &["init"][..],
        &["channel", "list"],
        &["messages", "general"],
        &["replay", "general", "2026-01-30T09:00:00Z"],
        &["events", "general"],
        &["cleanup"],
    ] {
        usage_error(
            run_in(&project.0, args, &[]).await,
            "no database: set DATABASE_URL (or --database-url) to your Postgres, or run `nself-realtime up` in this directory first (its local Postgres in .nself-realtime is then used; NSELF_REALTIME_DIR names another directory)",
        );
    }
    // A cluster `up` made, not running.
    std::fs::create_dir_all(project.0.join(".nself-realtime/postgres")).unwrap();
    std::fs::write(
        project.0.join(".nself-realtime/postgres/PG_VERSION"),
        "16\n",
    )
    .unwrap();
    usage_error(
        run_in(&project.0, &["channel", "list"], &[]).await,
        "no database: DATABASE_URL is unset and the local Postgres of `nself-realtime up` in .nself-realtime is not running; start `nself-realtime up` (or `nself-realtime start`) in this directory, or set DATABASE_URL",
    );
}

#[tokio::test]
async fn token_check_says_why_a_token_is_refused() {
    let project = ProjectDir::new("first-hour", "check");
    let secret = [("REALTIME_JWT_SECRET", TEST_JWT_SECRET)];
    let check = |jwt: String| {
        let dir = project.0.clone();
        async move { run_in(&dir, &["token", "--check", &jwt], &secret).await }
    };
    let refused = |output: Output, reason: &str| {
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(stderr(&output), format!("error: token refused: {reason}\n"));
        assert_eq!(stdout(&output), "");
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let no_exp = json!({"sub": "u1"}).as_object().unwrap().clone();
    let no_exp = nself_realtime_shared::jwt::mint_hs256(TEST_JWT_SECRET, &no_exp);
    let accepted = ok(check(no_exp).await);
    assert_eq!(
        accepted,
        "✓ Token accepted (checked with REALTIME_JWT_SECRET)\n  role     anon (no role claim)\n  sub      u1\n  expires  never (no exp claim)\n"
    );
    let expired = check(token(json!({"role": "anon", "exp": now - 3600}))).await;
    let err = stderr(&expired);
    assert_eq!(expired.status.code(), Some(1));
    assert!(
        err.starts_with("error: token refused: Token has expired 36")
            && err.contains(" seconds ago (exp 20"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with(" UTC); mint a new one (`nself-realtime token --exp 24h`)"),
        "{err}"
    );
    let early = check(token(json!({"role": "anon", "nbf": now + 3600}))).await;
    assert!(
        stderr(&early)
            .starts_with("error: token refused: the token is not valid yet: its nbf is 3"),
        "{}",
        stderr(&early)
    );
    refused(
        check(token(json!({"role": "postgres"}))).await,
        "its role \"postgres\" is not one of REALTIME_DB_ROLES (anon,authenticated,service_role): the gateways accept the connection but refuse every channel it joins; mint it with one of those roles (--role), or add the role to REALTIME_DB_ROLES",
    );
    refused(
        check(token(json!({"role": 7}))).await,
        "the token's \"role\" claim must be a string",
    );
    refused(
        check("not-a-token".into()).await,
        "the token is malformed: InvalidToken; pass the whole token: three base64url parts joined by dots",
    );
    // Without a secret anywhere: the fix, not a verdict.
    usage_error(
        run_in(&project.0, &["token", "--check", &token(json!({}))], &[]).await,
        "no JWT secret",
    );
    // --check mints nothing and takes no minting options.
    usage_error(
        run_in(
            &project.0,
            &["token", "--check", "x", "--sub", "u"],
            &secret,
        )
        .await,
        "cannot be used with",
    );
}

#[tokio::test]
async fn a_group_without_its_subcommand_prints_its_help() {
    let dir = ProjectDir::new("first-hour", "help");
    for group in ["channel", "presence"] {
        let output = run_in(&dir.0, &[group], &[]).await;
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(stdout(&output), "");
        let help = stderr(&output);
        assert!(
            help.contains(&format!(
                "\nUsage: nself-realtime {group} [OPTIONS] <COMMAND>\n\nCommands:\n"
            )),
            "{help}"
        );
        assert!(help.contains("\nOptions:\n"), "{help}");
        // The same as --help.
        let asked = ok(run_in(&dir.0, &[group, "--help"], &[]).await);
        assert_eq!(help, asked);
    }
}

#[tokio::test]
async fn log_settings_are_checked_and_the_log_keeps_to_what_matters() {
    let dir = ProjectDir::new("first-hour", "logs");
    let db = Postgres::shared().fresh_database().await;
    let database = [("DATABASE_URL", db.url.as_str())];
    usage_error(
        run_in(&dir.0, &["init"], &[("LOG_LEVEL", "bogus"), database[0]]).await,
        "LOG_LEVEL=\"bogus\" is not a level or filter (\"bogus\" is not a level); use error, warn, info, debug, trace or off, or directives like info,nself_realtime_gateway=debug",
    );
    ok(run_in(&dir.0, &["init"], &database).await);
    // Again, at info: Postgres' "already exists, skipping" notices are not printed.
    let again = run_in(&dir.0, &["init"], &[("LOG_LEVEL", "info"), database[0]]).await;
    assert_eq!(stderr(&again), "");
    ok(again);
    // At debug: our own debug lines, not every SQL statement of the driver; no colour codes
    // on a stderr that is not a terminal.
    let debug = run_in(
        &dir.0,
        &["channel", "list"],
        &[("LOG_LEVEL", "debug"), database[0]],
    )
    .await;
    let log = stderr(&debug);
    ok(debug);
    assert!(!log.contains("tokio_postgres"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
    let trace = run_in(
        &dir.0,
        &["channel", "list"],
        &[("LOG_LEVEL", "trace"), database[0]],
    )
    .await;
    assert!(
        stderr(&trace).contains("tokio_postgres"),
        "at trace the driver speaks"
    );
}

#[tokio::test]
async fn long_running_commands_name_the_seed_settings_they_do_not_read() {
    let dir = ProjectDir::new("first-hour", "env");
    // A configuration error ends `cdc` at once, after the warnings.
    let output = run_in(
        &dir.0,
        &["cdc"],
        &[
            ("DATABASE_URL", "postgres://127.0.0.1:1/db"),
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("REALTIME_SLOT", "Bad-Slot"),
            ("LOG_FORMAT", "json"),
            ("REALTIME_REDIS_URL", "redis://localhost:6379"),
            ("WEBSOCKET_PING_INTERVAL", "25000"),
            ("REALTIME_NOTIFY_CHANNEL", "orders"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let warnings: Vec<String> = stderr(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["level"] == "WARN")
        .map(|entry| entry["fields"]["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            "REALTIME_NOTIFY_CHANNEL is not a nself-realtime setting and is ignored; the nearest one is REALTIME_NOTIFY_CHANNELS",
            "REALTIME_REDIS_URL is a setting of the nself realtime plugin that nself-realtime does not read: there is no Redis: gateways share broadcasts and presence through NATS, so set NATS_URL (unset, `up` uses an in-process bus)",
            "WEBSOCKET_PING_INTERVAL is a setting of the nself realtime plugin that nself-realtime does not read: use REALTIME_HEARTBEAT_INTERVAL, in seconds",
        ]
    );
    // One-shot commands say nothing of them.
    let quiet = run_in(
        &dir.0,
        &["token", "--check", "x"],
        &[("WEBSOCKET_PORT", "3100")],
    )
    .await;
    assert!(
        !stderr(&quiet).contains("WEBSOCKET_PORT"),
        "{}",
        stderr(&quiet)
    );
}
