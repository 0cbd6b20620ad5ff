//! One replication session: WAL in, change events out, LSNs confirmed only once stored.
//!
//! ```text
//! ReplicationStream ──XLogData──▶ pgoutput decode ──▶ EventBuilder ──ChangeEvent──▶ Publisher
//!        ▲                                                                           │ acks
//!        └──────────── standby status update (confirmed LSN) ◀── next_confirmed ◀───┘
//! ```
//!
//! The loop selects between three things: reading the next replication message (only while the
//! publisher's window has room — a full window stops reading, which is the backpressure that
//! keeps memory bounded while NATS is slow or gone), the next acknowledgement, and a status
//! timer that keeps the walsender from timing out even while reading is paused.
//! Any error ends the session; `service::replicate` starts a new one, which resumes at the
//! slot's confirmed LSN and skips what the bus already has.
//!
//! The session publishes to the bus the service connected ([`CdcBus`]): on NATS it creates the
//! stream, reads where it ends, keeps `Nats-Expected-Last-Sequence` in step and watches the
//! connection; in process it appends to the in-process change log, whose acknowledgements are
//! immediate. The loop is the same for both.

use crate::bus::CdcBus;
use crate::health::{HealthState, Role};
use crate::metrics::CdcMetrics;
use crate::pgoutput::events::{EventBuilder, Step};
use crate::pgoutput::messages::Message;
use crate::postgres_error::describe;
use crate::publisher::{PublishError, Publisher};
use crate::replication::{
    ConnectOptions, ReplicationClient, ReplicationError, ReplicationEvent, ReplicationStream,
};
use nself_realtime_shared::bus::StreamSettings;
use nself_realtime_shared::event::ChangeEvent;
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::postgres_tls::Database;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long JetStream may take to acknowledge an event before the session is restarted.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the confirmed LSN is reported while it moves.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// How often a status is sent even when nothing moved (well under `wal_sender_timeout`).
const IDLE_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// How long a shutdown waits for outstanding acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a session needs; shared by every session of the process.
pub struct Session {
    pub database: Database,
    pub slot: String,
    pub publications: Vec<String>,
    pub bus: CdcBus,
    /// Settings of the JetStream stream (NATS only).
    pub stream: StreamSettings,
    pub max_in_flight: usize,
    pub metrics: Arc<CdcMetrics>,
    pub health: Arc<HealthState>,
    /// The stream sequence JetStream reported when it last refused an event; the next session
    /// counts from it instead of from the stream's last message (NATS only).
    pub server_sequence: std::sync::Mutex<Option<u64>>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Another process streams the slot: stand by.
    #[error("the replication slot is streamed by another process")]
    SlotInUse,
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot decode the replication stream: {0}")]
    Decode(String),
    #[error("Postgres: {0}")]
    Postgres(String),
    #[error("the server ended the replication stream")]
    StreamEnded,
    #[error("the NATS connection dropped with events unacknowledged")]
    NatsDisconnected,
}

fn postgres(e: tokio_postgres::Error) -> SessionError {
    SessionError::Postgres(describe(&e))
}

/// Opens an ordinary (non-replication) connection (type lookups, the slot's confirmed LSN).
async fn plain_connection(database: &Database) -> Result<tokio_postgres::Client, SessionError> {
    let (client, connection) = database.connect().await.map_err(postgres)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs one session until an error, the end of the stream, or `stop` turning true (then it
/// drains outstanding acknowledgements, confirms, and returns `Ok`).
pub async fn run_session(s: &Session, mut stop: watch::Receiver<bool>) -> Result<(), SessionError> {
    let mut session = Streaming::open(s).await?;
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
            acked = session.publisher.next_confirmed(), if session.publisher.in_flight() > 0 => {
                session.acknowledged(acked)?;
            }
            message = session.stream.next(), if !session.publisher.is_full() => {
                session.received(message?).await?;
            }
            _ = status_timer.tick() => session.tick().await?,
        }
    }
    session.finish().await
}

/// A session that streams: the replication stream, the publisher's window, the event builder
/// and the LSNs confirmed and reported.
struct Streaming<'s> {
    s: &'s Session,
    stream: ReplicationStream,
    publisher: Publisher,
    builder: EventBuilder,
    /// The events of the message being handled (reused).
    events: Vec<ChangeEvent>,
    /// For type lookups the decoder asks for.
    catalog: tokio_postgres::Client,
    /// Stored on the bus up to here: safe to confirm to Postgres.
    confirmed: Lsn,
    /// Confirmed to Postgres so far, and when a status last went out.
    reported: Lsn,
    last_status: tokio::time::Instant,
}

impl<'s> Streaming<'s> {
    /// Connects for replication, creates the slot if missing, opens the bus' writer, reads the
    /// slot's confirmed LSN and starts streaming from it: this process is now the leader.
    async fn open(s: &'s Session) -> Result<Streaming<'s>, SessionError> {
        // pgoutput sends values in the text forms these settings choose; the decoder relies
        // on them.
        let options = crate::pgoutput::REQUIRED_SESSION_SETTINGS
            .iter()
            .fold(ConnectOptions::default(), |o, (name, value)| {
                o.setting(*name, *value)
            });
        let mut database = s.database.clone();
        if database.config().get_application_name().is_none() {
            database.config_mut().application_name("nself-realtime-cdc");
        }
        let mut client = ReplicationClient::connect(&database, &options).await?;
        client.create_slot_if_missing(&s.slot).await?;

        // The sequence the server reported when it last refused an event is only a hint for
        // the next writer; it is consumed once this session streams.
        let resume_sequence = *s.server_sequence.lock().unwrap();
        let writer = s
            .bus
            .writer(&s.stream, s.max_in_flight, ACK_TIMEOUT, resume_sequence)
            .await?;
        let stream_end = writer.end();

        let catalog = plain_connection(&s.database).await?;
        let confirmed = slot_confirmed_lsn(&catalog, &s.slot).await?;
        let names: Vec<&str> = s.publications.iter().map(String::as_str).collect();
        let stream = match client.start_replication(&s.slot, Lsn(0), &names).await {
            Ok(stream) => stream,
            Err(ReplicationError::SlotInUse { .. }) => return Err(SessionError::SlotInUse),
            Err(e) => return Err(e.into()),
        };
        s.metrics.sessions.inc();
        s.metrics.leader.set(1);
        s.health.set_role(Role::Leader);
        tracing::info!(slot = %s.slot, from = %confirmed, stream_last_sequence = stream_end.last_sequence, skip_through = ?stream_end.last_id.map(|id| id.to_string()), "streaming");
        s.server_sequence.lock().unwrap().take();
        Ok(Streaming {
            s,
            stream,
            publisher: Publisher::new(writer, s.max_in_flight, s.metrics.clone()),
            builder: EventBuilder::new(),
            events: Vec::new(),
            catalog,
            confirmed,
            reported: confirmed,
            last_status: tokio::time::Instant::now(),
        })
    }

    /// The oldest acknowledgement in the window: it may make a transaction's end confirmable.
    /// A refusal that names the server's sequence is kept for the next session's writer.
    fn acknowledged(
        &mut self,
        acked: Result<Option<Lsn>, PublishError>,
    ) -> Result<(), SessionError> {
        match acked {
            Ok(Some(lsn)) => self.confirmed = self.confirmed.max(lsn),
            Ok(None) => {}
            Err(PublishError::OutOfStep(sequence)) => {
                *self.s.server_sequence.lock().unwrap() = Some(sequence);
                return Err(PublishError::OutOfStep(sequence).into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// One replication message: a keepalive (answered when asked; it may move the confirmed
    /// LSN when nothing is pending), or WAL data decoded into events and published.
    async fn received(&mut self, message: Option<ReplicationEvent>) -> Result<(), SessionError> {
        match message {
            None => Err(SessionError::StreamEnded),
            Some(ReplicationEvent::Keepalive {
                wal_end,
                reply_requested,
                ..
            }) => {
                // Everything up to wal_end was sent to us; if all of it is stored, the slot
                // may move there even when no table of ours changed.
                if !self.builder.in_transaction() && self.publisher.is_idle() {
                    self.confirmed = self.confirmed.max(wal_end);
                }
                if reply_requested {
                    self.report().await?;
                }
                Ok(())
            }
            Some(ReplicationEvent::XLogData { data, .. }) => self.decode_and_publish(data).await,
        }
    }

    async fn decode_and_publish(&mut self, data: bytes::Bytes) -> Result<(), SessionError> {
        let message = Message::decode(data).map_err(|e| SessionError::Decode(e.to_string()))?;
        let step = self
            .builder
            .handle(message, &mut self.events)
            .map_err(|e| SessionError::Decode(e.to_string()))?;
        match step {
            Step::Commit { end_lsn, .. } => {
                self.s.metrics.transactions.inc();
                if let Some(lsn) = self.publisher.commit(end_lsn) {
                    self.confirmed = self.confirmed.max(lsn);
                }
            }
            Step::NeedCatalog(needs) => {
                self.builder
                    .load_catalog(&self.catalog, &needs)
                    .await
                    .map_err(postgres)?;
            }
            Step::Begin { .. } | Step::Other => {}
        }
        for event in self.events.drain(..) {
            self.publisher.publish(&event).await?;
        }
        Ok(())
    }

    /// The status timer: give up on a dropped NATS connection with events in flight, and report
    /// the confirmed LSN when it moved (or at least every [`IDLE_STATUS_INTERVAL`]).
    async fn tick(&mut self) -> Result<(), SessionError> {
        // Events sent over a NATS connection that dropped may be lost; JetStream would refuse
        // their successors anyway (expected sequence), so start over without waiting for the
        // acknowledgement timeout. (The in-process bus never drops.)
        if self.publisher.in_flight() > 0 && !self.s.bus.is_connected() {
            return Err(SessionError::NatsDisconnected);
        }
        let moved = self.confirmed != self.reported;
        if moved || self.last_status.elapsed() >= IDLE_STATUS_INTERVAL {
            self.report().await?;
            if moved {
                self.s.health.confirmed(self.confirmed);
                self.s.metrics.confirmed_lsn.set(self.confirmed.0 as i64);
            }
        }
        Ok(())
    }

    /// Sends a standby status with the confirmed LSN.
    async fn report(&mut self) -> Result<(), SessionError> {
        let confirmed = self.confirmed;
        self.stream
            .send_status(confirmed, confirmed, confirmed, false)
            .await?;
        self.reported = confirmed;
        self.last_status = tokio::time::Instant::now();
        Ok(())
    }

    /// Shutdown: lets outstanding events be acknowledged, confirms, and ends the stream.
    async fn finish(mut self) -> Result<(), SessionError> {
        let drain = async {
            while self.publisher.in_flight() > 0 {
                if let Some(lsn) = self.publisher.next_confirmed().await? {
                    self.confirmed = self.confirmed.max(lsn);
                }
            }
            Ok::<_, SessionError>(())
        };
        match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("shutdown: the bus did not acknowledge every event in time; they will be re-sent and deduplicated"),
        }
        self.report().await?;
        self.s.health.confirmed(self.confirmed);
        let _ = self.stream.finish().await;
        tracing::info!(confirmed = %self.confirmed, "replication session stopped");
        Ok(())
    }
}

/// The slot's confirmed LSN, where streaming resumes (0 for a new slot).
async fn slot_confirmed_lsn(
    catalog: &tokio_postgres::Client,
    slot: &str,
) -> Result<Lsn, SessionError> {
    let slot_lsn: Option<String> = catalog
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(postgres)?
        .and_then(|row| row.get(0));
    Ok(slot_lsn
        .and_then(|t| t.parse::<Lsn>().ok())
        .unwrap_or_default())
}
