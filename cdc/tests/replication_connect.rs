//! Opening replication sessions against a real Postgres: every supported authentication method
//! over TCP and over the Unix socket, the typed error of a wrong password, the session settings
//! sent in `options`, `IDENTIFY_SYSTEM`, generic simple queries and idempotent slot creation.

use nself_realtime_cdc::replication::{
    ConnectOptions, ReplicationClient, ReplicationError, SlotCreation, INVALID_PASSWORD,
};
use realtime_tests::Postgres;
use std::sync::OnceLock;

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
            // What a server that demands TLS answers a plain connection.
            "hostnossl all tls_user 127.0.0.1/32 reject",
        ]);
        pg.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE scram_user LOGIN REPLICATION PASSWORD '{PASSWORD}';
                 CREATE ROLE pw_user LOGIN REPLICATION PASSWORD '{PASSWORD}';
                 SET password_encryption = 'md5';
                 CREATE ROLE md5_user LOGIN REPLICATION PASSWORD '{PASSWORD}';
                 CREATE ROLE tls_user LOGIN REPLICATION;"
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
    ReplicationClient::connect(config, &ConnectOptions::default()).await
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

#[tokio::test]
async fn sslmode_require_is_refused_before_connecting() {
    let db = Postgres::shared().fresh_database().await;
    let config: tokio_postgres::Config = format!("{}?sslmode=require", db.url).parse().unwrap();
    let err = connect(&config).await.err().expect("TLS is not supported");
    assert!(
        matches!(err, ReplicationError::TlsRequired { server: None }),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_demanding_tls_is_a_clear_error() {
    let pg = cluster();
    let db = pg.fresh_database().await;
    let err = connect(&tcp_config(pg, "tls_user", "x", &db.name))
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
    assert!(err.to_string().contains("TLS"), "{err}");
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
    let mut client = ReplicationClient::connect(&config, &options).await.unwrap();
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
