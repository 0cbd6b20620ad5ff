//! Running `nself-realtime gateway` in tests: against a test database and NATS account, on a
//! free port, with a known JWT secret so tests can mint tokens.

use crate::nats::NatsAccount;
use crate::postgres::TestDb;
use crate::process::free_port;
use crate::service::ServiceProcess;
use std::time::Duration;

/// The HS256 secret test gateways verify tokens with.
pub const TEST_JWT_SECRET: &str = "test-secret-of-at-least-thirty-two-bytes!!";

/// A running gateway. Dropping it kills the process.
pub struct GatewayProcess {
    process: ServiceProcess,
    pub port: u16,
}

impl GatewayProcess {
    /// Starts a gateway for `db` on `nats`, with extra env overrides; returns once `/health`
    /// answers ready.
    pub async fn start(
        db: &TestDb,
        nats: &NatsAccount,
        extra_env: &[(&str, &str)],
    ) -> GatewayProcess {
        let gateway = GatewayProcess::spawn(db, nats, extra_env);
        gateway.wait_ready().await;
        gateway
    }

    /// Starts a gateway without waiting for it (for tests whose dependencies are down).
    pub fn spawn(db: &TestDb, nats: &NatsAccount, extra_env: &[(&str, &str)]) -> GatewayProcess {
        let port = free_port();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("NATS_URL", nats.url.as_str()),
            ("REALTIME_HOST", "127.0.0.1"),
            ("REALTIME_PORT", &port.to_string()),
            ("REALTIME_JWT_SECRET", TEST_JWT_SECRET),
            (
                "LOG_LEVEL",
                &std::env::var("GATEWAY_TEST_LOG")
                    .unwrap_or_else(|_| "info,nself_realtime_gateway=debug".into()),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        GatewayProcess {
            process: ServiceProcess::start("gateway", &env, extra_env),
            port,
        }
    }

    /// Whether the process is still running.
    pub fn running(&self) -> bool {
        self.process.running()
    }

    /// Waits until `/health` answers.
    pub async fn wait_ready(&self) {
        self.process
            .wait_for_health(self.port, Duration::from_secs(30), |body| {
                body["role"] == "gateway" && body["ready"] == true
            })
            .await;
    }

    /// `ws://127.0.0.1:<port>/realtime/v1/websocket?apikey=<token>&vsn=<vsn>`.
    pub fn websocket_url(&self, apikey: &str, vsn: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}",
            self.port
        )
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate()
    }

    /// Starts the gateway again with the same settings.
    pub async fn restart(&mut self) {
        self.process.restart();
        self.wait_ready().await;
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The value of the (unlabelled) metric `name` on `/metrics`, if the gateway reports it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = crate::http_get(self.port, "/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// A signed test token (HS256 with [`TEST_JWT_SECRET`]) carrying `claims`; an `exp` one hour
/// ahead is added unless the claims have one.
pub fn token(claims: serde_json::Value) -> String {
    let serde_json::Value::Object(mut claims) = claims else {
        panic!("claims must be a JSON object")
    };
    if !claims.contains_key("exp") {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + 3600;
        claims.insert("exp".into(), exp.into());
    }
    nself_realtime_shared::jwt::mint_hs256(TEST_JWT_SECRET, &claims)
}

/// A whole stack on private servers: a fresh database (initialised), a NATS account, the CDC,
/// and `gateways` gateways sharing them.
pub struct Stack {
    pub db: TestDb,
    pub nats: NatsAccount,
    pub cdc: crate::CdcProcess,
    pub gateways: Vec<GatewayProcess>,
}

impl Stack {
    /// Starts the stack; `gateway_env` applies to every gateway. Returns once the CDC leads and
    /// every gateway answers `/health`.
    pub async fn start(gateways: usize, gateway_env: &[(&str, &str)]) -> Stack {
        let db = crate::Postgres::shared().fresh_database().await;
        crate::init(&db);
        let nats = crate::Nats::shared().fresh_account();
        let cdc = crate::CdcProcess::start(&db, &nats, &[]);
        cdc.wait_for_role("leader", Duration::from_secs(30)).await;
        let mut started = Vec::with_capacity(gateways);
        for _ in 0..gateways {
            started.push(GatewayProcess::start(&db, &nats, gateway_env).await);
        }
        Stack {
            db,
            nats,
            cdc,
            gateways: started,
        }
    }

    /// Runs SQL as the superuser in the stack's database.
    pub async fn sql(&self, sql: &str) {
        let client = self.db.connect().await;
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Publishes a table's changes (adds it to the CDC's main publication).
    pub async fn publish(&self, table: &str) {
        self.sql(&format!(
            "ALTER PUBLICATION nself_realtime ADD TABLE {table}"
        ))
        .await;
    }
}
