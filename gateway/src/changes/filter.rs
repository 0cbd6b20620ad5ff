//! postgres_changes column filters: the `filter` string of a binding, parsed once at join time
//! and evaluated against every change of the table on typed values.
//!
//! realtime-js builds filters with `RealtimePostgresFilterBuilder`: `column=operator.value`,
//! conditions joined by `,` (all must hold), values PostgREST-quoted (`"..."` with `\"` and `\\`)
//! when they contain `,()"\` or surrounding spaces, `in.(a,b,"c,d")`, a `not.` prefix for
//! negation and `is.null` / `is.true` / `is.false`; and PostgREST's text operators `like`,
//! `ilike` (SQL patterns, `*` standing for `%`), `match`, `imatch` (regular expressions, as
//! Postgres' `~` and `~*`) and `isdistinct` (`IS DISTINCT FROM`, null-safe). [`parse`] accepts
//! exactly that and refuses anything else with an error that says what to write instead; the
//! binding's reply echoes the client's own string, so no canonical form is ever printed.
//!
//! # Evaluation
//!
//! [`Filter::matches`] applies SQL's three-valued logic over typed comparisons
//! ([`super::compare`]: how each column type compares, like Postgres would).

use super::compare::{compare, like, Kind, Order};
use nself_realtime_shared::event::Column;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Longest filter string accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Most conditions (`,`-separated) in one filter.
pub const MAX_CONDITIONS: usize = 16;
/// Most values in one `in.(...)` list.
pub const MAX_IN_VALUES: usize = 100;

const SUPPORTED: &str = "eq, neq, lt, lte, gt, gte, in.(a,b,...), is.null, is.true, is.false, \
                         like, ilike, match, imatch, isdistinct, each optionally prefixed by not.";

/// Largest compiled regular expression of a `match` / `imatch` filter, in bytes: a pattern is
/// evaluated on every change of the table, so its size is bounded.
const MAX_REGEX_BYTES: usize = 256 * 1024;

/// PostgREST's operators on text, and `isdistinct`.
const TEXT_OPERATORS: &[&str] = &["like", "ilike", "match", "imatch", "isdistinct"];

/// PostgREST operators realtime filters do not evaluate.
const UNSUPPORTED: &[&str] = &[
    "fts", "plfts", "phfts", "wfts", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj", "all",
    "any",
];

/// A parsed filter: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

/// One `column=[not.]operator.value` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    /// `not.` prefix.
    pub negated: bool,
    pub test: Test,
}

/// What a condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `eq`, `neq`, `lt`, `lte`, `gt`, `gte` with the (unquoted) value text.
    Compare(Op, String),
    /// `in.(...)`: the values; `None` is an unquoted `null` (SQL NULL, which equals nothing),
    /// while a quoted `"null"` is the text.
    In(Vec<Option<String>>),
    /// `is.null` (also `is.unknown`), `is.true`, `is.false`.
    Is(IsValue),
    /// `like` / `ilike`: a SQL pattern (`%` any text, `_` one character, `\` escapes;
    /// PostgREST's `*` stands for `%`), case-insensitive for `ilike`.
    Like {
        pattern: String,
        case_insensitive: bool,
    },
    /// `match` / `imatch`: a regular expression found anywhere in the text (Postgres' `~` and
    /// `~*`).
    Match(Pattern),
    /// `isdistinct`: `IS DISTINCT FROM` the value, never unknown (`None`: `isdistinct.null`,
    /// true for every non-null value).
    IsDistinct(Option<String>),
}

/// A compiled `match` / `imatch` expression; equal when written the same way.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: regex::Regex,
    case_insensitive: bool,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.case_insensitive == other.case_insensitive
    }
}

impl Eq for Pattern {}

impl Pattern {
    fn new(column: &str, source: &str, case_insensitive: bool) -> Result<Pattern, FilterError> {
        regex::RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            .size_limit(MAX_REGEX_BYTES)
            .build()
            .map(|regex| Pattern {
                regex,
                case_insensitive,
            })
            .map_err(|e| FilterError::Regex {
                column: column.to_string(),
                reason: e.to_string(),
            })
    }

    fn op(&self) -> &'static str {
        if self.case_insensitive {
            "imatch"
        } else {
            "match"
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// The operand of `is`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    True,
    False,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
        }
    }

    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            _ => return None,
        })
    }

    /// The result of the operator on a comparison; `None` (unknown) for an ordering operator
    /// on values that have no order.
    fn test(self, order: Order) -> Option<bool> {
        let equal = match order {
            Order::Ordered(o) => o == Ordering::Equal,
            Order::Unordered { equal } => equal,
        };
        match (self, order) {
            (Op::Eq, _) => Some(equal),
            (Op::Neq, _) => Some(!equal),
            (Op::Lt, Order::Ordered(o)) => Some(o == Ordering::Less),
            (Op::Lte, Order::Ordered(o)) => Some(o != Ordering::Greater),
            (Op::Gt, Order::Ordered(o)) => Some(o == Ordering::Greater),
            (Op::Gte, Order::Ordered(o)) => Some(o != Ordering::Less),
            (_, Order::Unordered { .. }) => None,
        }
    }
}

/// Why a filter is refused. The text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the filter is empty; write column=operator.value, e.g. id=eq.1")]
    Empty,
    #[error("the filter is {0} bytes long; at most {MAX_FILTER_BYTES} are allowed")]
    TooLong(usize),
    #[error("the filter has {0} conditions; at most {MAX_CONDITIONS} are allowed")]
    TooManyConditions(usize),
    #[error("condition {0} is empty (a doubled or trailing comma?)")]
    EmptyCondition(usize),
    #[error("{0:?} is not column=operator.value (e.g. id=eq.1)")]
    Syntax(String),
    #[error("{0:?} has no column name before `=`")]
    EmptyColumn(String),
    #[error("the condition on {0:?} has no operator: write {0}=operator.value, e.g. {0}=eq.1")]
    MissingOperator(String),
    #[error("unknown operator {0:?}; supported: {SUPPORTED}")]
    UnknownOperator(String),
    #[error("operator {0:?} is not supported by realtime filters; supported: {SUPPORTED}")]
    Unsupported(String),
    #[error(
        "the condition on {0:?} has an empty value; to compare with the empty string, quote it: \
         \"\""
    )]
    EmptyValue(String),
    #[error("a quoted value is not closed (a `\"` without its closing `\"`)")]
    UnterminatedQuote,
    #[error("unbalanced parentheses")]
    UnbalancedParentheses,
    #[error(
        "unexpected {found:?} in the value of {column:?}; quote values that contain , ( ) \" \
         or \\ (\"a,b\", with \\\" and \\\\ inside)"
    )]
    Unexpected { column: String, found: char },
    #[error("`in` on {0:?} needs a parenthesized list, e.g. {0}=in.(1,2,3)")]
    InList(String),
    #[error("`in` on {column:?} has {count} values; at most {MAX_IN_VALUES} are allowed")]
    TooManyValues { column: String, count: usize },
    #[error("`is` on {column:?} takes null, true, false or unknown, not {value:?}")]
    IsValue { column: String, value: String },
    #[error("column {0:?} does not exist in this table")]
    UnknownColumn(String),
    #[error("{value:?} is not a valid {type_name} for column {column:?}{hint}")]
    InvalidValue {
        column: String,
        type_name: String,
        value: String,
        hint: &'static str,
    },
    #[error("operator {op} cannot be used on column {column:?} of type {type_name}")]
    OperatorType {
        column: String,
        op: &'static str,
        type_name: String,
    },
    #[error("filters on array columns are not supported (column {column:?} is {type_name})")]
    ArrayColumn { column: String, type_name: String },
    #[error("the regular expression on {column:?} is not valid: {reason}")]
    Regex { column: String, reason: String },
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses a filter string as realtime-js sends it (see the module docs).
pub fn parse(filter: &str) -> Result<Filter, FilterError> {
    if filter.len() > MAX_FILTER_BYTES {
        return Err(FilterError::TooLong(filter.len()));
    }
    if filter.trim().is_empty() {
        return Err(FilterError::Empty);
    }
    let parts = split_top_level(filter)?;
    if parts.len() > MAX_CONDITIONS {
        return Err(FilterError::TooManyConditions(parts.len()));
    }
    let conditions = parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            if part.trim().is_empty() {
                Err(FilterError::EmptyCondition(index + 1))
            } else {
                parse_condition(part)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter { conditions })
}

/// Splits on the commas outside quotes and parentheses.
fn split_top_level(filter: &str) -> Result<Vec<&str>, FilterError> {
    let bytes = filter.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut depth, mut quoted, mut i) = (0, 0usize, false, 0);
    while i < bytes.len() {
        match (quoted, bytes[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (true, _) => {}
            (false, b'"') => quoted = true,
            (false, b'(') => depth += 1,
            (false, b')') => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(FilterError::UnbalancedParentheses)?
            }
            (false, b',') if depth == 0 => {
                parts.push(&filter[start..i]);
                start = i + 1;
            }
            (false, _) => {}
        }
        i += 1;
    }
    if quoted {
        return Err(FilterError::UnterminatedQuote);
    }
    if depth != 0 {
        return Err(FilterError::UnbalancedParentheses);
    }
    parts.push(&filter[start..]);
    Ok(parts)
}

fn parse_condition(part: &str) -> Result<Condition, FilterError> {
    let (column, rest) = part
        .split_once('=')
        .ok_or_else(|| FilterError::Syntax(part.trim().to_string()))?;
    let column = column.trim();
    if column.is_empty() {
        return Err(FilterError::EmptyColumn(part.trim().to_string()));
    }
    let (negated, rest) = match rest.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let Some((op, value)) = rest.split_once('.') else {
        return Err(match rest {
            r if Op::parse(r).is_some()
                || TEXT_OPERATORS.contains(&r)
                || r == "in"
                || r == "is" =>
            {
                FilterError::EmptyValue(column.to_string())
            }
            r if UNSUPPORTED.contains(&r) => FilterError::Unsupported(r.to_string()),
            _ => FilterError::MissingOperator(column.to_string()),
        });
    };
    let test = match op {
        "in" => Test::In(parse_list(column, value)?),
        "is" => Test::Is(match value.trim().to_ascii_lowercase().as_str() {
            "null" | "unknown" => IsValue::Null,
            "true" => IsValue::True,
            "false" => IsValue::False,
            _ => {
                return Err(FilterError::IsValue {
                    column: column.to_string(),
                    value: value.to_string(),
                })
            }
        }),
        "like" | "ilike" => Test::Like {
            pattern: parse_scalar(column, value)?.replace('*', "%"),
            case_insensitive: op == "ilike",
        },
        "match" | "imatch" => Test::Match(Pattern::new(
            column,
            &parse_scalar(column, value)?,
            op == "imatch",
        )?),
        "isdistinct" if value.trim().eq_ignore_ascii_case("null") => Test::IsDistinct(None),
        "isdistinct" => Test::IsDistinct(Some(parse_scalar(column, value)?)),
        _ => match Op::parse(op) {
            Some(op) => Test::Compare(op, parse_scalar(column, value)?),
            None if UNSUPPORTED.contains(&op) => {
                return Err(FilterError::Unsupported(op.to_string()))
            }
            None => return Err(FilterError::UnknownOperator(op.to_string())),
        },
    };
    Ok(Condition {
        column: column.to_string(),
        negated,
        test,
    })
}

/// A quoted value's text and what follows its closing quote; `text` starts with `"`.
fn unquote(text: &str) -> Result<(String, &str), FilterError> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => return Err(FilterError::UnterminatedQuote),
            },
            '"' => {
                let rest = chars.next().map_or("", |(at, _)| &text[at..]);
                return Ok((out, rest));
            }
            c => out.push(c),
        }
    }
    Err(FilterError::UnterminatedQuote)
}

fn unexpected(column: &str, rest: &str) -> FilterError {
    FilterError::Unexpected {
        column: column.to_string(),
        found: rest.chars().next().unwrap_or('"'),
    }
}

/// The value of a comparison: quoted, or verbatim (non-empty, without `"()`).
fn parse_scalar(column: &str, value: &str) -> Result<String, FilterError> {
    if value.starts_with('"') {
        let (text, rest) = unquote(value)?;
        if !rest.is_empty() {
            return Err(unexpected(column, rest));
        }
        return Ok(text);
    }
    if value.is_empty() {
        return Err(FilterError::EmptyValue(column.to_string()));
    }
    if let Some(at) = value.find(['"', '(', ')']) {
        return Err(unexpected(column, &value[at..]));
    }
    Ok(value.to_string())
}

/// `(a,"b,c",null)`: the values, `None` for an unquoted `null`.
fn parse_list(column: &str, value: &str) -> Result<Vec<Option<String>>, FilterError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| FilterError::InList(column.to_string()))?;
    let mut items = Vec::new();
    let mut rest = inner;
    loop {
        if items.len() == MAX_IN_VALUES {
            let count = MAX_IN_VALUES + 1 + split_top_level(rest).map_or(0, |p| p.len() - 1);
            return Err(FilterError::TooManyValues {
                column: column.to_string(),
                count,
            });
        }
        let trimmed = rest.trim_start();
        let (item, after) = if trimmed.starts_with('"') {
            let (text, after) = unquote(trimmed)?;
            let after = after.trim_start();
            if !(after.is_empty() || after.starts_with(',')) {
                return Err(unexpected(column, after));
            }
            (Some(text), after)
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let item = &rest[..end];
            if item.is_empty() {
                return Err(FilterError::EmptyValue(column.to_string()));
            }
            if let Some(at) = item.find(['"', '(', ')']) {
                return Err(unexpected(column, &item[at..]));
            }
            ((item != "null").then(|| item.to_string()), &rest[end..])
        };
        items.push(item);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None => return Ok(items),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

impl Filter {
    /// The conditions, in the client's order.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether a row passes every condition. `columns` are the change event's columns (name and
    /// Postgres type name); `row` is its `record`, or its `old_record` for a DELETE.
    pub fn matches(&self, columns: &[Column], row: &Map<String, Value>) -> bool {
        self.conditions
            .iter()
            .all(|c| c.evaluate(columns, row) == Some(true))
    }

    /// Checks every condition against the table's columns: the column exists, its type can be
    /// filtered, the operator applies to it and every value converts to it. A filter that
    /// fails here never matches; the gateway reports the error to the client once.
    pub fn check_types(&self, columns: &[Column]) -> Result<(), FilterError> {
        self.conditions
            .iter()
            .try_for_each(|c| c.check_type(columns))
    }
}

impl Condition {
    /// SQL's answer: `Some(true)`, `Some(false)` or `None` (unknown, never a match).
    fn evaluate(&self, columns: &[Column], row: &Map<String, Value>) -> Option<bool> {
        let value = row.get(&self.column)?;
        let kind = columns
            .iter()
            .find(|c| c.name == self.column)
            .map_or(Kind::Other, |c| Kind::of(&c.type_name));
        let result = match &self.test {
            Test::Is(is) => match (is, value) {
                (IsValue::Null, value) => Some(value.is_null()),
                (_, Value::Null) => Some(false),
                (IsValue::True, Value::Bool(b)) => Some(*b),
                (IsValue::False, Value::Bool(b)) => Some(!*b),
                _ => None,
            },
            Test::IsDistinct(None) => Some(!value.is_null()),
            Test::IsDistinct(Some(_)) if value.is_null() => Some(true),
            Test::IsDistinct(Some(text)) => Op::Neq.test(compare(kind, value, text)?),
            _ if value.is_null() => None,
            Test::Like {
                pattern,
                case_insensitive,
            } => Some(like(pattern, value.as_str()?, *case_insensitive)),
            Test::Match(pattern) => Some(pattern.regex.is_match(value.as_str()?)),
            Test::Compare(op, text) => compare(kind, value, text).and_then(|o| op.test(o)),
            Test::In(items) => {
                let (mut found, mut null) = (false, false);
                for item in items {
                    match item {
                        None => null = true,
                        Some(text) => found |= Op::Eq.test(compare(kind, value, text)?)?,
                    }
                }
                match (found, null) {
                    (true, _) => Some(true),
                    (false, true) => None,
                    (false, false) => Some(false),
                }
            }
        }?;
        Some(result != self.negated)
    }

    fn check_type(&self, columns: &[Column]) -> Result<(), FilterError> {
        let column = columns
            .iter()
            .find(|c| c.name == self.column)
            .ok_or_else(|| FilterError::UnknownColumn(self.column.clone()))?;
        let kind = Kind::of(&column.type_name);
        let operator_error = |op: &'static str| FilterError::OperatorType {
            column: self.column.clone(),
            op,
            type_name: column.type_name.clone(),
        };
        if kind == Kind::Array
            && !matches!(self.test, Test::Is(IsValue::Null) | Test::IsDistinct(None))
        {
            return Err(FilterError::ArrayColumn {
                column: self.column.clone(),
                type_name: column.type_name.clone(),
            });
        }
        let value_error = |value: &str| FilterError::InvalidValue {
            column: self.column.clone(),
            type_name: column.type_name.clone(),
            value: value.to_string(),
            hint: if value.trim().eq_ignore_ascii_case("null") {
                " (to test for null, use is.null)"
            } else {
                ""
            },
        };
        match &self.test {
            Test::Is(IsValue::Null) | Test::IsDistinct(None) => Ok(()),
            Test::Like {
                case_insensitive, ..
            } => match kind {
                Kind::Text(_) | Kind::Other => Ok(()),
                _ if *case_insensitive => Err(operator_error("ilike")),
                _ => Err(operator_error("like")),
            },
            Test::Match(pattern) => match kind {
                Kind::Text(_) | Kind::Other => Ok(()),
                _ => Err(operator_error(pattern.op())),
            },
            Test::IsDistinct(Some(text)) => kind
                .accepts(text)
                .then_some(())
                .ok_or_else(|| value_error(text)),
            Test::Is(is) => match kind {
                Kind::Bool | Kind::Other => Ok(()),
                _ if *is == IsValue::True => Err(operator_error("is.true")),
                _ => Err(operator_error("is.false")),
            },
            Test::Compare(op, text) => {
                if kind == Kind::Json && !matches!(op, Op::Eq | Op::Neq) {
                    return Err(operator_error(op.as_str()));
                }
                kind.accepts(text)
                    .then_some(())
                    .ok_or_else(|| value_error(text))
            }
            Test::In(items) => items
                .iter()
                .flatten()
                .find(|text| !kind.accepts(text))
                .map_or(Ok(()), |text| Err(value_error(text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter()
            .map(|(name, type_name)| Column {
                name: name.to_string(),
                type_name: type_name.to_string(),
            })
            .collect()
    }

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// Whether `filter` matches a one-column row `{col: value}` of type `type_name`.
    fn check(type_name: &str, value: Value, filter: &str) -> bool {
        let filter = parse(&format!("col={filter}")).unwrap_or_else(|e| panic!("{filter}: {e}"));
        filter.matches(
            &columns(&[("col", type_name)]),
            &row(json!({ "col": value })),
        )
    }

    fn cmp(filter: &str) -> Test {
        parse(filter).unwrap().conditions[0].test.clone()
    }

    // --- parsing ----------------------------------------------------------------------------------

    #[test]
    fn parses_what_realtime_js_builds() {
        // postgresChangesFilter().eq('id', 1).in('status', ['a', 'b,c', 'd"e', ' f']).build()
        let filter = parse(r#"id=eq.1,status=in.(a,"b,c","d\"e"," f")"#).unwrap();
        assert_eq!(
            filter.conditions(),
            &[
                Condition {
                    column: "id".into(),
                    negated: false,
                    test: Test::Compare(Op::Eq, "1".into()),
                },
                Condition {
                    column: "status".into(),
                    negated: false,
                    test: Test::In(vec![
                        Some("a".into()),
                        Some("b,c".into()),
                        Some("d\"e".into()),
                        Some(" f".into()),
                    ]),
                },
            ]
        );
        for (text, op) in [
            ("eq", Op::Eq),
            ("neq", Op::Neq),
            ("lt", Op::Lt),
            ("lte", Op::Lte),
            ("gt", Op::Gt),
            ("gte", Op::Gte),
        ] {
            assert_eq!(cmp(&format!("a={text}.x")), Test::Compare(op, "x".into()));
            assert_eq!(op.as_str(), text);
        }
        // Values keep dots and equals signs; quotes unescape \" and \\.
        assert_eq!(cmp("v=eq.1.5"), Test::Compare(Op::Eq, "1.5".into()));
        assert_eq!(cmp("v=eq.a=b"), Test::Compare(Op::Eq, "a=b".into()));
        assert_eq!(
            cmp(r#"v=eq."a\\b\"c""#),
            Test::Compare(Op::Eq, r#"a\b"c"#.into())
        );
        assert_eq!(cmp(r#"v=eq."(x)""#), Test::Compare(Op::Eq, "(x)".into()));
        assert_eq!(cmp(r#"v=eq."""#), Test::Compare(Op::Eq, String::new()));
        assert_eq!(cmp("v=eq.café 🚀"), Test::Compare(Op::Eq, "café 🚀".into()));
        // is, not., null in lists.
        assert_eq!(cmp("v=is.null"), Test::Is(IsValue::Null));
        assert_eq!(cmp("v=is.NULL"), Test::Is(IsValue::Null));
        assert_eq!(cmp("v=is.unknown"), Test::Is(IsValue::Null));
        assert_eq!(cmp("v=is.true"), Test::Is(IsValue::True));
        assert_eq!(cmp("v=is.false"), Test::Is(IsValue::False));
        let negated = &parse("v=not.in.(1,null,\"null\")").unwrap().conditions[0];
        assert!(negated.negated);
        assert_eq!(
            negated.test,
            Test::In(vec![Some("1".into()), None, Some("null".into())])
        );
        assert!(parse("v=not.is.null").unwrap().conditions[0].negated);
        // Spaces around conditions and quoted list items are fine.
        let spaced = parse(r#"a=eq.1, b=in.( "x" , "y" )"#).unwrap();
        assert_eq!(spaced.conditions()[1].column, "b");
        assert_eq!(
            spaced.conditions()[1].test,
            Test::In(vec![Some("x".into()), Some("y".into())])
        );
    }

    #[test]
    fn refuses_bad_filters_with_reasons() {
        let err = |f: &str| parse(f).unwrap_err();
        assert_eq!(err(""), FilterError::Empty);
        assert_eq!(err("  "), FilterError::Empty);
        assert_eq!(err("id"), FilterError::Syntax("id".into()));
        assert_eq!(err("=eq.1"), FilterError::EmptyColumn("=eq.1".into()));
        assert_eq!(err("id=5"), FilterError::MissingOperator("id".into()));
        assert_eq!(err("id="), FilterError::MissingOperator("id".into()));
        assert_eq!(err("id=eq"), FilterError::EmptyValue("id".into()));
        assert_eq!(err("id=eq."), FilterError::EmptyValue("id".into()));
        assert_eq!(err("id=in.()"), FilterError::EmptyValue("id".into()));
        assert_eq!(err("id=in.(1,,2)"), FilterError::EmptyValue("id".into()));
        assert_eq!(err("id=in.(1,)"), FilterError::EmptyValue("id".into()));
        assert_eq!(err("id=in.1"), FilterError::InList("id".into()));
        assert_eq!(err("id=in.(1"), FilterError::UnbalancedParentheses);
        assert_eq!(err("id=in.1)"), FilterError::UnbalancedParentheses);
        assert_eq!(
            err("id=in.((1))"),
            FilterError::Unexpected {
                column: "id".into(),
                found: '('
            }
        );
        assert_eq!(err(r#"id=eq."abc"#), FilterError::UnterminatedQuote);
        assert_eq!(err(r#"id=eq."abc\""#), FilterError::UnterminatedQuote);
        assert_eq!(
            err(r#"id=eq."a"b"#),
            FilterError::Unexpected {
                column: "id".into(),
                found: 'b'
            }
        );
        assert_eq!(
            err(r#"id=in.("a"b)"#),
            FilterError::Unexpected {
                column: "id".into(),
                found: 'b'
            }
        );
        assert_eq!(
            err("id=eq.(1)"),
            FilterError::Unexpected {
                column: "id".into(),
                found: '('
            }
        );
        assert_eq!(err("id=eq.1,"), FilterError::EmptyCondition(2));
        assert_eq!(err(",id=eq.1"), FilterError::EmptyCondition(1));
        assert_eq!(
            err("id=is.maybe"),
            FilterError::IsValue {
                column: "id".into(),
                value: "maybe".into()
            }
        );
        assert_eq!(err("id=EQ.1"), FilterError::UnknownOperator("EQ".into()));
        assert_eq!(
            err("id=not.not.eq.1"),
            FilterError::UnknownOperator("not".into())
        );
        for op in ["fts", "plfts", "cs", "ov", "adj"] {
            let e = err(&format!("name={op}.x"));
            assert_eq!(e, FilterError::Unsupported(op.into()));
            assert!(
                e.to_string()
                    .contains("supported: eq, neq, lt, lte, gt, gte, in"),
                "{e}"
            );
            assert_eq!(
                err(&format!("name=not.{op}.x")),
                FilterError::Unsupported(op.into())
            );
        }
        assert_eq!(err("name=like"), FilterError::EmptyValue("name".into()));
        assert_eq!(err("name=fts"), FilterError::Unsupported("fts".into()));
        assert!(matches!(
            err(r#"name=match."(unclosed""#),
            FilterError::Regex { .. }
        ));
        assert!(err("name=imatch.[z-a]")
            .to_string()
            .contains("regular expression on \"name\" is not valid"));
        assert!(err("id=xx.1")
            .to_string()
            .contains("unknown operator \"xx\""));
    }

    #[test]
    fn limits_hold() {
        let seventeen = vec!["a=eq.1"; 17].join(",");
        assert_eq!(
            parse(&seventeen).unwrap_err(),
            FilterError::TooManyConditions(17)
        );
        assert!(parse(&vec!["a=eq.1"; 16].join(",")).is_ok());
        let list = |n: usize| {
            format!(
                "a=in.({})",
                (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
            )
        };
        assert!(parse(&list(100)).is_ok());
        assert_eq!(
            parse(&list(101)).unwrap_err(),
            FilterError::TooManyValues {
                column: "a".into(),
                count: 101
            }
        );
        assert_eq!(
            parse(&list(1000)).unwrap_err(),
            FilterError::TooManyValues {
                column: "a".into(),
                count: 1000
            }
        );
        let long = format!("a=eq.{}", "x".repeat(MAX_FILTER_BYTES));
        assert_eq!(parse(&long).unwrap_err(), FilterError::TooLong(long.len()));
        let deep = format!("a=in.{}{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse(&deep).is_err());
        let quotes = "\"".repeat(5001);
        assert!(parse(&format!("a=eq.{quotes}")).is_err());
    }

    /// xorshift64: deterministic random inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        let tokens = [
            "a",
            "id",
            "=",
            ".",
            ",",
            "(",
            ")",
            "\"",
            "\\",
            "eq",
            "neq",
            "lt",
            "gte",
            "in",
            "is",
            "not",
            "null",
            "true",
            "1",
            "-2.5e3",
            "1e999999999",
            " ",
            "é",
            "🚀",
            "2026-01-30",
            "T10:15:23.5",
            "+05:30",
            "Z",
            "NaN",
            "Infinity",
            "{",
            "}",
            ":",
        ];
        let types = [
            "int4",
            "int2",
            "int8",
            "numeric",
            "float8",
            "bool",
            "uuid",
            "timestamptz",
            "timestamp",
            "date",
            "time",
            "jsonb",
            "text",
            "bpchar",
            "citext",
            "bytea",
            "_int4",
            "mood",
        ];
        let values = [
            json!(null),
            json!(1),
            json!(-7),
            json!(1.5),
            json!(u64::MAX),
            json!(true),
            json!("1"),
            json!("1.50"),
            json!("NaN"),
            json!("2026-01-30T10:15:23.5+00:00"),
            json!("10:15:23"),
            json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            json!([1, 2]),
            json!({"a": 1}),
        ];
        let ops = [
            "eq.", "neq.", "lt.", "gte.", "in.(", "is.", "not.eq.", "not.in.(", "like.",
        ];
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut parsed = 0;
        for _ in 0..30_000 {
            let soup = |rng: &mut Rng, n: usize| -> String {
                (0..rng.below(n))
                    .map(|_| tokens[rng.below(tokens.len())])
                    .collect()
            };
            // Half pure soup, half conditions shaped like filters with soup values.
            let text = if rng.below(2) == 0 {
                soup(&mut rng, 20)
            } else {
                (0..1 + rng.below(3))
                    .map(|_| {
                        let op = ops[rng.below(ops.len())];
                        let close = if op.ends_with('(') { ")" } else { "" };
                        format!("c{}={op}{}{close}", rng.below(3), soup(&mut rng, 4))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let Ok(filter) = parse(&text) else { continue };
            parsed += 1;
            for condition in filter.conditions() {
                let cols = columns(&[(&condition.column, types[rng.below(types.len())])]);
                let value = values[rng.below(values.len())].clone();
                let row = row(json!({ condition.column.clone(): value }));
                let _ = filter.matches(&cols, &row);
                let _ = filter.check_types(&cols);
            }
        }
        assert!(
            parsed > 100,
            "the token soup should parse sometimes ({parsed})"
        );
        // Random bytes as UTF-8 text.
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
        // Every kind against random filter values.
        for _ in 0..20_000 {
            let value: String = (0..rng.below(6))
                .map(|_| tokens[rng.below(tokens.len())])
                .collect();
            for type_name in types {
                let kind = Kind::of(type_name);
                let _ = kind.accepts(&value);
                for row in &values {
                    let _ = compare(kind, row, &value);
                }
            }
        }
    }

    // --- evaluation -------------------------------------------------------------------------------

    #[test]
    fn integers_compare_as_integers() {
        for t in ["int2", "int4", "int8"] {
            assert!(check(t, json!(5), "eq.5"));
            assert!(check(t, json!(5), "eq.+5"));
            assert!(
                check(t, json!(5), "eq. 5 "),
                "Postgres ignores surrounding spaces"
            );
            assert!(!check(t, json!(5), "eq.6"));
            assert!(check(t, json!(5), "neq.6"));
            assert!(check(t, json!(-5), "lt.-4"));
            assert!(check(t, json!(5), "lte.5"));
            assert!(check(t, json!(10), "gt.9"), "not text order");
            assert!(check(t, json!(5), "gte.5"));
            assert!(!check(t, json!(5), "gte.6"));
            assert!(check(t, json!(3), "in.(1,2,3)"));
            assert!(!check(t, json!(4), "in.(1,2,3)"));
            assert!(check(t, json!(4), "not.in.(1,2,3)"));
            assert!(!check(t, json!(5), "eq.abc"), "unconvertible: no match");
            assert!(
                !check(t, json!(5), "neq.abc"),
                "unconvertible: no match either way"
            );
            assert!(!check(t, json!(5), "eq.5.0"));
        }
        assert!(check("int8", json!(i64::MAX), &format!("eq.{}", i64::MAX)));
        assert!(check(
            "int8",
            json!(i64::MIN),
            &format!("lt.{}", i64::MIN + 1)
        ));
        assert!(
            !check("int4", json!(1), "lt.99999999999"),
            "out of range for int4"
        );
        assert!(check("int8", json!(1), "lt.99999999999"));
        assert!(check("xid8", json!(u64::MAX), &format!("eq.{}", u64::MAX)));
        assert!(check("oid", json!(4_000_000_000u32), "gt.3999999999"));
    }

    #[test]
    fn numerics_compare_exactly() {
        let n = |value: &str, filter: &str| check("numeric", json!(value), filter);
        assert!(n("10.50", "eq.10.5"));
        assert!(n("0.1", "eq.0.10"));
        assert!(n("0.1", "eq..1"));
        assert!(n("100", "eq.1e2"));
        assert!(n("100", "eq.1E+2"));
        assert!(n("0.001", "eq.1e-3"));
        assert!(n("0", "eq.-0.000"));
        assert!(n("0", "eq.0e5"));
        assert!(n("-0.5", "lt.0"));
        assert!(n("-0.5", "gt.-0.51"));
        assert!(n("-10", "lt.-9.99"));
        assert!(n("007.50", "eq.7.5"));
        assert!(n(
            "123456789012345678901234567890.1",
            "gt.123456789012345678901234567890"
        ));
        assert!(!n(
            "123456789012345678901234567890",
            "eq.123456789012345678901234567890.0001"
        ));
        assert!(
            n("0.30000000000000000000000001", "gt.0.3"),
            "no float rounding"
        );
        assert!(n("99.99", "lt.100"));
        assert!(n("1000", "gt.999.9999"));
        assert!(n("12.5", "in.(12.50,13)"));
        assert!(n("NaN", "eq.nan"));
        assert!(n("NaN", "gt.Infinity"), "NaN sorts above everything");
        assert!(n("Infinity", "gt.1e999999"));
        assert!(n("-Infinity", "lt.-1e999999"));
        assert!(!n("1", "eq.1e9999999999"), "exponent too large: refused");
        assert!(!n("1", "eq.1.2.3"));
        assert!(!n("1", "eq.e5"));
        assert!(!n("1", "eq.1e"));
        assert!(!n("1", "eq.abc"));
        // A number where a numeric string was expected still compares exactly.
        assert!(check("numeric", json!(5), "eq.5.00"));
    }

    #[test]
    fn floats_compare_as_floats() {
        let f = |value: Value, filter: &str| check("float8", value, filter);
        assert!(f(json!(1.5), "eq.1.5"));
        assert!(f(json!(1.5), "eq.15e-1"));
        assert!(
            f(json!(0.1), "eq.0.1"),
            "float4 values arrive as their shortest text"
        );
        assert!(f(json!(3.0), "eq.3"));
        assert!(f(json!(1.5), "lt.2"));
        assert!(f(json!(-0.0), "eq.0"));
        assert!(f(json!("NaN"), "eq.NaN"));
        assert!(f(json!("NaN"), "gt.Infinity"));
        assert!(f(json!("Infinity"), "eq.infinity"));
        assert!(f(json!("-Infinity"), "lt.-1e308"));
        assert!(f(json!(1.5), "in.(1,1.5)"));
        assert!(!f(json!(1.5), "eq.one"));
        assert!(!f(json!(1.5), "eq.0x10"));
        assert!(check("float4", json!(2.5), "gte.2.5"));
    }

    #[test]
    fn booleans_uuids_and_text() {
        for (filter, expected) in [
            ("eq.true", true),
            ("eq.t", true),
            ("eq.TRUE", true),
            ("eq.yes", true),
            ("eq.1", true),
            ("eq.false", false),
            ("eq.f", false),
            ("neq.f", true),
            ("is.true", true),
            ("is.false", false),
            ("not.is.true", false),
            ("gt.false", true),
        ] {
            assert_eq!(check("bool", json!(true), filter), expected, "{filter}");
        }
        assert!(!check("bool", json!(true), "eq.maybe"));
        assert!(check("bool", json!(false), "is.false"));

        let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        assert!(check(
            "uuid",
            json!(id),
            "eq.6F9619FF-8B86-D011-B42D-00C04FC964FF"
        ));
        assert!(check(
            "uuid",
            json!(id),
            "eq.6f9619ff8b86d011b42d00c04fc964ff"
        ));
        assert!(check(
            "uuid",
            json!(id),
            "eq.{6f9619ff-8b86-d011-b42d-00c04fc964ff}"
        ));
        assert!(check(
            "uuid",
            json!(id),
            "lt.7f9619ff-8b86-d011-b42d-00c04fc964ff"
        ));
        assert!(check(
            "uuid",
            json!(id),
            "in.(00000000-0000-0000-0000-000000000000,6F9619FF-8B86-D011-B42D-00C04FC964FF)"
        ));
        assert!(!check(
            "uuid",
            json!(id),
            "eq.6f9619ff-8b86-d011-b42d-00c04fc964f"
        ));
        assert!(!check(
            "uuid",
            json!(id),
            "eq.6f9619ff-8b86-d011-b42d-00c04fc964ff0"
        ));
        assert!(!check(
            "uuid",
            json!(id),
            "eq.-6f9619ff8b86d011b42d00c04fc964ff"
        ));
        assert!(!check(
            "uuid",
            json!(id),
            "eq.6f9619ff--8b86d011b42d00c04fc964ff"
        ));
        assert!(!check(
            "uuid",
            json!(id),
            "eq.6f9619ff-8b86-d011-b42d-00c04fc964fg"
        ));

        for t in ["text", "varchar", "name", "mood"] {
            assert!(check(t, json!("hello"), "eq.hello"));
            assert!(!check(t, json!("hello"), "eq.Hello"), "case matters");
            assert!(check(t, json!("b"), "gt.a"));
            assert!(check(t, json!("B"), "lt.a"), "byte order, not collation");
            assert!(check(t, json!("a,b"), r#"eq."a,b""#));
            assert!(check(t, json!("a,b"), r#"in.(x,"a,b")"#));
            assert!(check(t, json!(""), r#"eq."""#));
            assert!(check(t, json!("null"), r#"in.("null")"#));
            assert!(
                !check(t, json!("null"), "in.(null)"),
                "unquoted null is SQL NULL"
            );
            assert!(
                check(t, json!("null"), "eq.null"),
                "a comparison's null is text"
            );
            assert!(check(t, json!("café"), "eq.café"));
            assert!(check(t, json!("10"), "lt.9"), "text compares as text");
        }
        assert!(check("bpchar", json!("ab   "), "eq.ab"));
        assert!(check("citext", json!("Hello"), "eq.hELLO"));
        assert!(check("bytea", json!("\\xdeadbeef"), r#"eq."\\xDEADBEEF""#));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let cdc = json!("2026-01-30T10:15:23.5+00:00");
        for filter in [
            "eq.2026-01-30T10:15:23.5+00:00",
            "eq.2026-01-30 10:15:23.5+00",
            "eq.2026-01-30T10:15:23.500Z",
            "eq.2026-01-30 12:15:23.5+02",
            "eq.2026-01-30 12:45:23.5+02:30",
            "eq.2026-01-30 12:45:23.5+0230",
            "eq.2026-01-30 05:15:23.5-05:00",
            "eq.2026-01-30 10:15:23.5 UTC",
            "eq.2026-01-30 10:15:23.5",
            "eq.2026-01-30 10:15:23.4999996",
            "gt.2026-01-30 10:15:23+00",
            "lt.2026-01-30T10:15:24Z",
            "lt.2026-01-30 11:15:23.5+00:30",
            "gt.2026-01-30",
            "lt.2026-01-31",
            "lt.infinity",
            "gt.-infinity",
            "gt.epoch",
            "in.(2026-01-30 10:15:23.5Z,2027-01-01 00:00Z)",
        ] {
            assert!(check("timestamptz", cdc.clone(), filter), "{filter}");
        }
        for filter in [
            "eq.2026-01-30 10:15:23+00",
            "eq.2026-01-30 10:15:23.5+01",
            "eq.2026-02-30 10:15:23Z",
            "eq.2026-01-30 25:00:00Z",
            "eq.2026-01-30 10:15:23.5+16",
            "eq.2026-01-30 10:15:23.5 +5",
            "eq.30/01/2026",
            "eq.now",
            "eq.2026-01-30 10:15:23.",
            "eq.2026-01-30X10:15:23",
        ] {
            assert!(!check("timestamptz", cdc.clone(), filter), "{filter}");
        }
        // Around midnight and across days.
        assert!(check(
            "timestamptz",
            json!("2026-01-31T00:30:00+00:00"),
            "eq.2026-01-30 23:30:00-01"
        ));
        assert!(check(
            "timestamptz",
            json!("2026-01-30T23:59:59.9999996+00:00"),
            "eq.2026-01-31 00:00:00Z"
        ));
        assert!(check(
            "timestamptz",
            json!("infinity"),
            "gt.9999-12-31 23:59:59Z"
        ));

        // timestamp without time zone: the offset is ignored.
        let local = json!("2026-01-30T10:15:23.123456");
        assert!(check(
            "timestamp",
            local.clone(),
            "eq.2026-01-30 10:15:23.123456"
        ));
        assert!(check(
            "timestamp",
            local.clone(),
            "eq.2026-01-30 10:15:23.123456+05"
        ));
        assert!(check(
            "timestamp",
            local.clone(),
            "gt.2026-01-30 10:15:23.123455"
        ));
        assert!(check("date", json!("2026-01-30"), "eq.2026-01-30"));
        assert!(check("date", json!("2026-01-30"), "eq.2026-01-30 23:00"));
        assert!(check("date", json!("2026-01-30"), "lt.2026-02-01"));
        assert!(check("date", json!("2026-01-30"), "gt.2025-12-31"));
        assert!(!check("date", json!("2026-01-30"), "eq.2026-1-30"));
        assert!(
            !check("time", json!("10:15:23.5"), "gt.9:00"),
            "HH:MM needs two digits"
        );
        assert!(check("time", json!("10:15:23.5"), "gt.09:00"));
        assert!(check("time", json!("10:15:23.5"), "eq.10:15:23.500"));
        assert!(check("time", json!("24:00:00"), "gt.23:59:59.999999"));
        assert!(!check("time", json!("10:15"), "eq.10:60"));
    }

    #[test]
    fn json_columns_compare_by_value() {
        assert!(check(
            "jsonb",
            json!({"a": 1, "b": [1, 2]}),
            r#"eq."{\"b\": [1,2], \"a\": 1}""#
        ));
        assert!(check("jsonb", json!({"a": 1}), r#"neq."{\"a\": 2}""#));
        assert!(check("jsonb", json!("x"), r#"in.("\"y\"","\"x\"")"#));
        assert!(check("json", json!(5), "eq.5"));
        assert!(
            !check("jsonb", json!({"a": 1}), r#"gt."{}""#),
            "no order on json"
        );
        assert!(!check("jsonb", json!({"a": 1}), "eq.nope"));
    }

    #[test]
    fn unknown_types_compare_by_the_values_shape() {
        // A domain over int4, over float8, over bool, an enum, a composite.
        assert!(check("positive_int", json!(10), "gt.9"));
        assert!(check("positive_int", json!(10), "eq.10"));
        assert!(!check("positive_int", json!(10), "eq.ten"));
        assert!(check("price", json!(1.25), "lt.1.5"));
        assert!(check("flag", json!(true), "eq.t"));
        assert!(check("mood", json!("happy"), "eq.happy"));
        assert!(check("point3", json!({"x": 1}), r#"eq."{\"x\":1}""#));
        // Arrays are not supported.
        assert!(!check("_int4", json!([1, 2]), r#"eq."{1,2}""#));
        assert!(check("_int4", json!(null), "is.null"));
    }

    #[test]
    fn nulls_missing_columns_and_negation() {
        let cols = columns(&[("id", "int4"), ("name", "text"), ("done", "bool")]);
        let null_name = row(json!({"id": 1, "name": null, "done": null}));
        let matches = |f: &str, r: &Map<String, Value>| parse(f).unwrap().matches(&cols, r);
        assert!(matches("name=is.null", &null_name));
        assert!(!matches("name=not.is.null", &null_name));
        assert!(!matches("name=eq.x", &null_name), "null equals nothing");
        assert!(
            !matches("name=neq.x", &null_name),
            "nor differs from anything"
        );
        assert!(
            !matches("name=not.eq.x", &null_name),
            "not of unknown is unknown"
        );
        assert!(!matches("name=in.(x,y)", &null_name));
        assert!(!matches("name=not.in.(x,y)", &null_name));
        assert!(!matches("done=is.true", &null_name));
        assert!(
            matches("done=not.is.true", &null_name),
            "IS TRUE is never unknown"
        );
        assert!(!matches("done=is.false", &null_name));
        assert!(matches("id=eq.1,name=is.null", &null_name));
        assert!(
            !matches("id=eq.2,name=is.null", &null_name),
            "conditions are ANDed"
        );

        // A DELETE's old_record with only the key.
        let key_only = row(json!({"id": 1}));
        assert!(matches("id=eq.1", &key_only));
        assert!(!matches("name=eq.x", &key_only));
        assert!(!matches("name=is.null", &key_only), "absent is not null");
        assert!(!matches("name=not.is.null", &key_only));
        assert!(!matches("id=eq.1,name=eq.x", &key_only));

        // Negation of known results, and SQL NULL in lists.
        let one = row(json!({"id": 1, "name": "a"}));
        assert!(matches("id=not.eq.2", &one));
        assert!(!matches("id=not.eq.1", &one));
        assert!(matches("id=not.gt.1", &one));
        assert!(matches("id=in.(1,null)", &one), "found despite a null");
        assert!(
            !matches("id=in.(2,null)", &one),
            "not found with a null: unknown"
        );
        assert!(
            !matches("id=not.in.(2,null)", &one),
            "NOT IN with a null never holds"
        );
        assert!(
            !matches("id=in.(1,x)", &one),
            "an unconvertible value: no match"
        );
        // Columns not in `columns` are compared by shape.
        assert!(parse("id=eq.1").unwrap().matches(&[], &one));
    }

    #[test]
    fn text_patterns_and_is_distinct() {
        let cols = columns(&[("name", "text"), ("n", "int4"), ("tag", "citext")]);
        let yes = |filter: &str, value: Value| parse(filter).unwrap().matches(&cols, &row(value));
        // like: % any text, _ one character, * for %, \ escapes; the whole text must match.
        assert!(yes("name=like.ab%", json!({"name": "abc"})));
        assert!(yes("name=like.*b*", json!({"name": "abc"})));
        assert!(yes("name=like.a_c", json!({"name": "abc"})));
        assert!(!yes("name=like.a_c", json!({"name": "abbc"})));
        assert!(!yes("name=like.AB%", json!({"name": "abc"})));
        assert!(yes("name=ilike.AB%", json!({"name": "abc"})));
        assert!(yes("name=like.%\\%%", json!({"name": "50% off"})));
        assert!(!yes("name=like.%\\%%", json!({"name": "50 off"})));
        assert!(yes("name=like.%a%b%c%", json!({"name": "xaxxbxxcx"})));
        assert!(!yes("name=like.%a%b%c%", json!({"name": "xaxxcxxbx"})));
        assert!(yes(r#"name=like."""#, json!({"name": ""})));
        assert!(!yes(r#"name=like."""#, json!({"name": "a"})));
        assert!(yes("name=ilike.ÉCOLE", json!({"name": "école"})));
        // match / imatch: a regular expression found anywhere.
        assert!(yes("name=match.^a.c$", json!({"name": "abc"})));
        assert!(yes("name=match.b", json!({"name": "abc"})));
        assert!(!yes("name=match.^B", json!({"name": "bcd"})));
        assert!(yes("name=imatch.^B", json!({"name": "bcd"})));
        assert!(yes(r#"name=match."^(a|b),c$""#, json!({"name": "b,c"})));
        // SQL's unknown: a null never matches, negated or not.
        for filter in [
            "name=like.%",
            "name=not.like.%",
            "name=match.x",
            "name=not.match.x",
        ] {
            assert!(!yes(filter, json!({"name": null})), "{filter}");
        }
        assert!(yes("name=not.like.a%", json!({"name": "bcd"})));
        // isdistinct: null-safe, never unknown.
        assert!(yes("n=isdistinct.1", json!({"n": 2})));
        assert!(!yes("n=isdistinct.1", json!({"n": 1})));
        assert!(yes("n=isdistinct.1", json!({"n": null})));
        assert!(!yes("n=not.isdistinct.1", json!({"n": null})));
        assert!(yes("n=not.isdistinct.1", json!({"n": 1})));
        assert!(yes("n=isdistinct.null", json!({"n": 0})));
        assert!(!yes("n=isdistinct.null", json!({"n": null})));
        assert!(yes("n=not.isdistinct.null", json!({"n": null})));
        assert!(yes(r#"tag=isdistinct."null""#, json!({"tag": "NULLS"})));
        assert!(
            !yes("tag=isdistinct.ABC", json!({"tag": "abc"})),
            "citext ignores case"
        );
        // Conditions combine: all must hold.
        assert!(yes(
            "name=ilike.a*,n=gt.1,n=isdistinct.3",
            json!({"name": "Ab", "n": 2})
        ));
        assert!(!yes(
            "name=ilike.a*,n=gt.1,n=isdistinct.3",
            json!({"name": "Ab", "n": 3})
        ));
        // Types: text operators need text, isdistinct's value must convert.
        let check = |filter: &str| parse(filter).unwrap().check_types(&cols);
        assert!(check("name=like.a%").is_ok() && check("tag=imatch.x").is_ok());
        assert!(matches!(
            check("n=like.1%"),
            Err(FilterError::OperatorType { op: "like", .. })
        ));
        assert!(matches!(
            check("n=match.1"),
            Err(FilterError::OperatorType { op: "match", .. })
        ));
        assert!(matches!(
            check("n=isdistinct.x"),
            Err(FilterError::InvalidValue { .. })
        ));
        assert!(check("n=isdistinct.null").is_ok());
    }

    #[test]
    fn check_types_reports_what_would_never_match() {
        let cols = columns(&[
            ("id", "int4"),
            ("price", "numeric"),
            ("at", "timestamptz"),
            ("tags", "_text"),
            ("doc", "jsonb"),
            ("name", "text"),
            ("done", "bool"),
            ("mood", "mood"),
        ]);
        let check_types = |f: &str| parse(f).unwrap().check_types(&cols);
        for ok in [
            "id=eq.1",
            "id=in.(1,2,null)",
            "price=gt.1e3",
            "at=gte.2026-01-30 10:00:00+00",
            "doc=eq.{}",
            "name=eq.anything",
            "done=is.true",
            "id=is.null",
            "tags=is.null",
            "mood=eq.happy",
            "id=not.eq.5,name=lt.m",
        ] {
            assert_eq!(check_types(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_types("nope=eq.1"),
            Err(FilterError::UnknownColumn("nope".into()))
        );
        let e = check_types("id=eq.abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"abc\" is not a valid int4 for column \"id\""
        );
        let e = check_types("id=eq.null").unwrap_err();
        assert!(
            e.to_string().ends_with("(to test for null, use is.null)"),
            "{e}"
        );
        assert!(check_types("id=eq.99999999999").is_err(), "out of range");
        assert!(check_types("id=in.(1,x)").is_err());
        assert!(check_types("price=eq.1.2.3").is_err());
        assert!(check_types("at=eq.yesterday").is_err());
        assert_eq!(
            check_types("doc=lt.{}"),
            Err(FilterError::OperatorType {
                column: "doc".into(),
                op: "lt",
                type_name: "jsonb".into()
            })
        );
        assert!(check_types("doc=eq.{oops").is_err());
        assert_eq!(
            check_types("tags=eq.x"),
            Err(FilterError::ArrayColumn {
                column: "tags".into(),
                type_name: "_text".into()
            })
        );
        assert!(check_types("id=is.true").is_err());
        assert!(check_types("done=eq.maybe").is_err());
    }
}
