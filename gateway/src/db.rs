//! The gateway's Postgres connections: a bounded pool for authorization queries (channel joins,
//! token refreshes) and the batched row-visibility checks of postgres_changes.
//!
//! A query takes a connection for itself (its transaction carries one user's claims, which must
//! never leak into another query), so the pool hands out exclusive connections. It opens them
//! lazily up to `size`, waits when all are busy, drops a connection that broke instead of
//! handing it out again, and reconnects on the next checkout: a Postgres restart costs the
//! queries in flight, not the gateway.
//!
//! Each connection keeps the statements it has prepared ([`Pooled::prepared`]): the same few
//! queries run for every join and every batch, and preparing them each time would cost a round
//! trip per query.

use nself_realtime_shared::postgres_error::describe;
use nself_realtime_shared::postgres_tls::Database;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Statement};

/// Most statements one connection keeps prepared (visibility queries are one per table).
const MAX_STATEMENTS: usize = 256;

/// A connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Inside a transaction acting as some user's claims: such a connection must not be handed
    /// out again (a query cancelled half way would leave it so), so it is closed instead.
    in_user_session: bool,
}

/// Postgres could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Postgres: {0}")]
pub struct ConnectError(pub String);

/// A bounded pool of exclusive connections. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    database: Database,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
}

/// The pool's occupancy, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections taken by a query (or being opened for one).
    pub in_use: usize,
    /// Open connections waiting for a query. The pool opens connections lazily, so a pool
    /// that was never busy has few idle ones: its headroom is `max - in_use`.
    pub idle: usize,
    /// `REALTIME_DB_POOL_SIZE`.
    pub max: usize,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub struct Pooled {
    inner: Arc<Inner>,
    connection: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A pool of at most `size` connections to `database` (with the TLS its `sslmode` says).
    pub fn new(database: Database, size: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                database,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1))),
                size: size.max(1),
            }),
        }
    }

    /// How many connections are in use and idle, of how many at most.
    pub fn stats(&self) -> PoolStats {
        let idle = self.inner.idle.lock().expect("pool lock");
        let idle = idle.iter().filter(|c| !c.client.is_closed()).count();
        PoolStats {
            in_use: self.inner.size - self.inner.permits.available_permits(),
            idle,
            max: self.inner.size,
        }
    }

    /// Takes a connection, opening one if none is idle; waits while `size` are in use.
    pub async fn get(&self) -> Result<Pooled, ConnectError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.inner.idle.lock().expect("pool lock");
            loop {
                match idle.pop() {
                    Some(connection) if connection.client.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let connection = match idle {
            Some(connection) => connection,
            None => {
                let (client, connection) = self
                    .inner
                    .database
                    .connect()
                    .await
                    .map_err(|e| ConnectError(describe(&e)))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "gateway Postgres connection closed");
                    }
                });
                Connection {
                    client,
                    statements: HashMap::new(),
                    in_user_session: false,
                }
            }
        };
        Ok(Pooled {
            inner: self.inner.clone(),
            connection: Some(connection),
            _permit: permit,
        })
    }
}

impl Pooled {
    fn connection(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }

    /// `sql` prepared on this connection, once.
    pub async fn prepared(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.connection().statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.connection().client.prepare(sql).await?;
        let statements = &mut self.connection().statements;
        if statements.len() >= MAX_STATEMENTS {
            statements.clear();
        }
        statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Pooled {
    /// Marks the connection as acting as a user (true) until that session has ended (false).
    pub fn set_in_user_session(&mut self, in_session: bool) {
        self.connection().in_user_session = in_session;
    }
}

impl Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self
            .connection
            .as_ref()
            .expect("present until dropped")
            .client
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.connection().client
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            if !connection.client.is_closed() && !connection.in_user_session {
                self.inner.idle.lock().expect("pool lock").push(connection);
            }
        }
    }
}
