//! The event log: what happened on this gateway, written to Postgres in batches off the hot
//! path (seed 001's `realtime_events`, and the connection history `realtime.connections`).
//!
//! With `REALTIME_LOG_EVENTS` on, connections and handlers hand entries to [`EventLog::record`],
//! which only pushes them on a bounded queue (never waits: when Postgres is slower than the
//! gateway, entries past the queue's size are dropped and counted in
//! `realtime_gateway_event_log_dropped_total`). One task drains the queue every second, or as
//! soon as 500 entries are waiting, and writes each kind with one statement (`unnest` of
//! arrays). Which event types are logged is `REALTIME_LOG_EVENT_TYPES` (seed 001's default
//! `connect,disconnect,error`; also `join`, `leave`, `message`, `typing`, `presence`,
//! `broadcast`). The connection history is written when `connect` is logged; the gateway
//! refreshes its open connections' `last_seen` every minute, so
//! `realtime.cleanup_stale_connections()` can close the rows of a gateway that died.

use crate::db::Pool;
use crate::metrics::Metrics;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Entries waiting to be written, at most.
const QUEUE: usize = 10_000;
/// Entries written per statement, at most; also what triggers an early write.
const BATCH: usize = 500;
/// How often the queue is written when it is not full.
const INTERVAL: Duration = Duration::from_secs(1);
/// How often open connections' `last_seen` is refreshed.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// One thing to write.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A row of `realtime.events`.
    Event {
        kind: String,
        user_id: Option<String>,
        channel: Option<String>,
        /// The data as JSON text: a queued `Value` would hold a whole map node per entry.
        data: String,
        at: String,
    },
    /// A connection opened: a row of `realtime.connections` and its `connect` event (one entry
    /// for both: this is the busiest kind).
    Opened {
        id: String,
        user_id: Option<String>,
        protocol: &'static str,
        remote_addr: Option<String>,
        user_agent: Option<String>,
        at: String,
    },
    /// A connection learnt who it acts for (Socket.IO CONNECT, `/ws` auth).
    Identified { id: String, user_id: String },
    /// A connection closed: its history row (`history`) and a `disconnect` event (`event`).
    Closed {
        id: String,
        user_id: Option<String>,
        at: String,
        history: bool,
        event: bool,
    },
}

/// The writer's handle.
pub struct EventLog {
    queue: Option<mpsc::Sender<Entry>>,
    types: Vec<String>,
    metrics: Arc<Metrics>,
}

impl EventLog {
    /// A log that writes nothing (`REALTIME_LOG_EVENTS=false`).
    pub fn off(metrics: Arc<Metrics>) -> EventLog {
        EventLog {
            queue: None,
            types: Vec::new(),
            metrics,
        }
    }

    /// Starts the writer for gateway `gateway_id`, logging event `types`.
    pub fn start(
        pool: Pool,
        gateway_id: String,
        types: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> EventLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(pool, gateway_id, rx, metrics.clone()));
        EventLog {
            queue: Some(tx),
            types,
            metrics,
        }
    }

    /// Whether events of `kind` are logged.
    pub fn logs(&self, kind: &str) -> bool {
        self.queue.is_some() && self.types.iter().any(|t| t == kind)
    }

    fn push(&self, entry: Entry) {
        if let Some(queue) = &self.queue {
            if queue.try_send(entry).is_err() {
                self.metrics.event_log_dropped.inc();
            }
        }
    }

    /// Logs an event of `kind` if that kind is logged.
    pub fn record(&self, kind: &str, user_id: Option<&str>, channel: Option<&str>, data: Value) {
        if self.logs(kind) {
            self.push(Entry::Event {
                kind: kind.to_string(),
                user_id: user_id.map(str::to_string),
                channel: channel.map(str::to_string),
                data: data.to_string(),
                at: crate::wire::now_rfc3339(),
            });
        }
    }

    /// A connection opened: its history row and a `connect` event.
    pub fn opened(
        &self,
        id: &str,
        protocol: &'static str,
        user_id: Option<&str>,
        remote_addr: Option<&str>,
        user_agent: Option<&str>,
    ) {
        if !self.logs("connect") {
            return;
        }
        self.push(Entry::Opened {
            id: id.to_string(),
            user_id: user_id.map(str::to_string),
            protocol,
            remote_addr: remote_addr.map(str::to_string),
            user_agent: user_agent.map(str::to_string),
            at: crate::wire::now_rfc3339(),
        });
    }

    pub fn identified(&self, id: &str, user_id: &str) {
        if self.logs("connect") {
            self.push(Entry::Identified {
                id: id.to_string(),
                user_id: user_id.to_string(),
            });
        }
    }

    pub fn closed(&self, id: &str, user_id: Option<&str>) {
        let (history, event) = (self.logs("connect"), self.logs("disconnect"));
        if history || event {
            self.push(Entry::Closed {
                id: id.to_string(),
                user_id: user_id.map(str::to_string),
                at: crate::wire::now_rfc3339(),
                history,
                event,
            });
        }
    }
}

async fn write_loop(
    pool: Pool,
    gateway_id: String,
    mut rx: mpsc::Receiver<Entry>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(entry) => {
                    batch.push(entry);
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                None => {
                    write(&pool, &gateway_id, &mut batch, &metrics).await;
                    return;
                }
            },
            _ = tick.tick() => {}
            _ = heartbeat.tick() => {
                if let Err(e) = refresh_last_seen(&pool, &gateway_id).await {
                    tracing::debug!(error = %e, "cannot refresh the connection history");
                }
                continue;
            }
        }
        write(&pool, &gateway_id, &mut batch, &metrics).await;
    }
}

async fn refresh_last_seen(pool: &Pool, gateway_id: &str) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute(
            "UPDATE realtime.connections SET last_seen = now()
             WHERE gateway_id = $1 AND disconnected_at IS NULL",
            &[&gateway_id],
        )
        .await
        .map_err(|e| nself_realtime_shared::postgres_error::describe(&e))?;
    Ok(())
}

/// Writes and empties `batch`; a failure drops it (logged and counted: the event log must not
/// hold the gateway back).
async fn write(pool: &Pool, gateway_id: &str, batch: &mut Vec<Entry>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let entries = std::mem::take(batch);
    let count = entries.len() as u64;
    match write_entries(pool, gateway_id, entries).await {
        Ok(()) => metrics.event_log_written.inc_by(count),
        Err(e) => {
            metrics.event_log_dropped.inc_by(count);
            tracing::warn!(error = %e, count, "event log entries not written");
        }
    }
}

async fn write_entries(pool: &Pool, gateway_id: &str, entries: Vec<Entry>) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let describe = |e: tokio_postgres::Error| nself_realtime_shared::postgres_error::describe(&e);
    let (mut events, mut opened, mut identified, mut closed) = (
        [(); 5].map(|_| Vec::<Option<String>>::new()),
        [(); 6].map(|_| Vec::<Option<String>>::new()),
        [(); 2].map(|_| Vec::<Option<String>>::new()),
        [(); 2].map(|_| Vec::<Option<String>>::new()),
    );
    for entry in entries {
        match entry {
            Entry::Event {
                kind,
                user_id,
                channel,
                data,
                at,
            } => {
                for (column, value) in
                    events
                        .iter_mut()
                        .zip([Some(kind), user_id, channel, Some(data), Some(at)])
                {
                    column.push(value);
                }
            }
            Entry::Opened {
                id,
                user_id,
                protocol,
                remote_addr,
                user_agent,
                at,
            } => {
                let data = serde_json::json!({
                    "connection": id, "protocol": protocol, "remoteAddr": remote_addr,
                });
                for (column, value) in events.iter_mut().zip([
                    Some("connect".to_string()),
                    user_id.clone(),
                    None,
                    Some(data.to_string()),
                    Some(at.clone()),
                ]) {
                    column.push(value);
                }
                for (column, value) in opened.iter_mut().zip([
                    Some(id),
                    user_id,
                    Some(protocol.to_string()),
                    remote_addr,
                    user_agent,
                    Some(at),
                ]) {
                    column.push(value);
                }
            }
            Entry::Identified { id, user_id } => {
                identified[0].push(Some(id));
                identified[1].push(Some(user_id));
            }
            Entry::Closed {
                id,
                user_id,
                at,
                history,
                event,
            } => {
                if event {
                    let data = serde_json::json!({ "connection": id });
                    for (column, value) in events.iter_mut().zip([
                        Some("disconnect".to_string()),
                        user_id,
                        None,
                        Some(data.to_string()),
                        Some(at.clone()),
                    ]) {
                        column.push(value);
                    }
                }
                if history {
                    closed[0].push(Some(id));
                    closed[1].push(Some(at));
                }
            }
        }
    }
    tracing::debug!(
        events = events[0].len(),
        opened = opened[0].len(),
        identified = identified[0].len(),
        closed = closed[0].len(),
        "writing the event log"
    );
    let transaction = client.transaction().await.map_err(describe)?;
    if !events[0].is_empty() {
        transaction
            .execute(
                "INSERT INTO realtime.events (type, user_id, channel, data, created_at)
                 SELECT t, u, c, d::jsonb, a::timestamptz
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS x(t, u, c, d, a)",
                &[&events[0], &events[1], &events[2], &events[3], &events[4]],
            )
            .await
            .map_err(describe)?;
    }
    if !opened[0].is_empty() {
        transaction
            .execute(
                "INSERT INTO realtime.connections
                     (id, gateway_id, user_id, protocol, remote_addr, user_agent, connected_at, last_seen)
                 SELECT i, $1, u, p, r, ua, a::timestamptz, a::timestamptz
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                      AS x(i, u, p, r, ua, a)
                 ON CONFLICT (id) DO NOTHING",
                &[&gateway_id, &opened[0], &opened[1], &opened[2], &opened[3], &opened[4], &opened[5]],
            )
            .await
            .map_err(describe)?;
    }
    if !identified[0].is_empty() {
        transaction
            .execute(
                "UPDATE realtime.connections c SET user_id = x.u
                 FROM unnest($1::text[], $2::text[]) AS x(i, u) WHERE c.id = x.i",
                &[&identified[0], &identified[1]],
            )
            .await
            .map_err(describe)?;
    }
    if !closed[0].is_empty() {
        transaction
            .execute(
                "UPDATE realtime.connections c
                 SET disconnected_at = x.a::timestamptz, last_seen = x.a::timestamptz
                 FROM unnest($1::text[], $2::text[]) AS x(i, a) WHERE c.id = x.i",
                &[&closed[0], &closed[1]],
            )
            .await
            .map_err(describe)?;
    }
    transaction.commit().await.map_err(describe)
}
