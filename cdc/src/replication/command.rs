//! The text of the replication commands we send, and the quoting that keeps caller-supplied
//! names from changing their meaning.
//!
//! Kept apart from the I/O so the quoting rules can be read and unit-tested on their own:
//! slot names are validated (Postgres allows only `[a-z0-9_]{1,63}`) and still sent as quoted
//! identifiers; publication names become quoted identifiers inside a string literal, which is
//! what pgoutput's `publication_names` option parses; session settings travel in the `options`
//! startup parameter as `-c name=value` with spaces and backslashes escaped.

use super::error::ReplicationError;
use crate::sql::{quote_ident as quote_identifier, quote_literal};
use nself_realtime_shared::lsn::Lsn;

/// Longest name Postgres keeps without truncating (NAMEDATALEN - 1).
const MAX_NAME_LEN: usize = 63;

/// Refuses anything but a valid replication slot name.
pub(crate) fn validate_slot_name(slot: &str) -> Result<(), ReplicationError> {
    let ok = !slot.is_empty()
        && slot.len() <= MAX_NAME_LEN
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::InvalidArgument(format!(
            "replication slot name {slot:?}: use 1 to 63 lower-case letters, digits and '_'"
        )))
    }
}

/// `CREATE_REPLICATION_SLOT "slot" LOGICAL pgoutput NOEXPORT_SNAPSHOT`.
pub(crate) fn create_slot(slot: &str) -> Result<String, ReplicationError> {
    validate_slot_name(slot)?;
    Ok(format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
        quote_identifier(slot)
    ))
}

/// `START_REPLICATION SLOT "slot" LOGICAL X/X (proto_version '1', publication_names '...')`.
pub(crate) fn start_replication(
    slot: &str,
    start: Lsn,
    publications: &[&str],
) -> Result<String, ReplicationError> {
    validate_slot_name(slot)?;
    if publications.is_empty() {
        return Err(ReplicationError::InvalidArgument(
            "START_REPLICATION needs at least one publication".into(),
        ));
    }
    for name in publications {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(ReplicationError::InvalidArgument(format!(
                "publication name {name:?}: use 1 to 63 bytes, no NUL"
            )));
        }
    }
    let names = publications
        .iter()
        .map(|name| quote_identifier(name))
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!(
        "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {})",
        quote_identifier(slot),
        quote_literal(&names)
    ))
}

/// The `options` startup parameter: the config's own options (if any) followed by one
/// `-c name=value` per session setting, escaped as the server splits it (space separates
/// arguments unless escaped with a backslash; `\\` is a backslash).
pub(crate) fn options_parameter(
    existing: Option<&str>,
    settings: &[(String, String)],
) -> Result<Option<String>, ReplicationError> {
    let mut parts: Vec<String> = existing
        .filter(|s| !s.trim().is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    for (name, value) in settings {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !name_ok {
            return Err(ReplicationError::InvalidArgument(format!(
                "session setting name {name:?}: use letters, digits, '_' and '.'"
            )));
        }
        if value.contains('\0') {
            return Err(ReplicationError::InvalidArgument(format!(
                "session setting {name}: the value contains a NUL byte"
            )));
        }
        parts.push(format!("-c {}={}", name, escape_option_value(value)));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" ")))
}

fn escape_option_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_ascii_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_validated_and_quoted() {
        assert_eq!(
            create_slot("slot_1").unwrap(),
            "CREATE_REPLICATION_SLOT \"slot_1\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
        for bad in ["", "Slot", "a-b", "a b", "x\"; DROP", &"a".repeat(64)] {
            assert!(create_slot(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn publication_names_are_identifiers_inside_a_literal() {
        let cmd = start_replication("s", Lsn(0x1_0000_00AB), &["pub", "We'ird \"one\""]).unwrap();
        assert_eq!(
            cmd,
            "START_REPLICATION SLOT \"s\" LOGICAL 1/AB (proto_version '1', \
             publication_names '\"pub\",\"We''ird \"\"one\"\"\"')"
        );
        assert!(start_replication("s", Lsn(0), &[]).is_err());
        assert!(start_replication("s", Lsn(0), &["a\0b"]).is_err());
    }

    #[test]
    fn options_escape_spaces_and_backslashes() {
        let settings = vec![
            ("DateStyle".to_string(), "ISO, MDY".to_string()),
            ("search_path".to_string(), r"a\b".to_string()),
            ("TimeZone".to_string(), "UTC".to_string()),
        ];
        assert_eq!(
            options_parameter(Some("-c work_mem=4MB"), &settings)
                .unwrap()
                .unwrap(),
            r"-c work_mem=4MB -c DateStyle=ISO,\ MDY -c search_path=a\\b -c TimeZone=UTC"
        );
        assert_eq!(options_parameter(None, &[]).unwrap(), None);
        let bad = vec![("a b".to_string(), "x".to_string())];
        assert!(options_parameter(None, &bad).is_err());
    }
}
