//! The local cluster of `nself-realtime up` (`nself_realtime_local_postgres`) against real PostgreSQL:
//! first start and settings, data kept across restarts, a stale `postmaster.pid` left by a
//! killed server, an orphaned server, a cluster already in use, and port choice.
//!
//! Each test works in its own directory under the system temp dir; [`Scratch`] stops any server
//! still running there and deletes the directory even when the test fails.

use nself_realtime_local_postgres::{
    bin_dir, postgres_user_command, running_as_root, LocalPostgres, LocalPostgresError,
};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory that is removed, after stopping any server left running in it, when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nself-local-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create a scratch dir");
        // Under root the `postgres` user must be able to enter it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// Where the cluster lives (`up` uses ./.nself-realtime).
    fn state(&self) -> PathBuf {
        self.0.join(".nself-realtime")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let data = self.state().join("postgres");
        if data.join("postmaster.pid").exists() {
            if let Ok(bin) = bin_dir() {
                let _ = postgres_user_command(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["stop", "-m", "immediate"])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs SQL with psql against the cluster's `app` database and returns the trimmed output.
fn psql(pg: &LocalPostgres, sql: &str) -> String {
    let out = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(pg.url())
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn postmaster_pid(pg: &LocalPostgres) -> u32 {
    let text = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Waits until `pid` has exited: gone, or a zombie nobody reaped yet (which is how a killed
/// server looks in a container whose PID 1 does not reap).
fn wait_until_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if stat.is_empty() || state == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn starts_with_logical_replication_and_keeps_data_across_restarts() {
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/app")
    );
    assert_eq!(
        pg.data_dir(),
        scratch.state().canonicalize().unwrap().join("postgres")
    );
    assert_eq!(psql(&pg, "SHOW wal_level"), "logical");
    assert_eq!(psql(&pg, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(psql(&pg, "SELECT current_database()"), "app");
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
    assert!(std::fs::read_to_string(pg.log_path()).is_ok());
    psql(
        &pg,
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)",
    );

    pg.stop().expect("stop");
    pg.stop().expect("a second stop does nothing");
    assert!(!pg.data_dir().join("postmaster.pid").exists());
    drop(pg);

    let again = LocalPostgres::start(&scratch.state()).expect("start again");
    assert_eq!(again.port(), port, "the port is remembered");
    assert_eq!(psql(&again, "SELECT id FROM kept"), "42");
    assert_eq!(psql(&again, "SHOW wal_level"), "logical");
}

#[test]
fn a_stale_postmaster_pid_after_kill_9_does_not_block_start() {
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    psql(
        &pg,
        "CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (7)",
    );
    let pid = postmaster_pid(&pg);
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Start again at once: the postmaster may still be an unreaped zombie and its children
    // may still hold its shared memory.
    wait_until_dead(pid);
    drop(pg); // its stop finds no server and does nothing
    assert!(
        scratch.state().join("postgres/postmaster.pid").exists(),
        "the killed server left its postmaster.pid"
    );

    let again = LocalPostgres::start(&scratch.state()).expect("start after kill -9");
    assert_ne!(postmaster_pid(&again), pid);
    assert_eq!(psql(&again, "SELECT id FROM survivor"), "7");
}

#[test]
fn a_postmaster_pid_naming_an_unrelated_live_process_is_removed() {
    // After a reboot or in a container, the dead server's pid often belongs to another
    // process; Postgres alone would refuse to start.
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    pg.stop().expect("stop");
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(
        pg.data_dir().join("postmaster.pid"),
        format!("{}\n{}\n", other.id(), pg.data_dir().display()),
    )
    .unwrap();
    drop(pg);

    let again = LocalPostgres::start(&scratch.state());
    let _ = other.kill();
    let _ = other.wait();
    let again = again.expect("start despite the foreign pid");
    assert_eq!(psql(&again, "SELECT 1"), "1");
}

#[test]
fn a_cluster_in_use_by_a_live_process_is_not_started_twice() {
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    match LocalPostgres::start(&scratch.state()) {
        Err(LocalPostgresError::InUse { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected InUse, got {other:?}"),
    }
    // The refused start left the running server alone.
    assert_eq!(psql(&pg, "SELECT 1"), "1");
}

#[test]
fn a_server_orphaned_by_a_killed_owner_is_restarted() {
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    psql(&pg, "CREATE TABLE orphan_data (id int)");
    let old_pid = postmaster_pid(&pg);
    // The owner was `kill -9`ed: its Drop never ran and its pid is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        scratch.state().join("postgres.owner"),
        format!("{gone_pid} 1\n"),
    )
    .unwrap();
    std::mem::forget(pg);

    let again = LocalPostgres::start(&scratch.state()).expect("start over an orphan");
    wait_until_dead(old_pid);
    assert_ne!(postmaster_pid(&again), old_pid);
    assert_eq!(psql(&again, "SELECT count(*) FROM orphan_data"), "0");
}

#[test]
fn clusters_in_different_directories_get_different_ports() {
    let (one, two) = (Scratch::new(), Scratch::new());
    let first = LocalPostgres::start(&one.state()).expect("start the first");
    let second = LocalPostgres::start(&two.state()).expect("start the second");
    assert_ne!(first.port(), second.port());
    psql(&first, "CREATE TABLE only_in_first (id int)");
    assert_eq!(
        psql(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_first'"
        ),
        "0"
    );
    // The second cluster remembers its own port even though the default was free before.
    drop(first);
    second.stop().unwrap();
    let second_port = second.port();
    drop(second);
    let again = LocalPostgres::start(&two.state()).expect("restart the second");
    assert_eq!(again.port(), second_port);
}

#[test]
fn a_directory_the_postgres_user_cannot_reach_is_explained() {
    if !running_as_root() {
        return; // only root hands the cluster to another user
    }
    let scratch = Scratch::new();
    let private = scratch.0.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    match LocalPostgres::start(&private.join(".nself-realtime")) {
        Err(e @ LocalPostgresError::Unreachable { .. }) => {
            let LocalPostgresError::Unreachable { blocker, .. } = &e else {
                unreachable!()
            };
            assert_eq!(blocker, &private.canonicalize().unwrap());
            assert!(e.to_string().contains("chmod o+x"), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn a_port_taken_by_another_program_is_replaced_and_remembered() {
    let scratch = Scratch::new();
    let pg = LocalPostgres::start(&scratch.state()).expect("start");
    let old_port = pg.port();
    drop(pg);
    // Another test's Postgres, starting meanwhile, may have taken the freed port first: then
    // another program holds it already, which is the case under test.
    let squatter = match std::net::TcpListener::bind(("127.0.0.1", old_port)) {
        Ok(listener) => Some(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(e) => panic!("take the port: {e}"),
    };

    let moved = LocalPostgres::start(&scratch.state()).expect("start on another port");
    assert_ne!(moved.port(), old_port);
    assert_eq!(psql(&moved, "SHOW wal_level"), "logical");
    let new_port = moved.port();
    drop(moved);
    drop(squatter);

    let again = LocalPostgres::start(&scratch.state()).expect("start again");
    assert_eq!(again.port(), new_port, "the new port is remembered");
}

#[test]
fn a_long_directory_gets_its_socket_directory_under_tmp() {
    let scratch = Scratch::new();
    let deep = scratch
        .0
        .join("a-directory-name-long-enough-to-push-the-socket-path-".repeat(2));
    let pg = LocalPostgres::start(&deep.join(".nself-realtime")).expect("start");
    let socket_dir = pg.socket_dir().to_path_buf();
    let cleanup = RemoveOnDrop(socket_dir.clone());
    assert!(socket_dir
        .to_string_lossy()
        .starts_with("/tmp/nself-realtime-"));
    let socket = socket_dir.join(format!(".s.PGSQL.{}", pg.port()));
    assert!(socket.as_os_str().len() <= 107, "{}", socket.display());
    let out = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-t", "-A", "-d"])
        .arg(format!(
            "host={} port={} user=postgres dbname=app",
            socket_dir.display(),
            pg.port()
        ))
        .args(["-c", "SELECT 'over the socket'"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "over the socket"
    );
    drop(pg);
    drop(cleanup);
}

/// Removes a directory outside the scratch directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
