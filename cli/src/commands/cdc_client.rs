//! Talking to a running CDC over its Postgres-wire endpoint: the connection step shared by
//! `subscribe`, `unsubscribe`, `subscriptions` and `listen`, and how its failures become exit
//! codes.
//!
//! These commands are thin clients of the endpoint (`nself_realtime_cdc::wire`) rather than of
//! the database, so they work wherever the CDC is reachable and need no database credentials.
//! Unreachable endpoint, wrong password and refused commands (bad table, missing replica
//! identity) are usage or configuration errors (exit 2) with a one-line fix; anything else is a
//! runtime failure (exit 1).

use crate::exit::CliError;
use anyhow::anyhow;
use futures::StreamExt;
use nself_realtime_shared::config;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the CDC endpoint is.
#[derive(clap::Args, Debug)]
pub struct Endpoint {
    /// Host of the CDC's Postgres-wire endpoint.
    #[arg(long, env = "REALTIME_CDC_HOST", default_value = "127.0.0.1")]
    cdc_host: String,
    /// Port of the CDC's Postgres-wire endpoint.
    #[arg(long, env = "REALTIME_CDC_PORT", default_value_t = config::DEFAULT_CDC_PORT)]
    cdc_port: u16,
    /// Password of the endpoint (the CDC's REALTIME_CDC_PASSWORD).
    #[arg(long, env = "REALTIME_CDC_PASSWORD", hide_env_values = true)]
    cdc_password: Option<String>,
}

/// A connection to the endpoint: the client, and what its connection task reports
/// (notifications and notices, then at most one error when the connection ends abnormally).
pub struct Session {
    pub client: Client,
    pub events: mpsc::UnboundedReceiver<Result<Incoming, String>>,
}

/// What the endpoint sends besides answers. A notice of a command arrives before its answer.
#[derive(Debug)]
pub enum Incoming {
    /// A change of a LISTENed table.
    Notification(Notification),
    /// A notice: its severity (`WARNING`, `NOTICE`, ...) and text.
    Notice { severity: String, message: String },
}

impl Endpoint {
    fn address(&self) -> String {
        format!("{}:{}", self.cdc_host, self.cdc_port)
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CliError {
        CliError::usage(anyhow!(
            "cannot reach the CDC endpoint at {} ({reason}): is `nself-realtime cdc` running? check REALTIME_CDC_HOST/REALTIME_CDC_PORT",
            self.address()
        ))
    }

    /// Connects and authenticates.
    pub async fn connect(&self) -> Result<Session, CliError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.cdc_host)
            .port(self.cdc_port)
            .user("nself-realtime")
            .dbname("realtime")
            .application_name("nself-realtime")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &self.cdc_password {
            config.password(password);
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?;
        let (client, mut connection) = connected.map_err(|e| {
            if let Some(db) = e.as_db_error() {
                if db.code().code() == "28P01" {
                    return CliError::usage(anyhow!(
                        "the CDC endpoint at {} refused the password: set REALTIME_CDC_PASSWORD to the CDC's password",
                        self.address()
                    ));
                }
                return CliError::usage(anyhow!(
                    "the CDC endpoint at {} refused the connection: {}",
                    self.address(),
                    db.message()
                ));
            }
            let reason = nself_realtime_cdc::postgres_error::describe(&e);
            if reason.contains("password missing") {
                return CliError::usage(anyhow!(
                    "the CDC endpoint at {} requires a password: set REALTIME_CDC_PASSWORD",
                    self.address()
                ));
            }
            self.unreachable(reason)
        })?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Ok(Incoming::Notification(n))).is_err() {
                            return;
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        let notice = Incoming::Notice {
                            severity: notice.severity().to_string(),
                            message: notice.message().to_string(),
                        };
                        if tx.send(Ok(notice)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let reason = match e.as_db_error() {
                            Some(db) => db.message().to_string(),
                            None => nself_realtime_cdc::postgres_error::describe(&e),
                        };
                        let _ = tx.send(Err(reason));
                        return;
                    }
                }
            }
        });
        Ok(Session { client, events })
    }
}

impl Session {
    /// Runs one endpoint command and returns its rows as text columns.
    pub async fn run(&self, command: &str) -> Result<Vec<Vec<String>>, CliError> {
        let messages = self.client.simple_query(command).await.map_err(refused)?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// A command the endpoint refused. Refusals about the request itself (bad name, missing table,
/// no replica identity, unsupported) are usage errors; the rest are runtime failures.
fn refused(error: tokio_postgres::Error) -> CliError {
    match error.as_db_error() {
        Some(db) => {
            let message = anyhow!("{}", db.message());
            let class = &db.code().code()[..2];
            if matches!(class, "42" | "22" | "3F" | "55" | "0A") {
                CliError::usage(message)
            } else {
                CliError::runtime(message)
            }
        }
        None => CliError::runtime(anyhow!(
            "lost the CDC endpoint: {}",
            nself_realtime_cdc::postgres_error::describe(&error)
        )),
    }
}
