//! The replication session before streaming: connecting, simple queries, `IDENTIFY_SYSTEM` and
//! slot creation, then [`ReplicationClient::start_replication`], which turns the session into a
//! [`ReplicationStream`].
//!
//! A `replication=database` session accepts replication commands and plain SQL through the
//! simple query protocol only, so that is all this client speaks. Checks that plain SQL can do
//! (does the slot exist, its `confirmed_flush_lsn`) belong on an ordinary connection.

use super::command;
use super::connection::{Connection, Incoming, DEFAULT_MAX_MESSAGE_SIZE};
use super::error::{ReplicationError, ServerError, DUPLICATE_OBJECT, OBJECT_IN_USE};
use super::socket::{self, Socket};
use super::startup::{self, BackendKey, Startup};
use super::stream::ReplicationStream;
use fallible_iterator::FallibleIterator;
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::postgres_tls::Database;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;
use std::time::Duration;

/// Connection timeout when the config has none (`connect_timeout` in DATABASE_URL wins).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a replication connection beyond what DATABASE_URL says.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Session settings (GUCs) for the walsender, e.g. `("DateStyle", "ISO")`: they shape the
    /// text form of the values pgoutput sends. Sent as `-c name=value` in `options`.
    pub session_settings: Vec<(String, String)>,
    /// Bound on connecting plus authenticating, per host, when the config has no
    /// `connect_timeout`.
    pub connect_timeout: Duration,
    /// Largest backend message accepted; a bigger one is an error, never an allocation.
    pub max_message_size: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            session_settings: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl ConnectOptions {
    /// Adds a session setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.session_settings.push((name.into(), value.into()));
        self
    }
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's system identifier (a decimal u64, kept as text).
    pub system_id: String,
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// The session's database.
    pub dbname: Option<String>,
}

/// What `create_slot_if_missing` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCreation {
    /// The slot was created; streaming from it starts at `consistent_point`.
    Created { consistent_point: Lsn },
    /// A slot of that name already existed (SQLSTATE 42710); it was left as it is.
    AlreadyExists,
}

/// An authenticated `replication=database` session, not yet streaming.
pub struct ReplicationClient {
    conn: Connection,
    key: BackendKey,
    /// Set while a request awaits its `ReadyForQuery`; still set at the next call means the
    /// previous one was cancelled mid-exchange.
    busy: bool,
}

impl ReplicationClient {
    /// Connects to the first reachable host of `database` (TCP or Unix socket), with TLS on TCP
    /// as its `sslmode` says, starts a logical replication session and authenticates.
    pub async fn connect(
        database: &Database,
        options: &ConnectOptions,
    ) -> Result<ReplicationClient, ReplicationError> {
        let config = database.config();
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::Config("DATABASE_URL names no user".into()))?;
        let options_param =
            command::options_parameter(config.get_options(), &options.session_settings)?;
        let startup = Startup {
            user,
            password: config.get_password(),
            database: config.get_dbname().unwrap_or(user),
            application_name: config.get_application_name(),
            options: options_param.as_deref(),
        };
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(options.connect_timeout);

        let mut last_error = None;
        for target in socket::targets(config)? {
            tracing::debug!(%target, "connecting for replication");
            let attempt = async {
                let socket = Socket::connect(&target, database.tls()).await?;
                let mut conn = Connection::new(socket, options.max_message_size);
                let key = startup::start_session(&mut conn, &startup).await?;
                Ok::<_, ReplicationError>(ReplicationClient {
                    conn,
                    key,
                    busy: false,
                })
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(client)) => return Ok(client),
                // Refused, unreachable or no acceptable TLS: try the next host, as libpq does.
                Ok(Err(e @ (ReplicationError::Connect { .. } | ReplicationError::Tls { .. }))) => {
                    last_error = Some(e)
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last_error = Some(ReplicationError::ConnectTimeout {
                        target: target.to_string(),
                        timeout,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ReplicationError::Config("no host to connect to".into())))
    }

    /// The walsender's process id (for `pg_terminate_backend`, or to match
    /// `pg_replication_slots.active_pid`).
    pub fn backend_pid(&self) -> i32 {
        self.key.process_id
    }

    /// A run-time parameter the server reported (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.conn.parameters.get(name).map(String::as_str)
    }

    /// Runs one simple-protocol query (a replication command or SQL) and returns the data rows
    /// of its result as text, `None` for NULL. A server error leaves the session usable.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        if self.busy {
            return Err(ReplicationError::Desynchronized);
        }
        tracing::debug!(sql, "simple query");
        self.conn.buffer(|buf| frontend::query(sql, buf))?;
        self.busy = true;
        self.conn.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.conn.receive().await? {
                Incoming::Message(Message::DataRow(row)) => {
                    if error.is_none() {
                        rows.push(text_row(&row)?);
                    }
                }
                Incoming::Message(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse,
                ) => {}
                Incoming::Message(Message::ErrorResponse(body)) => {
                    error = Some(ServerError::from_fields(body.fields())?);
                }
                Incoming::Message(Message::ReadyForQuery(_)) => break,
                _ => {
                    // COPY or streaming started: this session cannot go back to queries.
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected COPY or replication response to simple query {sql:?}; \
                         use start_replication to stream"
                    )));
                }
            }
        }
        self.busy = false;
        match error {
            Some(e) => Err(e.into()),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster's identity and current WAL position.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let bad = |what: &str| ReplicationError::Protocol(format!("IDENTIFY_SYSTEM: {what}"));
        let row = match rows.as_slice() {
            [row] if row.len() >= 4 => row,
            _ => return Err(bad("expected one row of four columns")),
        };
        let text = |i: usize| row[i].as_deref().ok_or_else(|| bad("unexpected NULL"));
        Ok(IdentifySystem {
            system_id: text(0)?.to_string(),
            timeline: text(1)?
                .parse()
                .map_err(|_| bad("timeline is not a number"))?,
            xlogpos: text(2)?.parse().map_err(|_| bad("xlogpos is not an LSN"))?,
            dbname: row[3].clone(),
        })
    }

    /// Creates the logical slot `slot` for pgoutput unless it exists. The name must be
    /// `[a-z0-9_]{1,63}`; it is also sent quoted.
    pub async fn create_slot_if_missing(
        &mut self,
        slot: &str,
    ) -> Result<SlotCreation, ReplicationError> {
        let sql = command::create_slot(slot)?;
        match self.simple_query(&sql).await {
            Ok(rows) => {
                // slot_name, consistent_point, snapshot_name, output_plugin
                let point = rows
                    .first()
                    .and_then(|row| row.get(1).cloned().flatten())
                    .and_then(|text| text.parse::<Lsn>().ok())
                    .ok_or_else(|| {
                        ReplicationError::Protocol(
                            "CREATE_REPLICATION_SLOT returned no consistent_point".into(),
                        )
                    })?;
                tracing::debug!(slot, consistent_point = %point, "replication slot created");
                Ok(SlotCreation::Created {
                    consistent_point: point,
                })
            }
            Err(e) if e.code() == Some(DUPLICATE_OBJECT) => {
                tracing::debug!(slot, "replication slot already exists");
                Ok(SlotCreation::AlreadyExists)
            }
            Err(e) => Err(e),
        }
    }

    /// `START_REPLICATION SLOT slot LOGICAL start (proto_version '1', publication_names ...)`
    /// and, once the server answers `CopyBothResponse`, the stream of WAL data.
    ///
    /// [`ReplicationError::SlotInUse`] means another session streams the slot; the session is
    /// still consumed, so a hot standby reconnects to retry.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publications: &[&str],
    ) -> Result<ReplicationStream, ReplicationError> {
        if self.busy {
            return Err(ReplicationError::Desynchronized);
        }
        let sql = command::start_replication(slot, start, publications)?;
        tracing::debug!(%sql, "starting replication");
        self.conn.buffer(|buf| frontend::query(&sql, buf))?;
        self.conn.flush().await?;
        match self.conn.receive().await? {
            Incoming::CopyBothResponse => {
                tracing::debug!(slot, %start, "streaming (CopyBoth)");
                Ok(ReplicationStream::new(self.conn))
            }
            Incoming::Message(Message::ErrorResponse(body)) => {
                let error = ServerError::from_fields(body.fields())?;
                Err(if error.code == OBJECT_IN_USE {
                    ReplicationError::SlotInUse {
                        slot: slot.to_string(),
                        source: Box::new(error),
                    }
                } else {
                    error.into()
                })
            }
            _ => Err(ReplicationError::Protocol(
                "unexpected response to START_REPLICATION".into(),
            )),
        }
    }

    /// Ends the session politely (`Terminate`).
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        self.conn.buffer(|buf| {
            frontend::terminate(buf);
            Ok(())
        })?;
        self.conn.shutdown().await
    }
}

/// A DataRow's columns as text.
fn text_row(row: &DataRowBody) -> Result<Vec<Option<String>>, ReplicationError> {
    let buffer = row.buffer();
    let mut ranges = row.ranges();
    let mut values = Vec::new();
    while let Some(range) = ranges
        .next()
        .map_err(|e| ReplicationError::Protocol(format!("malformed DataRow: {e}")))?
    {
        values.push(match range {
            None => None,
            Some(range) => {
                let bytes = buffer.get(range).ok_or_else(|| {
                    ReplicationError::Protocol("DataRow column out of bounds".into())
                })?;
                Some(
                    std::str::from_utf8(bytes)
                        .map_err(|_| ReplicationError::Protocol("DataRow is not UTF-8".into()))?
                        .to_string(),
                )
            }
        });
    }
    Ok(values)
}
