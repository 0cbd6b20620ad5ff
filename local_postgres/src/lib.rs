//! The local PostgreSQL cluster that `nself-realtime up` runs when `DATABASE_URL` is unset, and
//! the two pieces of Postgres plumbing the test harness shares with it: finding the server's
//! binaries ([`bin_dir`]) and running them as the `postgres` OS user under root
//! ([`postgres_user_command`]).
//!
//! [`LocalPostgres::start`] on a directory `<dir>` (`./.nself-realtime` for `up`) keeps there:
//!
//! | path | what |
//! | --- | --- |
//! | `<dir>/postgres/` | the cluster (`initdb -U postgres -A trust -E UTF8 --locale=C`), created on the first start only |
//! | `<dir>/postgres/nself-realtime.conf` | our settings, rewritten at every start and included at the end of `postgresql.conf` (`ALTER SYSTEM` still wins) |
//! | `<dir>/postgres.log` | the server log (appended) |
//! | `<dir>/postgres.port` | the port, so the URL stays the same from run to run |
//! | `<dir>/postgres.owner` | pid and start time of the process that started the server |
//! | `<dir>/socket/` | the Unix socket directory |
//!
//! and serves the database `app` at `postgres://postgres@127.0.0.1:<port>/app`: trust
//! authentication, listening on 127.0.0.1 only, `wal_level = logical`. That is a development
//! cluster for one machine's users; anything shared or exposed should set `DATABASE_URL`.
//!
//! Decisions:
//!
//! * **Port.** [`DEFAULT_PORT`] (54329, next to Postgres' 5432 and unlikely to be taken) the
//!   first time, then whatever `<dir>/postgres.port` says. If that port is taken by something
//!   else, the next free one from 54330 (else any free port) is used, remembered, and a warning
//!   says so. Two clusters in different directories therefore get different ports, and a start
//!   that loses a race for a port (`Address already in use` in the log) retries on another.
//! * **Socket directory.** A Unix socket path is limited to 107 bytes and Postgres appends
//!   `/.s.PGSQL.<port>` (at most 15) to the directory, so `<dir>/socket` is used when its
//!   absolute path has at most [`MAX_SOCKET_DIR_LEN`] bytes, else
//!   `/tmp/nself-realtime-<hash of dir>` (a warning says so). Clients use TCP anyway.
//! * **Stale `postmaster.pid`.** Left by a killed server. `pg_ctl start` copes with one whose
//!   process is gone, but not with a killed postmaster that is still an unreaped zombie (for
//!   ever in a container whose PID 1 does not reap), nor with a pid reused by an unrelated
//!   process after a reboot or in a container: Postgres then refuses to start. So a
//!   `postmaster.pid` (or socket lock file) whose pid is not a live `postgres` process is
//!   removed before starting. A start that finds the shared memory of a killed server still
//!   held by its exiting children retries for a few seconds.
//! * **Already running.** `pg_ctl start` detaches the server, so it outlives an `up` that was
//!   killed. If the cluster is running and the process recorded in `<dir>/postgres.owner` is
//!   still alive (another `up`, or `nself-realtime start` in the background), start fails with
//!   [`LocalPostgresError::InUse`] naming that process: two owners would stop each other's
//!   database. If the owner is gone, the orphaned server is stopped and started again with the
//!   current settings.
//! * **Root.** Postgres refuses to run as root: under uid 0 the cluster, its log and socket
//!   directory belong to the `postgres` OS user (created by Debian's `postgresql` package) and
//!   `initdb`/`pg_ctl` run as that user via `runuser`. That user must be able to reach `<dir>`:
//!   a project under `/root` (mode 0700) cannot host the cluster, and the error says what to do.
//!
//! Everything here is synchronous (`std::process`, `std::fs`); `up` calls it before it starts
//! its async services. Two `up` processes starting at once in one directory are not serialized
//! by a lock: each runs `initdb` in its own scratch directory and the first to finish provides
//! the cluster; after that, the second normally stops at the owner check.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The port of a new cluster, unless it is taken.
pub const DEFAULT_PORT: u16 = 54329;
/// The database `up` serves (created if missing).
pub const DATABASE: &str = "app";
/// The longest socket directory that keeps `<dir>/.s.PGSQL.<port>` within the 107 bytes of a
/// Unix socket path (15 bytes for the file name, and a little margin).
pub const MAX_SOCKET_DIR_LEN: usize = 90;

/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "120";
/// Attempts to start the server (a lost port race or a dying predecessor causes a retry).
const START_ATTEMPTS: usize = 6;
/// `<dir>/postgres.initdb-<pid>`: where `initdb` works before the cluster is moved into place.
const SCRATCH_PREFIX: &str = "postgres.initdb-";
/// The settings file included from `postgresql.conf`.
const SETTINGS_FILE: &str = "nself-realtime.conf";

/// Why the local cluster could not be started or stopped; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    #[error(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): \
         install it (`apt-get install postgresql`), or set DATABASE_URL to a running server"
    )]
    NotInstalled,
    #[error(
        "the cluster in {data} was created by PostgreSQL {version}, whose server binaries are not \
         installed: install them (`apt-get install postgresql-{version}`), or move {data} away to \
         start a fresh cluster"
    )]
    VersionNotInstalled { data: PathBuf, version: String },
    #[error(
        "running as root, Postgres must run as the `postgres` OS user, which does not exist: \
         install PostgreSQL (`apt-get install postgresql` creates the user), run as another user, \
         or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "the `postgres` OS user cannot reach {dir} because {blocker} is not searchable by it: \
         run from a directory outside {blocker}, allow it (`chmod o+x {blocker}`), or set \
         DATABASE_URL"
    )]
    Unreachable { dir: PathBuf, blocker: PathBuf },
    #[error(
        "the Postgres cluster in {data} is already running for process {pid}: stop that process \
         (`nself-realtime stop` if it runs in the background) or use another directory"
    )]
    InUse { data: PathBuf, pid: u32 },
    #[error("{path} is not a Postgres data directory: move it away and start again")]
    NotACluster { path: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalPostgresError {
    let what = what.into();
    move |source| LocalPostgresError::Io { what, source }
}

/// A running local cluster. [`stop`](Self::stop) or dropping it stops the server; its files stay.
#[derive(Debug)]
pub struct LocalPostgres {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    stopped: AtomicBool,
}

impl LocalPostgres {
    /// Creates the cluster under `dir` on first use, starts it and makes sure the database
    /// [`DATABASE`] exists. Returns once the server accepts connections.
    pub fn start(dir: &Path) -> Result<LocalPostgres, LocalPostgresError> {
        fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        let dir = fs::canonicalize(dir).map_err(io_error(format!("resolve {}", dir.display())))?;
        let owner = ServerUser::current()?;
        owner.check_reachable(&dir)?;

        let data = dir.join("postgres");
        let bin = match fs::read_to_string(data.join("PG_VERSION")) {
            Ok(version) => bin_dir_for_version(&data, version.trim())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let bin = bin_dir()?;
                create_cluster(&bin, &dir, &data, &owner)?;
                bin
            }
            Err(e) => return Err(io_error(format!("read {}/PG_VERSION", data.display()))(e)),
        };

        let log = dir.join("postgres.log");
        let mut pg = LocalPostgres {
            socket_dir: socket_dir_for(&dir),
            port: 0,
            bin,
            dir,
            data,
            // Nothing to stop until the server runs.
            stopped: AtomicBool::new(true),
        };
        pg.clear_previous_run()?;

        owner.create_socket_dir(&pg.socket_dir)?;
        remove_stale_socket_locks(&pg.socket_dir);
        if !log.exists() {
            fs::write(&log, "").map_err(io_error(format!("create {}", log.display())))?;
        }
        owner.give(&log)?;

        pg.port = pg.choose_port()?;
        pg.start_server(&owner, &log)?;
        pg.stopped.store(false, Ordering::SeqCst);
        // From here on, dropping `pg` (on any error below) stops the server.
        write_file(&pg.port_file(), &format!("{}\n", pg.port))?;
        write_file(
            &pg.owner_file(),
            &format!("{}\n", ProcessId::current().render()),
        )?;
        pg.ensure_database()?;
        Ok(pg)
    }

    /// Starts the server on `self.port`, moving to another port when it loses a race for it and
    /// waiting for a killed predecessor's processes to go. On failure nothing is left running.
    fn start_server(&mut self, owner: &ServerUser, log: &Path) -> Result<(), LocalPostgresError> {
        for attempt in 1..=START_ATTEMPTS {
            self.write_settings(owner)?;
            let log_start = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
            let args = ["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-l"];
            let Err(e) = self.pg_ctl(&args, Some(log)) else {
                return Ok(());
            };
            let new_log = read_from(log, log_start);
            let port_taken = new_log.contains("Address already in use");
            // A killed server's children still hold its shared memory, or its lock file names
            // a process that has not quite exited.
            let predecessor = new_log.contains("shared memory block")
                || (new_log.contains("lock file") && new_log.contains("already exists"));
            if attempt == START_ATTEMPTS || !(port_taken || predecessor) {
                if self.running_postmaster().is_some() {
                    // pg_ctl gave up waiting (-t) on a server that is still starting.
                    let _ = self.pg_ctl(&["stop", "-w", "-m", "immediate"], None);
                }
                return Err(LocalPostgresError::Failed {
                    what: format!("starting Postgres in {}", self.data.display()),
                    detail: format!("{e}; {}: {}", log.display(), last_lines(&new_log, 8)),
                });
            }
            if port_taken {
                let next = free_port_after(self.port);
                tracing::warn!(
                    "port {} was taken while Postgres started; trying port {next}",
                    self.port
                );
                self.port = next;
            } else {
                std::thread::sleep(Duration::from_secs(1));
                self.clear_previous_run()?;
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Stops the server (fast shutdown: sessions are disconnected, WAL is flushed) and waits for
    /// it. Stopping a stopped cluster does nothing.
    pub fn stop(&self) -> Result<(), LocalPostgresError> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if self.running_postmaster().is_none() {
            // Stopped or killed by someone else (pg_ctl would wait for a zombie).
            let _ = fs::remove_file(self.owner_file());
            return Ok(());
        }
        let fast = self.pg_ctl(
            &["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "fast"],
            None,
        );
        let result = match fast {
            Ok(_) => Ok(()),
            Err(_) if self.running_postmaster().is_none() => Ok(()),
            Err(e) => {
                tracing::warn!("fast shutdown of Postgres failed ({e}); stopping it immediately");
                self.pg_ctl(&["stop", "-w", "-m", "immediate"], None)
                    .map(|_| ())
            }
        };
        let _ = fs::remove_file(self.owner_file());
        result
    }

    /// `postgres://postgres@127.0.0.1:<port>/app`.
    pub fn url(&self) -> String {
        url_for_port(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory, `<dir>/postgres`.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log, `<dir>/postgres.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The directory of the server's Unix socket (see the module docs).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The directory of the server's programs (`psql`, `pg_dump`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn port_file(&self) -> PathBuf {
        self.dir.join("postgres.port")
    }

    fn owner_file(&self) -> PathBuf {
        self.dir.join("postgres.owner")
    }

    /// Runs `pg_ctl -D <data> <args> [<log>]` as the server's user.
    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<String, LocalPostgresError> {
        let mut cmd = postgres_user_command(&self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data).args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        run(cmd, &format!("pg_ctl {}", args[0]))
    }

    /// The pid of a live postmaster of this cluster, from `postmaster.pid`.
    fn running_postmaster(&self) -> Option<u32> {
        let pid = read_pid(&self.data.join("postmaster.pid"))?;
        is_postgres_process(pid).then_some(pid)
    }

    /// Deals with what a previous run left: a live server whose owner is alive is an error, a
    /// live orphaned server is stopped, a stale `postmaster.pid` is removed.
    fn clear_previous_run(&self) -> Result<(), LocalPostgresError> {
        let pid_file = self.data.join("postmaster.pid");
        let Some(pid) = read_pid(&pid_file) else {
            return Ok(());
        };
        if !is_postgres_process(pid) {
            tracing::info!(
                "removing the stale {} (process {pid} is not a running Postgres)",
                pid_file.display()
            );
            return fs::remove_file(&pid_file)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(io_error(format!("remove {}", pid_file.display())));
        }
        if let Some(user) = fs::read_to_string(self.owner_file())
            .ok()
            .and_then(|s| ProcessId::parse(&s))
            .filter(ProcessId::is_alive)
        {
            return Err(LocalPostgresError::InUse {
                data: self.data.clone(),
                pid: user.pid,
            });
        }
        tracing::warn!(
            "Postgres (pid {pid}) is still running from a previous run that ended without \
             stopping it; restarting it"
        );
        self.pg_ctl(
            &["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "fast"],
            None,
        )
        .map(|_| ())
    }

    /// The remembered port, or [`DEFAULT_PORT`]; if it is taken, the next free one (remembered
    /// once the server runs).
    fn choose_port(&self) -> Result<u16, LocalPostgresError> {
        let saved = fs::read_to_string(self.port_file())
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        let wanted = saved.unwrap_or(DEFAULT_PORT);
        if port_is_free(wanted) {
            return Ok(wanted);
        }
        let port = free_port_after(wanted);
        tracing::warn!(
            "port {wanted} is taken by another program; the local Postgres uses port {port} \
             (remembered in {})",
            self.port_file().display()
        );
        Ok(port)
    }

    /// Writes the settings file for the current port and socket directory.
    fn write_settings(&self, owner: &ServerUser) -> Result<(), LocalPostgresError> {
        let text = format!(
            "# Written by nself-realtime at every start of this cluster; edits are lost.\n\
             # For other settings use ALTER SYSTEM or postgresql.conf (this file is included\n\
             # at its end, so it wins over postgresql.conf for the settings below).\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n",
            port = self.port,
            socket = conf_quote(&self.socket_dir.to_string_lossy()),
        );
        let path = self.data.join(SETTINGS_FILE);
        write_file(&path, &text)?;
        owner.give(&path)
    }

    /// Creates the database [`DATABASE`] if it does not exist.
    fn ensure_database(&self) -> Result<(), LocalPostgresError> {
        let exists = self.psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        ))?;
        if exists.trim() != "1" {
            self.psql(&format!("CREATE DATABASE {DATABASE}"))?;
        }
        Ok(())
    }

    /// Runs one SQL statement in the `postgres` database with psql, returning its output.
    fn psql(&self, sql: &str) -> Result<String, LocalPostgresError> {
        let mut cmd = Command::new(self.bin.join("psql"));
        for var in [
            "PGOPTIONS",
            "PGSERVICE",
            "PGSSLMODE",
            "PGTARGETSESSIONATTRS",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=30",
                self.port
            ))
            .args(["-c", sql]);
        run(cmd, "psql")
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping the local Postgres: {e}");
        }
    }
}

/// `postgres://postgres@127.0.0.1:<port>/app`: the URL of a local cluster on `port`.
pub fn url_for_port(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}")
}

/// What [`find`] sees in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No cluster was ever created there.
    Absent,
    /// A cluster exists (`<dir>/postgres`) but no server runs it.
    Stopped { data: PathBuf },
    /// A server runs the cluster; its URL (the port `up` remembered).
    Running { url: String },
}

/// Whether `dir` holds a local cluster and whether it runs, without starting or changing
/// anything: for the commands that use the Postgres of an `up` running in the same directory.
/// A `postmaster.pid` whose process is not a live `postgres` (left by a killed server) counts as
/// stopped, as [`LocalPostgres::start`] judges it.
pub fn find(dir: &Path) -> Found {
    let data = dir.join("postgres");
    let pid = read_pid(&data.join("postmaster.pid")).filter(|pid| is_postgres_process(*pid));
    let port = fs::read_to_string(dir.join("postgres.port"))
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .filter(|port| *port != 0);
    match (pid, port) {
        (Some(_), Some(port)) => Found::Running {
            url: url_for_port(port),
        },
        _ if data.join("PG_VERSION").exists() || data.join("postmaster.pid").exists() => {
            Found::Stopped { data }
        }
        _ => Found::Absent,
    }
}

/// Runs `initdb` into a scratch directory next to `data` and moves the result into place, so an
/// interrupted first run never leaves a half-made cluster behind (and a process racing us to
/// create it never sees one).
fn create_cluster(
    bin: &Path,
    dir: &Path,
    data: &Path,
    owner: &ServerUser,
) -> Result<(), LocalPostgresError> {
    match fs::read_dir(data) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LocalPostgresError::NotACluster {
                    path: data.to_path_buf(),
                });
            }
            fs::remove_dir(data).map_err(io_error(format!("remove {}", data.display())))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(format!("read {}", data.display()))(e)),
    }
    remove_abandoned_scratch(dir);
    let scratch = dir.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_error(format!("remove {}", scratch.display())))?;
    }
    fs::create_dir(&scratch).map_err(io_error(format!("create {}", scratch.display())))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
        .map_err(io_error(format!("chmod {}", scratch.display())))?;
    owner.give(&scratch)?;
    tracing::info!("creating a PostgreSQL cluster in {}", data.display());
    let mut initdb = postgres_user_command(&bin.join("initdb"));
    initdb.arg("-D").arg(&scratch).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    if let Err(e) = run(initdb, "initdb") {
        let _ = fs::remove_dir_all(&scratch);
        return Err(e);
    }
    let conf = scratch.join("postgresql.conf");
    let mut text =
        fs::read_to_string(&conf).map_err(io_error(format!("read {}", conf.display())))?;
    text.push_str(&format!(
        "\n# nself-realtime: port, sockets and logical replication (rewritten at every start)\n\
         include_if_exists = '{SETTINGS_FILE}'\n"
    ));
    write_file(&conf, &text)?;
    match fs::rename(&scratch, data) {
        Ok(()) => Ok(()),
        // Another process made the cluster meanwhile: use that one.
        Err(_) if data.join("PG_VERSION").exists() => {
            let _ = fs::remove_dir_all(&scratch);
            Ok(())
        }
        Err(e) => Err(io_error(format!(
            "move {} to {}",
            scratch.display(),
            data.display()
        ))(e)),
    }
}

/// Removes the `initdb` scratch directories of processes that died while creating a cluster.
fn remove_abandoned_scratch(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !ProcessId { pid, started: 0 }.is_alive()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The directory of the newest PostgreSQL server binaries: `/usr/lib/postgresql/<version>/bin`
/// (Debian, Ubuntu), else the directory of `initdb` on `PATH`.
pub fn bin_dir() -> Result<PathBuf, LocalPostgresError> {
    let mut versions: Vec<((u32, u32), PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            let version = parse_version(entry.file_name().to_str()?);
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, newest)) = versions.pop() {
        return Ok(newest);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| is_executable(&dir.join("initdb")))
        .ok_or(LocalPostgresError::NotInstalled)
}

/// The binaries of the major version that created an existing cluster (a newer server cannot
/// open it).
fn bin_dir_for_version(data: &Path, version: &str) -> Result<PathBuf, LocalPostgresError> {
    let debian = Path::new("/usr/lib/postgresql").join(version).join("bin");
    if debian.join("postgres").is_file() {
        return Ok(debian);
    }
    let bin = bin_dir()?;
    // initdb prints "initdb (PostgreSQL) 15.8"; the cluster's PG_VERSION is "15".
    let out = Command::new(bin.join("initdb"))
        .arg("--version")
        .output()
        .map_err(io_error(format!("run {}/initdb", bin.display())))?;
    let major = major_version(&String::from_utf8_lossy(&out.stdout));
    if major.as_deref() == Some(version) {
        Ok(bin)
    } else {
        Err(LocalPostgresError::VersionNotInstalled {
            data: data.to_path_buf(),
            version: version.to_string(),
        })
    }
}

/// The major version in `initdb --version` output: "initdb (PostgreSQL) 15.8 (Debian 15.8-1)" is
/// "15", "… 17beta1" is "17", "… 9.6.24" is "9.6" (before 10 it had two parts).
fn major_version(output: &str) -> Option<String> {
    let mut words = output.split_whitespace();
    words.find(|w| *w == "(PostgreSQL)")?;
    let version = words.next()?;
    let numeric =
        |part: &str| -> String { part.chars().take_while(char::is_ascii_digit).collect() };
    let mut parts = version.split('.');
    let first = numeric(parts.next()?);
    match first.parse::<u32>().ok()? {
        major if major < 10 => Some(format!("{first}.{}", numeric(parts.next().unwrap_or("0")))),
        _ => Some(first),
    }
}

fn parse_version(name: &str) -> (u32, u32) {
    let mut parts = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs with effective uid 0 (then Postgres must run as `postgres`).
pub fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

fn effective_uid() -> Option<u32> {
    // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            return line.split_whitespace().nth(2).and_then(|u| u.parse().ok());
        }
    }
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A command that runs `program` as the `postgres` OS user when this process is root (through
/// `runuser`, from `/`, which that user can always enter), else as this process's user.
pub fn postgres_user_command(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(program)
            .current_dir("/");
        cmd
    } else {
        Command::new(program)
    }
}

/// The OS user the server runs as: `postgres` under root (its uid and gid, for chown), else
/// ourselves (nothing to change).
enum ServerUser {
    Current,
    Postgres { uid: u32, gid: u32 },
}

impl ServerUser {
    fn current() -> Result<ServerUser, LocalPostgresError> {
        if !running_as_root() {
            return Ok(ServerUser::Current);
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Ok(ServerUser::Postgres { uid, gid }),
            _ => Err(LocalPostgresError::NoPostgresUser),
        }
    }

    /// Hands `path` to the server's user.
    fn give(&self, path: &Path) -> Result<(), LocalPostgresError> {
        match self {
            ServerUser::Current => Ok(()),
            ServerUser::Postgres { uid, gid } => {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                    .map_err(io_error(format!("chown postgres {}", path.display())))
            }
        }
    }

    fn uid(&self) -> Option<u32> {
        match self {
            ServerUser::Current => effective_uid(),
            ServerUser::Postgres { uid, .. } => Some(*uid),
        }
    }

    /// Fails with the directory that stops the `postgres` user from reaching `dir`.
    fn check_reachable(&self, dir: &Path) -> Result<(), LocalPostgresError> {
        if matches!(self, ServerUser::Current) {
            return Ok(());
        }
        let searchable = |path: &Path| {
            postgres_user_command(Path::new("test"))
                .arg("-x")
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if searchable(dir) {
            return Ok(());
        }
        if !searchable(Path::new("/")) {
            return Err(LocalPostgresError::Failed {
                what: "running a command as the postgres user".into(),
                detail: "`runuser -u postgres -- test -x /` did not succeed; install util-linux \
                         (runuser) or run as a non-root user"
                    .into(),
            });
        }
        let mut ancestors: Vec<&Path> = dir.ancestors().collect();
        ancestors.reverse();
        let blocker = ancestors
            .into_iter()
            .find(|p| !searchable(p))
            .unwrap_or(dir)
            .to_path_buf();
        Err(LocalPostgresError::Unreachable {
            dir: dir.to_path_buf(),
            blocker,
        })
    }

    /// Creates the socket directory for the server (mode 0755: clients may use the socket),
    /// refusing one that somebody else owns (it may be under /tmp).
    fn create_socket_dir(&self, path: &Path) -> Result<(), LocalPostgresError> {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(format!("create {}", path.display()))(e)),
        }
        let meta =
            fs::symlink_metadata(path).map_err(io_error(format!("inspect {}", path.display())))?;
        let ours = effective_uid() == Some(meta.uid()) || self.uid() == Some(meta.uid());
        if !meta.is_dir() || !ours {
            return Err(LocalPostgresError::Failed {
                what: format!("preparing the socket directory {}", path.display()),
                detail: "it is not a directory of this user or of postgres; remove it".into(),
            });
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(io_error(format!("chmod {}", path.display())))?;
        self.give(path)
    }
}

/// `<dir>/socket`, or a directory under /tmp when that path is too long for a socket.
fn socket_dir_for(dir: &Path) -> PathBuf {
    let preferred = dir.join("socket");
    if preferred.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return preferred;
    }
    let short = PathBuf::from(format!(
        "/tmp/nself-realtime-{:016x}",
        fnv1a(dir.as_os_str().as_encoded_bytes())
    ));
    tracing::warn!(
        "{} is too long for a Unix socket path; the local Postgres puts its socket in {}",
        preferred.display(),
        short.display()
    );
    short
}

/// FNV-1a: a stable hash (unlike std's, which may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Removes `.s.PGSQL.<port>.lock` files (and their sockets) whose process is not a live Postgres.
fn remove_stale_socket_locks(socket_dir: &Path) {
    let Ok(entries) = fs::read_dir(socket_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(socket) = name
            .strip_prefix(".s.PGSQL.")
            .and_then(|rest| rest.strip_suffix(".lock"))
            .map(|port| socket_dir.join(format!(".s.PGSQL.{port}")))
        else {
            continue;
        };
        if read_pid(&entry.path()).is_some_and(|pid| !is_postgres_process(pid)) {
            let _ = fs::remove_file(entry.path());
            let _ = fs::remove_file(socket);
        }
    }
}

/// The first line of a Postgres lock file: the pid of the process holding it.
fn read_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` is a live process running the `postgres` program. A zombie is not live: a
/// killed server stays one until its parent reaps it, and in a container whose PID 1 does not
/// reap, that is forever. Without /proc (not Linux), any process `kill -0` reaches counts, as
/// Postgres itself would judge.
fn is_postgres_process(pid: u32) -> bool {
    match ProcStat::read(pid) {
        Some(stat) => stat.live && stat.comm == "postgres",
        None => !has_proc() && kill_0(pid),
    }
}

/// What `/proc/<pid>/stat` tells about a process.
struct ProcStat {
    /// The program name, truncated to 15 bytes.
    comm: String,
    /// Not a zombie, not dead.
    live: bool,
    /// Clock ticks after boot.
    started: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "<pid> (<comm>) <state> ...": comm may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_string();
        let mut fields = stat.get(close + 1..)?.split_whitespace();
        let state = fields.next()?; // field 3
        let started = fields.nth(18)?.parse().ok()?; // field 22
        Some(ProcStat {
            comm,
            live: !matches!(state, "Z" | "X" | "x"),
            started,
        })
    }
}

fn has_proc() -> bool {
    Path::new("/proc/self/stat").exists()
}

fn kill_0(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process identified by pid and start time, so that a reused pid is not mistaken for it.
#[derive(Debug, PartialEq)]
struct ProcessId {
    pid: u32,
    /// Clock ticks after boot (field 22 of `/proc/<pid>/stat`); 0 where unknown.
    started: u64,
}

impl ProcessId {
    fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            started: ProcStat::read(pid).map_or(0, |s| s.started),
        }
    }

    fn render(&self) -> String {
        format!("{} {}", self.pid, self.started)
    }

    fn parse(text: &str) -> Option<ProcessId> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let started = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Some(ProcessId { pid, started })
    }

    fn is_alive(&self) -> bool {
        match ProcStat::read(self.pid) {
            Some(stat) => stat.live && (self.started == 0 || stat.started == self.started),
            None => !has_proc() && kill_0(self.pid),
        }
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port other than `taken`: the first free one of the hundred after [`DEFAULT_PORT`]
/// (above `taken` if it is one of them, so a retry moves on), else any free port.
fn free_port_after(taken: u16) -> u16 {
    const LAST: u16 = DEFAULT_PORT + 100;
    let from = if (DEFAULT_PORT..LAST).contains(&taken) {
        taken + 1
    } else {
        DEFAULT_PORT + 1
    };
    (from..LAST)
        .find(|p| port_is_free(*p))
        .or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .ok()
        })
        .unwrap_or(DEFAULT_PORT)
}

/// A value inside single quotes in `postgresql.conf`.
fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

fn write_file(path: &Path, text: &str) -> Result<(), LocalPostgresError> {
    fs::write(path, text).map_err(io_error(format!("write {}", path.display())))
}

/// The part of a log file after `offset` bytes.
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Runs a command to completion; its stdout on success, else an error with its output.
fn run(mut cmd: Command, what: &str) -> Result<String, LocalPostgresError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(io_error(format!(
        "cannot run {what} ({:?})",
        cmd.get_program()
    )))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(LocalPostgresError::Failed {
        what: what.to_string(),
        detail: format!(
            "{} {}",
            out.status,
            last_lines(&format!("{stderr}\n{stdout}"), 6)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert!(parse_version("16") > parse_version("9.6"));
        assert!(parse_version("10") > parse_version("9.6"));
        assert_eq!(parse_version("15"), (15, 0));
    }

    #[test]
    fn long_directories_get_a_short_socket_dir() {
        let short = socket_dir_for(Path::new("/home/me/app/.nself-realtime"));
        assert_eq!(short, Path::new("/home/me/app/.nself-realtime/socket"));
        let long = PathBuf::from(format!("/{}/.nself-realtime", "x".repeat(100)));
        let dir = socket_dir_for(&long);
        assert!(dir.to_string_lossy().starts_with("/tmp/nself-realtime-"));
        assert!(dir.as_os_str().len() + "/.s.PGSQL.65535".len() <= 107);
        assert_eq!(dir, socket_dir_for(&long), "stable across runs");
    }

    #[test]
    fn owner_records_round_trip() {
        let me = ProcessId::current();
        assert_eq!(ProcessId::parse(&me.render()), Some(ProcessId::current()));
        assert!(me.is_alive());
        let other_start = ProcessId {
            pid: me.pid,
            started: me.started + 1,
        };
        assert!(!other_start.is_alive(), "a reused pid is not the owner");
    }

    #[test]
    fn major_versions_come_from_initdb_version() {
        let major = |s: &str| major_version(s);
        assert_eq!(
            major("initdb (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(major("initdb (PostgreSQL) 17beta1").as_deref(), Some("17"));
        assert_eq!(major("initdb (PostgreSQL) 9.6.24").as_deref(), Some("9.6"));
        assert_eq!(major("nonsense"), None);
    }

    #[test]
    fn find_tells_absent_stopped_and_stale_apart() {
        let dir = std::env::temp_dir().join(format!("nself-realtime-find-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("postgres")).unwrap();
        assert_eq!(find(&dir), Found::Absent);
        fs::write(dir.join("postgres/PG_VERSION"), "16\n").unwrap();
        fs::write(dir.join("postgres.port"), "54329\n").unwrap();
        let stopped = Found::Stopped {
            data: dir.join("postgres"),
        };
        assert_eq!(find(&dir), stopped);
        // A postmaster.pid naming a process that is not Postgres (this test) is stale.
        fs::write(
            dir.join("postgres/postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(find(&dir), stopped);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("/tmp/it's"), "/tmp/it''s");
    }
}
