//! The per-connection loop: pgwire's protocol handling plus asynchronous notifications.
//!
//! pgwire's own `process_socket` only ever waits for the next client message, so it cannot
//! push a NotificationResponse to a client that sits idle after `LISTEN` (which is exactly what
//! a listener does). This loop is built from pgwire's public pieces instead — `negotiate_tls`
//! (here only to refuse SSL politely), its `Framed` codec, `process_message` and `process_error`
//! — and `select!`s between the next client message and the session's notification queue.
//! Notifications are written only between two client messages, never inside a response, and in
//! batches (one flush for everything already queued).
//!
//! A client that does not keep up fills its bounded queue; the session then raises `overflow`
//! and this loop ends the connection with a FATAL error saying why. Shutdown of the endpoint ends
//! each connection the same way (SQLSTATE 57P01, as a Postgres shutdown does).

use super::auth::Startup;
use super::session::{Notification, Session, Shared};
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::NotificationResponse;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{
    negotiate_tls, process_error, process_message, MaybeTls, PgWireMessageServerCodec,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::codec::Framed;

/// Notifications queued per connection before the listener counts as fallen behind.
pub const NOTIFICATION_QUEUE: usize = 10_000;

/// Most notifications written per flush.
const WRITE_BATCH: usize = 256;

/// Time a client has from connecting to being authenticated.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for a goodbye (FATAL) message to a client that may not be reading.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// The statement type of pgwire's extended-query store; we keep none.
type Socket = Framed<MaybeTls, PgWireMessageServerCodec<String>>;

/// Serves one client until it leaves, breaks the protocol, falls behind or the endpoint stops.
pub(crate) async fn run(
    tcp: TcpStream,
    shared: Arc<Shared>,
    startup: Arc<Startup>,
    connection_id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let negotiated =
        tokio::time::timeout(STARTUP_TIMEOUT, negotiate_tls::<String>(tcp, None)).await;
    let mut socket = match negotiated {
        Ok(Ok(Some(socket))) => socket,
        Ok(Ok(None)) => {
            tracing::debug!("client asked for direct TLS, which this endpoint does not offer");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection failed before startup");
            return;
        }
        Err(_) => {
            tracing::debug!("client sent no startup message in time");
            return;
        }
    };
    let (queue, mut notifications) = mpsc::channel(NOTIFICATION_QUEUE);
    let overflow = Arc::new(Notify::new());
    let session = Arc::new(Session::new(shared, connection_id, queue, overflow.clone()));
    let noop = Arc::new(NoopHandler);
    let startup_deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;

    loop {
        let authenticating = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                goodbye(&mut socket, "57P01", "terminating connection: the CDC is shutting down; reconnect when it is back").await;
                break;
            }
            _ = overflow.notified() => {
                let reason = format!(
                    "terminating connection: this listener fell behind ({NOTIFICATION_QUEUE} notifications unread); read notifications faster or LISTEN to fewer tables, then reconnect"
                );
                tracing::warn!("{reason}");
                goodbye(&mut socket, "53400", &reason).await;
                break;
            }
            _ = tokio::time::sleep_until(startup_deadline), if authenticating => {
                goodbye(&mut socket, "08P01", "terminating connection: authentication took too long").await;
                break;
            }
            message = socket.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "unreadable client message");
                        let _ = process_error(&mut socket, e, false).await;
                        break;
                    }
                    None => break,
                };
                if !handle_message(&mut socket, message, &startup, &session, &noop).await {
                    break;
                }
            }
            Some(first) = notifications.recv() => {
                let pid = socket.pid_and_secret_key().0;
                tokio::select! {
                    written = write_notifications(&mut socket, pid, first, &mut notifications) => {
                        if let Err(e) = written {
                            tracing::debug!(error = %e, "cannot write notifications");
                            break;
                        }
                    }
                    // A client that stopped reading blocks the write; the queue fills meanwhile.
                    _ = overflow.notified() => {
                        tracing::warn!("listener stopped reading; disconnecting it");
                        break;
                    }
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    tracing::debug!("connection closed");
}

/// Handles one client message; `false` when the connection must end.
async fn handle_message(
    socket: &mut Socket,
    message: PgWireFrontendMessage,
    startup: &Arc<Startup>,
    session: &Arc<Session>,
    noop: &Arc<NoopHandler>,
) -> bool {
    match message {
        PgWireFrontendMessage::Terminate(_) => return false,
        PgWireFrontendMessage::Parse(_)
        | PgWireFrontendMessage::Bind(_)
        | PgWireFrontendMessage::Describe(_)
        | PgWireFrontendMessage::Execute(_)
        | PgWireFrontendMessage::Close(_)
            if matches!(socket.state(), PgWireConnectionState::ReadyForQuery) =>
        {
            // Refuse, then skip the rest of the batch until Sync (pgwire's AwaitingSync state).
            let error = PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "0A000".into(),
                format!(
                    "the extended query protocol is not supported: send commands as simple queries (psql does; in tokio-postgres use simple_query or batch_execute). Commands: {}",
                    super::command::SUPPORTED
                ),
            )));
            return process_error(socket, error, true).await.is_ok();
        }
        _ => {}
    }
    let wait_for_sync = message.is_extended_query();
    let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
    let result = process_message(
        message,
        socket,
        startup.clone(),
        session.clone(),
        noop.clone(),
        noop.clone(),
        noop.clone(),
    )
    .await;
    if let Err(error) = result {
        let fatal = error.is_fatal();
        if fatal {
            tracing::info!(error = %error, "client refused");
        }
        if process_error(socket, error, wait_for_sync).await.is_err() || fatal {
            return false;
        }
    }
    !is_cancel
}

/// Writes `first` and whatever else is already queued (up to a batch), then flushes once.
async fn write_notifications(
    socket: &mut Socket,
    pid: i32,
    first: Notification,
    queue: &mut mpsc::Receiver<Notification>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(notification) = next.take() {
        if let Some(message) = notification_message(pid, notification) {
            socket.feed(message).await?;
        }
        written += 1;
        if written < WRITE_BATCH {
            next = queue.try_recv().ok();
        }
    }
    socket.flush().await
}

/// The NotificationResponse for one change event. The payload is the event JSON exactly as
/// published; one that is not UTF-8 or holds a NUL cannot be a protocol string and is skipped.
fn notification_message(pid: i32, notification: Notification) -> Option<PgWireBackendMessage> {
    let payload = match String::from_utf8(notification.payload.to_vec()) {
        Ok(text) if !text.contains('\0') => text,
        _ => {
            tracing::warn!(channel = %notification.channel, "skipping a change event that is not NUL-free UTF-8");
            return None;
        }
    };
    Some(PgWireBackendMessage::NotificationResponse(
        NotificationResponse::new(pid, notification.channel.to_string(), payload),
    ))
}

/// Sends a FATAL error before closing, without waiting long for a client that does not read.
async fn goodbye(socket: &mut Socket, code: &str, message: &str) {
    let error = ErrorInfo::new("FATAL".into(), code.into(), message.into());
    let send = socket.send(PgWireBackendMessage::ErrorResponse(error.into()));
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, send).await;
}
