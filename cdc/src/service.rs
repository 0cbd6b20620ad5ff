//! The CDC service as `nself-realtime cdc` (and `nself-realtime up`) runs it: check the
//! configuration, connect the bus, start the side services (health, Postgres-wire endpoint,
//! NOTIFY bridge), then run replication sessions until shutdown.
//!
//! The bus is a choice ([`BusConfig`], in [`crate::bus`]): NATS with JetStream, or the
//! in-process bus of `up`. Once connected it is a [`CdcBus`], which every part of the service
//! holds.
//!
//! Startup problems a person must fix (`wal_level` not logical, missing privileges, wrong
//! credentials, a missing database or schema, NATS without JetStream, a port in use) are
//! [`StartError::Config`], which the binary turns into exit code 2 and one line naming the fix.
//! An unreachable Postgres or NATS is not one of them: it is an outage like any later one, so
//! the service binds its ports, reports `degraded` on `/health` and waits for the dependency
//! with capped backoff ([`until_available`]), then starts streaming. Once running, nothing is
//! fatal: a lost Postgres or NATS degrades health and is retried with capped backoff, and a slot
//! streamed by another process makes this one a hot standby that retries every
//! [`STANDBY_RETRY`].

use crate::bus::{BusConfig, CdcBus};
use crate::health::{self, HealthState, Role};
use crate::metrics::CdcMetrics;
use crate::pipeline::{self, Session, SessionError};
use crate::postgres_error::describe;
use crate::{notify, partitions, publications, wire};
use nself_realtime_shared::bus::StreamSettings;
use nself_realtime_shared::postgres_tls::Database;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often a standby asks for the slot. Takeover happens within this plus the time Postgres
/// needs to notice the dead leader's connection.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Everything the CDC needs, already parsed and validated by the binary.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// `DATABASE_URL`, TLS included.
    pub database: Database,
    /// Where change events and NOTIFY payloads go.
    pub bus: BusConfig,
    pub slot: String,
    pub publication: String,
    /// JetStream retention of change events (`REALTIME_MESSAGE_TTL`). NATS only: the in-process
    /// log's retention is the one it was created with.
    pub message_ttl: Duration,
    /// How long `realtime.messages` keeps its rows (`REALTIME_MESSAGE_RETENTION`): day partitions
    /// older than this are dropped.
    pub message_retention: Duration,
    pub notify_channels: Vec<String>,
    pub wire_addr: SocketAddr,
    pub wire_password: Option<String>,
    pub http_addr: SocketAddr,
    pub max_in_flight: usize,
    /// `REALTIME_METRICS_TOKEN`: the bearer token `/metrics` asks for (none: open).
    pub metrics_token: Option<String>,
    /// Copies of the `REALTIME_DB` stream in a NATS cluster (`REALTIME_STREAM_REPLICAS`). NATS
    /// only.
    pub stream_replicas: usize,
}

use nself_realtime_shared::startup::until_available;
pub use nself_realtime_shared::startup::{backoff, StartError};

/// Checks the database can be replicated by this role and prepares the publications.
async fn check_postgres(config: &CdcConfig) -> Result<(), StartError> {
    let (client, connection) = config
        .database
        .connect()
        .await
        .map_err(|e| StartError::postgres_connect(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The connection was lost half way through the checks.
    let query_failed = |e: tokio_postgres::Error| StartError::Unavailable(describe(&e));
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(query_failed)?
        .get(0);
    if wal_level != "logical" {
        return Err(StartError::Config(format!(
            "Postgres has wal_level={wal_level}; set wal_level = logical (ALTER SYSTEM SET wal_level = logical) and restart Postgres"
        )));
    }
    let row = client
        .query_one(
            "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query_failed)?;
    let (user, can_replicate): (String, bool) = (row.get(0), row.get(1));
    if !can_replicate {
        return Err(StartError::Config(format!(
            "role {user} may not use replication; run ALTER ROLE {} REPLICATION as a superuser",
            crate::sql::quote_ident(&user)
        )));
    }
    let initialised: bool = client
        .query_one(
            "SELECT to_regclass('realtime.subscriptions') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query_failed)?
        .get(0);
    if !initialised {
        return Err(StartError::Config(
            "the realtime schema is missing; run `nself-realtime init` against DATABASE_URL first"
                .into(),
        ));
    }
    publications::ensure_exist(&client, &config.publication)
        .await
        .map_err(|e| {
            StartError::Config(format!(
                "cannot create the {} publications ({}); run `nself-realtime init` as the database owner",
                config.publication,
                describe(&e)
            ))
        })
}

async fn bind(addr: SocketAddr, var: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        StartError::Config(format!(
            "cannot listen on {addr} ({e}); choose a free port with {var}"
        ))
    })
}

/// Runs the CDC until `shutdown` completes.
pub async fn run(config: CdcConfig, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let settings = StreamSettings {
        message_ttl: config.message_ttl,
        replicas: config.stream_replicas,
    };
    let http = bind(config.http_addr, "REALTIME_CDC_HTTP_PORT").await?;
    let wire_listener = bind(config.wire_addr, "REALTIME_CDC_PORT").await?;

    // /health answers from the start: degraded while Postgres or NATS is not there yet.
    let metrics = Arc::new(CdcMetrics::new());
    let health = Arc::new(HealthState::new(
        config.slot.clone(),
        config.database.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let stop_rx_http = stop_rx.clone();
    let router = health::router(
        health.clone(),
        metrics.clone(),
        config.metrics_token.as_deref(),
    );
    let http_task = tokio::spawn(async move {
        axum::serve(http, router)
            .with_graceful_shutdown(stopped(stop_rx_http))
            .await
    });

    let dependencies = async {
        let outage = |why: &str| health.error(why.to_string());
        if until_available("Postgres", &mut shutdown, outage, || {
            check_postgres(&config)
        })
        .await?
        .is_none()
        {
            return Ok(None);
        }
        until_available("NATS", &mut shutdown, outage, || {
            CdcBus::connect(&config.bus, &settings)
        })
        .await
    };
    let bus = match dependencies.await {
        Ok(Some(bus)) => bus,
        stopped_or_failed => {
            let _ = stop_tx.send(true);
            let _ = http_task.await;
            return stopped_or_failed.map(|_| ());
        }
    };
    health.set_bus(bus.clone());
    let wire_task = tokio::spawn(wire::serve(
        wire_listener,
        wire::WireConfig {
            database: config.database.clone(),
            publication: config.publication.clone(),
            password: config.wire_password.clone(),
        },
        wire::ChangeFeed::from(&bus),
        stopped(stop_rx.clone()),
    ));
    let notify_task = tokio::spawn(notify::run(
        config.database.clone(),
        config.notify_channels.clone(),
        bus.broker(),
        metrics.clone(),
        health.watch_role(),
    ));
    let health_task = tokio::spawn(health::serve_bus(health.clone(), bus.broker()));
    let partitions_task = tokio::spawn(partitions::run(
        config.database.clone(),
        config.message_retention,
        health.watch_role(),
    ));
    let in_process = matches!(bus, CdcBus::InProcess { .. });
    tracing::info!(http = %config.http_addr, wire = %config.wire_addr, slot = %config.slot, in_process, "CDC started");

    let session = Session {
        database: config.database.clone(),
        slot: config.slot.clone(),
        publications: publications::all(&config.publication)
            .into_iter()
            .map(|p| p.name)
            .collect(),
        bus: bus.clone(),
        stream: settings,
        max_in_flight: config.max_in_flight,
        metrics: metrics.clone(),
        health: health.clone(),
        server_sequence: std::sync::Mutex::new(None),
    };
    replicate(&session, &mut shutdown).await;

    health.set_role(Role::Starting);
    let _ = stop_tx.send(true);
    notify_task.abort();
    let _ = notify_task.await;
    partitions_task.abort();
    let _ = partitions_task.await;
    health_task.abort();
    let _ = health_task.await;
    let _ = http_task.await;
    let _ = wire_task.await;
    bus.flush().await;
    tracing::info!("CDC stopped");
    Ok(())
}

/// Runs replication sessions one after another until `shutdown`: as leader while the slot is
/// ours, as standby while another process streams it, with backoff after failures.
pub async fn replicate(session: &Session, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut failures = 0u32;
    loop {
        let run = pipeline::run_session(session, stop_rx.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                run.await
            }
        };
        if *stop_rx.borrow() {
            return;
        }
        let wait = match result {
            Ok(()) => return,
            Err(SessionError::SlotInUse) => {
                if session.health.role() != Role::Standby {
                    tracing::info!(slot = %session.slot, "slot streamed by another process; standing by");
                }
                session.health.set_role(Role::Standby);
                session.metrics.leader.set(0);
                failures = 0;
                STANDBY_RETRY
            }
            Err(e) => {
                failures += 1;
                session.health.set_role(Role::Starting);
                session.metrics.leader.set(0);
                session.health.error(e.to_string());
                let wait = backoff(failures);
                tracing::warn!(error = %e, retry_in = ?wait, "replication session ended");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return,
        }
    }
}
