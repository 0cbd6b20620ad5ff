//! The bus the CDC publishes to, chosen once at start ([`BusConfig`]) and connected once
//! ([`CdcBus`]): NATS with JetStream for a CDC sidecar serving any number of gateways, or the
//! in-process [`MemoryChangeLog`] and [`MemoryBroker`] that `up` shares with the gateway running
//! in the same process when `NATS_URL` is unset.
//!
//! Every part of the service holds the connected [`CdcBus`]: the replication session appends
//! change events to its change log, the NOTIFY bridge publishes on its broker, the Postgres-wire
//! endpoint follows its log and `/health` reports its connection. Only the NATS variant has a
//! connection to watch, a server `max_payload` and a stream to create.

use crate::publisher::PublishError;
use nself_realtime_shared::bus::{
    ensure_stream, Broker, ChangeLogWriter, JetStreamChangeLogWriter, MemoryBroker,
    MemoryChangeLog, NatsBroker, StreamSettings,
};
use nself_realtime_shared::startup::StartError;
use std::sync::Arc;
use std::time::Duration;

/// Which bus the CDC publishes to.
#[derive(Clone)]
pub enum BusConfig {
    /// NATS with JetStream at `url` (`NATS_URL`, a comma list for a cluster): change events to
    /// the stream `REALTIME_DB`, NOTIFY payloads to core NATS.
    Nats { url: String },
    /// The in-process bus (`nself-realtime up` without `NATS_URL`): change events appended to
    /// `log`, NOTIFY payloads published on `broker`. Pass clones of the log and broker the
    /// gateway of the same process reads; keep the log across restarts of the service so a
    /// restarted CDC skips what the log already holds.
    InProcess {
        log: MemoryChangeLog,
        broker: MemoryBroker,
    },
}

impl std::fmt::Debug for BusConfig {
    /// The NATS URL may hold credentials, so it is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusConfig::Nats { .. } => f.debug_struct("Nats").finish_non_exhaustive(),
            BusConfig::InProcess { log, .. } => f
                .debug_struct("InProcess")
                .field("last_id", &log.last_id().map(|id| id.to_string()))
                .finish_non_exhaustive(),
        }
    }
}

/// The bus once connected, shared by the replication session, the NOTIFY bridge, the
/// Postgres-wire endpoint and `/health`. Cloning shares the connection (or the in-process log
/// and broker).
#[derive(Clone)]
pub enum CdcBus {
    Nats(async_nats::Client),
    InProcess {
        log: MemoryChangeLog,
        broker: MemoryBroker,
    },
}

impl CdcBus {
    /// Connects to NATS and creates or updates the stream; the in-process bus is ready as is.
    pub async fn connect(
        config: &BusConfig,
        settings: &StreamSettings,
    ) -> Result<CdcBus, StartError> {
        match config {
            BusConfig::Nats { url } => {
                let nats = nself_realtime_shared::nats::connect(url, "nself-realtime-cdc")
                    .await
                    .map_err(StartError::nats_connect)?;
                let js = async_nats::jetstream::new(nats.clone());
                ensure_stream(&js, settings).await.map_err(|e| {
                    StartError::jetstream_setup(
                        PublishError::Stream(e.to_string()),
                        "NATS_URL must point at a server with JetStream enabled (nats-server -js)",
                    )
                })?;
                Ok(CdcBus::Nats(nats))
            }
            BusConfig::InProcess { log, broker } => Ok(CdcBus::InProcess {
                log: log.clone(),
                broker: broker.clone(),
            }),
        }
    }

    /// A writer of the change log for one replication session: the stream `REALTIME_DB` (created
    /// or updated, its end read; `resume_sequence` as [`JetStreamChangeLogWriter::open`] says),
    /// or the in-process log. The CDC's one choice of backend for table changes.
    pub async fn writer(
        &self,
        settings: &StreamSettings,
        max_in_flight: usize,
        ack_timeout: Duration,
        resume_sequence: Option<u64>,
    ) -> Result<Box<dyn ChangeLogWriter>, PublishError> {
        Ok(match self {
            CdcBus::Nats(nats) => Box::new(
                JetStreamChangeLogWriter::open(
                    nats.clone(),
                    settings,
                    max_in_flight,
                    ack_timeout,
                    resume_sequence,
                )
                .await?,
            ),
            CdcBus::InProcess { log, .. } => Box::new(log.clone()),
        })
    }

    /// Where NOTIFY payloads go: core NATS, or the in-process broker.
    pub fn broker(&self) -> Arc<dyn Broker> {
        match self {
            CdcBus::Nats(nats) => Arc::new(NatsBroker::new(nats.clone())),
            CdcBus::InProcess { broker, .. } => Arc::new(broker.clone()),
        }
    }

    /// Whether events can reach the bus now (the in-process bus always can).
    pub fn is_connected(&self) -> bool {
        match self {
            CdcBus::Nats(nats) => {
                nats.connection_state() == async_nats::connection::State::Connected
            }
            CdcBus::InProcess { .. } => true,
        }
    }

    /// Waits until everything published so far reached the server (nothing to wait for in
    /// process).
    pub async fn flush(&self) {
        if let CdcBus::Nats(nats) = self {
            let _ = nats.flush().await;
        }
    }
}
