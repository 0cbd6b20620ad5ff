//! The gateway's shared state: configuration, token verification, the Postgres pool, and the
//! channel service with its relays (broadcast rooms, NOTIFY rooms, presence topics, typing,
//! chat messages, table feeds) over the chosen bus backends. Handlers receive it as
//! `Arc<Gateway>`.

use crate::auth::session::AllowedRoles;
use crate::broadcast::{BroadcastFeed, Broadcasts, NotifyFeed};
use crate::changes::feed::ChangeFeeds;
use crate::channels::ChannelService;
use crate::config::GatewayConfig;
use crate::database_broadcasts::DatabaseBroadcasts;
use crate::db::Pool;
use crate::event_log::EventLog;
use crate::messages::Messages;
use crate::metrics::Metrics;
use crate::presence::{PresenceTiming, Presences};
use crate::rate_limit::ConnectionsPerIp;
use crate::registry::Registry;
use nself_realtime_shared::bus::{Broker, ChangeLog, PresenceStore};
use nself_realtime_shared::jwt::Verifier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The bus backends a gateway runs on: NATS for a cluster, in-process for `up`.
#[derive(Clone)]
pub struct Backends {
    pub broker: Arc<dyn Broker>,
    pub changes: Arc<dyn ChangeLog>,
    pub presence: Arc<dyn PresenceStore>,
}

/// Shared by every connection and handler.
pub struct Gateway {
    pub id: u64,
    /// The ephemeral pub/sub every relay and the control API use.
    pub broker: Arc<dyn Broker>,
    pub config: GatewayConfig,
    pub verifier: Verifier,
    pub roles: Arc<AllowedRoles>,
    pub pool: Pool,
    /// Joins, re-authorizes and leaves channels; holds the relays every channel registers with.
    pub channels: ChannelService,
    pub metrics: Arc<Metrics>,
    pub connections_per_ip: ConnectionsPerIp,
    /// Live connections, for operators.
    pub registry: Registry,
    pub events: EventLog,
    connections: AtomicUsize,
    pub started: Instant,
    shutdown: watch::Sender<bool>,
}

/// A counted connection slot; released when dropped.
pub struct ConnectionSlot {
    gateway: Arc<Gateway>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gateway.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        verifier: Verifier,
        roles: AllowedRoles,
        backends: Backends,
    ) -> Arc<Gateway> {
        let id = rand::random::<u64>();
        let pool = Pool::new(config.database.clone(), config.db_pool_size);
        let roles = Arc::new(roles);
        let timing = PresenceTiming::from_heartbeat(config.heartbeat_interval);
        let (shutdown, _) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let events = if config.nself.log_events {
            EventLog::start(
                pool.clone(),
                format!("{id:016x}"),
                config.nself.log_event_types.clone(),
                metrics.clone(),
            )
        } else {
            EventLog::off(metrics.clone())
        };
        let broadcasts = Arc::new(Broadcasts::new(
            backends.broker.clone(),
            id,
            Arc::new(BroadcastFeed),
        ));
        let channels = ChannelService {
            pool: pool.clone(),
            roles: roles.clone(),
            require_channels: config.require_channels,
            max_channels: config.max_channels_per_client,
            notifications: Arc::new(Broadcasts::new(
                backends.broker.clone(),
                id,
                Arc::new(NotifyFeed),
            )),
            typing: crate::typing::rooms(backends.broker.clone(), id, config.nself.typing_timeout),
            messages: Messages::new(broadcasts.clone(), pool.clone(), roles.clone()),
            database_broadcasts: DatabaseBroadcasts::new(
                backends.changes.clone(),
                broadcasts.clone(),
                pool.clone(),
                metrics.clone(),
            ),
            broadcasts,
            presences: Presences::start(backends.presence, id, timing),
            feeds: ChangeFeeds::new(
                backends.changes,
                pool.clone(),
                roles.clone(),
                metrics.clone(),
            ),
            census: Default::default(),
        };
        Arc::new(Gateway {
            id,
            broker: backends.broker,
            channels,
            connections_per_ip: ConnectionsPerIp::new(config.max_connections_per_ip_per_minute),
            registry: Registry::default(),
            events,
            config,
            verifier,
            roles,
            pool,
            metrics,
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            shutdown,
        })
    }

    /// Takes a connection slot, or `None` at `REALTIME_MAX_CONNECTIONS`.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let admitted = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max_connections).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.metrics.connections_total.inc();
            Some(ConnectionSlot {
                gateway: self.clone(),
            })
        } else {
            self.metrics.connections_refused.inc();
            None
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// The id operators and the connection history know connection `conn` by.
    pub fn connection_id(&self, conn: crate::outbox::ConnId) -> String {
        format!("{:016x}-{conn}", self.id)
    }

    /// A connection learnt who it acts for.
    pub fn identify(&self, conn: crate::outbox::ConnId, user_id: &str) {
        self.registry.set_user(conn, user_id);
        self.events.identified(&self.connection_id(conn), user_id);
    }

    /// Tells every connection to close (graceful shutdown).
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Resolves when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
