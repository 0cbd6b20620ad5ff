//! Typed comparison of a row value with a filter value, as Postgres would compare them: the
//! engine behind [`super::filter`]'s conditions.
//!
//! A condition compares like Postgres would, by the column's type name from the change event
//! ([`Column`]), on the typed JSON the CDC emits:
//!
//! | column type | compared as |
//! | --- | --- |
//! | `int2`, `int4`, `int8`, `oid`, `xid`, `cid`, `xid8` | integers (exact; the filter value must fit the type) |
//! | `numeric`, `decimal` | exact decimals (`10.50` = `10.5`, exponents accepted in the filter, `NaN` above everything) |
//! | `float4`, `float8` | `f64`, with Postgres' order (`NaN` equal to itself and above `Infinity`) |
//! | `bool` | `true`/`false` (filter: `true`, `false`, `t`, `f`, `yes`, `no`, `on`, `off`, `1`, `0`) |
//! | `uuid` | 128-bit values (case and hyphens do not matter) |
//! | `timestamptz` | instants (`2026-01-30T10:15:23.5+00:00` = `2026-01-30 10:15:23.5Z` = `2026-01-30 12:15:23.5+02`); a value without offset is UTC |
//! | `timestamp`, `date`, `time` | date-times / days / times of day (an offset in the filter is ignored, as Postgres does) |
//! | `json`, `jsonb` | JSON equality, for `eq`, `neq`, `in` only |
//! | `text`, `varchar`, `name`, enums, everything else | the text, byte for byte; `lt`/`gt` compare bytes (UTF-8 order), **not** the database collation, and enums compare by label, not declaration order |
//! | `bpchar` / `citext` / `bytea` | text ignoring trailing spaces / case / hex case |
//! | arrays (`_int4`, ...) | not supported: never match, and [`Filter::check_types`] says so |
//!
//! A type name this table does not know (a domain, an extension type) is compared by the shape
//! of the row's value: integers, floats, booleans, strings or JSON, as above.
//!
//! SQL's three-valued logic applies: a JSON `null` never equals anything (only `is.null`
//! matches it) and `not.` of an unknown result is still unknown, so neither `eq` nor `not.eq`
//! matches a null. A column absent from the row (a DELETE's `old_record` holds only the key
//! unless the table has `REPLICA IDENTITY FULL`) matches nothing. A filter value that does not
//! convert to the column's type (`id=eq.abc` on `int4`), where Postgres would raise an error,
//! matches nothing; [`Filter::check_types`] reports it once the gateway knows the column types.
//!
//! Evaluation does no I/O and allocates only for `citext`/`bytea` folding and `json` values;
//! filter values are converted on each call (microseconds at most; usually nanoseconds).

//!
//! [`Filter::check_types`]: super::filter::Filter::check_types
//! [`Column`]: nself_realtime_shared::event::Column

use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// How a column's values compare, from its type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integers within these bounds.
    Integer(i128, i128),
    Numeric,
    Float,
    Bool,
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
    Time,
    Json,
    Text(Fold),
    Array,
    /// A type not known here: compared by the row value's JSON shape.
    Other,
}

/// How text is normalized before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Exact,
    /// `bpchar`: trailing spaces do not count.
    TrailingSpaces,
    /// `citext`.
    Case,
    /// `bytea`'s `\x` hex.
    AsciiCase,
}

impl Fold {
    fn apply(self, text: &str) -> Cow<'_, str> {
        match self {
            Fold::Exact => Cow::Borrowed(text),
            Fold::TrailingSpaces => Cow::Borrowed(text.trim_end_matches(' ')),
            Fold::Case => Cow::Owned(text.to_lowercase()),
            Fold::AsciiCase => Cow::Owned(text.to_ascii_lowercase()),
        }
    }
}

impl Kind {
    pub fn of(type_name: &str) -> Kind {
        match type_name {
            "int2" | "smallint" => Kind::Integer(i16::MIN.into(), i16::MAX.into()),
            "int4" | "integer" | "int" => Kind::Integer(i32::MIN.into(), i32::MAX.into()),
            "int8" | "bigint" => Kind::Integer(i64::MIN.into(), i64::MAX.into()),
            "oid" | "xid" | "cid" => Kind::Integer(0, u32::MAX.into()),
            "xid8" => Kind::Integer(0, u64::MAX.into()),
            "numeric" | "decimal" => Kind::Numeric,
            "float4" | "float8" | "real" | "double precision" => Kind::Float,
            "bool" | "boolean" => Kind::Bool,
            "uuid" => Kind::Uuid,
            "timestamptz" | "timestamp with time zone" => Kind::Timestamptz,
            "timestamp" | "timestamp without time zone" => Kind::Timestamp,
            "date" => Kind::Date,
            "time" | "time without time zone" => Kind::Time,
            "json" | "jsonb" => Kind::Json,
            "bpchar" | "character" => Kind::Text(Fold::TrailingSpaces),
            "citext" => Kind::Text(Fold::Case),
            "bytea" => Kind::Text(Fold::AsciiCase),
            name if name.starts_with('_') => Kind::Array,
            _ => Kind::Other,
        }
    }

    /// For [`Kind::Other`], the kind the row value's shape calls for.
    fn resolve(self, value: &Value) -> Kind {
        match (self, value) {
            (Kind::Other, Value::Number(n)) if n.is_f64() => Kind::Float,
            (Kind::Other, Value::Number(_)) => Kind::Integer(i128::MIN, i128::MAX),
            (Kind::Other, Value::Bool(_)) => Kind::Bool,
            (Kind::Other, Value::String(_)) => Kind::Text(Fold::Exact),
            (Kind::Other, Value::Array(_) | Value::Object(_)) => Kind::Json,
            (kind, _) => kind,
        }
    }

    /// Whether a filter value converts to this kind.
    pub fn accepts(self, text: &str) -> bool {
        match self {
            Kind::Integer(min, max) => parse_integer(text, min, max).is_some(),
            Kind::Numeric => Decimal::parse(text).is_some(),
            Kind::Float => parse_float(text).is_some(),
            Kind::Bool => parse_bool(text).is_some(),
            Kind::Uuid => parse_uuid(text).is_some(),
            Kind::Timestamptz => parse_moment(text, MomentKind::Instant).is_some(),
            Kind::Timestamp => parse_moment(text, MomentKind::Local).is_some(),
            Kind::Date => parse_moment(text, MomentKind::Day).is_some(),
            Kind::Time => parse_time_of_day(text).is_some(),
            Kind::Json => serde_json::from_str::<Value>(text).is_ok(),
            Kind::Array => false,
            Kind::Text(_) | Kind::Other => true,
        }
    }
}

/// The outcome of comparing a row value with a filter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ordered(Ordering),
    /// Values with equality but no order (JSON).
    Unordered {
        equal: bool,
    },
}

/// Compares a (non-null) row value with a filter value as `kind`; `None` when either does not
/// convert.
pub fn compare(kind: Kind, row: &Value, text: &str) -> Option<Order> {
    let ordered = |o: Ordering| Some(Order::Ordered(o));
    match kind.resolve(row) {
        Kind::Integer(min, max) => {
            let row = match row {
                Value::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))?,
                Value::String(s) => parse_integer(s, i128::MIN, i128::MAX)?,
                _ => return None,
            };
            ordered(row.cmp(&parse_integer(text, min, max)?))
        }
        Kind::Numeric => {
            let owned;
            let row = match row {
                Value::String(s) => s.as_str(),
                Value::Number(n) => {
                    owned = n.to_string();
                    owned.as_str()
                }
                _ => return None,
            };
            ordered(Decimal::parse(row)?.cmp(&Decimal::parse(text)?))
        }
        Kind::Float => {
            let row = match row {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => parse_float(s)?,
                _ => return None,
            };
            ordered(float_order(row, parse_float(text)?))
        }
        Kind::Bool => {
            let row = match row {
                Value::Bool(b) => *b,
                Value::String(s) => parse_bool(s)?,
                _ => return None,
            };
            ordered(row.cmp(&parse_bool(text)?))
        }
        Kind::Uuid => ordered(parse_uuid(row.as_str()?)?.cmp(&parse_uuid(text)?)),
        Kind::Timestamptz => moments(row, text, MomentKind::Instant),
        Kind::Timestamp => moments(row, text, MomentKind::Local),
        Kind::Date => moments(row, text, MomentKind::Day),
        Kind::Time => ordered(parse_time_of_day(row.as_str()?)?.cmp(&parse_time_of_day(text)?)),
        Kind::Json => {
            let wanted: Value = serde_json::from_str(text).ok()?;
            Some(Order::Unordered {
                equal: *row == wanted,
            })
        }
        Kind::Text(fold) => ordered(fold.apply(row.as_str()?).cmp(&fold.apply(text))),
        Kind::Array | Kind::Other => None,
    }
}

fn moments(row: &Value, text: &str, kind: MomentKind) -> Option<Order> {
    let row = parse_moment(row.as_str()?, kind)?;
    Some(Order::Ordered(row.cmp(&parse_moment(text, kind)?)))
}

/// Postgres input functions ignore surrounding whitespace.
fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
}

fn parse_integer(text: &str, min: i128, max: i128) -> Option<i128> {
    let t = trim(text);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i128>().ok().filter(|n| (min..=max).contains(n))
}

fn parse_float(text: &str) -> Option<f64> {
    let t = trim(text);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let negative = t.starts_with('-');
    if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if unsigned.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let numeric = !unsigned.is_empty()
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !numeric {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Postgres' float order: `NaN` equals itself and sorts above everything, `-0` equals `0`.
fn float_order(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match trim(text).to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// 32 hex digits, optionally hyphenated after any group of four, optionally in braces.
fn parse_uuid(text: &str) -> Option<u128> {
    let t = trim(text);
    let t = match t.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => t,
    };
    let (mut value, mut digits, mut hyphen_ok) = (0u128, 0u32, false);
    for b in t.bytes() {
        if b == b'-' {
            if !hyphen_ok {
                return None;
            }
            hyphen_ok = false;
            continue;
        }
        let digit = char::from(b).to_digit(16)?;
        if digits == 32 {
            return None;
        }
        value = (value << 4) | u128::from(digit);
        digits += 1;
        hyphen_ok = digits % 4 == 0 && digits < 32;
    }
    (digits == 32 && !t.ends_with('-')).then_some(value)
}

/// An exact decimal, borrowed from its text: `0.<digits> × 10^exponent` with no leading or
/// trailing zero digits (`int` then `frac` hold the digits, split where the text had its
/// point), or one of numeric's special values.
#[derive(Debug, Clone, Copy)]
enum Decimal<'a> {
    NegInfinity,
    Finite {
        negative: bool,
        exponent: i64,
        int: &'a [u8],
        frac: &'a [u8],
    },
    Infinity,
    NaN,
}

/// Largest exponent accepted in a filter value (`1e1000000`); beyond, the text is refused.
const MAX_EXPONENT_DIGITS: usize = 9;

impl<'a> Decimal<'a> {
    /// Postgres numeric text (`-12.340`, `.5`, `1e-3`, `NaN`, `Infinity`), surrounding
    /// whitespace ignored.
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let t = trim(text);
        let negative = t.starts_with('-');
        let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
        if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
            return Some(if negative {
                Decimal::NegInfinity
            } else {
                Decimal::Infinity
            });
        }
        if t.eq_ignore_ascii_case("nan") {
            return Some(Decimal::NaN);
        }
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => {
                let e = &unsigned[at + 1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > MAX_EXPONENT_DIGITS
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                (&unsigned[..at], e.parse::<i64>().ok()?)
            }
            None => (unsigned, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let mut int = int.trim_start_matches('0').as_bytes();
        let mut frac = frac.as_bytes();
        let exponent = if int.is_empty() {
            let zeros = frac.iter().take_while(|&&b| b == b'0').count();
            frac = &frac[zeros..];
            exponent - zeros as i64
        } else {
            exponent + int.len() as i64
        };
        while let [rest @ .., b'0'] = frac {
            frac = rest;
        }
        if frac.is_empty() {
            while let [rest @ .., b'0'] = int {
                int = rest;
            }
        }
        if int.is_empty() && frac.is_empty() {
            return Some(Decimal::Finite {
                negative: false,
                exponent: 0,
                int,
                frac,
            });
        }
        Some(Decimal::Finite {
            negative,
            exponent,
            int,
            frac,
        })
    }

    /// Position in numeric's order: -Infinity, negatives, zero, positives, Infinity, NaN.
    fn rank(&self) -> u8 {
        match self {
            Decimal::NegInfinity => 0,
            Decimal::Finite { negative: true, .. } => 1,
            Decimal::Finite { int, frac, .. } if int.is_empty() && frac.is_empty() => 2,
            Decimal::Finite { .. } => 3,
            Decimal::Infinity => 4,
            Decimal::NaN => 5,
        }
    }

    fn cmp(&self, other: &Decimal<'_>) -> Ordering {
        let (rank, other_rank) = (self.rank(), other.rank());
        if rank != other_rank {
            return rank.cmp(&other_rank);
        }
        match (self, other) {
            (
                Decimal::Finite {
                    negative,
                    exponent: e1,
                    int: i1,
                    frac: f1,
                },
                Decimal::Finite {
                    exponent: e2,
                    int: i2,
                    frac: f2,
                    ..
                },
            ) => {
                let magnitude = e1
                    .cmp(e2)
                    .then_with(|| i1.iter().chain(*f1).cmp(i2.iter().chain(*f2)));
                if *negative {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
            _ => Ordering::Equal,
        }
    }
}

/// How a date/time text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MomentKind {
    /// `timestamptz`: the offset counts; none means UTC.
    Instant,
    /// `timestamp`: the offset is ignored.
    Local,
    /// `date`: the day; a time and offset are ignored.
    Day,
}

/// A point in time, or Postgres' `-infinity` / `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    NegInfinity,
    /// Nanoseconds since 1970-01-01 00:00 (UTC for instants), or days for dates.
    At(i128),
    Infinity,
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;
/// The Julian day of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i128 = 2_440_588;

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]]][ ][Z|UTC|GMT|±HH[[:]MM[[:]SS]]]`, `epoch`,
/// `infinity`, `-infinity`. Fractions are rounded to microseconds, as Postgres stores them.
fn parse_moment(text: &str, kind: MomentKind) -> Option<Moment> {
    let t = trim(text);
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        return Some(Moment::Infinity);
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return Some(Moment::NegInfinity);
    }
    if t.eq_ignore_ascii_case("epoch") {
        return Some(Moment::At(0));
    }
    let b = t.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let year = i32::try_from(number(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
    let day = u8::try_from(number(8..10)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let days = i128::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY;
    let rest = &t[10..];
    let (nanos, offset) = if rest.is_empty() {
        (0, 0)
    } else {
        let rest = rest.strip_prefix([' ', 'T', 't'])?.trim_start();
        let (nanos, used) = parse_clock(rest.as_bytes())?;
        let zone = rest[used..].trim_start();
        let offset = if zone.is_empty() {
            0
        } else {
            parse_zone(zone)?
        };
        (nanos, offset)
    };
    Some(Moment::At(match kind {
        MomentKind::Day => days,
        MomentKind::Local => days * NANOS_PER_DAY + nanos,
        MomentKind::Instant => days * NANOS_PER_DAY + nanos - offset * NANOS_PER_SECOND,
    }))
}

/// `HH:MM[:SS[.fraction]]` at the start of `b`: nanoseconds since midnight (up to 24:00:00,
/// fraction rounded to microseconds) and the bytes used.
fn parse_clock(b: &[u8]) -> Option<(i128, usize)> {
    let two = |at: usize| -> Option<i128> {
        let d = b.get(at..at + 2)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| i128::from((d[0] - b'0') * 10 + (d[1] - b'0')))
    };
    let hour = two(0)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let minute = two(3)?;
    let mut used = 5;
    let (mut second, mut micros) = (0, 0);
    if b.get(5) == Some(&b':') {
        second = two(6)?;
        used = 8;
        if b.get(8) == Some(&b'.') {
            let digits = b[9..].iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            let fraction = &b[9..9 + digits];
            let mut scaled = 0;
            for position in 0..6 {
                scaled = scaled * 10 + fraction.get(position).map_or(0, |d| i128::from(d - b'0'));
            }
            micros = scaled + i128::from(fraction.get(6).is_some_and(|d| *d >= b'5'));
            used = 9 + digits;
        }
    }
    if minute > 59 || second > 59 || hour > 24 || (hour == 24 && minute + second + micros > 0) {
        return None;
    }
    let nanos = ((hour * 60 + minute) * 60 + second) * NANOS_PER_SECOND + micros * 1000;
    Some((nanos, used))
}

/// `Z`, `UTC`, `GMT`, `±HH`, `±HHMM`, `±HH:MM`, `±HH:MM:SS`, `±HHMMSS`: seconds east of UTC.
fn parse_zone(zone: &str) -> Option<i128> {
    if ["z", "utc", "gmt"]
        .iter()
        .any(|name| zone.eq_ignore_ascii_case(name))
    {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = zone[1..].bytes().filter(|&b| b != b':').collect();
    let colons_ok = match zone.len() - 1 - digits.len() {
        0 => true,
        n => zone[1..].split(':').all(|part| part.len() == 2) && n <= 2,
    };
    if !colons_ok || !matches!(digits.len(), 2 | 4 | 6) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let part = |at: usize| {
        digits
            .get(at..at + 2)
            .map_or(0, |d| i128::from((d[0] - b'0') * 10 + (d[1] - b'0')))
    };
    let (hours, minutes, seconds) = (part(0), part(2), part(4));
    if hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * ((hours * 60 + minutes) * 60 + seconds))
}

/// A `time` value (`HH:MM[:SS[.f]]`, an offset ignored): nanoseconds since midnight.
fn parse_time_of_day(text: &str) -> Option<i128> {
    let t = trim(text);
    let (nanos, used) = parse_clock(t.as_bytes())?;
    let zone = t[used..].trim_start();
    (zone.is_empty() || parse_zone(zone).is_some()).then_some(nanos)
}

/// SQL `LIKE` (and `ILIKE` when `case_insensitive`): `%` matches any text, `_` one character,
/// `\` makes the next character literal; the whole text must match.
pub fn like(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Literal(char),
    }
    let fold = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let mut tokens = Vec::new();
    let mut chars = fold(pattern).into_iter();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            c => Token::Literal(c),
        });
    }
    let text = fold(text);
    // Two pointers; on a mismatch, go back to just after the last `%` and let it take one more
    // character. Linear in practice, never exponential.
    let (mut t, mut p) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                resume = Some((p, t));
                p += 1;
            }
            Some(Token::One) => (t, p) = (t + 1, p + 1),
            Some(Token::Literal(c)) if *c == text[t] => (t, p) = (t + 1, p + 1),
            _ => match resume {
                Some((star, from)) => {
                    resume = Some((star, from + 1));
                    (t, p) = (from + 1, star + 1);
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|token| *token == Token::Any)
}
