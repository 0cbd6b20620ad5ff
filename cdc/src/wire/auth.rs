//! Authentication of the Postgres-wire endpoint: MD5 password when `REALTIME_CDC_PASSWORD` is
//! set, trust otherwise (the CLI refuses a non-loopback listen address without a password).
//!
//! Why MD5 rather than cleartext: the endpoint speaks no TLS (the workspace keeps pgwire's TLS
//! backends off), and MD5 with a fresh random salt per connection keeps the password itself off
//! the wire and makes a captured response useless for another connection. psql, libpq,
//! tokio-postgres and node `pg` all answer it. SCRAM would be better still, but pgwire only offers
//! it together with a TLS backend. Any user name is accepted; only the password matters.

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::md5pass::{hash_md5_password, Md5PasswordAuthStartupHandler};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, NoopHandler};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::sync::Arc;

/// The startup handler of every connection: trust or MD5 password.
pub(crate) enum Startup {
    Trust(NoopHandler),
    Password(Md5PasswordAuthStartupHandler<SharedPassword, DefaultServerParameterProvider>),
}

impl Startup {
    pub(crate) fn new(password: Option<String>) -> Startup {
        match password {
            None => Startup::Trust(NoopHandler),
            Some(password) => Startup::Password(Md5PasswordAuthStartupHandler::new(
                Arc::new(SharedPassword { password }),
                Arc::new(DefaultServerParameterProvider::default()),
            )),
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Trust(handler) => handler.on_startup(client, message).await,
            Startup::Password(handler) => handler.on_startup(client, message).await,
        }
    }
}

/// The endpoint's one password. `Debug` never shows it.
pub(crate) struct SharedPassword {
    password: String,
}

impl Debug for SharedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedPassword(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for SharedPassword {
    /// The expected MD5 response for this connection: a fresh random salt and
    /// `md5(md5(password + user) + salt)`, which pgwire compares with the client's answer.
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salt: [u8; 4] = rand::random();
        let user = login.user().unwrap_or_default();
        let expected = hash_md5_password(user, &self.password, &salt);
        Ok(Password::new(Some(salt.to_vec()), expected.into_bytes()))
    }
}
