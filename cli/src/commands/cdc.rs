//! `nself-realtime cdc`: the CDC sidecar. Validates its configuration (exit 2 with the fix on a
//! bad one) and runs `nself_realtime_cdc::service` until SIGTERM or Ctrl-C.

use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_cdc::bus::BusConfig;
use nself_realtime_cdc::service::{self, CdcConfig};
use nself_realtime_shared::config;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the CDC streams and keeps, shared by `cdc` and `up`.
#[derive(clap::Args)]
pub struct StreamArgs {
    /// Replication slot.
    #[arg(long, env = "REALTIME_SLOT", default_value = config::DEFAULT_SLOT)]
    slot: String,
    /// Base name of the publications.
    #[arg(long, env = "REALTIME_PUBLICATION", default_value = config::DEFAULT_PUBLICATION)]
    publication: String,
    /// Retention of table changes, in seconds (the replay window).
    #[arg(long, env = "REALTIME_MESSAGE_TTL", default_value_t = config::DEFAULT_MESSAGE_TTL_SECS.to_string())]
    message_ttl: String,
    /// How long realtime.messages keeps chat messages and database broadcasts, in seconds (its
    /// day partitions older than this are dropped).
    #[arg(long, env = "REALTIME_MESSAGE_RETENTION", default_value_t = config::DEFAULT_MESSAGE_RETENTION_SECS.to_string())]
    message_retention: String,
    /// NOTIFY channels to bridge to realtime.notify.<channel> (comma list).
    #[arg(long, env = "REALTIME_NOTIFY_CHANNELS", default_value = "")]
    notify_channels: String,
}

/// [`StreamArgs`] checked.
pub struct Stream {
    pub slot: String,
    pub publication: String,
    pub message_ttl: Duration,
    pub message_retention: Duration,
    pub notify_channels: Vec<String>,
}

impl StreamArgs {
    /// Checks the names and the retention (exit 2 with the fix on a bad one).
    pub fn validate(&self) -> Result<Stream, CliError> {
        let usage = CliError::usage;
        Ok(Stream {
            slot: config::plain_identifier("REALTIME_SLOT", &self.slot).map_err(usage)?,
            publication: config::plain_identifier("REALTIME_PUBLICATION", &self.publication)
                .map_err(usage)?,
            message_ttl: config::seconds("REALTIME_MESSAGE_TTL", &self.message_ttl)
                .map_err(usage)?,
            message_retention: config::seconds(
                "REALTIME_MESSAGE_RETENTION",
                &self.message_retention,
            )
            .map_err(usage)?,
            notify_channels: config::comma_list(&self.notify_channels),
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Postgres to replicate from.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// NATS with JetStream (comma list for a cluster; credentials may be in the URL).
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    #[command(flatten)]
    stream: StreamArgs,
    /// Address the Postgres-wire endpoint and /health listen on.
    #[arg(long, env = "REALTIME_CDC_HOST", default_value = "127.0.0.1")]
    cdc_host: IpAddr,
    /// Postgres-wire endpoint port (SUBSCRIBE, LISTEN).
    #[arg(long, env = "REALTIME_CDC_PORT", default_value_t = config::DEFAULT_CDC_PORT)]
    cdc_port: u16,
    /// /health and /metrics port.
    #[arg(long, env = "REALTIME_CDC_HTTP_PORT", default_value_t = config::DEFAULT_CDC_HTTP_PORT)]
    cdc_http_port: u16,
    /// Password of the Postgres-wire endpoint (required unless it listens on loopback only).
    #[arg(long, env = "REALTIME_CDC_PASSWORD", hide_env_values = true)]
    cdc_password: Option<String>,
    /// Most events published to JetStream and not yet acknowledged.
    #[arg(long, env = "REALTIME_CDC_MAX_IN_FLIGHT", default_value_t = 8192)]
    max_in_flight: usize,
    /// Bearer token /metrics requires (unset: /metrics is open).
    #[arg(long, env = "REALTIME_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Copies of the REALTIME_DB stream in a NATS cluster (1 to 5; 3 survives a node loss).
    #[arg(long, env = "REALTIME_STREAM_REPLICAS", default_value_t = 1)]
    stream_replicas: usize,
}

impl Args {
    fn into_config(self) -> Result<CdcConfig, CliError> {
        let database = super::postgres::parse_url(&self.database_url)?;
        let stream = self.stream.validate()?;
        if self.cdc_password.is_none() && !self.cdc_host.is_loopback() {
            return Err(CliError::usage(anyhow!(
                "REALTIME_CDC_HOST={} is not loopback, so set REALTIME_CDC_PASSWORD for the Postgres-wire endpoint",
                self.cdc_host
            )));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(CliError::usage(anyhow!(
                "REALTIME_STREAM_REPLICAS={} is out of range; use 1 to 5 (3 for a 3-node NATS cluster)",
                self.stream_replicas
            )));
        }
        if self.max_in_flight == 0 {
            return Err(CliError::usage(anyhow!(
                "REALTIME_CDC_MAX_IN_FLIGHT must be at least 1"
            )));
        }
        Ok(CdcConfig {
            database,
            bus: BusConfig::Nats { url: self.nats_url },
            slot: stream.slot,
            publication: stream.publication,
            message_ttl: stream.message_ttl,
            message_retention: stream.message_retention,
            notify_channels: stream.notify_channels,
            wire_addr: SocketAddr::new(self.cdc_host, self.cdc_port),
            wire_password: self.cdc_password,
            http_addr: SocketAddr::new(self.cdc_host, self.cdc_http_port),
            max_in_flight: self.max_in_flight,
            stream_replicas: self.stream_replicas,
            metrics_token: self.metrics_token.filter(|t| !t.is_empty()),
        })
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let config = args.into_config()?;
    service::run(config, super::gateway::shutdown_signal())
        .await
        .map_err(super::gateway::start_failure)
}
