//! One client session of the endpoint: runs its commands and owns its LISTENs.
//!
//! pgwire calls [`Session::do_query`] for every simple query. SUBSCRIBE, UNSUBSCRIBE and SHOW
//! SUBSCRIPTIONS go to [`crate::subscriptions`] on a pooled Postgres connection. LISTEN subscribes
//! to the table's change subjects on the [`ChangeFeed`] (core NATS, or the in-process change log)
//! and spawns a forwarder that moves each message into the session's bounded notification queue; the connection loop (`connection.rs`) drains that
//! queue onto the socket. When the queue is full the forwarder stops and raises `overflow`, and
//! the connection loop disconnects the client with the reason: a listener that falls behind
//! costs a bounded amount of memory and never slows anyone else.
//!
//! A LISTEN that can receive nothing (no such table, or a table no publication holds) still
//! succeeds, as Postgres' LISTEN does, but is answered with a WARNING notice saying why and how
//! to publish the table: psql prints it, and `nself-realtime listen` stops with it.

use super::command::{self, Command, CommandError};
use super::pool::Pool;
use super::ChangeFeed;
use crate::subscriptions::{self, SubscriptionError, Target};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, StreamExt};
use nself_realtime_shared::bus::{ChangeLog, StartAt};
use nself_realtime_shared::subject::{self, SubjectError};
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Most channels one connection may LISTEN to at once.
pub const MAX_LISTENS_PER_CONNECTION: usize = 1_000;

/// How long one command may take (a Postgres or NATS that does not answer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a LISTEN waits for Postgres to tell whether its table is published; past it (or
/// when Postgres is down) the LISTEN answers without a warning, since it works without Postgres.
const LISTEN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One change to deliver as a NotificationResponse.
#[derive(Debug)]
pub(crate) struct Notification {
    pub channel: Arc<str>,
    pub payload: Bytes,
}

/// What every session shares.
pub(crate) struct Shared {
    pub publication: String,
    pub pool: Pool,
    pub feed: ChangeFeed,
}

/// A command that failed; the client gets it as an ErrorResponse and the session goes on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(
        "cannot connect to Postgres ({0}); check the CDC's DATABASE_URL and that Postgres is up"
    )]
    Database(String),
    #[error("{0:?} cannot be a NATS subject: {1}")]
    Subject(String, SubjectError),
    #[error("cannot subscribe to NATS for {channel}: {reason}; check the CDC's NATS_URL and that nats-server is up")]
    Nats { channel: String, reason: String },
    #[error("this connection already LISTENs to {MAX_LISTENS_PER_CONNECTION} channels: UNLISTEN some, or open another connection")]
    TooManyListens,
    #[error("{0} did not finish within {COMMAND_TIMEOUT:?}; check that Postgres and NATS are reachable from the CDC")]
    Timeout(&'static str),
}

impl WireError {
    fn sqlstate(&self) -> String {
        match self {
            WireError::Command(e) => e.sqlstate().into(),
            WireError::Subscription(e) => e.sqlstate(),
            WireError::Database(_) => "08006".into(),
            WireError::Subject(..) => "42602".into(),
            WireError::Nats { .. } => "58000".into(),
            WireError::TooManyListens => "54000".into(),
            WireError::Timeout(_) => "57014".into(),
        }
    }

    fn into_response(self) -> Response {
        Response::Error(Box::new(ErrorInfo::new(
            "ERROR".into(),
            self.sqlstate(),
            self.to_string(),
        )))
    }
}

/// A LISTEN's forwarder task, stopped when the LISTEN ends.
struct Listening(JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state of one client connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    connection_id: u64,
    queue: mpsc::Sender<Notification>,
    overflow: Arc<Notify>,
    listens: Mutex<HashMap<String, Listening>>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        connection_id: u64,
        queue: mpsc::Sender<Notification>,
        overflow: Arc<Notify>,
    ) -> Session {
        Session {
            shared,
            connection_id,
            queue,
            overflow,
            listens: Mutex::new(HashMap::new()),
        }
    }

    fn listens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listening>> {
        self.listens.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn execute(&self, command: Command) -> Result<Response, WireError> {
        match command {
            Command::Subscribe { target, operations } => {
                let mut client = self.database().await?;
                let subscription = subscriptions::subscribe(
                    &mut client,
                    &self.shared.publication,
                    &target,
                    &operations,
                )
                .await?;
                tracing::info!(table = %target, operations = ?operations, "subscribed");
                let publication =
                    crate::publications::for_operations(&self.shared.publication, &operations)
                        .map(|p| p.name)
                        .unwrap_or_default();
                Ok(rows(
                    "SUBSCRIBE",
                    &["table", "operations", "publication"],
                    vec![vec![
                        subscription.target.to_string(),
                        subscriptions::format_operations(&subscription.operations),
                        publication,
                    ]],
                ))
            }
            Command::Unsubscribe { target } => {
                let mut client = self.database().await?;
                subscriptions::unsubscribe(&mut client, &self.shared.publication, &target).await?;
                tracing::info!(table = %target, "unsubscribed");
                Ok(Response::Execution(Tag::new("UNSUBSCRIBE")))
            }
            Command::ShowSubscriptions => {
                let client = self.database().await?;
                let list = subscriptions::list(&client).await?;
                Ok(rows(
                    "SHOW",
                    &["table", "operations", "created_at"],
                    list.into_iter()
                        .map(|s| {
                            vec![
                                s.target.to_string(),
                                subscriptions::format_operations(&s.operations),
                                s.created_at,
                            ]
                        })
                        .collect(),
                ))
            }
            Command::Listen { channel, target } => {
                self.listen(channel, &target).await?;
                Ok(Response::Execution(Tag::new("LISTEN")))
            }
            Command::Unlisten { channel } => {
                self.listens().remove(&channel);
                Ok(Response::Execution(Tag::new("UNLISTEN")))
            }
            Command::UnlistenAll => {
                self.listens().clear();
                Ok(Response::Execution(Tag::new("UNLISTEN")))
            }
        }
    }

    /// Why a LISTEN on `target` would receive nothing, if it would not (module docs): the
    /// text and SQLSTATE of a WARNING notice.
    async fn listen_warning(&self, target: &Target) -> Option<(String, String)> {
        let check = async {
            let client = self.database().await?;
            subscriptions::check_published(&*client, &self.shared.publication, target)
                .await
                .map_err(WireError::from)
        };
        match tokio::time::timeout(LISTEN_CHECK_TIMEOUT, check).await {
            Ok(Ok(())) => None,
            Ok(Err(WireError::Subscription(
                e @ (SubscriptionError::SchemaNotFound(_)
                | SubscriptionError::TableNotFound(_)
                | SubscriptionError::NotATable { .. }
                | SubscriptionError::NotPublished(_)),
            ))) => Some((e.sqlstate(), format!("LISTEN {target}: {e}"))),
            Ok(Err(e)) => {
                tracing::debug!(table = %target, error = %e, "cannot tell whether a LISTEN's table is published");
                None
            }
            Err(_) => None,
        }
    }

    async fn database(&self) -> Result<super::pool::Pooled<'_>, WireError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|e| WireError::Database(crate::postgres_error::describe(&e)))
    }

    /// Starts forwarding `target`'s changes as notifications on `channel`. Returns once the
    /// subscription is in place (NATS has registered it, or the log reader holds its position),
    /// so a change published after LISTEN answered is delivered.
    async fn listen(&self, channel: String, target: &Target) -> Result<(), WireError> {
        {
            let listens = self.listens();
            if listens.contains_key(&channel) {
                return Ok(());
            }
            if listens.len() >= MAX_LISTENS_PER_CONNECTION {
                return Err(WireError::TooManyListens);
            }
        }
        let subject = match &target.table {
            Some(table) => subject::table_changes(&target.schema, table),
            None => subject::schema_changes(&target.schema),
        }
        .map_err(|e| WireError::Subject(target.to_string(), e))?;
        let nats_error = |reason: String| WireError::Nats {
            channel: channel.clone(),
            reason,
        };
        let changes: BoxStream<'static, Result<Bytes, String>> = match &self.shared.feed {
            ChangeFeed::Nats(nats) => {
                let subscriber = nats
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| nats_error(e.to_string()))?;
                sync_with_server(nats).await.map_err(nats_error)?;
                subscriber.map(|message| Ok(message.payload)).boxed()
            }
            ChangeFeed::InProcess(log) => log
                .follow(&subject, StartAt::New)
                .await
                .map_err(|e| nats_error(e.to_string()))?
                .changes
                .map(|change| change.map(|c| c.payload).map_err(|e| e.to_string()))
                .boxed(),
        };
        tracing::debug!(channel = %channel, subject = %subject, "listening");
        let task = tokio::spawn(forward(
            changes,
            Arc::from(channel.as_str()),
            self.queue.clone(),
            self.overflow.clone(),
            self.connection_id,
        ));
        self.listens().insert(channel, Listening(task));
        Ok(())
    }
}

/// Waits until the NATS server has processed everything this client sent so far (a message to
/// our own inbox comes back only after the server handled the SUB before it).
async fn sync_with_server(nats: &async_nats::Client) -> Result<(), String> {
    let inbox = nats.new_inbox();
    let mut echo = nats
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    nats.publish(inbox, Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(COMMAND_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the NATS connection closed".into()),
        Err(_) => Err(format!("NATS did not answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Moves one LISTEN's changes into the session's queue until the queue overflows, the session
/// ends or the LISTEN is dropped (which aborts this task). An error from the in-process log
/// means this listener fell so far behind that the log dropped what it had not read: that ends
/// the connection like an overflowing queue.
async fn forward(
    mut changes: BoxStream<'static, Result<Bytes, String>>,
    channel: Arc<str>,
    queue: mpsc::Sender<Notification>,
    overflow: Arc<Notify>,
    connection_id: u64,
) {
    while let Some(change) = changes.next().await {
        let payload = match change {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(connection = connection_id, channel = %channel, error = %e, "listener fell behind the change log");
                overflow.notify_one();
                return;
            }
        };
        let notification = Notification {
            channel: channel.clone(),
            payload,
        };
        match queue.try_send(notification) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(connection = connection_id, channel = %channel, "listener fell behind: notification queue full");
                overflow.notify_one();
                return;
            }
            Err(TrySendError::Closed(_)) => return,
        }
    }
    tracing::warn!(connection = connection_id, channel = %channel, "change subscription ended");
}

/// A result set of text columns.
fn rows(tag: &str, columns: &[&str], values: Vec<Vec<String>>) -> Response {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        columns
            .iter()
            .map(|name| FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text))
            .collect(),
    );
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut encoded = Vec::with_capacity(values.len());
    for row in values {
        for value in &row {
            // Encoding a String as text cannot fail.
            if let Err(e) = encoder.encode_field(value) {
                return WireError::Database(e.to_string()).into_response();
            }
        }
        encoded.push(Ok(encoder.take_row()));
    }
    let mut response = QueryResponse::new(fields, futures::stream::iter(encoded));
    response.set_command_tag(tag);
    Response::Query(response)
}

#[async_trait]
impl SimpleQueryHandler for Session {
    /// Runs each statement in order and stops at the first error, as Postgres does.
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut responses = Vec::new();
        for statement in command::split_statements(query) {
            let result = match command::parse(&statement) {
                Ok(command) => {
                    let what = command_name(&command);
                    let listened = match &command {
                        Command::Listen { target, .. } => Some(target.clone()),
                        _ => None,
                    };
                    let result =
                        match tokio::time::timeout(COMMAND_TIMEOUT, self.execute(command)).await {
                            Ok(result) => result,
                            Err(_) => Err(WireError::Timeout(what)),
                        };
                    let listening = result.is_ok().then_some(listened).flatten();
                    if let Some(target) = listening {
                        if let Some((code, message)) = self.listen_warning(&target).await {
                            let notice = ErrorInfo::new("WARNING".into(), code, message);
                            client
                                .send(PgWireBackendMessage::NoticeResponse(notice.into()))
                                .await?;
                        }
                    }
                    result
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(response) => responses.push(response),
                Err(e) => {
                    tracing::debug!(error = %e, "command refused");
                    responses.push(e.into_response());
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Subscribe { .. } => "SUBSCRIBE",
        Command::Unsubscribe { .. } => "UNSUBSCRIBE",
        Command::ShowSubscriptions => "SHOW SUBSCRIPTIONS",
        Command::Listen { .. } => "LISTEN",
        Command::Unlisten { .. } | Command::UnlistenAll => "UNLISTEN",
    }
}
