//! JSON from clients, read the same way everywhere: Phoenix frames, `/ws` and Socket.IO
//! messages, REST broadcast bodies.
//!
//! Two rules, so no endpoint is weaker than another:
//!
//! * **One depth limit.** JSON nested deeper than [`MAX_DEPTH`] is refused before any parser
//!   sees it. serde_json limits recursion when it builds values, but a payload kept as raw bytes
//!   (a broadcast relayed untouched) is only skimmed, and would reach every subscriber's
//!   `JSON.parse` at any depth.
//! * **Lone surrogates are repaired, not fatal.** JavaScript strings may hold unpaired UTF-16
//!   surrogates, and `JSON.stringify` writes them as `\ud800`-style escapes, which serde_json
//!   (rightly) refuses as not Unicode. Refusing the whole frame would lose its `ref`, so the
//!   client would wait for a reply that never comes; instead each unpaired surrogate escape
//!   becomes U+FFFD, as a browser's `TextEncoder` does, and the frame is read.

use std::borrow::Cow;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// Client JSON that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonInputError {
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Refuses JSON nested deeper than [`MAX_DEPTH`] (a scan of the bytes, strings skipped; it does
/// not validate anything else).
pub fn check_depth(json: &[u8]) -> Result<(), JsonInputError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonInputError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `text` with every unpaired surrogate escape (`\ud800`…`\udfff` without its partner)
/// replaced by `\ufffd`; `None` when there is none.
pub fn repair_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let escape_at = |i: usize| -> Option<u16> {
        let hex = bytes.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let is_high = |unit: u16| (0xD800..0xDC00).contains(&unit);
    let is_low = |unit: u16| (0xDC00..0xE000).contains(&unit);
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if let Some(unit) = escape_at(i) {
                    let paired = is_high(unit) && escape_at(i + 6).is_some_and(is_low);
                    if paired {
                        i += 12;
                        continue;
                    }
                    if is_high(unit) || is_low(unit) {
                        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                        out.push_str(&text[copied..i]);
                        out.push_str("\\ufffd");
                        i += 6;
                        copied = i;
                        continue;
                    }
                }
                // Any other escape: skip the escaped character.
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// `text` ready for serde_json under both rules of the module docs: refused when too deep,
/// borrowed as it is unless a lone surrogate needed repair.
pub fn prepare(text: &str) -> Result<Cow<'_, str>, JsonInputError> {
    check_depth(text.as_bytes())?;
    Ok(match repair_lone_surrogates(text) {
        Some(repaired) => Cow::Owned(repaired),
        None => Cow::Borrowed(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn nesting_past_the_limit_is_refused_and_strings_do_not_count() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_depth(deep(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(
            check_depth(deep(MAX_DEPTH + 1).as_bytes()),
            Err(JsonInputError::TooDeep)
        );
        assert_eq!(
            check_depth(deep(100_000).as_bytes()),
            Err(JsonInputError::TooDeep)
        );
        let brackets_in_strings = format!("[\"{}\", \"\\\"{}\"]", "[".repeat(500), "{".repeat(500));
        assert_eq!(check_depth(brackets_in_strings.as_bytes()), Ok(()));
        assert_eq!(
            prepare(&format!("{{\"a\":{}}}", deep(200))),
            Err(JsonInputError::TooDeep)
        );
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(repair_lone_surrogates(r#"{"a":"x"}"#), None);
        // A proper pair stays.
        assert_eq!(repair_lone_surrogates(r#"["\ud83d\ude00"]"#), None);
        assert_eq!(
            repair_lone_surrogates(r#"["\ud800", "\uDC00x", "a\ud83d"]"#).unwrap(),
            r#"["\ufffd", "\ufffdx", "a\ufffd"]"#
        );
        // An escaped backslash before `u` is not an escape.
        assert_eq!(repair_lone_surrogates(r#"["\\ud800"]"#), None);
        let text = prepare(r#"{"ref":"7","p":"\ud800!"}"#).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["ref"], "7");
        assert_eq!(value["p"], "\u{fffd}!");
        assert!(matches!(prepare("{\"a\": 1}"), Ok(Cow::Borrowed(_))));
    }
}
