//! Logging setup from `LOG_LEVEL` and `LOG_FORMAT` (`pretty` for people, `json` for machines).
//!
//! * `LOG_LEVEL` is a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a tracing
//!   filter of comma-separated directives (`info,nself_realtime_gateway=debug`). A bare word that
//!   is not a level (`bogus`, `verbose`) is refused: tracing would read it as a target name and
//!   silently hide everything else.
//! * The libraries we drive (Postgres, NATS, TLS, WebSocket and HTTP clients) log their own
//!   workings, such as every SQL statement at debug. A level keeps them quieter than our own
//!   logs: at `info`, async-nats' (re)connection lines are kept at warn (the services say when
//!   NATS is lost or back); at `debug`, every driver is kept at info; only `trace` shows all. A
//!   filter that names a driver decides for that driver itself.
//! * Pretty logs are coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
//!   (<https://no-color.org>), so a log written to a file holds no escape codes.

use crate::exit::CliError;
use std::io::IsTerminal;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// The libraries whose own logs a bare level keeps quiet (module docs).
const DRIVERS: [&str; 12] = [
    "tokio_postgres",
    "postgres_protocol",
    "async_nats",
    "rustls",
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "tower",
    "mio",
    "pgwire",
];

/// `LOG_LEVEL` as a filter: the user's directives, checked, plus the drivers' caps.
fn filter_directives(log_level: &str) -> Result<String, String> {
    let directives: Vec<&str> = log_level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("it is empty".into());
    }
    let mut default = None;
    for directive in &directives {
        match directive.parse::<LevelFilter>() {
            Ok(level) => default = default.max(Some(level)),
            Err(_) if directive.contains('=') => {}
            Err(_) => return Err(format!("{directive:?} is not a level")),
        }
    }
    let cap = match default {
        Some(LevelFilter::INFO) => Some(("warn", &["async_nats"][..])),
        Some(LevelFilter::DEBUG) => Some(("info", &DRIVERS[..])),
        _ => None,
    };
    let mut filter = directives.join(",");
    if let Some((level, drivers)) = cap {
        let named = |driver: &str| {
            directives.iter().any(|d| {
                let target = d.split(['=', '[']).next().unwrap_or_default().trim();
                target == driver || target.starts_with(&format!("{driver}::"))
            })
        };
        for driver in drivers.iter().filter(|d| !named(d)) {
            filter.push_str(&format!(",{driver}={level}"));
        }
    }
    Ok(filter)
}

/// Whether pretty logs on stderr get colour codes (module docs).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn init(level: &str, format: &str) -> Result<(), CliError> {
    let refused = |why: String| {
        CliError::usage(anyhow::anyhow!(
            "LOG_LEVEL={level:?} is not a level or filter ({why}); use error, warn, info, debug, trace or off, or directives like info,nself_realtime_gateway=debug"
        ))
    };
    let directives = filter_directives(level).map_err(refused)?;
    let filter = EnvFilter::try_new(&directives).map_err(|e| refused(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "pretty" => builder.with_ansi(colour()).init(),
        "json" => builder.json().init(),
        other => {
            return Err(CliError::usage(anyhow::anyhow!(
                "LOG_FORMAT={other:?} is unknown; use pretty or json"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_cap_the_drivers_and_filters_decide_for_themselves() {
        assert_eq!(filter_directives("info").unwrap(), "info,async_nats=warn");
        assert_eq!(filter_directives("warn").unwrap(), "warn");
        assert_eq!(filter_directives("trace").unwrap(), "trace");
        let debug = filter_directives("DEBUG").unwrap();
        assert!(
            debug.starts_with("DEBUG,tokio_postgres=info,postgres_protocol=info,async_nats=info"),
            "{debug}"
        );
        assert_eq!(
            filter_directives("info,async_nats=debug").unwrap(),
            "info,async_nats=debug"
        );
        let named = filter_directives("debug, tokio_postgres=trace").unwrap();
        assert!(named.starts_with("debug,tokio_postgres=trace,postgres_protocol=info"));
        assert!(!named.contains("tokio_postgres=info"), "{named}");
        assert_eq!(
            filter_directives("nself_realtime_gateway=debug").unwrap(),
            "nself_realtime_gateway=debug"
        );
    }

    #[test]
    fn words_that_are_not_levels_are_refused() {
        assert_eq!(
            filter_directives("bogus").unwrap_err(),
            "\"bogus\" is not a level"
        );
        assert_eq!(
            filter_directives("info,verbose").unwrap_err(),
            "\"verbose\" is not a level"
        );
        assert_eq!(filter_directives(" , ").unwrap_err(), "it is empty");
    }
}
