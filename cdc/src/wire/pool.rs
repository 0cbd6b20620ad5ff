//! A small pool of ordinary Postgres connections for the endpoint's `SUBSCRIBE`, `UNSUBSCRIBE` and
//! `SHOW SUBSCRIPTIONS`.
//!
//! These commands are rare (an operator or a deploy script), so the pool only keeps a few idle
//! connections for reuse and opens more on demand; a connection that broke is dropped instead of
//! being handed out again. Each command takes a connection for itself, so a transaction never
//! shares its session with another command.

use nself_realtime_shared::postgres_tls::Database;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use tokio_postgres::Client;

/// Idle connections kept for reuse; more may be open while commands run.
const MAX_IDLE: usize = 4;

pub(crate) struct Pool {
    database: Database,
    idle: Mutex<Vec<Client>>,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Pool {
    pub(crate) fn new(database: Database) -> Pool {
        Pool {
            database,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>, tokio_postgres::Error> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(client) if !client.is_closed() => {
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    })
                }
                Some(_) => continue,
                None => break,
            }
        }
        let (client, connection) = self.database.connect().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Postgres connection of the wire endpoint closed");
            }
        });
        Ok(Pooled {
            pool: self,
            client: Some(client),
        })
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if client.is_closed() {
                return;
            }
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
    }
}
