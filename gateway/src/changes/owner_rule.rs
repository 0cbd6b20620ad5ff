//! The fast path of row authorization, for the policy shape most tables have: rows belong to
//! whoever a column names.
//!
//! When the only SELECT policy that applies to a role compares one column with an expression
//! of the session alone — `(owner = realtime.user_id())`, `(auth.uid() = user_id)` — a row is
//! visible to some claims exactly when the row's column equals that expression evaluated as
//! those claims. The gateway then evaluates the expression once per distinct claims (one query,
//! cached for [`VALUE_TTL`]) and compares it with the column of each changed row itself, instead
//! of asking Postgres about every (row, claims) pair: with 1,000 users subscribed to a table
//! taking 2,000 rows/s, that is the difference between 2,000,000 policy evaluations per second
//! and a few hundred queries.
//!
//! The rule is used only when it is exactly the table's policy for the role: one permissive
//! policy for SELECT (or ALL) whose `USING` is a single top-level equality between a column of
//! a plain type (text, varchar, uuid, integer types) and an expression without a subquery; no
//! restrictive policy; a role that does not bypass RLS and does not own the table. Everything
//! else takes the general path ([`super::rls::visible`]). If evaluating the expression fails
//! (it reads a column after all, or raises), the general path decides too.

use nself_realtime_shared::event::Row;
use serde_json::Value;

/// How long an expression's value for some claims is trusted (functions such as
/// `realtime.user_id()` depend on the claims alone; one reading a table could change).
pub const VALUE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// A policy as `pg_policies` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub permissive: bool,
    pub roles: Vec<String>,
    /// `SELECT`, `INSERT`, `UPDATE`, `DELETE` or `ALL`.
    pub command: String,
    /// The `USING` expression, deparsed.
    pub using: Option<String>,
}

/// A row is visible when `column` equals `expression` evaluated as the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRule {
    pub column: String,
    pub expression: String,
}

/// Column types whose JSON form in a change event is their Postgres text form.
fn comparable_type(sql_type: &str) -> bool {
    matches!(
        sql_type,
        "text" | "uuid" | "integer" | "bigint" | "smallint"
    ) || sql_type.starts_with("character varying")
}

/// The owner rule of a table for `role`, if its policies have that shape (module docs).
pub fn owner_rule(
    policies: &[Policy],
    columns: &[(String, String)],
    role: &str,
) -> Option<OwnerRule> {
    let applicable: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.command == "SELECT" || p.command == "ALL")
        .filter(|p| p.roles.iter().any(|r| r == role || r == "public"))
        .collect();
    if applicable.iter().any(|p| !p.permissive) || applicable.len() != 1 {
        return None;
    }
    let (left, right) = split_equality(applicable[0].using.as_deref()?)?;
    let column_of = |side: &str| {
        let name = unquote(side)?;
        columns.iter().find(|(c, _)| *c == name)
    };
    let ((column, sql_type), expression) = match (column_of(left), column_of(right)) {
        (Some(column), None) => (column, right),
        (None, Some(column)) => (column, left),
        _ => return None,
    };
    if !comparable_type(sql_type) || expression.to_ascii_uppercase().contains("SELECT") {
        return None;
    }
    Some(OwnerRule {
        column: column.clone(),
        expression: expression.to_string(),
    })
}

/// A bare or double-quoted identifier, unquoted.
fn unquote(side: &str) -> Option<String> {
    if let Some(inner) = side.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some(inner.replace("\"\"", "\""));
    }
    let mut chars = side.chars();
    let first = chars.next()?;
    ((first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'))
    .then(|| side.to_string())
}

/// `a = b` at the top level of `expression` (outer parentheses removed), when it is the only
/// operator there; `None` for anything else (AND, OR, several comparisons).
fn split_equality(expression: &str) -> Option<(&str, &str)> {
    let mut text = expression.trim();
    while text.starts_with('(') && text.ends_with(')') && closes_at_end(text) {
        text = text[1..text.len() - 1].trim();
    }
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut equality = None;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ' ' if depth == 0 => {
                    let rest = &text[i..];
                    let upper = rest.get(..5).map(str::to_ascii_uppercase);
                    if matches!(upper.as_deref(), Some(" AND "))
                        || rest.to_ascii_uppercase().starts_with(" OR ")
                    {
                        return None;
                    }
                    if rest.starts_with(" = ") {
                        if equality.is_some() {
                            return None;
                        }
                        equality = Some(i);
                    } else if rest.len() > 2
                        && matches!(bytes[i + 1], b'<' | b'>' | b'!' | b'~' | b'|' | b'&' | b'@')
                    {
                        return None;
                    }
                }
                _ => {}
            },
        }
    }
    let at = equality?;
    let (left, right) = (text[..at].trim(), text[at + 3..].trim());
    (!left.is_empty() && !right.is_empty()).then_some((left, right))
}

/// Whether the `(` opening `text` is closed by its last character.
fn closes_at_end(text: &str) -> bool {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i == text.len() - 1;
                    }
                }
                _ => {}
            },
        }
    }
    false
}

/// The row's value of `column` as Postgres would print it; `None` for NULL or absent (which
/// equals nothing).
pub fn row_value(row: Option<&Row>, column: &str) -> Option<String> {
    match row?.get(column)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(roles: &[&str], command: &str, using: &str) -> Policy {
        Policy {
            permissive: true,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            command: command.into(),
            using: Some(using.into()),
        }
    }

    fn columns() -> Vec<(String, String)> {
        vec![
            ("id".into(), "bigint".into()),
            ("owner".into(), "text".into()),
            ("Team Id".into(), "uuid".into()),
            ("price".into(), "numeric".into()),
        ]
    }

    #[test]
    fn the_owner_shape_is_recognised_both_ways_round() {
        let rule = |using: &str| {
            owner_rule(
                &[policy(&["authenticated"], "SELECT", using)],
                &columns(),
                "authenticated",
            )
        };
        assert_eq!(
            rule("(owner = realtime.user_id())"),
            Some(OwnerRule {
                column: "owner".into(),
                expression: "realtime.user_id()".into()
            })
        );
        assert_eq!(
            rule("(auth.uid() = \"Team Id\")"),
            Some(OwnerRule {
                column: "Team Id".into(),
                expression: "auth.uid()".into()
            })
        );
        assert!(
            rule("((owner)::text = (current_setting('request.jwt.claim.sub'::text, true)))")
                .is_none(),
            "a cast column is not a bare column"
        );
    }

    #[test]
    fn anything_else_takes_the_general_path() {
        let rule = |policies: &[Policy], role: &str| owner_rule(policies, &columns(), role);
        let owner = policy(&["authenticated"], "SELECT", "(owner = realtime.user_id())");
        // Another role, several policies, a restrictive one.
        assert!(rule(std::slice::from_ref(&owner), "anon").is_none());
        assert!(rule(
            &[owner.clone(), policy(&["public"], "ALL", "(id = 1)")],
            "authenticated"
        )
        .is_none());
        let mut restrictive = policy(&["authenticated"], "SELECT", "(id > 0)");
        restrictive.permissive = false;
        assert!(rule(&[owner.clone(), restrictive], "authenticated").is_none());
        // Other policy shapes.
        for using in [
            "((owner = realtime.user_id()) OR (id = 1))",
            "((owner = realtime.user_id()) AND (id > 0))",
            "(owner <> realtime.user_id())",
            "(owner = owner)",
            "(price = 1)",
            "(owner = (SELECT u.name FROM users u WHERE u.id = 1))",
            "true",
            "(id IN (1, 2))",
        ] {
            assert!(
                rule(
                    &[policy(&["authenticated"], "SELECT", using)],
                    "authenticated"
                )
                .is_none(),
                "{using}"
            );
        }
        // Policies for other commands do not count.
        assert!(rule(
            &[
                owner.clone(),
                policy(&["authenticated"], "INSERT", "(id = 1)")
            ],
            "authenticated"
        )
        .is_some());
        assert!(rule(
            &[policy(&["public"], "ALL", "(owner = realtime.user_id())")],
            "anon"
        )
        .is_some());
    }

    #[test]
    fn row_values_print_as_postgres_does() {
        let row: Row =
            serde_json::from_value(serde_json::json!({"owner": "u1", "id": 42, "gone": null}))
                .unwrap();
        assert_eq!(row_value(Some(&row), "owner").as_deref(), Some("u1"));
        assert_eq!(row_value(Some(&row), "id").as_deref(), Some("42"));
        assert_eq!(row_value(Some(&row), "gone"), None);
        assert_eq!(row_value(Some(&row), "missing"), None);
        assert_eq!(row_value(None, "owner"), None);
    }
}
