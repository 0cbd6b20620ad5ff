//! NATS subjects and the escaping that keeps user-chosen names inside one subject token.
//!
//! Schema, table, channel and topic names come from users and databases: they may hold `.`
//! (the token separator), `*` and `>` (wildcards), white space, `$` or any Unicode. Each name is
//! escaped into exactly one token so that no name can split, widen or hide a subject:
//!
//! * ASCII letters, digits, `_` and `-` stay as they are;
//! * every other byte of the name's UTF-8 form becomes `~` followed by two upper-case hex digits
//!   (`.` → `~2E`, `*` → `~2A`, space → `~20`, `~` → `~7E`, `é` → `~C3~A9`).
//!
//! The escape is reversible ([`unescape_token`]) and the escaped form of a plain lower-case
//! identifier is the identifier itself, so `realtime.db.public.users.insert` reads naturally.

use std::fmt::Write;

/// Prefix of every table-change subject (JetStream stream `REALTIME_DB`).
pub const DB_PREFIX: &str = "realtime.db";
/// Prefix of NOTIFY subjects (core NATS).
pub const NOTIFY_PREFIX: &str = "realtime.notify";
/// Prefix of broadcast subjects (core NATS).
pub const BROADCAST_PREFIX: &str = "realtime.broadcast";
/// Typing signals of one channel (ephemeral, core NATS).
pub const TYPING_PREFIX: &str = "realtime.typing";

/// A name that cannot become a subject token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubjectError {
    #[error("an empty name cannot be a subject token")]
    Empty,
    #[error("{0:?} is not a valid escaped subject token")]
    BadEscape(String),
}

/// Escapes one name into a single NATS subject token (see the module docs for the rule).
pub fn escape_token(name: &str) -> Result<String, SubjectError> {
    if name.is_empty() {
        return Err(SubjectError::Empty);
    }
    let mut out = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "~{byte:02X}");
        }
    }
    Ok(out)
}

/// Escapes one name into a NATS KV key token: the same rule as [`escape_token`] with `=` as the
/// escape character, because KV keys allow only `A-Z a-z 0-9 - _ = / .` (so `~` is not
/// available; `=` itself is escaped, `=3D`, keeping the escape reversible).
pub fn kv_token(name: &str) -> Result<String, SubjectError> {
    Ok(escape_token(name)?.replace('~', "="))
}

/// Reverses [`kv_token`].
pub fn kv_untoken(token: &str) -> Result<String, SubjectError> {
    unescape_token(&token.replace('=', "~"))
}

/// Reverses [`escape_token`].
pub fn unescape_token(token: &str) -> Result<String, SubjectError> {
    let bad = || SubjectError::BadEscape(token.to_string());
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'~' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The operation token of a table-change subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Truncate,
    ];

    /// Lower-case subject token: `insert`, `update`, `delete`, `truncate`.
    pub fn token(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
        }
    }

    /// Upper-case SQL keyword, as in the event's `type` field.
    pub fn keyword(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Truncate => "TRUNCATE",
        }
    }

    /// Parses `INSERT`, `update`, ... (any case).
    pub fn parse(word: &str) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|op| op.keyword().eq_ignore_ascii_case(word.trim()))
    }
}

/// `realtime.db.<schema>.<table>.<op>`: the subject of one table change.
pub fn table_change(schema: &str, table: &str, op: Operation) -> Result<String, SubjectError> {
    Ok(format!(
        "{DB_PREFIX}.{}.{}.{}",
        escape_token(schema)?,
        escape_token(table)?,
        op.token()
    ))
}

/// `realtime.db.<schema>.<table>.*`: every change of one table.
pub fn table_changes(schema: &str, table: &str) -> Result<String, SubjectError> {
    Ok(format!(
        "{DB_PREFIX}.{}.{}.*",
        escape_token(schema)?,
        escape_token(table)?
    ))
}

/// `realtime.db.<schema>.*.*`: every change of every table of one schema.
pub fn schema_changes(schema: &str) -> Result<String, SubjectError> {
    Ok(format!("{DB_PREFIX}.{}.*.*", escape_token(schema)?))
}

/// `realtime.broadcast.<topic>`: broadcasts of one channel topic.
pub fn broadcast(topic: &str) -> Result<String, SubjectError> {
    Ok(format!("{BROADCAST_PREFIX}.{}", escape_token(topic)?))
}

/// Whether `subject` is matched by the subscription `pattern` (NATS rules: `*` matches exactly
/// one token, a final `>` one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for wanted in pattern.split('.') {
        match (wanted, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(token)) if wanted == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// `realtime.typing.<topic>`: typing signals of one channel topic.
pub fn typing(topic: &str) -> Result<String, SubjectError> {
    Ok(format!("{TYPING_PREFIX}.{}", escape_token(topic)?))
}

/// `realtime.notify.<channel>`: one NOTIFY channel.
pub fn notify(channel: &str) -> Result<String, SubjectError> {
    Ok(format!("{NOTIFY_PREFIX}.{}", escape_token(channel)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_unchanged() {
        assert_eq!(
            table_change("public", "users", Operation::Insert).unwrap(),
            "realtime.db.public.users.insert"
        );
        assert_eq!(escape_token("Order_Items-2").unwrap(), "Order_Items-2");
    }

    #[test]
    fn hostile_names_stay_in_one_token() {
        let cases = [
            ("a.b", "a~2Eb"),
            ("*", "~2A"),
            (">", "~3E"),
            ("my table", "my~20table"),
            ("$JS", "~24JS"),
            ("~", "~7E"),
            ("é", "~C3~A9"),
            ("x\ty\n", "x~09y~0A"),
            (
                "\"; DROP TABLE users; --",
                "~22~3B~20DROP~20TABLE~20users~3B~20--",
            ),
        ];
        for (name, token) in cases {
            let escaped = escape_token(name).unwrap();
            assert_eq!(escaped, token);
            assert!(!escaped.contains(['.', '*', '>', ' ', '\t', '\n']));
            assert_eq!(unescape_token(&escaped).unwrap(), name);
        }
    }

    #[test]
    fn escape_is_injective_on_tricky_pairs() {
        // `~` itself is escaped, so a name that looks like an escape cannot collide.
        assert_ne!(escape_token("~2E").unwrap(), escape_token(".").unwrap());
    }

    #[test]
    fn bad_tokens_and_names_are_errors() {
        assert_eq!(escape_token(""), Err(SubjectError::Empty));
        for token in ["~", "~2", "~zz", "~FF"] {
            assert!(unescape_token(token).is_err(), "{token:?}");
        }
    }

    #[test]
    fn kv_tokens_use_only_kv_key_characters() {
        assert_eq!(kv_token("room:1.a=b").unwrap(), "room=3A1=2Ea=3Db");
        assert_eq!(kv_token("lobby").unwrap(), "lobby");
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.b.c", "a.b.c"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches("a.b.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches(
            "realtime.db.public.users.*",
            "realtime.db.public.users.insert"
        ));
    }

    #[test]
    fn operations_parse_any_case() {
        assert_eq!(Operation::parse("insert"), Some(Operation::Insert));
        assert_eq!(Operation::parse(" Update "), Some(Operation::Update));
        assert_eq!(Operation::parse("upsert"), None);
    }
}
