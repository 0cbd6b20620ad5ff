//! A private PostgreSQL cluster (`initdb` in a temporary directory, `wal_level=logical`, a free
//! port, its own Unix socket directory) and the fresh databases tests run in.
//!
//! [`Postgres::start_tls_only`] makes the kind of server managed services run: `ssl = on` with
//! a certificate from a CA made for it (the `openssl` CLI, in the cluster's directory), and a
//! `pg_hba.conf` that accepts TCP connections only over TLS (`hostssl`) and rejects `hostnossl`.
//! The harness' own connections use libpq's default `sslmode=prefer`, so they work against
//! either kind of cluster.

use crate::process::{as_postgres_user, cleanup_on_exit, free_port, run, running_as_root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A running private Postgres cluster. Dropping it stops the cluster and deletes its files
/// (the shared cluster lives until the test process exits).
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    next_db: AtomicU32,
    tls: Option<TlsFiles>,
}

/// The certificates of a TLS-only cluster, PEM files in its directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate (`sslrootcert` for verify-ca/verify-full).
    /// The certificate names `localhost` and `127.0.0.1`.
    pub ca_cert: PathBuf,
    /// A CA that signed nothing of this server's: checking against it must fail.
    pub other_ca_cert: PathBuf,
}

/// A fresh database in a private cluster, with the names a test should use for its own
/// replication slot (slots are cluster-wide) and publication.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// `postgres://postgres@127.0.0.1:<port>/<name>` (trust auth).
    pub url: String,
    /// The same database over the cluster's Unix socket.
    pub socket_url: String,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub slot: String,
    pub publication: String,
}

impl TestDb {
    /// A plain (non-replication) connection as the superuser `postgres`.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

/// Connects with tokio-postgres (TLS as `url`'s `sslmode` says, the product's parsing) and
/// drives the connection in a background task.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let database = nself_realtime_shared::postgres_tls::Database::parse(url)
        .unwrap_or_else(|e| panic!("parse {url}: {e}"));
    let (client, connection) = database
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The newest PostgreSQL server binaries (as `nself-realtime up` finds them).
fn bin_dir() -> PathBuf {
    nself_realtime_local_postgres::bin_dir().unwrap_or_else(|e| panic!("{e}"))
}

impl Postgres {
    /// The cluster shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| Postgres::start_with_hba(&[]))
    }

    /// A cluster of the caller's own (to stop, restart or reconfigure), trusting every local
    /// connection.
    pub fn start() -> Postgres {
        Postgres::start_with_hba(&[])
    }

    /// A cluster whose `pg_hba.conf` starts with `hba_lines` (first match wins), followed by
    /// trust for everything local: tests of password authentication put their rules first.
    pub fn start_with_hba(hba_lines: &[&str]) -> Postgres {
        let mut hba: String = hba_lines.iter().map(|l| format!("{l}\n")).collect();
        hba.push_str(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n\
             local replication all trust\nhost replication all 127.0.0.1/32 trust\n",
        );
        Postgres::start_cluster(&hba, false)
    }

    /// The TLS-only cluster shared by every test of this test binary, started on first use.
    pub fn shared_tls_only() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| Postgres::start_tls_only(&[]))
    }

    /// A cluster with `ssl = on` that takes TCP connections only over TLS: `pg_hba.conf` is
    /// `hba_lines` (first match wins), then trust for `hostssl` and the Unix socket, and reject
    /// for `hostnossl`. [`Postgres::tls_files`] has the CA to verify the server with.
    pub fn start_tls_only(hba_lines: &[&str]) -> Postgres {
        let mut hba: String = hba_lines.iter().map(|l| format!("{l}\n")).collect();
        hba.push_str(
            "local all all trust\nlocal replication all trust\n\
             hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n\
             hostnossl all all all reject\nhostnossl replication all all reject\n",
        );
        Postgres::start_cluster(&hba, true)
    }

    fn start_cluster(hba: &str, tls: bool) -> Postgres {
        let bin = bin_dir();
        let root = tempfile::Builder::new()
            .prefix("realtime-pg-")
            .tempdir()
            .expect("create a temp dir for Postgres")
            .keep();
        let data = root.join("data");
        let port = free_port();
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&root);
                    c
                },
                "chown the Postgres temp dir",
            );
        }
        cleanup_on_exit(&format!(
            // pg_ctl first; if it cannot, the postmaster's pid (first line of postmaster.pid).
            "pid=$(head -n 1 {data}/postmaster.pid 2>/dev/null); \
             {pg_ctl} stop -D {data} -m immediate >/dev/null 2>&1 || \
             {{ [ -n \"$pid\" ] && kill -9 $pid; }}; rm -rf {root}",
            pg_ctl = if running_as_root() {
                format!("runuser -u postgres -- {}", bin.join("pg_ctl").display())
            } else {
                bin.join("pg_ctl").display().to_string()
            },
            data = data.display(),
            root = root.display(),
        ));

        let mut initdb = as_postgres_user(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C");
        run(initdb, "initdb");

        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n\
             wal_level = logical\nmax_replication_slots = 100\nmax_wal_senders = 100\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 128MB\nwal_sender_timeout = 60s\nlog_min_messages = warning\n",
            sock = root.display(),
        );
        append(&data.join("postgresql.conf"), &conf);
        let tls = tls.then(|| {
            let (files, conf) = make_certificates(&root.join("tls"));
            append(&data.join("postgresql.conf"), &conf);
            files
        });
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");

        let pg = Postgres {
            bin,
            root,
            port,
            next_db: AtomicU32::new(0),
            tls,
        };
        pg.start_again();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pg_ctl(&self, args: &[&str], what: &str) {
        let mut cmd = as_postgres_user(&self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(args);
        run(cmd, what);
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.root.join("postgres.log");
        self.pg_ctl(
            &["start", "-w", "-t", "60", "-l", log.to_str().unwrap()],
            "pg_ctl start",
        );
    }

    /// Stops the cluster (fast shutdown: sessions are disconnected, WAL is flushed).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"], "pg_ctl stop");
    }

    /// Stops the cluster the way a crash would (no shutdown checkpoint).
    pub fn stop_immediately(&self) {
        self.pg_ctl(
            &["stop", "-w", "-m", "immediate"],
            "pg_ctl stop -m immediate",
        );
    }

    /// Fast restart.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificates of a cluster from [`Postgres::start_tls_only`].
    pub fn tls_files(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("a cluster from Postgres::start_tls_only")
    }

    /// The directory holding the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Where the server's binaries (psql, pg_recvlogical, ...) are.
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    /// A URL to `database` as `postgres` over TCP.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database.
    pub async fn fresh_database(&self) -> TestDb {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        let admin = connect(&self.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        TestDb {
            url: self.url(&name),
            socket_url: format!(
                "postgres://postgres@%2F{}:{}/{name}",
                self.root
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .replace('/', "%2F"),
                self.port
            ),
            port: self.port,
            socket_dir: self.root.clone(),
            slot: format!("slot_{name}"),
            publication: format!("pub_{name}"),
            name,
        }
    }

    /// Runs a SQL script with psql against `database` and returns its stdout.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut cmd = as_postgres_user(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate"]);
        let _ = cmd.output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What `openssl` makes: a CA, a server certificate it signs for `localhost` and `127.0.0.1`
/// (ECDSA P-256, fast to generate), and an unrelated second CA. Returns the files and the
/// `postgresql.conf` lines that turn TLS on.
fn make_certificates(dir: &Path) -> (TlsFiles, String) {
    std::fs::create_dir_all(dir).expect("create the TLS directory");
    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = realtime test CA\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
         authorityKeyIdentifier = keyid\n",
    )
    .expect("write openssl.cnf");
    let openssl = |args: &[&str], what: &str| {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(dir).args(args);
        run(cmd, what);
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (ca, subject) in [
        ("ca", "/CN=realtime test CA"),
        ("other-ca", "/CN=other test CA"),
    ] {
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        let mut args = vec![
            "req",
            "-x509",
            "-new",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
        ];
        args.extend(new_key);
        args.extend([
            "-subj", subject, "-keyout", &key, "-out", &crt, "-days", "3650",
        ]);
        openssl(&args, "openssl: make a test CA");
    }
    let mut args = vec!["req", "-new", "-subj", "/CN=localhost"];
    args.extend(new_key);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&args, "openssl: make the server key");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "3650",
            "-out",
            "server.crt",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
        ],
        "openssl: sign the server certificate",
    );
    // The server refuses a key others can read; under root it runs as `postgres`.
    let key = dir.join("server.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod server.key");
    }
    if running_as_root() {
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(dir);
        run(chown, "chown the TLS files");
    }
    let conf = format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        dir.join("server.crt").display(),
        key.display()
    );
    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        other_ca_cert: dir.join("other-ca.crt"),
    };
    (files, conf)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .expect("append to postgresql.conf");
}

/// How long to wait for servers in tests; generous for a loaded 2-core CI machine.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);
