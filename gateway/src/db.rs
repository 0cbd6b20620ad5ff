//! The gateway's Postgres connections: a bounded pool for authorization queries (channel joins,
//! token refreshes) and the batched row-visibility checks of postgres_changes.
//!
//! A query takes a connection for itself (its transaction carries one user's claims, which must
//! never leak into another query), so the pool hands out exclusive connections. It opens them
//! lazily up to `size`, waits when all are busy, drops a connection that broke instead of
//! handing it out again, and reconnects on the next checkout: a Postgres restart costs the
//! queries in flight, not the gateway.

use nself_realtime_shared::postgres_error::describe;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls};

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
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub struct Pooled {
    inner: Arc<Inner>,
    client: Option<Client>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A pool of at most `size` connections to `config`.
    pub fn new(config: Config, size: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1))),
            }),
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
                    Some(client) if client.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let client = match idle {
            Some(client) => client,
            None => {
                let (client, connection) = self
                    .inner
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(|e| ConnectError(describe(&e)))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "gateway Postgres connection closed");
                    }
                });
                client
            }
        };
        Ok(Pooled {
            inner: self.inner.clone(),
            client: Some(client),
            _permit: permit,
        })
    }
}

impl Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.inner.idle.lock().expect("pool lock").push(client);
            }
        }
    }
}
