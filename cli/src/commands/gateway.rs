//! `nself-realtime gateway`: one WebSocket gateway. Validates its configuration (exit 2 with the
//! fix on a bad one), connects to NATS (broadcast, change log, presence) and serves until
//! SIGTERM or Ctrl-C. The settings are shared with `up`, which runs a gateway in-process.

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::auth::session::AllowedRoles;
use nself_realtime_gateway::config::{self as defaults, GatewayConfig, NselfLimits};
use nself_realtime_gateway::starting::{while_starting, Starting};
use nself_realtime_gateway::state::{Backends, Gateway};
use nself_realtime_shared::bus::{JetStreamChangeLog, KvPresence, NatsBroker};
use nself_realtime_shared::config;
use nself_realtime_shared::jwt::{self, Verifier};
use nself_realtime_shared::startup::{until_available, StartError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The gateway's settings (DESIGN.md "Configuration"), shared by `gateway` and `up`.
#[derive(clap::Args, Clone)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(
        long = "realtime-host",
        env = "REALTIME_HOST",
        default_value = "0.0.0.0"
    )]
    pub host: IpAddr,
    /// Port the gateway listens on.
    #[arg(long = "realtime-port", env = "REALTIME_PORT", default_value_t = defaults::DEFAULT_PORT)]
    pub port: u16,
    /// HS256 secret of the JWTs clients present.
    #[arg(
        long = "realtime-jwt-secret",
        env = "REALTIME_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// JWKS (a file path or the JSON itself) for RS256/ES256 tokens.
    #[arg(long = "realtime-jwt-jwks", env = "REALTIME_JWT_JWKS")]
    pub jwt_jwks: Option<String>,
    /// Accept connections without a token (role anon).
    #[arg(
        long = "realtime-allow-anonymous",
        env = "REALTIME_ALLOW_ANONYMOUS",
        default_value = "false"
    )]
    pub allow_anonymous: String,
    /// Roles a token's role claim may name (comma list).
    #[arg(
        long = "realtime-db-roles",
        env = "REALTIME_DB_ROLES",
        default_value = defaults::DEFAULT_DB_ROLES
    )]
    pub db_roles: String,
    /// Refuse topics that have no realtime.channels row.
    #[arg(
        long = "realtime-require-channels",
        env = "REALTIME_REQUIRE_CHANNELS",
        default_value = "false"
    )]
    pub require_channels: String,
    /// Most WebSocket connections on this gateway.
    #[arg(long = "realtime-max-connections", env = "REALTIME_MAX_CONNECTIONS", default_value_t = defaults::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most channels one connection may join.
    #[arg(long = "realtime-max-channels-per-client", env = "REALTIME_MAX_CHANNELS_PER_CLIENT", default_value_t = defaults::DEFAULT_MAX_CHANNELS_PER_CLIENT)]
    pub max_channels_per_client: usize,
    /// Most broadcasts and presence updates one connection may send per second.
    #[arg(long = "realtime-max-events-per-second", env = "REALTIME_MAX_EVENTS_PER_SECOND", default_value_t = defaults::DEFAULT_MAX_EVENTS_PER_SECOND)]
    pub max_events_per_second: u32,
    /// Largest WebSocket message accepted, in bytes (larger ones close the socket with 1009).
    #[arg(long = "realtime-max-frame-bytes", env = "REALTIME_MAX_FRAME_BYTES", default_value_t = defaults::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Seconds between client heartbeats; presence refresh and expiry derive from it.
    #[arg(
        long = "realtime-heartbeat-interval",
        env = "REALTIME_HEARTBEAT_INTERVAL",
        default_value = "30"
    )]
    pub heartbeat_interval: String,
    /// Postgres connections for authorization queries.
    #[arg(long = "realtime-db-pool-size", env = "REALTIME_DB_POOL_SIZE", default_value_t = defaults::DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: usize,
    /// Frames a connection may have queued before it is closed as too slow.
    #[arg(long = "realtime-send-queue", env = "REALTIME_SEND_QUEUE", default_value_t = defaults::DEFAULT_SEND_QUEUE)]
    pub send_queue: usize,
    /// Longest a socket write may take before the client is dropped as not reading:
    /// milliseconds (10000) or 10s.
    #[arg(
        long = "realtime-write-timeout",
        env = "REALTIME_WRITE_TIMEOUT",
        default_value = "10s"
    )]
    pub write_timeout: String,
    /// Bearer token /metrics requires (unset: /metrics is open, as on a loopback-only setup).
    #[arg(
        long = "realtime-metrics-token",
        env = "REALTIME_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Allowed CORS origins: *, or a comma list.
    #[arg(long = "realtime-cors-origin", env = "REALTIME_CORS_ORIGIN")]
    pub cors_origin: Option<String>,
    /// Chat messages one connection may send per minute (Socket.IO, /ws).
    #[arg(long = "realtime-max-messages-per-minute", env = "REALTIME_MAX_MESSAGES_PER_MINUTE", default_value_t = defaults::DEFAULT_MAX_MESSAGES_PER_MINUTE)]
    pub max_messages_per_minute: u32,
    /// Presence updates one connection may send per minute (Socket.IO, /ws).
    #[arg(long = "realtime-max-presence-updates-per-minute", env = "REALTIME_MAX_PRESENCE_UPDATES_PER_MINUTE", default_value_t = defaults::DEFAULT_MAX_PRESENCE_UPDATES_PER_MINUTE)]
    pub max_presence_updates_per_minute: u32,
    /// New WebSocket connections one client IP may open per minute (0: no limit).
    #[arg(long = "realtime-max-connections-per-ip-per-minute", env = "REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", default_value_t = defaults::DEFAULT_MAX_CONNECTIONS_PER_IP_PER_MINUTE)]
    pub max_connections_per_ip_per_minute: u32,
    /// Take the client IP from X-Forwarded-For (only behind a proxy that sets it).
    #[arg(
        long = "realtime-trust-forwarded-for",
        env = "REALTIME_TRUST_FORWARDED_FOR",
        default_value = "false"
    )]
    pub trust_forwarded_for: String,
    /// Longest chat message, in characters.
    #[arg(long = "realtime-max-content-length", env = "REALTIME_MAX_CONTENT_LENGTH", default_value_t = defaults::DEFAULT_MAX_CONTENT_LENGTH)]
    pub max_content_length: usize,
    /// Accepted message types (comma list).
    #[arg(long = "realtime-message-types", env = "REALTIME_MESSAGE_TYPES", default_value = defaults::DEFAULT_MESSAGE_TYPES)]
    pub message_types: String,
    /// A typist not refreshed for this long stops typing: milliseconds (3000) or 3s.
    #[arg(
        long = "realtime-typing-timeout",
        env = "REALTIME_TYPING_TIMEOUT",
        default_value = "3000"
    )]
    pub typing_timeout: String,
    /// Typing indicators on the nself API.
    #[arg(
        long = "realtime-enable-typing",
        env = "REALTIME_ENABLE_TYPING",
        default_value = "true"
    )]
    pub enable_typing: String,
    /// Write the event log and connection history to Postgres (realtime.events, realtime.connections).
    #[arg(
        long = "realtime-log-events",
        env = "REALTIME_LOG_EVENTS",
        default_value = "true"
    )]
    pub log_events: String,
    /// Event types the log keeps: connect, disconnect, error, join, leave, message, typing, presence, broadcast.
    #[arg(long = "realtime-log-event-types", env = "REALTIME_LOG_EVENT_TYPES", default_value = defaults::DEFAULT_LOG_EVENT_TYPES)]
    pub log_event_types: String,
    /// Presence on the nself API (joins tracked, presence:update).
    #[arg(
        long = "realtime-enable-presence",
        env = "REALTIME_ENABLE_PRESENCE",
        default_value = "true"
    )]
    pub enable_presence: String,
}

fn boolean(var: &str, value: &str) -> Result<bool, CliError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(CliError::usage(anyhow!(
            "{var}={other:?} is not a boolean; use true or false"
        ))),
    }
}

impl GatewayArgs {
    /// Validates the settings into a gateway configuration, its token verifier and roles.
    pub fn into_parts(
        self,
        database: nself_realtime_shared::postgres_tls::Database,
    ) -> Result<(GatewayConfig, Verifier, AllowedRoles), CliError> {
        let jwks = match &self.jwt_jwks {
            Some(value) => Some(jwt::load_jwks(value).map_err(CliError::usage)?),
            None => None,
        };
        if self.jwt_secret.is_none() && jwks.is_none() {
            return Err(CliError::usage(anyhow!(
                "no way to verify tokens: set REALTIME_JWT_SECRET (HS256) or REALTIME_JWT_JWKS (RS256/ES256)"
            )));
        }
        let verifier =
            Verifier::new(self.jwt_secret.as_deref(), jwks.as_deref()).map_err(CliError::usage)?;
        let roles = AllowedRoles::parse(&self.db_roles).map_err(CliError::usage)?;
        let heartbeat_interval =
            config::seconds("REALTIME_HEARTBEAT_INTERVAL", &self.heartbeat_interval)
                .map_err(CliError::usage)?;
        for (var, value) in [
            ("REALTIME_MAX_CONNECTIONS", self.max_connections),
            (
                "REALTIME_MAX_CHANNELS_PER_CLIENT",
                self.max_channels_per_client,
            ),
            (
                "REALTIME_MAX_EVENTS_PER_SECOND",
                self.max_events_per_second as usize,
            ),
            ("REALTIME_MAX_FRAME_BYTES", self.max_frame_bytes),
            ("REALTIME_DB_POOL_SIZE", self.db_pool_size),
            ("REALTIME_SEND_QUEUE", self.send_queue),
            (
                "REALTIME_MAX_MESSAGES_PER_MINUTE",
                self.max_messages_per_minute as usize,
            ),
            (
                "REALTIME_MAX_PRESENCE_UPDATES_PER_MINUTE",
                self.max_presence_updates_per_minute as usize,
            ),
            ("REALTIME_MAX_CONTENT_LENGTH", self.max_content_length),
        ] {
            if value == 0 {
                return Err(CliError::usage(anyhow!("{var} must be at least 1")));
            }
        }
        let message_types = config::comma_list(&self.message_types);
        if message_types.is_empty() {
            return Err(CliError::usage(anyhow!(
                "REALTIME_MESSAGE_TYPES is empty: name at least one type, e.g. text,system,file,event"
            )));
        }
        let log_event_types = config::comma_list(&self.log_event_types);
        if let Some(unknown) = log_event_types
            .iter()
            .find(|t| !defaults::LOG_EVENT_TYPES.contains(&t.as_str()))
        {
            return Err(CliError::usage(anyhow!(
                "REALTIME_LOG_EVENT_TYPES names {unknown:?}; use some of {}",
                defaults::LOG_EVENT_TYPES.join(",")
            )));
        }
        let config = GatewayConfig {
            listen: SocketAddr::new(self.host, self.port),
            database,
            db_pool_size: self.db_pool_size,
            db_roles: roles.names().to_vec(),
            allow_anonymous: boolean("REALTIME_ALLOW_ANONYMOUS", &self.allow_anonymous)?,
            require_channels: boolean("REALTIME_REQUIRE_CHANNELS", &self.require_channels)?,
            max_connections: self.max_connections,
            max_channels_per_client: self.max_channels_per_client,
            max_events_per_second: self.max_events_per_second,
            max_frame_bytes: self.max_frame_bytes,
            heartbeat_interval,
            send_queue: self.send_queue,
            write_timeout: config::milliseconds("REALTIME_WRITE_TIMEOUT", &self.write_timeout)
                .map_err(CliError::usage)?,
            metrics_token: self.metrics_token.filter(|t| !t.is_empty()),
            cors_origin: self.cors_origin,
            max_connections_per_ip_per_minute: self.max_connections_per_ip_per_minute,
            trust_forwarded_for: boolean(
                "REALTIME_TRUST_FORWARDED_FOR",
                &self.trust_forwarded_for,
            )?,
            welcome: None,
            nself: NselfLimits {
                max_messages_per_minute: self.max_messages_per_minute,
                max_presence_updates_per_minute: self.max_presence_updates_per_minute,
                max_content_length: self.max_content_length,
                message_types,
                typing_timeout: config::milliseconds(
                    "REALTIME_TYPING_TIMEOUT",
                    &self.typing_timeout,
                )
                .map_err(CliError::usage)?,
                typing: boolean("REALTIME_ENABLE_TYPING", &self.enable_typing)?,
                presence: boolean("REALTIME_ENABLE_PRESENCE", &self.enable_presence)?,
                log_events: boolean("REALTIME_LOG_EVENTS", &self.log_events)?,
                log_event_types,
            },
        };
        Ok((config, verifier, roles))
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Postgres the gateway authorizes against (RLS).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// NATS with JetStream (comma list for a cluster; credentials may be in the URL).
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    /// Copies of the presence bucket in a NATS cluster (3 for a 3-node cluster).
    #[arg(long, env = "REALTIME_STREAM_REPLICAS", default_value_t = 1)]
    stream_replicas: usize,
    #[command(flatten)]
    gateway: GatewayArgs,
}

/// The NATS backends of a gateway. An unreachable NATS is [`StartError::Unavailable`] (worth
/// waiting for); refused credentials or a server without JetStream are configuration errors.
pub async fn nats_backends(
    nats_url: &str,
    heartbeat: std::time::Duration,
    replicas: usize,
) -> Result<Backends, StartError> {
    let client = nself_realtime_shared::nats::connect(nats_url, "nself-realtime-gateway")
        .await
        .map_err(StartError::nats_connect)?;
    let js = async_nats::jetstream::new(client.clone());
    // Entries are refreshed every heartbeat/2; the bucket only needs to outlive that to
    // collect what dead gateways leave.
    let presence = KvPresence::open(js.clone(), heartbeat * 3, replicas)
        .await
        .map_err(|e| {
            StartError::jetstream_setup(e, "check that nats-server runs with JetStream (-js)")
        })?;
    Ok(Backends {
        broker: Arc::new(NatsBroker::new(client)),
        changes: Arc::new(JetStreamChangeLog::new(js)),
        presence: Arc::new(presence),
    })
}

/// A startup failure as the binary reports it: configuration exits 2, the rest 1.
pub fn start_failure(e: StartError) -> CliError {
    match e {
        StartError::Config(_) => CliError::usage(e),
        StartError::Unavailable(_) | StartError::Runtime(_) => CliError::runtime(e),
    }
}

/// Binds the gateway's port; a port in use is a configuration problem. Every connection is a
/// file descriptor, so the soft open-files limit is first raised to the hard one (often 1,024
/// soft against a much larger hard limit, which would cap a gateway at about a thousand sockets).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    raise_open_files_limit();
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::usage(anyhow!(
            "cannot listen on {addr} ({e}); set REALTIME_HOST/REALTIME_PORT to a free address"
        ))
    })
}

fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(
                    from = soft,
                    to = limit.rlim_max,
                    "raised the open files limit"
                );
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let database = super::postgres::parse_url(&args.database_url)?;
    if !(1..=5).contains(&args.stream_replicas) {
        return Err(CliError::usage(anyhow!(
            "REALTIME_STREAM_REPLICAS={} is out of range; use 1 to 5",
            args.stream_replicas
        )));
    }
    let (config, verifier, roles) = args.gateway.into_parts(database)?;
    let listener = bind(config.listen).await?;
    tracing::info!(listen = %config.listen, "gateway listening");
    // NATS may not be up yet: wait for it (the port answers 503 meanwhile), unless told to stop.
    let mut shutdown = Box::pin(shutdown_signal());
    let starting = Starting::default();
    let wait = until_available(
        "NATS",
        &mut shutdown,
        |why| starting.set(why),
        || {
            nats_backends(
                &args.nats_url,
                config.heartbeat_interval,
                args.stream_replicas,
            )
        },
    );
    let (backends, listener) = while_starting(listener, starting.clone(), wait)
        .await
        .map_err(|e| CliError::runtime(anyhow!("cannot serve while starting: {e}")))?;
    let Some(backends) = backends.map_err(start_failure)? else {
        return Ok(());
    };
    let gateway = Gateway::new(config, verifier, roles, backends);
    nself_realtime_gateway::server::serve(listener, gateway, shutdown)
        .await
        .map_err(|e| CliError::runtime(anyhow!("the gateway stopped: {e}")))
}
