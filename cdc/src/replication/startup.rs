//! Opening a session: the StartupMessage of a logical replication connection and the
//! authentication exchange (trust, cleartext password, md5, SCRAM-SHA-256), up to the first
//! `ReadyForQuery`.
//!
//! postgres-protocol supplies the message encoders, the md5 hash and the SCRAM state machine;
//! this module only sequences them. SCRAM runs without channel binding, over TLS too (the
//! client says it does not support it, and the server then accepts plain `SCRAM-SHA-256`): the
//! server's certificate, checked as `sslmode` says, is what authenticates the server.

use super::connection::{Connection, Incoming};
use super::error::{ReplicationError, ServerError, INVALID_AUTHORIZATION};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

/// What the session starts with.
pub(crate) struct Startup<'a> {
    pub user: &'a str,
    pub password: Option<&'a [u8]>,
    pub database: &'a str,
    pub application_name: Option<&'a str>,
    /// The `options` startup parameter (session settings as `-c name=value`).
    pub options: Option<&'a str>,
}

/// What the server told us about the session (`BackendKeyData`). The cancel key is not kept:
/// replication commands are not cancelled, the session is closed instead.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BackendKey {
    pub process_id: i32,
}

/// Sends the StartupMessage, authenticates and waits for `ReadyForQuery`.
pub(crate) async fn start_session(
    conn: &mut Connection,
    startup: &Startup<'_>,
) -> Result<BackendKey, ReplicationError> {
    let mut params: Vec<(&str, &str)> = vec![
        ("user", startup.user),
        ("database", startup.database),
        ("replication", "database"),
        // pgoutput sends values in the client encoding; the decoder expects UTF-8.
        ("client_encoding", "UTF8"),
    ];
    if let Some(name) = startup.application_name {
        params.push(("application_name", name));
    }
    if let Some(options) = startup.options {
        params.push(("options", options));
    }
    conn.buffer(|buf| frontend::startup_message(params.iter().copied(), buf))?;
    conn.flush().await?;
    tracing::debug!(
        user = startup.user,
        database = startup.database,
        "startup message sent"
    );

    authenticate(conn, startup).await?;
    tracing::debug!("authenticated");

    let mut key = BackendKey::default();
    loop {
        match conn.receive().await? {
            Incoming::Message(Message::BackendKeyData(body)) => {
                key = BackendKey {
                    process_id: body.process_id(),
                };
            }
            Incoming::Message(Message::ReadyForQuery(_)) => {
                tracing::debug!(backend_pid = key.process_id, "session ready");
                return Ok(key);
            }
            Incoming::Message(Message::ErrorResponse(body)) => {
                return Err(ServerError::from_fields(body.fields())?.into())
            }
            _ => return Err(unexpected("session start")),
        }
    }
}

async fn authenticate(
    conn: &mut Connection,
    startup: &Startup<'_>,
) -> Result<(), ReplicationError> {
    match receive_auth(conn).await? {
        Message::AuthenticationOk => {
            tracing::debug!("authentication: trust");
            Ok(())
        }
        Message::AuthenticationCleartextPassword => {
            tracing::debug!("authentication: cleartext password");
            let password = startup.password.ok_or(ReplicationError::PasswordRequired)?;
            conn.buffer(|buf| frontend::password_message(password, buf))?;
            conn.flush().await?;
            expect_auth_ok(conn).await
        }
        Message::AuthenticationMd5Password(body) => {
            tracing::debug!("authentication: md5");
            let password = startup.password.ok_or(ReplicationError::PasswordRequired)?;
            let hash = md5_hash(startup.user.as_bytes(), password, body.salt());
            conn.buffer(|buf| frontend::password_message(hash.as_bytes(), buf))?;
            conn.flush().await?;
            expect_auth_ok(conn).await
        }
        Message::AuthenticationSasl(body) => {
            let mut offered = Vec::new();
            let mut mechanisms = body.mechanisms();
            while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechanisms)
                .map_err(|e| ReplicationError::Protocol(format!("SASL mechanisms: {e}")))?
            {
                offered.push(m.to_string());
            }
            if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                return Err(ReplicationError::UnsupportedAuthentication(format!(
                    "SASL ({})",
                    offered.join(", ")
                )));
            }
            tracing::debug!("authentication: SCRAM-SHA-256");
            let password = startup.password.ok_or(ReplicationError::PasswordRequired)?;
            scram(conn, password).await?;
            expect_auth_ok(conn).await
        }
        Message::AuthenticationKerberosV5 => Err(unsupported("Kerberos V5")),
        Message::AuthenticationScmCredential => Err(unsupported("SCM credential")),
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
            Err(unsupported("GSSAPI"))
        }
        Message::AuthenticationSspi => Err(unsupported("SSPI")),
        _ => Err(unexpected("authentication")),
    }
}

/// The SCRAM-SHA-256 exchange, up to and including the check of the server's signature.
async fn scram(conn: &mut Connection, password: &[u8]) -> Result<(), ReplicationError> {
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    conn.buffer(|buf| frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), buf))?;
    conn.flush().await?;

    let Message::AuthenticationSaslContinue(body) = receive_auth(conn).await? else {
        return Err(unexpected("SCRAM (expected AuthenticationSASLContinue)"));
    };
    scram
        .update(body.data())
        .map_err(|e| ReplicationError::Protocol(format!("SCRAM server-first message: {e}")))?;
    conn.buffer(|buf| frontend::sasl_response(scram.message(), buf))?;
    conn.flush().await?;

    let Message::AuthenticationSaslFinal(body) = receive_auth(conn).await? else {
        return Err(unexpected("SCRAM (expected AuthenticationSASLFinal)"));
    };
    scram
        .finish(body.data())
        .map_err(|e| ReplicationError::Protocol(format!("SCRAM server signature rejected: {e}")))
}

async fn expect_auth_ok(conn: &mut Connection) -> Result<(), ReplicationError> {
    match receive_auth(conn).await? {
        Message::AuthenticationOk => Ok(()),
        _ => Err(unexpected("authentication (expected AuthenticationOk)")),
    }
}

/// The next authentication message; an `ErrorResponse` becomes the error it describes.
async fn receive_auth(conn: &mut Connection) -> Result<Message, ReplicationError> {
    match conn.receive().await? {
        Incoming::Message(Message::ErrorResponse(body)) => {
            let error = ServerError::from_fields(body.fields())?;
            // `no pg_hba.conf entry for host ..., no encryption`: only hostssl rules match.
            if error.code == INVALID_AUTHORIZATION && error.message.contains("no encryption") {
                return Err(ReplicationError::TlsRequired {
                    server: Some(Box::new(error)),
                });
            }
            Err(error.into())
        }
        Incoming::Message(message) => Ok(message),
        _ => Err(unexpected("authentication")),
    }
}

fn unsupported(method: &str) -> ReplicationError {
    ReplicationError::UnsupportedAuthentication(method.to_string())
}

fn unexpected(during: &str) -> ReplicationError {
    ReplicationError::Protocol(format!("unexpected message during {during}"))
}
