//! The gateway's settings, already parsed and validated by the binary (which reads them from
//! flags and environment variables of DESIGN.md); defaults live here.

use std::net::SocketAddr;
use std::time::Duration;

/// Default `REALTIME_PORT`.
pub const DEFAULT_PORT: u16 = 4000;
/// Default `REALTIME_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `REALTIME_MAX_CHANNELS_PER_CLIENT` (Supabase's default too).
pub const DEFAULT_MAX_CHANNELS_PER_CLIENT: usize = 100;
/// Default `REALTIME_MAX_EVENTS_PER_SECOND`: broadcasts, presence updates and other client
/// messages one connection may send per second.
pub const DEFAULT_MAX_EVENTS_PER_SECOND: u32 = 100;
/// Default `REALTIME_MAX_FRAME_BYTES`: the largest WebSocket message accepted (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Default `REALTIME_HEARTBEAT_INTERVAL`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default `REALTIME_DB_POOL_SIZE`: Postgres connections for authorization queries.
pub const DEFAULT_DB_POOL_SIZE: usize = 8;
/// Frames one connection may have queued before it is closed as too slow.
pub const DEFAULT_SEND_QUEUE: usize = 1024;
/// Default `REALTIME_WRITE_TIMEOUT`: longest a write to a socket may take before the client
/// is dropped as not reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `REALTIME_MAX_MESSAGES_PER_MINUTE` (seed 002: 60 per connection per minute).
pub const DEFAULT_MAX_MESSAGES_PER_MINUTE: u32 = 60;
/// Default `REALTIME_MAX_PRESENCE_UPDATES_PER_MINUTE` (seed 002: 10).
pub const DEFAULT_MAX_PRESENCE_UPDATES_PER_MINUTE: u32 = 10;
/// Default `REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE` (seed 002: 100).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP_PER_MINUTE: u32 = 100;
/// Default `REALTIME_MAX_CONTENT_LENGTH`: characters in one chat message (seed 000: 10,000).
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 10_000;
/// Default `REALTIME_DB_ROLES`: the roles a token's role claim may name (DESIGN.md).
pub const DEFAULT_DB_ROLES: &str = "anon,authenticated,service_role";
/// Default `REALTIME_MESSAGE_TYPES` (seed 000).
pub const DEFAULT_MESSAGE_TYPES: &str = "text,system,file,event";
/// Default `REALTIME_LOG_EVENT_TYPES` (seed 001).
pub const DEFAULT_LOG_EVENT_TYPES: &str = "connect,disconnect,error";
/// Event types the log knows.
pub const LOG_EVENT_TYPES: [&str; 9] = [
    "connect",
    "disconnect",
    "error",
    "join",
    "leave",
    "message",
    "typing",
    "presence",
    "broadcast",
];
/// Default `REALTIME_TYPING_TIMEOUT` (seed 001: 3000 ms).
pub const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything a gateway needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// `DATABASE_URL`, TLS included.
    pub database: nself_realtime_shared::postgres_tls::Database,
    pub db_pool_size: usize,
    /// `REALTIME_DB_ROLES`: roles a token's `role` claim may name.
    pub db_roles: Vec<String>,
    pub allow_anonymous: bool,
    /// `REALTIME_REQUIRE_CHANNELS`: refuse topics without a `realtime.channels` row.
    pub require_channels: bool,
    pub max_connections: usize,
    pub max_channels_per_client: usize,
    pub max_events_per_second: u32,
    pub max_frame_bytes: usize,
    pub heartbeat_interval: Duration,
    pub send_queue: usize,
    /// `REALTIME_WRITE_TIMEOUT`: every socket write's deadline.
    pub write_timeout: Duration,
    /// `REALTIME_METRICS_TOKEN`: the bearer token `/metrics` asks for (none: open).
    pub metrics_token: Option<String>,
    /// `REALTIME_CORS_ORIGIN`: `*`, a comma list of origins, or none.
    pub cors_origin: Option<String>,
    /// The nself API's limits (Socket.IO and `/ws`).
    pub nself: NselfLimits,
    /// `REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE` (0: no limit), on every WebSocket endpoint.
    pub max_connections_per_ip_per_minute: u32,
    /// `REALTIME_TRUST_FORWARDED_FOR`: take the client address from `X-Forwarded-For` (behind a
    /// proxy that sets it), else from the TCP peer.
    pub trust_forwarded_for: bool,
    /// What `nself-realtime up` printed, for its inspector to offer on loopback (`None` for a
    /// gateway started on its own).
    pub welcome: Option<Welcome>,
}

/// The keys and addresses `nself-realtime up` prints, which its inspector offers to a browser on
/// the same machine so that a newcomer need not copy them from the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub anon_key: String,
    pub service_key: String,
    /// A token of the demo user (`sub` demo-user).
    pub demo_token: String,
    /// The local Postgres (no password: `up`'s cluster trusts local connections).
    pub postgres_url: String,
    /// The CDC's Postgres-wire endpoint.
    pub cdc_url: String,
}

/// Limits and switches of the nself API (seeds 000–004).
#[derive(Debug, Clone)]
pub struct NselfLimits {
    pub max_messages_per_minute: u32,
    pub max_presence_updates_per_minute: u32,
    /// Characters in one chat message.
    pub max_content_length: usize,
    /// Accepted `messageType`s.
    pub message_types: Vec<String>,
    /// `REALTIME_TYPING_TIMEOUT`: a typist not refreshed for this long stops typing.
    pub typing_timeout: Duration,
    /// `REALTIME_ENABLE_TYPING`, `REALTIME_ENABLE_PRESENCE`.
    pub typing: bool,
    pub presence: bool,
    /// `REALTIME_LOG_EVENTS`: write the event log and connection history to Postgres.
    pub log_events: bool,
    /// `REALTIME_LOG_EVENT_TYPES`: which events the log keeps.
    pub log_event_types: Vec<String>,
}

impl Default for NselfLimits {
    fn default() -> NselfLimits {
        NselfLimits {
            max_messages_per_minute: DEFAULT_MAX_MESSAGES_PER_MINUTE,
            max_presence_updates_per_minute: DEFAULT_MAX_PRESENCE_UPDATES_PER_MINUTE,
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
            message_types: DEFAULT_MESSAGE_TYPES
                .split(',')
                .map(str::to_string)
                .collect(),
            typing_timeout: DEFAULT_TYPING_TIMEOUT,
            typing: true,
            presence: true,
            log_events: true,
            log_event_types: DEFAULT_LOG_EVENT_TYPES
                .split(',')
                .map(str::to_string)
                .collect(),
        }
    }
}

impl GatewayConfig {
    /// A socket with no message for this long is closed. realtime-js heartbeats every 25 s; the
    /// limit never drops below 60 s so a short `REALTIME_HEARTBEAT_INTERVAL` (which speeds up
    /// presence expiry) does not cut off clients with the default heartbeat.
    pub fn idle_timeout(&self) -> Duration {
        (self.heartbeat_interval * 2).max(Duration::from_secs(60))
    }
}
