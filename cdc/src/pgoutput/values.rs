//! Column values to typed JSON: the text Postgres sends for a value, plus the [`Conversion`] its
//! column type calls for ([`super::types::TypeCache::conversion`] picks it), becomes a
//! [`serde_json::Value`] of the change event.
//!
//! The rules are the event contract of DESIGN.md, made exact:
//!
//! | type | JSON |
//! | --- | --- |
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid`, `xid`, `cid` | exact numbers (never through `f64`) |
//! | `float4`, `float8` | numbers; `NaN`, `Infinity`, `-Infinity` as those strings |
//! | `numeric`, `money` | the exact text, a string |
//! | `json`, `jsonb` | the nested value |
//! | `timestamptz` | `2026-01-30T10:15:23.123456+00:00` (Postgres' precision, offset `±HH:MM`) |
//! | `timestamp` | `2026-01-30T10:15:23.123456` |
//! | `bytea` | `\x` and lower-case hex, as Postgres prints it |
//! | arrays | nested JSON arrays of typed elements, `NULL` elements as `null` |
//! | everything else (text, uuid, date, time, interval, enums, ranges, ...) | its text |
//!
//! Conversion never fails: text that does not parse as its type promises (which a correctly
//! configured connection never sends) is passed on as a string, so one odd value cannot stop the
//! stream. The text forms above assume the replication session settings that
//! [`REQUIRED_SESSION_SETTINGS`] lists.
//!
//! JSON numbers inside `json`/`jsonb` are parsed by `serde_json` without `arbitrary_precision`:
//! integers that fit `i64`/`u64` stay exact, any other number becomes the nearest `f64` (so
//! `12345678901234567890123` or `0.10000000000000000001` lose digits). Enabling
//! `arbitrary_precision` would change `serde_json::Value` for the whole workspace, so we accept
//! this and keep `numeric` columns, where exactness matters most, as strings.

use serde_json::{Number, Value};
use std::borrow::Cow;

/// The session settings the replication (walsender) connection must use, because pgoutput sends
/// values in the text forms these settings choose. `pg_logical_slot_get_binary_changes` uses the
/// calling session's settings, which is how the tests pin them.
///
/// * `DateStyle=ISO`: `2026-01-30 10:15:23+00`, which [`Conversion::Timestamptz`] reshapes;
/// * `TimeZone=UTC`: offsets are `+00`, and no historical offsets with seconds appear;
/// * `IntervalStyle=postgres`: `1 day 02:00:00`, what `to_json` and PostgREST give by default;
/// * `extra_float_digits=3`: shortest exact float text (Postgres 12+ does this for any value
///   above 0; 3 is also exact on older servers);
/// * `bytea_output=hex`: `\x...` (escape-format text is converted to hex anyway);
/// * `client_encoding=UTF8`: names and values arrive as UTF-8 (tokio-postgres sets this).
pub const REQUIRED_SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

/// How a column's text becomes JSON; chosen once per column from its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// `t`/`f` → `true`/`false`.
    Bool,
    /// Integers → exact JSON numbers.
    Integer,
    /// Floats → JSON numbers, non-finite values → strings.
    Float,
    /// Nested JSON.
    Json,
    /// ISO text with `T` and a `±HH:MM` offset.
    Timestamptz,
    /// ISO text with `T`.
    Timestamp,
    /// `\x` hex.
    Bytea,
    /// A Postgres array literal → nested JSON arrays. `delimiter` is the element type's
    /// `typdelim` (`,` for everything built in except `box`, which uses `;`).
    Array {
        element: Box<Conversion>,
        delimiter: u8,
    },
    /// The text as a JSON string (numeric, text, uuid, enums, dates, ...).
    Text,
}

/// Converts one value sent in text format.
pub fn text_to_json(conversion: &Conversion, text: &[u8]) -> Value {
    match conversion {
        Conversion::Bool => match text {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => string(text),
        },
        Conversion::Integer => integer(text),
        Conversion::Float => float(text),
        Conversion::Json => serde_json::from_slice(text).unwrap_or_else(|_| string(text)),
        Conversion::Timestamptz => timestamp(text, true),
        Conversion::Timestamp => timestamp(text, false),
        Conversion::Bytea => bytea(text),
        Conversion::Array { element, delimiter } => {
            ArrayParser::parse(text, element, *delimiter).unwrap_or_else(|| string(text))
        }
        Conversion::Text => string(text),
    }
}

/// Converts one value sent in binary format (which the CDC never requests): its bytes as a
/// `\x` hex string, whatever the type.
pub fn binary_to_json(bytes: &[u8]) -> Value {
    Value::String(hex(bytes))
}

fn string(text: &[u8]) -> Value {
    Value::String(match std::str::from_utf8(text) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(text).into_owned(),
    })
}

fn integer(text: &[u8]) -> Value {
    let Ok(s) = std::str::from_utf8(text) else {
        return string(text);
    };
    if let Ok(n) = s.parse::<i64>() {
        Value::Number(n.into())
    } else if let Ok(n) = s.parse::<u64>() {
        Value::Number(n.into())
    } else {
        Value::String(s.to_owned())
    }
}

fn float(text: &[u8]) -> Value {
    let Ok(s) = std::str::from_utf8(text) else {
        return string(text);
    };
    // Rust's parser is correctly rounded, and Postgres' shortest-exact text of a float4 reads
    // back as the f64 with the same shortest text, so `1.1::float4` stays `1.1`.
    let numeric = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    match s
        .parse::<f64>()
        .ok()
        .filter(|_| numeric)
        .and_then(Number::from_f64)
    {
        Some(n) => Value::Number(n),
        None => Value::String(s.to_owned()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// `bytea` text: hex format passes through; escape format (`bytea_output=escape`) is decoded
/// and re-encoded as hex so the event is the same whatever the server's setting.
fn bytea(text: &[u8]) -> Value {
    if text.starts_with(b"\\x") {
        return string(text);
    }
    let mut raw = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match (text[i], text.get(i + 1..i + 4)) {
            (b'\\', Some(&[a, b, c]))
                if (b'0'..=b'3').contains(&a)
                    && (b'0'..=b'7').contains(&b)
                    && (b'0'..=b'7').contains(&c) =>
            {
                raw.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            (b'\\', _) if text.get(i + 1) == Some(&b'\\') => {
                raw.push(b'\\');
                i += 2;
            }
            (b'\\', _) => return string(text),
            (byte, _) => {
                raw.push(byte);
                i += 1;
            }
        }
    }
    Value::String(hex(&raw))
}

/// `YYYY-MM-DD HH:MM:SS[.f+][±HH[:MM[:SS]]]` → the same with `T` and, with a zone, `±HH:MM`.
/// Anything else (`infinity`, BC dates, years past 9999) is kept as its text.
fn timestamp(text: &[u8], with_zone: bool) -> Value {
    let Ok(s) = std::str::from_utf8(text) else {
        return string(text);
    };
    let shaped = |at: usize, c: u8| text.get(at).is_some_and(|&b| b == c);
    let digits = |range: std::ops::Range<usize>| {
        text.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let iso = digits(0..4)
        && shaped(4, b'-')
        && digits(5..7)
        && shaped(7, b'-')
        && digits(8..10)
        && shaped(10, b' ')
        && digits(11..13)
        && shaped(13, b':')
        && digits(14..16)
        && shaped(16, b':')
        && digits(17..19);
    if !iso {
        return Value::String(s.to_owned());
    }
    let mut end = 19;
    if shaped(end, b'.') {
        end += 1;
        while text.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    let (date, time, zone) = (&s[..10], &s[11..end], &s[end..]);
    if !with_zone {
        return if zone.is_empty() {
            Value::String(format!("{date}T{time}"))
        } else {
            Value::String(s.to_owned())
        };
    }
    let z = zone.as_bytes();
    let offset_shape = z.len() >= 3
        && matches!(z[0], b'+' | b'-')
        && z[1..3].iter().all(u8::is_ascii_digit)
        && match z.len() {
            3 => true,
            6 | 9 => z[3..]
                .chunks(3)
                .all(|c| c[0] == b':' && c[1..].iter().all(u8::is_ascii_digit)),
            _ => false,
        };
    match (offset_shape, z.len()) {
        (true, 3) => Value::String(format!("{date}T{time}{zone}:00")),
        (true, _) => Value::String(format!("{date}T{time}{zone}")),
        (false, _) => Value::String(s.to_owned()),
    }
}

/// Postgres' array output (`array_out`): an optional `[lo:hi]...=` dimension prefix, then
/// `{...}` with elements separated by the delimiter, nested braces for more dimensions,
/// unquoted `NULL` for null, and double-quoted elements with backslash escapes.
struct ArrayParser<'a> {
    text: &'a [u8],
    at: usize,
    element: &'a Conversion,
    delimiter: u8,
}

/// Postgres' `MAXDIM`.
const MAX_ARRAY_DEPTH: usize = 6;

impl<'a> ArrayParser<'a> {
    /// `None` when the text is not a well-formed array literal.
    fn parse(text: &'a [u8], element: &'a Conversion, delimiter: u8) -> Option<Value> {
        let mut p = ArrayParser {
            text,
            at: 0,
            element,
            delimiter,
        };
        if p.peek() == Some(b'[') {
            // Lower bounds other than 1: JSON arrays have none, so the prefix is dropped.
            let eq = text.iter().position(|&b| b == b'=')?;
            let prefix = &text[..eq];
            if !prefix
                .iter()
                .all(|&b| b.is_ascii_digit() || matches!(b, b'[' | b']' | b':' | b'-'))
            {
                return None;
            }
            p.at = eq + 1;
        }
        let value = p.array(1)?;
        p.skip_space();
        (p.at == text.len()).then_some(value)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_ARRAY_DEPTH {
            return None;
        }
        self.skip_space();
        if self.peek()? != b'{' {
            return None;
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.skip_space();
            let item = match self.peek()? {
                b'{' => self.array(depth + 1)?,
                b'"' => {
                    let text = self.quoted()?;
                    text_to_json(self.element, &text)
                }
                _ => self.unquoted()?,
            };
            items.push(item);
            self.skip_space();
            match self.peek()? {
                b'}' => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                b if b == self.delimiter => self.at += 1,
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<Cow<'a, [u8]>> {
        self.at += 1;
        let start = self.at;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            match self.peek()? {
                b'"' => {
                    let plain = &self.text[start..self.at];
                    self.at += 1;
                    return Some(owned.map_or(Cow::Borrowed(plain), Cow::Owned));
                }
                b'\\' => {
                    let buf = owned.get_or_insert_with(|| self.text[start..self.at].to_vec());
                    buf.push(*self.text.get(self.at + 1)?);
                    self.at += 2;
                }
                b => {
                    if let Some(buf) = owned.as_mut() {
                        buf.push(b);
                    }
                    self.at += 1;
                }
            }
        }
    }

    fn unquoted(&mut self) -> Option<Value> {
        let start = self.at;
        let mut owned: Option<Vec<u8>> = None;
        while let Some(b) = self.peek() {
            if b == self.delimiter || b == b'}' {
                break;
            }
            if matches!(b, b'{' | b'"') {
                return None;
            }
            if b == b'\\' {
                let buf = owned.get_or_insert_with(|| self.text[start..self.at].to_vec());
                buf.push(*self.text.get(self.at + 1)?);
                self.at += 2;
                continue;
            }
            if let Some(buf) = owned.as_mut() {
                buf.push(b);
            }
            self.at += 1;
        }
        let raw: Cow<'_, [u8]> =
            owned.map_or(Cow::Borrowed(&self.text[start..self.at]), Cow::Owned);
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return None;
        }
        if trimmed.eq_ignore_ascii_case(b"NULL") && !raw.contains(&b'\\') {
            return Some(Value::Null);
        }
        Some(text_to_json(self.element, trimmed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(c: &Conversion, text: &str) -> Value {
        text_to_json(c, text.as_bytes())
    }

    fn array_of(c: Conversion) -> Conversion {
        Conversion::Array {
            element: Box::new(c),
            delimiter: b',',
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(conv(&Conversion::Bool, "t"), json!(true));
        assert_eq!(conv(&Conversion::Bool, "f"), json!(false));
        assert_eq!(conv(&Conversion::Integer, "-32768"), json!(-32768));
        assert_eq!(
            conv(&Conversion::Integer, "9223372036854775807"),
            json!(i64::MAX)
        );
        assert_eq!(
            conv(&Conversion::Integer, "4294967295"),
            json!(4_294_967_295u32)
        );
        assert_eq!(conv(&Conversion::Integer, "x"), json!("x"));
        assert_eq!(conv(&Conversion::Float, "1.1"), json!(1.1));
        assert_eq!(conv(&Conversion::Float, "-1.5e-300"), json!(-1.5e-300));
        assert_eq!(conv(&Conversion::Float, "1e+308"), json!(1e308));
        for special in ["NaN", "Infinity", "-Infinity"] {
            assert_eq!(conv(&Conversion::Float, special), json!(special));
        }
        // Rust would read "inf" and "+infinity" as floats; Postgres never sends them, but if
        // it did they must not become numbers.
        assert_eq!(conv(&Conversion::Float, "inf"), json!("inf"));
        assert_eq!(
            conv(&Conversion::Text, "12345678901234567890.000000000000000001"),
            json!("12345678901234567890.000000000000000001")
        );
        assert_eq!(conv(&Conversion::Text, "héllo ✓"), json!("héllo ✓"));
        assert_eq!(
            text_to_json(&Conversion::Text, b"a\xffb"),
            json!("a\u{fffd}b")
        );
        assert_eq!(binary_to_json(&[0, 0xab]), json!("\\x00ab"));
    }

    #[test]
    fn json_is_nested_and_bad_json_is_text() {
        assert_eq!(
            conv(
                &Conversion::Json,
                r#"{"a": [1, 2.5, null, "x"], "b": {"c": true}}"#
            ),
            json!({"a": [1, 2.5, null, "x"], "b": {"c": true}})
        );
        assert_eq!(
            conv(&Conversion::Json, "18446744073709551615"),
            json!(u64::MAX)
        );
        assert_eq!(conv(&Conversion::Json, "{oops"), json!("{oops"));
    }

    #[test]
    fn timestamps_become_iso_8601() {
        let tz = Conversion::Timestamptz;
        assert_eq!(
            conv(&tz, "2026-01-30 10:15:23.123456+00"),
            json!("2026-01-30T10:15:23.123456+00:00")
        );
        assert_eq!(
            conv(&tz, "2026-01-30 10:15:23+05:30"),
            json!("2026-01-30T10:15:23+05:30")
        );
        assert_eq!(
            conv(&tz, "1890-01-30 10:15:23-00:53:28"),
            json!("1890-01-30T10:15:23-00:53:28")
        );
        for kept in [
            "infinity",
            "-infinity",
            "0044-03-15 12:00:00+00 BC",
            "12026-01-30 10:15:23+00",
            "2026-01-30 10:15:23+0",
        ] {
            assert_eq!(conv(&tz, kept), json!(kept));
        }
        let ts = Conversion::Timestamp;
        assert_eq!(
            conv(&ts, "2026-01-30 10:15:23.5"),
            json!("2026-01-30T10:15:23.5")
        );
        assert_eq!(
            conv(&ts, "2026-01-30 10:15:23"),
            json!("2026-01-30T10:15:23")
        );
        assert_eq!(
            conv(&ts, "0044-03-15 12:00:00 BC"),
            json!("0044-03-15 12:00:00 BC")
        );
    }

    #[test]
    fn bytea_is_hex_whatever_the_output_setting() {
        assert_eq!(
            conv(&Conversion::Bytea, "\\xdeadbeef"),
            json!("\\xdeadbeef")
        );
        assert_eq!(
            conv(&Conversion::Bytea, "ab\\000\\\\\\377"),
            json!("\\x6162005cff")
        );
        assert_eq!(conv(&Conversion::Bytea, "bad\\9"), json!("bad\\9"));
    }

    #[test]
    fn arrays() {
        let ints = array_of(Conversion::Integer);
        assert_eq!(conv(&ints, "{1,2,NULL,-3}"), json!([1, 2, null, -3]));
        assert_eq!(conv(&ints, "{}"), json!([]));
        assert_eq!(conv(&ints, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(conv(&ints, "[0:2]={7,8,9}"), json!([7, 8, 9]));
        assert_eq!(conv(&ints, "[1:1][-1:0]={{1,2}}"), json!([[1, 2]]));
        let texts = array_of(Conversion::Text);
        assert_eq!(
            conv(
                &texts,
                r#"{plain,"with space","NULL",NULL,"q\"uote","back\\slash","a,b","{x}",""}"#
            ),
            json!([
                "plain",
                "with space",
                "NULL",
                null,
                "q\"uote",
                "back\\slash",
                "a,b",
                "{x}",
                ""
            ])
        );
        assert_eq!(conv(&texts, "{héllo,✓}"), json!(["héllo", "✓"]));
        let stamps = array_of(Conversion::Timestamptz);
        assert_eq!(
            conv(&stamps, r#"{"2026-01-30 10:15:23+00",infinity}"#),
            json!(["2026-01-30T10:15:23+00:00", "infinity"])
        );
        let boxes = Conversion::Array {
            element: Box::new(Conversion::Text),
            delimiter: b';',
        };
        assert_eq!(
            conv(&boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
            json!(["(1,1),(0,0)", "(2,2),(1,1)"])
        );
        let jsons = array_of(Conversion::Json);
        assert_eq!(
            conv(&jsons, r#"{"{\"a\": 1}",NULL}"#),
            json!([{"a": 1}, null])
        );
    }

    #[test]
    fn malformed_arrays_are_text() {
        let ints = array_of(Conversion::Integer);
        for bad in [
            "",
            "{",
            "{1,2",
            "{1,,2}",
            "{1}x",
            "1 2",
            "[1:2]{1,2}",
            "[a]={1}",
            "{\"1}",
            "{1\\",
            "{{{{{{{1}}}}}}}",
        ] {
            assert_eq!(conv(&ints, bad), json!(bad), "{bad:?}");
        }
        assert_eq!(conv(&ints, "{{{{{{1}}}}}}"), json!([[[[[[1]]]]]]));
    }
}
