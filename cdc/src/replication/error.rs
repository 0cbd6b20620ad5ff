//! The errors of the replication connection, typed so that callers can act on them.
//!
//! The CDC's supervisor decides between "retry later", "wait as hot standby" and "give up with a
//! configuration error" from these variants: a server error keeps its SQLSTATE, message, detail
//! and hint ([`ServerError`]); a slot streamed by another process is [`ReplicationError::SlotInUse`];
//! I/O trouble and a closed connection are distinct from protocol violations and oversized frames.

use fallible_iterator::FallibleIterator;
use nself_realtime_shared::postgres_tls::TlsError;
use postgres_protocol::message::backend::ErrorFields;
use std::fmt;
use std::time::Duration;

/// SQLSTATE `42710` duplicate_object: `CREATE_REPLICATION_SLOT` of a slot that exists.
pub const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE `55006` object_in_use: the slot is active for another walsender.
pub const OBJECT_IN_USE: &str = "55006";
/// SQLSTATE `28P01` invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `28000` invalid_authorization_specification (also: no pg_hba.conf entry).
pub const INVALID_AUTHORIZATION: &str = "28000";

/// An `ErrorResponse` (or `NoticeResponse`) from the server, with the fields callers act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (or `WARNING`, `NOTICE`, ... for notices); not localized.
    pub severity: String,
    /// The SQLSTATE code, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    /// Reads the fields of an `ErrorResponse` or `NoticeResponse` body. Non-UTF-8 text is
    /// replaced rather than trusted; a malformed body is a protocol error.
    pub(crate) fn from_fields(
        mut fields: ErrorFields<'_>,
    ) -> Result<ServerError, ReplicationError> {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut localized_severity = None;
        while let Some(field) = fields
            .next()
            .map_err(|e| ReplicationError::Protocol(format!("malformed error fields: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' => localized_severity = Some(value),
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        if error.severity.is_empty() {
            // Servers before 9.6 send only the localized severity.
            error.severity = localized_severity.unwrap_or_default();
        }
        Ok(error)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection settings cannot be used (no user, no host, unsupported option).
    #[error("replication connection settings: {0}")]
    Config(String),
    /// An argument (slot or publication name, session setting, query text) was refused before
    /// anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No connection could be opened to any of the configured hosts.
    #[error("cannot connect to Postgres at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// Connecting and authenticating took longer than the connection timeout.
    #[error("connecting to Postgres at {target} timed out after {timeout:?}")]
    ConnectTimeout { target: String, timeout: Duration },
    /// The server accepts only TLS connections (a `hostssl` rule) and DATABASE_URL has
    /// `sslmode=disable`.
    #[error("the server accepts only TLS connections: add sslmode=require (or verify-full with sslrootcert) to DATABASE_URL{}", .server.as_ref().map(|e| format!(" (server said: {e})")).unwrap_or_default())]
    TlsRequired { server: Option<Box<ServerError>> },
    /// TLS could not be set up with `target`: the server offers none though `sslmode` requires
    /// it, or its certificate failed the check `sslmode` asks for.
    #[error("TLS to Postgres at {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: TlsError,
    },
    /// The server asked for an authentication method this client does not implement.
    #[error("the server asks for {0} authentication; supported are trust, password, md5 and scram-sha-256")]
    UnsupportedAuthentication(String),
    /// The server asked for a password and the connection settings have none.
    #[error("the server asks for a password but DATABASE_URL has none")]
    PasswordRequired,
    /// `START_REPLICATION` refused because another process streams the slot (SQLSTATE 55006).
    /// A hot-standby CDC waits and retries on this error.
    #[error("replication slot {slot:?} is in use by another process: {source}")]
    SlotInUse {
        slot: String,
        #[source]
        source: Box<ServerError>,
    },
    /// Any other `ErrorResponse` from the server.
    #[error("Postgres error: {0}")]
    Server(Box<ServerError>),
    /// The server sent something this client cannot make sense of.
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// The server announced a message larger than the configured limit; refused before
    /// buffering it.
    #[error("the server sent a {len} byte message, over the {limit} byte limit")]
    MessageTooLarge { len: usize, limit: usize },
    /// The server closed the connection (or a previous error ended it).
    #[error("the replication connection was closed")]
    ConnectionClosed,
    /// An earlier call was cancelled in the middle of a request/response exchange, so the
    /// connection's position in the protocol is unknown; reconnect.
    #[error("the replication connection is unusable: an earlier call was cancelled mid-exchange")]
    Desynchronized,
    /// Reading from or writing to the socket failed.
    #[error("I/O error on the replication connection: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ServerError> for ReplicationError {
    fn from(error: ServerError) -> Self {
        ReplicationError::Server(Box::new(error))
    }
}

impl ReplicationError {
    /// The SQLSTATE code when the error came from the server.
    pub fn code(&self) -> Option<&str> {
        self.server_error().map(|e| e.code.as_str())
    }

    /// The server's error when there is one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ReplicationError::Server(e) | ReplicationError::SlotInUse { source: e, .. } => Some(e),
            ReplicationError::TlsRequired { server } => server.as_deref(),
            _ => None,
        }
    }
}
