//! Connecting to NATS from a `NATS_URL`.
//!
//! `NATS_URL` is one server URL or a comma list of them (a cluster), optionally with credentials
//! in the URL as NATS tools accept them: `nats://user:password@host:4222` or
//! `nats://token@host:4222`. async-nats takes credentials only through its options, so they are
//! lifted out of the URL here.

use async_nats::{Client, ConnectOptions};
use std::time::Duration;

/// `NATS_URL` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("NATS_URL {0:?} is not a list of nats:// URLs")]
    BadUrl(String),
    #[error("cannot connect to NATS at {servers}: {source}; check NATS_URL and that nats-server is running with -js")]
    Connect {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

impl NatsConnectError {
    /// Whether the settings are wrong (a bad URL, credentials or TLS setup the server refuses),
    /// as against NATS not being reachable now, which is worth waiting for.
    pub fn is_configuration(&self) -> bool {
        use async_nats::ConnectErrorKind as K;
        match self {
            NatsConnectError::BadUrl(_) => true,
            NatsConnectError::Connect { source, .. } => matches!(
                source.kind(),
                K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls
            ),
        }
    }
}

/// Credentials found in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
}

/// Splits `NATS_URL` into credential-free server URLs and the credentials they carried.
fn split_credentials(url: &str) -> Result<(Vec<String>, Credentials), NatsConnectError> {
    let mut servers = Vec::new();
    let mut credentials = Credentials::None;
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, rest) = match part.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("nats", part),
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (userinfo, host) = match rest[..authority_end].rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, &rest[..authority_end]),
        };
        if host.is_empty() {
            return Err(NatsConnectError::BadUrl(url.to_string()));
        }
        if let Some(userinfo) = userinfo {
            credentials = match userinfo.split_once(':') {
                Some((user, password)) => {
                    Credentials::UserPassword(user.to_string(), password.to_string())
                }
                None => Credentials::Token(userinfo.to_string()),
            };
        }
        servers.push(format!("{scheme}://{host}{}", &rest[authority_end..]));
    }
    if servers.is_empty() {
        return Err(NatsConnectError::BadUrl(url.to_string()));
    }
    Ok((servers, credentials))
}

/// Connects to `NATS_URL` under the connection name `name` (shown by `nats-server` monitoring).
/// The client reconnects forever with capped backoff after the first connection succeeded.
pub async fn connect(url: &str, name: &str) -> Result<Client, NatsConnectError> {
    let (servers, credentials) = split_credentials(url)?;
    let mut options = match credentials {
        Credentials::None => ConnectOptions::new(),
        Credentials::UserPassword(user, password) => {
            ConnectOptions::with_user_and_password(user, password)
        }
        Credentials::Token(token) => ConnectOptions::with_token(token),
    };
    options = options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
        });
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| NatsConnectError::BadUrl(url.to_string()))?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|source| NatsConnectError::Connect {
            servers: servers.join(","),
            source,
        })?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_lifted_out_of_urls() {
        let (servers, creds) = split_credentials("nats://u:p@127.0.0.1:4222").unwrap();
        assert_eq!(servers, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(creds, Credentials::UserPassword("u".into(), "p".into()));

        let (servers, creds) = split_credentials("nats://s3cret@a:1, nats://b:2").unwrap();
        assert_eq!(servers, vec!["nats://a:1", "nats://b:2"]);
        assert_eq!(creds, Credentials::Token("s3cret".into()));

        let (servers, creds) = split_credentials("localhost:4222").unwrap();
        assert_eq!(servers, vec!["nats://localhost:4222"]);
        assert_eq!(creds, Credentials::None);
    }

    #[test]
    fn empty_urls_are_errors() {
        for bad in ["", " , ", "nats://", "nats://user@"] {
            assert!(split_credentials(bad).is_err(), "{bad:?}");
        }
    }
}
