//! Writing JSON by hand into byte buffers: the frame encoders of every protocol build their
//! frames around payloads they never re-serialize, so they write the JSON around them with
//! these few primitives (string literals, optional strings, values) and check client JSON
//! without building it.

use serde_json::Value;

/// Whether `bytes` are one valid JSON value (one pass, nothing built).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// A JSON string literal. Writing into a `Vec` cannot fail, and a `&str` always serializes.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

pub fn write_optional_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON value. A `Value` always serializes (its keys are strings), into a `Vec` without error.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    let _ = serde_json::to_writer(&mut *out, value);
}
