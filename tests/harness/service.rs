//! Running a long-lived `nself-realtime` subcommand (`cdc`, `gateway`, `up`) as a child process
//! that tests can kill with SIGKILL, stop with SIGTERM, restart, and ask for `/health`; its
//! stdout and stderr go to a log file that is printed when a test fails. Also where the binary
//! is found, and one-shot runs of it.
//!
//! The binary is the one `cargo build` put beside the test executables (`scripts/test` builds
//! the workspace before testing).

use crate::http::http_get_json;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `nself-realtime` binary of this build.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    // Tests run from target/<profile>/deps/, binaries (realtime-bench) from target/<profile>/;
    // nself-realtime is in target/<profile>/ either way.
    let dir = exe.parent().expect("executable in a directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let binary = dir.join("nself-realtime");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p nself-realtime` first (scripts/test does)",
        binary.display()
    );
    binary
}

/// Runs `nself-realtime <args>` to completion with `env` and returns its output.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run nself-realtime")
}

/// A running `nself-realtime <subcommand>`. Dropping it kills the process.
pub struct ServiceProcess {
    subcommand: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    /// Starts `nself-realtime <subcommand>` with `env`, `overrides` replacing entries of it.
    pub fn start(
        subcommand: &str,
        env: &[(String, String)],
        overrides: &[(&str, &str)],
    ) -> ServiceProcess {
        ServiceProcess::start_with_args(subcommand, &[], env, overrides)
    }

    /// Starts `nself-realtime <subcommand> <args...>` (see [`ServiceProcess::start`]).
    pub fn start_with_args(
        subcommand: &str,
        args: &[&str],
        env: &[(String, String)],
        overrides: &[(&str, &str)],
    ) -> ServiceProcess {
        let log = tempfile::Builder::new()
            .prefix(&format!("realtime-{subcommand}-"))
            .suffix(".log")
            .tempfile()
            .expect("create a log file")
            .into_temp_path()
            .keep()
            .expect("keep the log file");
        let mut env = env.to_vec();
        for (k, v) in overrides {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut process = ServiceProcess {
            subcommand: subcommand.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            log,
            env,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open the log");
        let child = Command::new(binary())
            .arg(&self.subcommand)
            .args(&self.args)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start nself-realtime {}: {e}", self.subcommand));
        self.child = Some(child);
    }

    /// Starts the process again with the same settings.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait("TERM")
    }

    /// SIGINT (Ctrl-C) and wait for the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait("INT")
    }

    fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("process running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        child.wait().expect("wait for the process")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (an exited child not yet reaped is a zombie in
    /// /proc: that counts as exited).
    pub fn running(&self) -> bool {
        self.pid().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat.rsplit_once(") ")?.1.chars().next()?;
                    Some(state != 'Z' && state != 'X')
                })
                .unwrap_or(false)
        })
    }

    /// The process' log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `GET /health` on `port` until `ready` accepts the body; returns how long that
    /// took. Panics after `limit`, or as soon as the process exits, with its log.
    pub async fn wait_for_health(
        &self,
        port: u16,
        limit: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if let Some((_, body)) = http_get_json(port, "/health").await {
                if ready(&body) {
                    return start.elapsed();
                }
            }
            if self.pid().is_some() {
                assert!(
                    self.running(),
                    "nself-realtime {} exited; log:\n{}",
                    self.subcommand,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < limit,
                "nself-realtime {} was not ready within {limit:?}; log:\n{}",
                self.subcommand,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!(
                "nself-realtime {} log kept at {}",
                self.subcommand,
                self.log.display()
            );
        }
    }
}
