//! `nself-realtime up`: everything in one process, for a laptop or one small server.
//!
//! With `DATABASE_URL` unset it creates and starts a local Postgres under `./.nself-realtime/`
//! (`wal_level=logical`), with a demo table `public.todos` (RLS: each user sees their own rows)
//! whose changes are published. It prepares the schema as `init` does, runs the CDC and a gateway,
//! and with `NATS_URL` unset connects them through the in-process bus and presence store instead
//! of NATS.
//! It prints the URLs, an anon key, a service key and a demo user token. The JWT secret is
//! `REALTIME_JWT_SECRET`, else one generated once and kept in `./.nself-realtime/jwt_secret`.
//! Ctrl-C (or SIGTERM) stops the gateway, the CDC and the local Postgres.

use super::cdc::{Stream, StreamArgs};
use super::gateway::{bind, nats_backends, shutdown_signal, start_failure, GatewayArgs};
use super::secret::{kept_secret, mint};
use crate::exit::CliError;
use anyhow::{anyhow, Context};
use nself_realtime_cdc::bus::BusConfig;
use nself_realtime_cdc::service::{self as cdc_service, CdcConfig, StartError};
use nself_realtime_cdc::subscriptions::{self, Target};
use nself_realtime_gateway::config::Welcome;
use nself_realtime_gateway::state::{Backends, Gateway};
use nself_realtime_local_postgres::LocalPostgres;
use nself_realtime_shared::bus::{MemoryBroker, MemoryChangeLog, MemoryPresence};
use nself_realtime_shared::config;
use nself_realtime_shared::subject::Operation;
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Most change events the in-process log keeps (besides `REALTIME_MESSAGE_TTL`).
const IN_PROCESS_LOG_ENTRIES: usize = 1_000_000;

#[derive(clap::Args)]
pub struct Args {
    /// Postgres to use; unset: a local cluster under --dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// NATS with JetStream; unset: the in-process bus.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Where the local cluster, its log and the generated JWT secret live.
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    dir: PathBuf,
    #[command(flatten)]
    stream: StreamArgs,
    /// The CDC's Postgres-wire endpoint port (on 127.0.0.1).
    #[arg(long, env = "REALTIME_CDC_PORT", default_value_t = config::DEFAULT_CDC_PORT)]
    cdc_port: u16,
    /// The CDC's /health port (on 127.0.0.1).
    #[arg(long, env = "REALTIME_CDC_HTTP_PORT", default_value_t = config::DEFAULT_CDC_HTTP_PORT)]
    cdc_http_port: u16,
    #[command(flatten)]
    gateway: GatewayArgs,
}

/// The demo table of a fresh local cluster: created and published once.
async fn create_demo_table(
    client: &mut tokio_postgres::Client,
    publication: &str,
) -> Result<bool, CliError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('public.todos') IS NOT NULL", &[])
        .await
        .context("cannot inspect the local database")?
        .get(0);
    if exists {
        return Ok(false);
    }
    client
        .batch_execute(
            "CREATE TABLE public.todos (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 task text NOT NULL,
                 done boolean NOT NULL DEFAULT false,
                 user_id text NOT NULL DEFAULT realtime.user_id(),
                 inserted_at timestamptz NOT NULL DEFAULT now()
             );
             ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
             CREATE POLICY todos_owner ON public.todos FOR ALL TO authenticated
                 USING (user_id = realtime.user_id()) WITH CHECK (user_id = realtime.user_id());
             CREATE POLICY todos_service ON public.todos FOR ALL TO service_role USING (true) WITH CHECK (true);
             GRANT SELECT, INSERT, UPDATE, DELETE ON public.todos TO authenticated, service_role;",
        )
        .await
        .context("cannot create the demo table public.todos")?;
    subscriptions::subscribe(
        client,
        publication,
        &Target::table("public", "todos"),
        &[Operation::Insert, Operation::Update, Operation::Delete],
    )
    .await
    .map_err(|e| anyhow!("cannot publish public.todos: {e}"))?;
    Ok(true)
}

pub async fn run(args: Args, json_output: bool) -> Result<(), CliError> {
    let Stream {
        slot,
        publication,
        message_ttl,
        message_retention,
        notify_channels,
    } = args.stream.validate()?;

    // Postgres: the given one, or a local cluster (stopped when `local` drops).
    let (database_url, local) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let dir = args.dir.clone();
            let local = tokio::task::spawn_blocking(move || LocalPostgres::start(&dir))
                .await
                .map_err(|e| anyhow!("the local Postgres start-up panicked: {e}"))?
                .map_err(CliError::usage)?;
            (local.url(), Some(local))
        }
    };
    let database = super::postgres::parse_url(&database_url)?;
    let mut client = super::postgres::connect(&database_url).await?;
    super::init::prepare(&mut client, &publication).await?;
    let demo = match &local {
        Some(_) => create_demo_table(&mut client, &publication).await?,
        None => false,
    };
    drop(client);

    // Tokens.
    let mut gateway_args = args.gateway;
    if gateway_args.jwt_jwks.is_none() {
        gateway_args.jwt_secret = Some(kept_secret(gateway_args.jwt_secret.take(), &args.dir)?);
    }
    if gateway_args.cors_origin.is_none() {
        gateway_args.cors_origin = Some("*".into());
    }
    let keys = gateway_args.jwt_secret.as_deref().map(Keys::mint);
    let (mut gateway_config, verifier, roles) = gateway_args.into_parts(database.clone())?;
    let shown_database = local
        .as_ref()
        .map_or_else(|| redact(&database_url), |l| l.url());
    gateway_config.welcome = keys.as_ref().map(|keys| Welcome {
        anon_key: keys.anon.clone(),
        service_key: keys.service.clone(),
        demo_token: keys.demo_user.clone(),
        postgres_url: shown_database.clone(),
        cdc_url: format!("postgres://127.0.0.1:{}", args.cdc_port),
    });

    // The bus.
    let (backends, bus) = match &args.nats_url {
        Some(url) => (
            nats_backends(url, gateway_config.heartbeat_interval, 1)
                .await
                .map_err(start_failure)?,
            BusConfig::Nats { url: url.clone() },
        ),
        None => {
            let log = MemoryChangeLog::new(message_ttl, IN_PROCESS_LOG_ENTRIES);
            let broker = MemoryBroker::new();
            (
                Backends {
                    broker: Arc::new(broker.clone()),
                    changes: Arc::new(log.clone()),
                    presence: Arc::new(MemoryPresence::new()),
                },
                BusConfig::InProcess { log, broker },
            )
        }
    };
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let cdc_config = CdcConfig {
        database,
        bus,
        slot,
        publication,
        message_ttl,
        message_retention,
        notify_channels,
        wire_addr: SocketAddr::new(loopback, args.cdc_port),
        wire_password: None,
        http_addr: SocketAddr::new(loopback, args.cdc_http_port),
        max_in_flight: 8192,
        stream_replicas: 1,
        metrics_token: gateway_config.metrics_token.clone(),
    };

    let listener = bind(gateway_config.listen).await?;
    let listen = gateway_config.listen;
    let gateway = Gateway::new(gateway_config, verifier, roles, backends);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut cdc = tokio::spawn(cdc_service::run(cdc_config, stopped(stop_rx.clone())));
    let server = tokio::spawn(nself_realtime_gateway::server::serve(
        listener,
        gateway,
        stopped(stop_rx),
    ));

    print_banner(
        listen,
        &args.cdc_port,
        keys.as_ref(),
        &shown_database,
        demo,
        json_output,
    );

    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        result = &mut cdc => match result {
            Ok(Ok(())) => Err(CliError::runtime(anyhow!("the CDC stopped unexpectedly"))),
            Ok(Err(e @ StartError::Config(_))) => Err(CliError::usage(e)),
            Ok(Err(e)) => Err(CliError::runtime(e)),
            Err(e) => Err(CliError::runtime(anyhow!("the CDC panicked: {e}"))),
        },
    };
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = server.await;
    if !cdc.is_finished() {
        let _ = cdc.await;
    }
    if let Some(local) = local {
        tokio::task::spawn_blocking(move || local.stop())
            .await
            .map_err(|e| anyhow!("stopping the local Postgres panicked: {e}"))?
            .map_err(CliError::runtime)?;
    }
    outcome
}

/// The tokens `up` prints (and its inspector offers), signed with its secret.
struct Keys {
    anon: String,
    service: String,
    /// The demo user's (sub demo-user, 24 h).
    demo_user: String,
}

impl Keys {
    fn mint(secret: &str) -> Keys {
        let exp_year = time::OffsetDateTime::now_utc().unix_timestamp() + 365 * 24 * 3600;
        let exp_day = time::OffsetDateTime::now_utc().unix_timestamp() + 24 * 3600;
        Keys {
            anon: mint(
                secret,
                json!({"role": "anon", "iss": "nself-realtime", "exp": exp_year}),
            ),
            service: mint(
                secret,
                json!({"role": "service_role", "iss": "nself-realtime", "exp": exp_year}),
            ),
            demo_user: mint(
                secret,
                json!({"role": "authenticated", "sub": "demo-user", "iss": "nself-realtime", "exp": exp_day}),
            ),
        }
    }
}

fn print_banner(
    listen: SocketAddr,
    cdc_port: &u16,
    keys: Option<&Keys>,
    database: &str,
    demo: bool,
    json_output: bool,
) {
    let host = if listen.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        listen.ip().to_string()
    };
    let http = format!("http://{host}:{}", listen.port());
    let websocket = format!("ws://{host}:{}/realtime/v1/websocket", listen.port());
    let plain_websocket = format!("ws://{host}:{}/ws", listen.port());
    let tokens = keys.map(|k| (&k.anon, &k.service, &k.demo_user));
    if json_output {
        let mut out = Map::new();
        out.insert("url".into(), json!(http));
        out.insert("inspector".into(), json!(format!("{http}/")));
        out.insert("websocket".into(), json!(websocket));
        out.insert("socket_io".into(), json!(http));
        out.insert("plain_websocket".into(), json!(plain_websocket));
        out.insert("database_url".into(), json!(database));
        out.insert("cdc_port".into(), json!(cdc_port));
        if let Some((anon, service, user)) = &tokens {
            out.insert("anon_key".into(), json!(anon));
            out.insert("service_role_key".into(), json!(service));
            out.insert("demo_user_token".into(), json!(user));
        }
        println!("{}", Value::Object(out));
        return;
    }
    println!("nself-realtime is up");
    println!("  Inspector        {http}/   (open it in a browser)");
    println!("  Supabase URL     {http}   (createClient(url, anonKey))");
    println!("  WebSocket        {websocket}");
    println!(
        "  Socket.IO        {http}   (io(url, {{ transports: ['websocket'], auth: {{ token }} }}))"
    );
    println!("  JSON WebSocket   {plain_websocket}?token=<jwt>");
    println!("  REST broadcast   {http}/realtime/v1/api/broadcast");
    println!("  Postgres         {database}");
    println!("  CDC endpoint     postgres://127.0.0.1:{cdc_port}   (SUBSCRIBE public.<table>)");
    if let Some((anon, service, user)) = &tokens {
        println!("  anon key         {anon}");
        println!("  service key      {service}");
        println!("  demo user token  {user}   (sub demo-user, 24 h)");
    }
    if demo {
        println!("  demo table       public.todos (RLS: each user sees their own rows), published");
        println!("  try              psql \"{database}\" -c \"INSERT INTO todos (task, user_id) VALUES ('hello', 'demo-user')\"");
    }
    println!("Ctrl-C stops everything.");
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match nself_realtime_shared::postgres_tls::Database::parse(url) {
        Ok(database) if database.config().get_password().is_some() => {
            let mut shown = url.to_string();
            if let Some(password) = database
                .config()
                .get_password()
                .and_then(|p| std::str::from_utf8(p).ok())
            {
                shown = shown.replace(&format!(":{password}@"), ":***@");
            }
            shown
        }
        _ => url.to_string(),
    }
}
