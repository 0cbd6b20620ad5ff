//! Warnings about environment variables that look like settings but that nothing reads.
//!
//! Users come from the nself realtime plugin (../shared/seeds/) with its `.env`:
//! `REALTIME_PRESENCE_HEARTBEAT`, `WEBSOCKET_PORT`, `REALTIME_REDIS_URL`, ... Left unread
//! without a word, such a setting looks applied and is not. So the long-running commands
//! (`up`, `gateway`, `cdc`) warn at start about every `REALTIME_*` and `WEBSOCKET_*` variable
//! (and the plugin's database pool settings) that is not one of ours, naming the replacement
//! when the seeds' variable has one ([`SEED_NAMES`]), else the nearest known name by edit
//! distance.
//!
//! The known names are not listed here: they are the `env = "..."` of the command line's own
//! arguments (`main.rs` and `commands/`), read from clap's definition of the whole command
//! tree, so a setting added there is known here at once.

use std::collections::BTreeSet;

/// Prefixes of the variables checked (besides the exact names of [`SEED_NAMES`]).
const PREFIXES: [&str; 2] = ["REALTIME_", "WEBSOCKET_"];

/// The seeds' variables that are not ours, with what to do instead.
const SEED_NAMES: &[(&str, &str)] = &[
    ("REALTIME_PRESENCE_HEARTBEAT", "use REALTIME_HEARTBEAT_INTERVAL, in seconds (this one was milliseconds); presence is refreshed every half interval"),
    ("REALTIME_PRESENCE_TIMEOUT", "presence has no idle timeout here: an entry lasts as long as its connection (and at most 2 × REALTIME_HEARTBEAT_INTERVAL after its gateway dies)"),
    ("REALTIME_REDIS_URL", "there is no Redis: gateways share broadcasts and presence through NATS, so set NATS_URL (unset, `up` uses an in-process bus)"),
    ("REALTIME_REDIS_MAX_MEMORY_PER_CONNECTION", "there is no Redis; a connection's memory is bounded by REALTIME_SEND_QUEUE and REALTIME_MAX_FRAME_BYTES"),
    ("REALTIME_ENABLED", "nothing to enable: the service runs when it is started"),
    ("REALTIME_RECONNECT_DELAY", "reconnecting is the clients' business (supabase-js and socket.io-client back off by themselves)"),
    ("WEBSOCKET_PORT", "use REALTIME_PORT"),
    ("WEBSOCKET_HOST", "use REALTIME_HOST"),
    ("WEBSOCKET_MAX_CONNECTIONS", "use REALTIME_MAX_CONNECTIONS"),
    ("WEBSOCKET_PING_INTERVAL", "use REALTIME_HEARTBEAT_INTERVAL, in seconds"),
    ("WEBSOCKET_PING_TIMEOUT", "use REALTIME_HEARTBEAT_INTERVAL: a socket silent for twice that long is closed"),
    ("WEBSOCKET_TIMEOUT", "use REALTIME_HEARTBEAT_INTERVAL: a socket silent for twice that long is closed"),
    ("WEBSOCKET_RATE_LIMIT_ENABLED", "the limits are always on; set each one (REALTIME_MAX_MESSAGES_PER_MINUTE, REALTIME_MAX_EVENTS_PER_SECOND, ...)"),
    ("WEBSOCKET_MAX_MESSAGES_PER_MINUTE", "use REALTIME_MAX_MESSAGES_PER_MINUTE"),
    ("WEBSOCKET_MAX_BROADCASTS_PER_MINUTE", "use REALTIME_MAX_EVENTS_PER_SECOND (per second, broadcasts and presence updates)"),
    ("DATABASE_POOL_MAX", "use REALTIME_DB_POOL_SIZE"),
    ("DATABASE_POOL_MIN", "the pool opens what it needs up to REALTIME_DB_POOL_SIZE"),
    ("DATABASE_POOL_IDLE_TIMEOUT", "the pool's only setting is REALTIME_DB_POOL_SIZE"),
    ("DATABASE_POOL_CONNECTION_TIMEOUT", "put connect_timeout=<seconds> in DATABASE_URL"),
    ("DATABASE_STATEMENT_TIMEOUT", "set statement_timeout on the database role (ALTER ROLE ... SET statement_timeout = '10s')"),
];

/// Every `env = "..."` of `command` and its subcommands.
pub fn known_names(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env()?.to_str().map(str::to_string))
        .collect();
    for sub in command.get_subcommands() {
        names.extend(known_names(sub));
    }
    names
}

/// The warning for the variable `name`, if it looks like a setting and is not in `known`.
pub fn advice(name: &str, known: &BTreeSet<String>) -> Option<String> {
    if known.contains(name) {
        return None;
    }
    if let Some((_, what)) = SEED_NAMES.iter().find(|(seed, _)| *seed == name) {
        return Some(format!(
            "{name} is a setting of the nself realtime plugin that nself-realtime does not read: {what}"
        ));
    }
    let prefix = PREFIXES.iter().find(|p| name.starts_with(*p))?;
    // WEBSOCKET_MAX_FOO is compared as REALTIME_MAX_FOO.
    let ours = format!("REALTIME_{}", &name[prefix.len()..]);
    let nearest = known
        .iter()
        .min_by_key(|candidate| (edit_distance(&ours, candidate), (*candidate).clone()))?;
    Some(format!(
        "{name} is not a nself-realtime setting and is ignored; the nearest one is {nearest}"
    ))
}

/// Warns (tracing, at warn) about every variable of this process' environment [`advice`]
/// has a word for.
pub fn warn_unknown(command: &clap::Command) {
    let known = known_names(command);
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    names.sort();
    for name in names {
        if let Some(advice) = advice(&name, &known) {
            tracing::warn!("{advice}");
        }
    }
}

/// Levenshtein distance (insertions, deletions, substitutions), on characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        [
            "REALTIME_PORT",
            "REALTIME_MAX_CONNECTIONS",
            "REALTIME_HEARTBEAT_INTERVAL",
            "DATABASE_URL",
        ]
        .map(String::from)
        .into()
    }

    #[test]
    fn distances_count_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn unknown_settings_get_the_replacement_or_the_nearest_name() {
        let known = known();
        assert_eq!(advice("REALTIME_PORT", &known), None);
        assert_eq!(advice("PATH", &known), None);
        assert_eq!(advice("DATABASE_URL", &known), None);
        assert_eq!(
            advice("REALTIME_MAX_CONECTIONS", &known).unwrap(),
            "REALTIME_MAX_CONECTIONS is not a nself-realtime setting and is ignored; the nearest one is REALTIME_MAX_CONNECTIONS"
        );
        assert_eq!(
            advice("WEBSOCKET_PORT", &known).unwrap(),
            "WEBSOCKET_PORT is a setting of the nself realtime plugin that nself-realtime does not read: use REALTIME_PORT"
        );
        assert!(advice("WEBSOCKET_HEARTBEAT_INTERVALL", &known)
            .unwrap()
            .ends_with("the nearest one is REALTIME_HEARTBEAT_INTERVAL"));
        assert!(advice("REALTIME_PRESENCE_HEARTBEAT", &known)
            .unwrap()
            .contains("use REALTIME_HEARTBEAT_INTERVAL, in seconds"));
    }

    #[test]
    fn every_replacement_named_is_a_real_setting() {
        let known = known_names(&<crate::Cli as clap::CommandFactory>::command());
        for (seed, what) in SEED_NAMES {
            assert!(!known.contains(*seed), "{seed} is ours");
            for word in what.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
                if word.starts_with("REALTIME_") || word.ends_with("_URL") {
                    assert!(known.contains(word), "{seed}: {word} is not a setting");
                }
            }
        }
    }
}
