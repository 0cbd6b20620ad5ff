//! How the operators' commands (`status`, `stats`, `connections`, `presence ...`, `broadcast`)
//! reach the running system: the gateways' control API (gateway/src/control.rs), and optionally
//! the database for the figures only it has.
//!
//! * With `NATS_URL`: scatter-gather. A command published on `realtime.control.all.<verb>` is
//!   answered by every gateway on a private inbox; answers are gathered until `--wait-ms`
//!   (300 ms) pass without a new one, and never longer than 2 s (or `--wait-ms`, if longer).
//!   The asker need not know how many gateways there are. One gateway is addressed as
//!   `realtime.control.<gateway id>.<verb>`.
//! * Without it (`up` uses an in-process bus): `POST /api/control` on one gateway,
//!   `REALTIME_URL` (default `http://127.0.0.1:$REALTIME_PORT`), with a `service_role` token
//!   minted from `REALTIME_JWT_SECRET`, else from the secret `up` keeps in
//!   `./.nself-realtime/jwt_secret` (read only: a missing secret is not generated here, since
//!   no gateway would know it), else `REALTIME_SERVICE_KEY` as given (for JWKS set-ups).
//!
//! The database is `DATABASE_URL`, else the local cluster `up` runs in `--dir` when it runs, else
//! none ([`super::database::OptionalDatabase`]): the commands then leave out what only the
//! database knows.
//!
//! Also here: the relative times the commands print (`5m ago`, `up 2h 3m`).

use super::http::{self, BaseUrl};
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::control::{Command, CONTROL_PREFIX};
use nself_realtime_shared::bus::control::{self, GatherWindow};
use nself_realtime_shared::bus::NatsBroker;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The longest a scatter-gather waits unless `--wait-ms` is longer.
const GATHER_LIMIT: Duration = Duration::from_secs(2);
/// How long an HTTP request to a gateway may take.
const HTTP_LIMIT: Duration = Duration::from_secs(10);
/// Lifetime of the `service_role` tokens minted for one command.
const TOKEN_SECONDS: i64 = 300;

/// Where the gateways are.
#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// NATS the gateways share; set: every gateway answers. Unset: one gateway over HTTP.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// A gateway's plain HTTP address [default: http://127.0.0.1:$REALTIME_PORT].
    #[arg(long, env = "REALTIME_URL")]
    realtime_url: Option<String>,
    /// The gateway's listen address, used when REALTIME_URL is unset (0.0.0.0 means 127.0.0.1).
    #[arg(long = "realtime-host", env = "REALTIME_HOST", hide = true)]
    host: Option<String>,
    /// The gateway's port, used when REALTIME_URL is unset.
    #[arg(long = "realtime-port", env = "REALTIME_PORT", default_value_t = nself_realtime_gateway::config::DEFAULT_PORT)]
    port: u16,
    /// The gateways' JWT secret, to sign the service_role token of the HTTP control API.
    #[arg(
        long = "realtime-jwt-secret",
        env = "REALTIME_JWT_SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// A service_role token to send as it is (for gateways that verify with JWKS).
    #[arg(long, env = "REALTIME_SERVICE_KEY", hide_env_values = true)]
    service_key: Option<String>,
    /// Where `up` keeps its JWT secret and local cluster.
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    pub dir: PathBuf,
    /// With NATS: stop gathering answers once this many milliseconds pass without a new one.
    #[arg(long, default_value_t = 300)]
    wait_ms: u64,
}

/// Why the gateways could not be asked.
#[derive(Debug)]
pub enum Problem {
    /// Bad configuration (exit 2): a malformed URL, no secret, a refused token.
    Usage(anyhow::Error),
    /// Nothing answered (exit 1); says how it tried.
    Unreachable(String),
    /// Anything else that failed on the way (exit 1).
    Runtime(anyhow::Error),
}

impl From<Problem> for CliError {
    fn from(problem: Problem) -> CliError {
        match problem {
            Problem::Usage(e) => CliError::usage(e),
            Problem::Unreachable(how) => CliError::runtime(anyhow!(
                "{how}; start one (`nself-realtime start`, `up` or `gateway`) or point NATS_URL/REALTIME_URL at it"
            )),
            Problem::Runtime(e) => CliError::runtime(e),
        }
    }
}

/// One gateway's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The gateway id (16 hex digits).
    pub gateway: String,
    /// Its result, or the error it reported.
    pub outcome: Result<Value, String>,
}

impl Answer {
    fn parse(value: &Value) -> Option<Answer> {
        let gateway = value["gateway"].as_str()?.to_string();
        let outcome = match (&value.get("result"), value["error"].as_str()) {
            (Some(result), _) => Ok((*result).clone()),
            (None, Some(error)) => Err(error.to_string()),
            (None, None) => return None,
        };
        Some(Answer { gateway, outcome })
    }
}

/// The way to the gateways.
pub struct Gateways {
    way: Way,
    /// How they are reached, for messages: `NATS nats://…` or `http://…`.
    pub via: String,
}

enum Way {
    Nats {
        client: async_nats::Client,
        quiet: Duration,
        limit: Duration,
    },
    Http {
        url: BaseUrl,
        args: LiveArgs,
    },
}

impl LiveArgs {
    /// The gateway's HTTP address.
    pub fn http_url(&self) -> Result<BaseUrl, Problem> {
        let url = match &self.realtime_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => {
                let host = match self.host.as_deref().map(str::trim) {
                    None | Some("" | "0.0.0.0" | "::" | "[::]") => "127.0.0.1".to_string(),
                    Some(host) if host.contains(':') && !host.starts_with('[') => {
                        format!("[{host}]")
                    }
                    Some(host) => host.to_string(),
                };
                format!("http://{host}:{}", self.port)
            }
        };
        BaseUrl::parse(&url).map_err(|e| {
            Problem::Usage(anyhow!(
                "REALTIME_URL: {e:#}; use the gateway's address, e.g. http://127.0.0.1:4000"
            ))
        })
    }

    /// A `service_role` token for the gateways' HTTP APIs.
    pub fn service_token(&self) -> Result<String, Problem> {
        if let Some(key) = self.service_key.as_deref().filter(|k| !k.trim().is_empty()) {
            return Ok(key.trim().to_string());
        }
        let Some(secret) = super::secret::find_secret(self.jwt_secret.as_deref(), &self.dir) else {
            return Err(Problem::Usage(anyhow!(
                "no JWT secret to sign a service_role token with: set REALTIME_JWT_SECRET to the gateways' secret (or run where `nself-realtime up` keeps {})",
                self.dir.join("jwt_secret").display()
            )));
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(super::secret::mint(
            &secret.value,
            json!({"role": "service_role", "iss": "nself-realtime", "iat": now, "exp": now + TOKEN_SECONDS}),
        ))
    }

    fn nats_url(&self) -> Option<&str> {
        self.nats_url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// `nats://user:pass@host:4222` without its credentials.
fn redact_nats(url: &str) -> String {
    url.split(',')
        .map(|server| match (server.find("://"), server.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &server[..scheme + 3], &server[at..])
            }
            _ => server.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Gateways {
    /// Gets ready to ask: connects to NATS, or checks the HTTP address.
    pub async fn connect(args: &LiveArgs) -> Result<Gateways, Problem> {
        if let Some(url) = args.nats_url() {
            let via = format!("NATS {}", redact_nats(url));
            let client = nself_realtime_shared::nats::connect(url, "nself-realtime-cli")
                .await
                .map_err(|e| match e {
                    nself_realtime_shared::nats::NatsConnectError::BadUrl(_) => {
                        Problem::Usage(anyhow!("{e}; use nats://host:4222"))
                    }
                    e => Problem::Unreachable(e.to_string()),
                })?;
            let quiet = Duration::from_millis(args.wait_ms.max(1));
            return Ok(Gateways {
                way: Way::Nats {
                    client,
                    quiet,
                    limit: GATHER_LIMIT.max(quiet),
                },
                via,
            });
        }
        let url = args.http_url()?;
        Ok(Gateways {
            via: url.display(),
            way: Way::Http {
                url,
                args: args.clone(),
            },
        })
    }

    /// Whether every gateway answers (NATS), rather than one (HTTP).
    pub fn sees_all(&self) -> bool {
        matches!(self.way, Way::Nats { .. })
    }

    /// Asks every gateway; at least one answered, sorted by gateway id.
    pub async fn ask_all(&self, command: &Command) -> Result<Vec<Answer>, Problem> {
        let subject = format!("{CONTROL_PREFIX}.all.{}", command.verb());
        match &self.way {
            Way::Nats {
                client,
                quiet,
                limit,
            } => {
                let mut answers = gather(client, &subject, command, *quiet, *limit, false).await?;
                if answers.is_empty() {
                    return Err(Problem::Unreachable(format!(
                        "no gateway answered on {} within {limit:?}",
                        self.via
                    )));
                }
                answers.sort_by(|a, b| a.gateway.cmp(&b.gateway));
                Ok(answers)
            }
            Way::Http { url, args } => Ok(vec![post_control(url, args, command).await?]),
        }
    }

    /// Asks one gateway (by id over NATS; over HTTP, the one there is).
    pub async fn ask_one(&self, gateway: &str, command: &Command) -> Result<Answer, Problem> {
        match &self.way {
            Way::Nats { client, limit, .. } => {
                let subject = format!("{CONTROL_PREFIX}.{gateway}.{}", command.verb());
                gather(client, &subject, command, *limit, *limit, true)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        Problem::Unreachable(format!(
                            "gateway {gateway} did not answer on {} within {limit:?}",
                            self.via
                        ))
                    })
            }
            Way::Http { url, args } => post_control(url, args, command).await,
        }
    }

    /// Over HTTP: `GET /health` of the gateway, which needs no token. `None` over NATS.
    pub async fn health(&self) -> Result<Option<Value>, Problem> {
        let Way::Http { url, .. } = &self.way else {
            return Ok(None);
        };
        let response = http::request(url, "GET", "/health", None, None, HTTP_LIMIT)
            .await
            .map_err(|e| unreachable(url, e))?;
        let body = response.json().map_err(|e| {
            Problem::Usage(anyhow!(
                "{}/health: {e:#}; is REALTIME_URL a nself-realtime gateway?",
                url.display()
            ))
        })?;
        if body["role"] != "gateway" {
            return Err(Problem::Usage(anyhow!(
                "{} is not a nself-realtime gateway (its /health says {body}); check REALTIME_URL",
                url.display()
            )));
        }
        Ok(Some(body))
    }

    /// Whether a token for the HTTP control API is at hand (always true over NATS).
    pub fn can_control(&self) -> bool {
        match &self.way {
            Way::Nats { .. } => true,
            Way::Http { args, .. } => args.service_token().is_ok(),
        }
    }
}

fn unreachable(url: &BaseUrl, e: http::RequestError) -> Problem {
    match e {
        http::RequestError::Connect(..) => Problem::Unreachable(e.to_string()),
        http::RequestError::Exchange(e) => Problem::Runtime(anyhow!("{}: {e:#}", url.display())),
    }
}

/// Publishes `command` on `subject` and gathers answers: until `quiet` passes without one, at
/// most `limit` in all; only the first when `first_only` (the same scatter-gather as the
/// gateways' own `cluster` view, [`control::gather`]).
async fn gather(
    client: &async_nats::Client,
    subject: &str,
    command: &Command,
    quiet: Duration,
    limit: Duration,
    first_only: bool,
) -> Result<Vec<Answer>, Problem> {
    let broker = NatsBroker::new(client.clone());
    let request = Map::from_iter([("command".to_string(), json!(command))]);
    let quiet = if first_only { Duration::ZERO } else { quiet };
    let answers = control::gather(&broker, subject, request, GatherWindow { quiet, limit })
        .await
        .map_err(|e| Problem::Runtime(anyhow!("cannot ask the gateways on NATS: {e}")))?;
    let answers: Vec<Answer> = answers.iter().filter_map(Answer::parse).collect();
    Ok(match first_only {
        true => answers.into_iter().take(1).collect(),
        false => answers,
    })
}

/// `POST /api/control` with `command`.
async fn post_control(
    url: &BaseUrl,
    args: &LiveArgs,
    command: &Command,
) -> Result<Answer, Problem> {
    let token = args.service_token()?;
    let body = serde_json::to_vec(command).expect("commands serialize");
    let response = http::request(
        url,
        "POST",
        "/api/control",
        Some(&token),
        Some(&body),
        HTTP_LIMIT,
    )
    .await
    .map_err(|e| unreachable(url, e))?;
    let shown = url.display();
    match response.status {
        200 => {
            let value = response.json().map_err(|e| Problem::Runtime(anyhow!("{shown}: {e:#}")))?;
            Answer::parse(&value)
                .ok_or_else(|| Problem::Runtime(anyhow!("{shown}: unexpected control answer {value}")))
        }
        400 | 503 => Ok(Answer {
            gateway: String::new(),
            outcome: Err(response.error_text()),
        }),
        401 | 403 => Err(Problem::Usage(anyhow!(
            "the gateway at {shown} refused the service_role token ({}); set REALTIME_JWT_SECRET to the gateways' secret, or REALTIME_SERVICE_KEY to a service_role token",
            response.error_text()
        ))),
        404 | 405 => Err(Problem::Usage(anyhow!(
            "{shown} has no control API (HTTP {}); point REALTIME_URL at a nself-realtime gateway",
            response.status
        ))),
        status => Err(Problem::Runtime(anyhow!(
            "{shown} answered HTTP {status}: {}",
            response.error_text()
        ))),
    }
}

/// `now`, `5s ago`, `12m ago`, `2h ago`, `3d ago`.
pub fn ago(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 1.0 {
        return "now".into();
    }
    format!("{} ago", span(seconds as u64))
}

/// `5s`, `12m`, `2h`, `3d`: the largest whole unit.
pub fn span(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m", seconds / 60),
        3600..=86_399 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// `45s`, `5m 12s`, `2h 3m`, `3d 4h`: two units, for uptimes.
pub fn uptime(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {}s", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// Seconds since an RFC 3339 time (0 for a time in the future).
pub fn seconds_since(rfc3339: &str) -> Option<f64> {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(
        (time::OffsetDateTime::now_utc() - at)
            .as_seconds_f64()
            .max(0.0),
    )
}

/// Pads `text` to `width` characters (not bytes), leaving at least one space after it.
pub fn pad(text: &str, width: usize) -> String {
    let len = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(len).max(1)))
}

/// The width of a column: `min`, or the longest entry plus `gap`.
pub fn column<'a>(min: usize, gap: usize, entries: impl IntoIterator<Item = &'a str>) -> usize {
    entries
        .into_iter()
        .map(|e| e.chars().count() + gap)
        .max()
        .unwrap_or(0)
        .max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_the_seed() {
        assert_eq!(ago(0.4), "now");
        assert_eq!(ago(5.2), "5s ago");
        assert_eq!(ago(300.0), "5m ago");
        assert_eq!(ago(7300.0), "2h ago");
        assert_eq!(ago(3.0 * 86_400.0), "3d ago");
        assert_eq!(uptime(45), "45s");
        assert_eq!(uptime(312), "5m 12s");
        assert_eq!(uptime(7380), "2h 3m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600), "3d 4h");
        assert!(seconds_since("2000-01-01T00:00:00.000Z").unwrap() > 1e8);
        assert_eq!(seconds_since("2999-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(seconds_since("yesterday"), None);
    }

    #[test]
    fn nats_credentials_are_not_shown() {
        assert_eq!(
            redact_nats("nats://me:secret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert_eq!(
            redact_nats("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn answers_carry_a_result_or_an_error() {
        let ok = Answer::parse(&json!({"gateway": "ab", "result": [1]})).unwrap();
        assert_eq!(ok.outcome, Ok(json!([1])));
        let failed = Answer::parse(&json!({"gateway": "ab", "error": "no"})).unwrap();
        assert_eq!(failed.outcome, Err("no".to_string()));
        assert!(Answer::parse(&json!({"gateway": "ab"})).is_none());
        assert!(Answer::parse(&json!({"result": 1})).is_none());
    }

    #[test]
    fn columns_pad_to_the_longest_entry() {
        assert_eq!(pad("general", 17), "general          ");
        assert_eq!(
            pad("a-very-long-channel-name", 17),
            "a-very-long-channel-name "
        );
        assert_eq!(column(12, 4, ["user-123", "u"]), 12);
        assert_eq!(column(12, 4, ["a-much-longer-user"]), 22);
    }
}
