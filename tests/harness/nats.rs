//! A private `nats-server` with JetStream, split into many accounts so that each test has its
//! own streams and subjects while the binary shares one server.

use crate::postgres::STARTUP_LIMIT;
use crate::process::{cleanup_on_exit, free_port, wait_for_port};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Accounts in each server: the most tests one binary may run against the shared server.
const ACCOUNTS: usize = 128;

/// A running private NATS server. Dropping it kills the server and deletes its store.
pub struct Nats {
    root: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    next_account: AtomicUsize,
}

/// One account of a [`Nats`] server: its own JetStream and subject space.
#[derive(Debug, Clone)]
pub struct NatsAccount {
    /// `nats://tN:tN@127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
}

impl NatsAccount {
    pub async fn connect(&self) -> async_nats::Client {
        nself_realtime_shared::nats::connect(&self.url, "realtime-tests")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn nats_binary() -> String {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    "nats-server".to_string()
}

impl Nats {
    /// The server shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static Nats {
        static SHARED: OnceLock<Nats> = OnceLock::new();
        SHARED.get_or_init(Nats::start)
    }

    /// A server of the caller's own (to stop or restart).
    pub fn start() -> Nats {
        let root = tempfile::Builder::new()
            .prefix("realtime-nats-")
            .tempdir()
            .expect("create a temp dir for NATS")
            .keep();
        let port = free_port();
        let mut accounts = String::new();
        for n in 0..ACCOUNTS {
            let _ = writeln!(
                accounts,
                "  A{n}: {{ jetstream: enabled, users: [{{user: t{n}, password: t{n}}}] }}"
            );
        }
        // 8 MB payloads: the CDC tests publish rows with a 1 MB jsonb (NATS' default is 1 MB).
        let config = format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\nmax_pending: 64MB\n\
             jetstream {{ store_dir: \"{store}\", max_memory_store: 1GB, max_file_store: 20GB }}\n\
             accounts {{\n{accounts}}}\n",
            store = root.join("store").display(),
        );
        std::fs::write(root.join("nats.conf"), config).expect("write nats.conf");
        cleanup_on_exit(&format!(
            "kill -KILL $(cat {root}/nats.pid) 2>/dev/null; rm -rf {root}",
            root = root.display()
        ));
        let nats = Nats {
            root,
            port,
            child: Mutex::new(None),
            next_account: AtomicUsize::new(0),
        };
        nats.start_again();
        nats
    }

    /// Starts the (stopped) server again on the same port and store.
    pub fn start_again(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("nats.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = Command::new(nats_binary())
            .arg("-c")
            .arg(self.root.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "start nats-server: install it (scripts/test does: apt-get install -y nats-server)",
            );
        std::fs::write(self.root.join("nats.pid"), child.id().to_string()).expect("write nats.pid");
        wait_for_port(self.port, STARTUP_LIMIT, Some(&mut child), "nats-server");
        *self.child.lock().unwrap() = Some(child);
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator does (SIGTERM): it closes client connections and
    /// flushes its store before exiting.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Stop (SIGTERM) and start again.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("nats.log")).unwrap_or_default()
    }

    /// An account nobody else in this process uses.
    pub fn fresh_account(&self) -> NatsAccount {
        let n = self.next_account.fetch_add(1, Ordering::SeqCst);
        assert!(
            n < ACCOUNTS,
            "more than {ACCOUNTS} NATS accounts requested from one server"
        );
        NatsAccount {
            url: format!("nats://t{n}:t{n}@127.0.0.1:{}", self.port),
            port: self.port,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
