//! Opening replication sessions against a real Postgres: every supported authentication method
//! over TCP and over the Unix socket, the typed error of a wrong password, the session settings
//! sent in `options`, `IDENTIFY_SYSTEM`, generic simple queries and idempotent slot creation.
//! And TLS, against a cluster that accepts only `hostssl` connections: every `sslmode`, the
//! certificate checks of verify-ca and verify-full, SCRAM over TLS, and WAL streamed over TLS.

use nself_realtime_cdc::replication::{
    ConnectOptions, ReplicationClient, ReplicationError, ReplicationEvent, SlotCreation,
    INVALID_PASSWORD,
};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::postgres_tls::{Database, TlsError};
use realtime_tests::{Postgres, TestDb};
use std::sync::OnceLock;
use std::time::Duration;

const PASSWORD: &str = "s3cret pass";

/// A private cluster whose pg_hba.conf asks each test user for its own method.
fn cluster() -> &'static Postgres {
    static CLUSTER: OnceLock<Postgres> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let pg = Postgres::start_with_hba(&[
            "host all scram_user 127.0.0.1/32 scram-sha-256",
            "host all md5_user 127.0.0.1/32 md5",
            "host all pw_user 127.0.0.1/32 password",
            "local all scram_user scram-sha-256",
        ]);
        pg.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE scram_user LOGIN REPLICATION PASSWORD '{PASSWORD}';
                 CREATE ROLE pw_user LOGIN REPLICATION PASSWORD '{PASSWORD}';
                 SET password_encryption = 'md5';
                 CREATE ROLE md5_user LOGIN REPLICATION PASSWORD '{PASSWORD}';"
            ),
        );
        pg
    })
}

fn tcp_config(pg: &Postgres, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pg.port())
        .user(user)
        .password(password)
        .dbname(db);
    config
}

async fn connect(config: &tokio_postgres::Config) -> Result<ReplicationClient, ReplicationError> {
    ReplicationClient::connect(
        &Database::from_config(config.clone()),
        &ConnectOptions::default(),
    )
    .await
}

/// Connects to `url` as DATABASE_URL would (sslmode and sslrootcert included).
async fn connect_url(url: &str) -> Result<ReplicationClient, ReplicationError> {
    let database = Database::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    ReplicationClient::connect(&database, &ConnectOptions::default()).await
}

/// The session is a logical replication session of the right user and database.
async fn assert_replication_session(client: &mut ReplicationClient, user: &str, db: &str) {
    let system = client.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert_eq!(system.dbname.as_deref(), Some(db));
    let rows = client.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(rows, vec![vec![Some(user.to_string())]]);
}

#[tokio::test]
async fn trust_over_tcp_and_identify_system() {
    let db = Postgres::shared().fresh_database().await;
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let mut client = connect(&config).await.expect("trust connect");
    assert!(client.backend_pid() > 0);
    assert_eq!(client.parameter("client_encoding"), Some("UTF8"));

    let system = client.identify_system().await.unwrap();
    assert_eq!(system.dbname.as_deref(), Some(db.name.as_str()));
    assert!(system.timeline >= 1);
    assert!(!system.system_id.is_empty() && system.system_id.bytes().all(|b| b.is_ascii_digit()));
    let current: String = db
        .connect()
        .await
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let current: nself_realtime_shared::lsn::Lsn = current.parse().unwrap();
    assert!(system.xlogpos.0 > 0 && system.xlogpos <= current);
    client.close().await.unwrap();
}

#[tokio::test]
async fn trust_over_unix_socket() {
    let db = Postgres::shared().fresh_database().await;
    let config: tokio_postgres::Config = db.socket_url.parse().unwrap();
    assert!(matches!(
        config.get_hosts(),
        [tokio_postgres::config::Host::Unix(_)]
    ));
    let mut client = connect(&config)
        .await
        .expect("connect over the Unix socket");
    assert_replication_session(&mut client, "postgres", &db.name).await;
    // inet_client_addr() is NULL for a Unix-socket session.
    let rows = client
        .simple_query("SELECT inet_client_addr()")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![None]]);
}

#[tokio::test]
async fn scram_sha_256_over_tcp() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let mut client = connect(&tcp_config(pg, "scram_user", PASSWORD, &db.name))
        .await
        .expect("SCRAM connect");
    assert_replication_session(&mut client, "scram_user", &db.name).await;
}

#[tokio::test]
async fn scram_sha_256_over_unix_socket() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(pg.socket_dir())
        .port(pg.port())
        .user("scram_user")
        .password(PASSWORD)
        .dbname(&db.name);
    let mut client = connect(&config).await.expect("SCRAM over the Unix socket");
    assert_replication_session(&mut client, "scram_user", &db.name).await;
}

#[tokio::test]
async fn md5_over_tcp() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let mut client = connect(&tcp_config(pg, "md5_user", PASSWORD, &db.name))
        .await
        .expect("md5 connect");
    assert_replication_session(&mut client, "md5_user", &db.name).await;
}

#[tokio::test]
async fn cleartext_password_over_tcp() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let mut client = connect(&tcp_config(pg, "pw_user", PASSWORD, &db.name))
        .await
        .expect("password connect");
    assert_replication_session(&mut client, "pw_user", &db.name).await;
}

#[tokio::test]
async fn wrong_password_is_28p01_for_every_method() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    for user in ["scram_user", "md5_user", "pw_user"] {
        let err = connect(&tcp_config(pg, user, "wrong", &db.name))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}: a wrong password was accepted"));
        assert_eq!(err.code(), Some(INVALID_PASSWORD), "{user}: {err}");
        let server = err.server_error().unwrap();
        assert_eq!(server.severity, "FATAL");
        assert!(server.message.contains(user), "{}", server.message);
    }
}

#[tokio::test]
async fn missing_password_is_a_clear_error() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let mut config = tcp_config(pg, "scram_user", "x", &db.name);
    config = {
        // Rebuild without the password.
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(config.get_ports()[0])
            .user("scram_user")
            .dbname(&db.name);
        c
    };
    let err = connect(&config).await.err().expect("no password");
    assert!(matches!(err, ReplicationError::PasswordRequired), "{err}");
}

/// The TLS-only cluster, with a SCRAM user whose rule needs TLS too.
fn tls_cluster() -> &'static Postgres {
    static CLUSTER: OnceLock<Postgres> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let pg = Postgres::start_tls_only(&["hostssl all scram_user 127.0.0.1/32 scram-sha-256"]);
        pg.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE scram_user LOGIN REPLICATION PASSWORD '{PASSWORD}';"
            ),
        );
        pg
    })
}

/// `SELECT ssl FROM pg_stat_ssl` for the session itself.
async fn session_uses_tls(client: &mut ReplicationClient) -> bool {
    let rows = client
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    rows == vec![vec![Some("t".to_string())]]
}

fn ca(pg: &Postgres) -> String {
    pg.tls_files().ca_cert.display().to_string()
}

#[tokio::test]
async fn a_tls_only_server_refuses_sslmode_disable_clearly() {
    let db = tls_cluster().fresh_database().await;
    let err = connect_url(&format!("{}?sslmode=disable", db.url))
        .await
        .err()
        .expect("plain connections are refused");
    let ReplicationError::TlsRequired {
        server: Some(server),
    } = &err
    else {
        panic!("expected TlsRequired, got {err:?}");
    };
    assert_eq!(server.code, "28000");
    assert!(err.to_string().contains("sslmode=require"), "{err}");
}

#[tokio::test]
async fn sslmode_require_and_prefer_connect_over_tls() {
    let db = tls_cluster().fresh_database().await;
    for mode in ["require", "prefer"] {
        let mut client = connect_url(&format!("{}?sslmode={mode}", db.url))
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        assert!(session_uses_tls(&mut client).await, "sslmode={mode}");
        assert_replication_session(&mut client, "postgres", &db.name).await;
    }
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_is_a_clear_error() {
    let db = Postgres::shared().fresh_database().await;
    let err = connect_url(&format!("{}?sslmode=require", db.url))
        .await
        .err()
        .expect("the shared cluster has no TLS");
    assert!(
        matches!(
            err,
            ReplicationError::Tls {
                source: TlsError::NotOffered("require"),
                ..
            }
        ),
        "{err}"
    );
    // prefer falls back to plain there.
    let mut client = connect_url(&format!("{}?sslmode=prefer", db.url))
        .await
        .unwrap();
    assert!(!session_uses_tls(&mut client).await);
}

#[tokio::test]
async fn verify_ca_and_verify_full_check_the_certificate() {
    let pg = tls_cluster();
    let db = pg.fresh_database().await;
    let ca = ca(pg);
    // The certificate names localhost and 127.0.0.1.
    for url in [
        format!("{}?sslmode=verify-ca&sslrootcert={ca}", db.url),
        format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url),
        format!(
            "postgres://postgres@localhost:{}/{}?sslmode=verify-full&sslrootcert={ca}",
            pg.port(),
            db.name
        ),
        // require with a root certificate checks the chain, as in libpq.
        format!("{}?sslmode=require&sslrootcert={ca}", db.url),
    ] {
        let mut client = connect_url(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(session_uses_tls(&mut client).await, "{url}");
    }

    // A name the certificate does not have: verify-ca does not mind, verify-full refuses.
    let wrong_name = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname={} sslmode={mode} sslrootcert={ca}",
            pg.port(),
            db.name
        )
    };
    connect_url(&wrong_name("verify-ca"))
        .await
        .expect("verify-ca ignores the name");
    let err = connect_url(&wrong_name("verify-full"))
        .await
        .err()
        .expect("verify-full checks the name");
    assert!(
        matches!(
            err,
            ReplicationError::Tls {
                source: TlsError::Handshake { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");

    // Another CA: the chain does not verify.
    let other = pg.tls_files().other_ca_cert.display().to_string();
    for mode in ["verify-ca", "verify-full", "require"] {
        let err = connect_url(&format!("{}?sslmode={mode}&sslrootcert={other}", db.url))
            .await
            .err()
            .unwrap_or_else(|| panic!("sslmode={mode} trusted a certificate of another CA"));
        assert!(
            format!("{err:?}").contains("UnknownIssuer"),
            "{mode}: {err:?}"
        );
    }
}

#[tokio::test]
async fn scram_sha_256_over_tls() {
    let pg = tls_cluster();
    let db = pg.fresh_database().await;
    let url = format!(
        "postgres://scram_user:{}@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}",
        PASSWORD.replace(' ', "%20"),
        pg.port(),
        db.name,
        ca(pg)
    );
    let mut client = connect_url(&url).await.expect("SCRAM over TLS");
    assert!(session_uses_tls(&mut client).await);
    assert_replication_session(&mut client, "scram_user", &db.name).await;
}

#[tokio::test]
async fn a_unix_socket_stays_plain_whatever_the_sslmode() {
    let db = tls_cluster().fresh_database().await;
    let mut client = connect_url(&format!("{}?sslmode=require", db.socket_url))
        .await
        .expect("libpq uses no TLS on Unix sockets");
    assert!(!session_uses_tls(&mut client).await);
}

/// WAL of a committed INSERT arrives over a verify-full TLS session.
#[tokio::test]
async fn wal_streams_over_tls() {
    let pg = tls_cluster();
    let db: TestDb = pg.fresh_database().await;
    let sql = db.connect().await;
    sql.batch_execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         CREATE PUBLICATION {} FOR TABLE items;",
        db.publication
    ))
    .await
    .unwrap();
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url, ca(pg));
    let mut client = connect_url(&url).await.unwrap();
    assert!(session_uses_tls(&mut client).await);
    client.create_slot_if_missing(&db.slot).await.unwrap();
    let mut stream = client
        .start_replication(&db.slot, Lsn(0), &[&db.publication])
        .await
        .expect("START_REPLICATION over TLS");
    sql.execute("INSERT INTO items VALUES (1, 'over tls')", &[])
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await.unwrap() {
                Some(ReplicationEvent::XLogData { data, .. })
                    if data.windows(8).any(|w| w == b"over tls") =>
                {
                    return true
                }
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .expect("the INSERT within 30 s");
    assert!(found, "the stream ended before the INSERT");
}

#[tokio::test]
async fn unreachable_host_is_a_connect_error() {
    let port = realtime_tests::free_port();
    let config: tokio_postgres::Config = format!("postgres://postgres@127.0.0.1:{port}/postgres")
        .parse()
        .unwrap();
    let err = connect(&config).await.err().expect("nothing listens there");
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn session_settings_reach_the_walsender() {
    let db = Postgres::shared().fresh_database().await;
    let config: tokio_postgres::Config = format!("{}?application_name=cdc-test", db.url)
        .parse()
        .unwrap();
    let options = ConnectOptions::default()
        .setting("DateStyle", "ISO, DMY")
        .setting("TimeZone", "UTC")
        .setting("extra_float_digits", "3")
        .setting("bytea_output", "hex")
        .setting("search_path", r"odd\path, public");
    let mut client = ReplicationClient::connect(&Database::from_config(config), &options)
        .await
        .unwrap();
    let rows = client
        .simple_query(
            "SELECT current_setting('DateStyle'), current_setting('TimeZone'), \
             current_setting('extra_float_digits'), current_setting('bytea_output'), \
             current_setting('search_path'), current_setting('application_name')",
        )
        .await
        .unwrap();
    let expected: Vec<Option<String>> = [
        "ISO, DMY",
        "UTC",
        "3",
        "hex",
        r"odd\path, public",
        "cdc-test",
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    assert_eq!(rows, vec![expected]);
    assert_eq!(client.parameter("DateStyle"), Some("ISO, DMY"));
}

#[tokio::test]
async fn a_failed_query_leaves_the_session_usable() {
    let db = Postgres::shared().fresh_database().await;
    let mut client = connect(&db.url.parse().unwrap()).await.unwrap();
    let err = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"), "{err}");
    let rows = client.simple_query("SELECT 1, NULL::text").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".to_string()), None]]);
    assert!(client.simple_query("").await.unwrap().is_empty());
}

#[tokio::test]
async fn creating_a_slot_twice_is_fine() {
    let db = Postgres::shared().fresh_database().await;
    let mut client = connect(&db.url.parse().unwrap()).await.unwrap();
    let first = client.create_slot_if_missing(&db.slot).await.unwrap();
    let SlotCreation::Created { consistent_point } = first else {
        panic!("first creation: {first:?}");
    };
    assert!(consistent_point.0 > 0);
    assert_eq!(
        client.create_slot_if_missing(&db.slot).await.unwrap(),
        SlotCreation::AlreadyExists
    );
    // From another session too, and the session still works after the 42710.
    let mut other = connect(&db.url.parse().unwrap()).await.unwrap();
    assert_eq!(
        other.create_slot_if_missing(&db.slot).await.unwrap(),
        SlotCreation::AlreadyExists
    );
    client.identify_system().await.unwrap();

    let row = db
        .connect()
        .await
        .query_one(
            "SELECT plugin, slot_type, database FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.slot],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pgoutput");
    assert_eq!(row.get::<_, String>(1), "logical");
    assert_eq!(row.get::<_, String>(2), db.name);

    let err = client.create_slot_if_missing("Bad-Name").await.unwrap_err();
    assert!(matches!(err, ReplicationError::InvalidArgument(_)), "{err}");
}
