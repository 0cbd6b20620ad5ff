//! Process plumbing shared by the server wrappers: free ports, the cleanup watchdog, running a
//! command as the `postgres` user, and waiting for a port to accept connections.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts.
///
/// It is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a port
/// from that range, even one just seen free, can be handed to any outgoing connection of the
/// machine (a client of Postgres or NATS, of which parallel tests open many) before the server
/// binds it. Each process walks its own stretch of the range below, and never hands out a port
/// twice; the kernel's choice remains the fallback where no such range exists.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOWEST);
    if span >= 1_000 {
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// The write ends of the watchdogs' pipes. They are never closed while the process lives; the
/// kernel closes them when it exits, which is what wakes the watchdogs.
static WATCHDOG_PIPES: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

/// Starts a shell that runs `cleanup` (a shell script) once this process has exited.
/// The watchdog outlives this process by design, so it is never waited for.
#[allow(clippy::zombie_processes)]
pub fn cleanup_on_exit(cleanup: &str) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("read _ignored; {cleanup}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cleanup watchdog (sh)");
    let pipe = child.stdin.take().expect("watchdog stdin");
    WATCHDOG_PIPES.lock().unwrap().push(pipe);
}

// Whether we run as root, and a command that runs a Postgres program as the `postgres` OS user
// when we do: the same rules `nself-realtime up` follows for its local cluster.
pub use nself_realtime_local_postgres::{
    postgres_user_command as as_postgres_user, running_as_root,
};

/// Runs a command to completion and panics with its output if it fails.
pub fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Waits until `127.0.0.1:port` accepts TCP connections, or panics after `limit`.
/// `child`, when given, is checked so that a server that died is reported at once.
pub fn wait_for_port(port: u16, limit: Duration, mut child: Option<&mut Child>, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited with {status} before accepting connections");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not accept connections on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
