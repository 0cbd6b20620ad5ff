//! How a service starts when its dependencies may not be there yet.
//!
//! A CDC or gateway started before Postgres or NATS is up (a machine booting, a compose stack, a
//! dependency mid-restart) must not exit: an unreachable dependency at start is an outage like
//! any later one. Only a configuration error, which a person must fix, ends the process (exit
//! code 2, one line naming the fix). So every startup step returns a [`StartError`] saying
//! which it is, and [`until_available`] retries a step with capped [`backoff`] while it fails for
//! an outage, telling the caller each time so `/health` can say `degraded` and why.

use crate::postgres_error::describe;
use std::future::Future;
use std::time::Duration;

/// Why a service could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration or environment; the message names the fix.
    #[error("{0}")]
    Config(String),
    /// A dependency (Postgres, NATS) cannot be reached now: worth waiting for.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Runtime(String),
}

impl StartError {
    /// A failure to connect to Postgres: the server's refusal of these settings (wrong
    /// password, no such database, no pg_hba.conf entry) is a configuration problem; no server,
    /// or one starting up, shutting down or out of connections, is an outage.
    pub fn postgres_connect(e: &tokio_postgres::Error) -> StartError {
        let message = format!(
            "cannot connect to DATABASE_URL ({}); check host, port, user, password and database name",
            describe(e)
        );
        let transient = |code: &str| ["57", "53", "08"].iter().any(|c| code.starts_with(c));
        match e.code().map(|code| code.code()) {
            Some(code) if !transient(code) => StartError::Config(message),
            _ => StartError::Unavailable(message),
        }
    }

    /// A failure to set up JetStream state (a stream, a bucket): nobody answering JetStream
    /// requests means the server runs without it, a configuration error; anything else (a
    /// timeout, a cluster still electing its leader) is an outage. `hint` names the fix.
    pub fn jetstream_setup(e: impl std::fmt::Display, hint: &str) -> StartError {
        let text = e.to_string();
        if text.contains("no responders") {
            StartError::Config(format!("{text}; {hint}"))
        } else {
            StartError::Unavailable(format!("{text} ({hint})"))
        }
    }

    /// A failure to connect to NATS: refused settings are configuration, the rest an outage.
    pub fn nats_connect(e: crate::nats::NatsConnectError) -> StartError {
        if e.is_configuration() {
            StartError::Config(e.to_string())
        } else {
            StartError::Unavailable(e.to_string())
        }
    }
}

/// Retries `attempt` with capped [`backoff`] while it fails with [`StartError::Unavailable`],
/// calling `on_outage` with the reason before each wait; any other error is returned at once.
/// `Ok(None)`: `shutdown` came first.
pub async fn until_available<T, F, Fut>(
    what: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    mut on_outage: impl FnMut(&str),
    mut attempt: F,
) -> Result<Option<T>, StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartError>>,
{
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            _ = &mut *shutdown => return Ok(None),
        };
        match outcome {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(attempts = failures + 1, "{what} is reachable");
                }
                return Ok(Some(value));
            }
            Err(StartError::Unavailable(why)) => {
                failures += 1;
                let wait = backoff(failures);
                on_outage(&format!("waiting for {what}: {why}"));
                tracing::warn!(error = %why, retry_in = ?wait, "waiting for {what}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut *shutdown => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Capped exponential backoff with jitter: 100 ms, 200 ms, ... up to 5 s, each ±20 %.
pub fn backoff(failures: u32) -> Duration {
    let base = (100u64 << failures.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = (u64::from(nanos) % (base * 2 / 5 + 1)) as i64 - (base / 5) as i64;
    Duration::from_millis((base as i64 + jitter).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 0..20 {
            let wait = backoff(failures).as_millis();
            let base = (100u128 << failures.min(6)).min(5_000);
            assert!(
                wait >= base * 4 / 5 && wait <= base * 6 / 5,
                "{failures}: {wait}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outages_are_waited_out_and_configuration_errors_are_not() {
        let mut attempts = 0;
        let mut outages = Vec::new();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        let value = until_available(
            "X",
            &mut never,
            |why| outages.push(why.to_string()),
            || {
                attempts += 1;
                let attempt = attempts;
                async move {
                    if attempt < 3 {
                        Err(StartError::Unavailable(format!("down {attempt}")))
                    } else {
                        Ok(attempt)
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, Some(3));
        assert_eq!(outages, ["waiting for X: down 1", "waiting for X: down 2"]);

        let refused = until_available(
            "X",
            &mut never,
            |_| {},
            || async { Err::<(), _>(StartError::Config("fix it".into())) },
        )
        .await;
        assert!(matches!(refused, Err(StartError::Config(_))));

        let mut stop = std::pin::pin!(std::future::ready(()));
        let stopped = until_available(
            "X",
            &mut stop,
            |_| {},
            || async { Err::<(), _>(StartError::Unavailable("down".into())) },
        )
        .await
        .unwrap();
        assert_eq!(stopped, None);
    }
}
