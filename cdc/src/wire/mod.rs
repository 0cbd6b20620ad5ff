//! The CDC's Postgres-wire endpoint (`REALTIME_CDC_PORT`, default 5433): any Postgres client
//! (psql, tokio-postgres, node `pg`, the `nself-realtime` CLI) manages subscriptions and listens
//! to table changes with plain SQL-looking commands.
//!
//! ```text
//! SUBSCRIBE public.users INSERT,UPDATE     -- publish these operations of this table
//! UNSUBSCRIBE public.users
//! SHOW SUBSCRIPTIONS                       -- rows: table, operations, created_at
//! LISTEN "public.users"                    -- each change arrives as a NotificationResponse:
//!                                          --   channel "public.users", payload = event JSON
//! UNLISTEN "public.users" | UNLISTEN *
//! ```
//!
//! How it fits: SUBSCRIBE and friends change `realtime.subscriptions` and the op-set publications
//! the replication stream reads ([`crate::subscriptions`]); LISTEN follows the subjects the CDC
//! publishes change events on (`realtime.db.<schema>.<table>.<op>`) on the bus the CDC uses
//! ([`ChangeFeed`]): a core NATS subscription (core subscribers see JetStream-captured subjects
//! too), or the in-process change log followed from its end. A listener sees exactly what
//! gateways see.
//!
//! Pieces: [`command`] parses the statements, `session` runs them and owns a connection's
//! LISTENs, `connection` is the per-connection loop that also pushes notifications to idle
//! clients (pgwire's stock loop cannot), `auth` is trust or MD5 password, `pool` keeps a few
//! Postgres connections for the commands. Only the simple query protocol is served; the extended
//! protocol gets a clear error.

pub mod command;

mod auth;
mod connection;
mod pool;
mod session;

pub use connection::NOTIFICATION_QUEUE;
pub use session::MAX_LISTENS_PER_CONNECTION;

use crate::bus::CdcBus;
use nself_realtime_shared::bus::MemoryChangeLog;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long connections get to say goodbye when the endpoint stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the endpoint needs.
#[derive(Clone)]
pub struct WireConfig {
    /// Postgres to apply subscriptions to (`DATABASE_URL`).
    pub database: nself_realtime_shared::postgres_tls::Database,
    /// Base name of the op-set publications (`REALTIME_PUBLICATION`).
    pub publication: String,
    /// `REALTIME_CDC_PASSWORD`; `None` means trust (only sensible on loopback).
    pub password: Option<String>,
}

impl std::fmt::Debug for WireConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConfig")
            .field("publication", &self.publication)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Where LISTEN reads table changes from: the bus the CDC publishes to.
#[derive(Clone)]
pub enum ChangeFeed {
    /// Core NATS subscriptions on the change subjects.
    Nats(async_nats::Client),
    /// The in-process change log (`nself-realtime up` without NATS), followed from its end.
    InProcess(MemoryChangeLog),
}

impl From<async_nats::Client> for ChangeFeed {
    fn from(client: async_nats::Client) -> ChangeFeed {
        ChangeFeed::Nats(client)
    }
}

impl From<&CdcBus> for ChangeFeed {
    fn from(bus: &CdcBus) -> ChangeFeed {
        match bus {
            CdcBus::Nats(client) => ChangeFeed::Nats(client.clone()),
            CdcBus::InProcess { log, .. } => ChangeFeed::InProcess(log.clone()),
        }
    }
}

/// Serves the endpoint on `listener` until `shutdown` completes, then ends every connection
/// (FATAL 57P01) and returns once they closed or after a short grace period. `feed` is where
/// LISTEN reads changes (a NATS client converts into one).
pub async fn serve(
    listener: TcpListener,
    config: WireConfig,
    feed: impl Into<ChangeFeed>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(session::Shared {
        publication: config.publication,
        pool: pool::Pool::new(config.database),
        feed: feed.into(),
    });
    let startup = Arc::new(auth::Startup::new(config.password));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let next_id = AtomicU64::new(1);
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Postgres-wire endpoint listening");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("wire", connection = id, %peer);
                    connections.spawn(
                        connection::run(tcp, shared.clone(), startup.clone(), id, stopped.clone())
                            .instrument(span),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a Postgres-wire connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::info!("Postgres-wire endpoint stopping");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}
