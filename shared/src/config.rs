//! Configuration values shared by the processes, with the defaults of DESIGN.md, and the parsing
//! rules for the env values that are more than a string (durations, comma lists).
//!
//! The binary reads each value from a flag or the env var of the same name (clap does that) and
//! hands the typed result to the libraries; nothing below reads the environment itself.

use std::time::Duration;

/// Default replication slot (`REALTIME_SLOT`).
pub const DEFAULT_SLOT: &str = "nself_realtime";
/// Default publication (`REALTIME_PUBLICATION`).
pub const DEFAULT_PUBLICATION: &str = "nself_realtime";
/// Default CDC Postgres-wire port (`REALTIME_CDC_PORT`).
pub const DEFAULT_CDC_PORT: u16 = 5433;
/// Default CDC health/metrics port (`REALTIME_CDC_HTTP_PORT`).
pub const DEFAULT_CDC_HTTP_PORT: u16 = 4001;
/// Default JetStream retention in seconds (`REALTIME_MESSAGE_TTL`).
pub const DEFAULT_MESSAGE_TTL_SECS: u64 = 86_400;
/// `REALTIME_MESSAGE_RETENTION`: how long `realtime.messages` keeps its rows (30 days, the seeds'
/// `cleanup` default for messages).
pub const DEFAULT_MESSAGE_RETENTION_SECS: u64 = 30 * 86_400;
/// Name of the JetStream stream holding table changes.
pub const DB_STREAM: &str = "REALTIME_DB";
/// JetStream's duplicate window for the change stream: how long a re-published event id is
/// recognised and dropped by the server (the CDC also skips ids it finds already stored, so
/// exactness does not depend on it). The server keeps every id of the window in memory —
/// rate × window entries — so it is no longer than the two minutes the design asks for.
pub const DB_STREAM_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A config value that could not be parsed; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub problem: String,
}

/// Splits a comma list (`a, b,,c`) into trimmed, non-empty items.
pub fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a whole number of seconds (`86400`) into a duration greater than zero.
pub fn seconds(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError {
            var,
            value: value.to_string(),
            problem: "expected a whole number of seconds greater than 0".into(),
        }),
    }
}

/// A duration in milliseconds, as seed 001 writes `REALTIME_TYPING_TIMEOUT=3000`, or with a
/// unit: `500ms`, `3s`, `1m`. Must be greater than 0.
pub fn milliseconds(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let text = value.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let millis = number.parse::<u64>().ok().and_then(|n| match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => None,
    });
    match millis {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError {
            var,
            value: value.to_string(),
            problem: "expected milliseconds greater than 0 (3000), or a number with a unit (500ms, 3s, 1m)".into(),
        }),
    }
}

/// Checks that a Postgres object name we create (slot, publication) is a plain lower-case
/// identifier: replication slot names must be, and keeping publications to the same rule means
/// they never need quoting.
pub fn plain_identifier(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !value.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConfigError {
            var,
            value: value.to_string(),
            problem: "use 1 to 63 lower-case letters, digits and '_', not starting with a digit"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_bare_numbers_and_units() {
        let ms = |v| milliseconds("X", v).map(|d| d.as_millis());
        assert_eq!(ms("3000").unwrap(), 3000);
        assert_eq!(ms("3s").unwrap(), 3000);
        assert_eq!(ms("250ms").unwrap(), 250);
        assert_eq!(ms("1m").unwrap(), 60_000);
        assert!(ms("0").is_err() && ms("3h").is_err() && ms("").is_err() && ms("-1").is_err());
    }

    #[test]
    fn comma_lists_are_trimmed() {
        assert_eq!(comma_list(" a, b,,c ,"), vec!["a", "b", "c"]);
        assert!(comma_list("").is_empty());
    }

    #[test]
    fn seconds_must_be_positive_integers() {
        assert_eq!(seconds("X", "30").unwrap(), Duration::from_secs(30));
        for bad in ["0", "-1", "1.5", "abc", ""] {
            let err = seconds("REALTIME_MESSAGE_TTL", bad).unwrap_err();
            assert!(err.to_string().starts_with("REALTIME_MESSAGE_TTL="));
        }
    }

    #[test]
    fn identifiers_are_plain() {
        assert!(plain_identifier("REALTIME_SLOT", "nself_realtime").is_ok());
        for bad in [
            "",
            "Upper",
            "a-b",
            "1abc",
            "a b",
            "x\"; drop",
            &"a".repeat(64),
        ] {
            assert!(plain_identifier("REALTIME_SLOT", bad).is_err(), "{bad:?}");
        }
    }
}
