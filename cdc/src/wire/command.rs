//! The little language of the Postgres-wire endpoint: splitting a simple-query string into
//! statements and reading each as one of our commands.
//!
//! ```text
//! SUBSCRIBE schema.table [INSERT,UPDATE,DELETE,TRUNCATE]     (also schema.* and a bare table)
//! UNSUBSCRIBE schema.table
//! SHOW SUBSCRIPTIONS
//! LISTEN "schema.table"   |  LISTEN schema.table              (also schema.*)
//! UNLISTEN "schema.table" |  UNLISTEN schema.table  |  UNLISTEN *
//! ```
//!
//! Keywords are case-insensitive. Names follow [`crate::subscriptions::Target::parse`]. A LISTEN
//! channel is what the client will see in each notification: for `LISTEN "public.users"` it is
//! the quoted text as written (`public.users`), as Postgres does; for an unquoted argument it is
//! the table's canonical name (`LISTEN Public.Users` → `public.users`, since unquoted names
//! fold to lower case). Parsing is pure, so every rule here is unit-tested without a server.

use crate::subscriptions::{self, OperationsError, Target, TargetError};
use nself_realtime_shared::subject::Operation;

/// Every command the endpoint understands, as listed in error messages.
pub const SUPPORTED: &str = "SUBSCRIBE schema.table [INSERT,UPDATE,DELETE,TRUNCATE], \
UNSUBSCRIBE schema.table, SHOW SUBSCRIPTIONS, LISTEN \"schema.table\", UNLISTEN \"schema.table\" | *";

/// One statement of a simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Subscribe {
        target: Target,
        operations: Vec<Operation>,
    },
    Unsubscribe {
        target: Target,
    },
    ShowSubscriptions,
    Listen {
        channel: String,
        target: Target,
    },
    Unlisten {
        channel: String,
    },
    UnlistenAll,
}

/// A statement that is not one of our commands, or one with a bad argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unsupported command {0:?}: this endpoint understands {SUPPORTED}")]
    Unsupported(String),
    #[error("{command} needs {what}; this endpoint understands {SUPPORTED}")]
    MissingArgument {
        command: &'static str,
        what: &'static str,
    },
    #[error("unexpected {rest:?} after {command}; this endpoint understands {SUPPORTED}")]
    Trailing { command: &'static str, rest: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Operations(#[from] OperationsError),
}

impl CommandError {
    /// The SQLSTATE to answer with: 42601 (syntax error) for the statement's shape, 42602
    /// (invalid name) for a bad table, 22023 (invalid parameter value) for a bad operation.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CommandError::Target(_) => "42602",
            CommandError::Operations(_) => "22023",
            _ => "42601",
        }
    }
}

/// Splits a simple-query string into its statements at `;`, ignoring `;` inside double-quoted
/// names and single-quoted strings and dropping `--` comments. Empty statements are left out.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for skipped in chars.by_ref() {
                        if skipped == '\n' {
                            current.push('\n');
                            break;
                        }
                    }
                }
                ';' => statements.push(std::mem::take(&mut current)),
                _ => current.push(c),
            },
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Splits off the first word, where a word ends at white space outside double quotes.
/// Returns the word and the trimmed rest.
fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c.is_whitespace() && !in_quotes {
            return (&text[..i], text[i..].trim());
        }
    }
    (text, "")
}

/// Parses one statement (as returned by [`split_statements`]).
pub fn parse(statement: &str) -> Result<Command, CommandError> {
    let (keyword, rest) = first_word(statement);
    match keyword.to_ascii_uppercase().as_str() {
        "SUBSCRIBE" => {
            let (target, operations) = first_word(rest);
            if target.is_empty() {
                return Err(CommandError::MissingArgument {
                    command: "SUBSCRIBE",
                    what: "a table (schema.table or schema.*)",
                });
            }
            Ok(Command::Subscribe {
                target: Target::parse(target)?,
                operations: subscriptions::parse_operations(operations)?,
            })
        }
        "UNSUBSCRIBE" => {
            let target =
                single_argument("UNSUBSCRIBE", rest, "a table (schema.table or schema.*)")?;
            Ok(Command::Unsubscribe {
                target: Target::parse(target)?,
            })
        }
        "SHOW" if rest.eq_ignore_ascii_case("subscriptions") => Ok(Command::ShowSubscriptions),
        "LISTEN" => {
            let argument =
                single_argument("LISTEN", rest, "a table channel, as in \"public.users\"")?;
            let (channel, target) = match quoted_whole(argument) {
                Some(inner) => {
                    let target = Target::parse(&inner)?;
                    (inner, target)
                }
                None => {
                    let target = Target::parse(argument)?;
                    (target.to_string(), target)
                }
            };
            Ok(Command::Listen { channel, target })
        }
        "UNLISTEN" => {
            let argument = single_argument("UNLISTEN", rest, "a channel or *")?;
            if argument == "*" {
                return Ok(Command::UnlistenAll);
            }
            let channel = match quoted_whole(argument) {
                Some(inner) => inner,
                // A name that cannot be a target was never listened to: UNLISTEN of an unknown
                // channel is not an error in Postgres either.
                None => Target::parse(argument)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| argument.to_string()),
            };
            Ok(Command::Unlisten { channel })
        }
        _ => Err(CommandError::Unsupported(truncate(statement, 80))),
    }
}

/// The one argument of a command; an error when it is missing or followed by more text.
fn single_argument<'a>(
    command: &'static str,
    rest: &'a str,
    what: &'static str,
) -> Result<&'a str, CommandError> {
    let (argument, trailing) = first_word(rest);
    if argument.is_empty() {
        return Err(CommandError::MissingArgument { command, what });
    }
    if !trailing.is_empty() {
        return Err(CommandError::Trailing {
            command,
            rest: truncate(trailing, 80),
        });
    }
    Ok(argument)
}

/// The content of `"..."` when the whole text is one double-quoted identifier (`""` = `"`).
fn quoted_whole(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' && chars.next() != Some('"') {
            return None;
        }
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        assert_eq!(
            split_statements("SUBSCRIBE a; SHOW SUBSCRIPTIONS;;"),
            vec!["SUBSCRIBE a", "SHOW SUBSCRIPTIONS"]
        );
        assert_eq!(
            split_statements(r#"LISTEN "a;b"; UNLISTEN 'x;y'"#),
            vec![r#"LISTEN "a;b""#, "UNLISTEN 'x;y'"]
        );
        assert_eq!(
            split_statements("-- hello; world\nSHOW SUBSCRIPTIONS -- trailing"),
            vec!["SHOW SUBSCRIPTIONS"]
        );
        assert!(split_statements(" ; -- only a comment").is_empty());
    }

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(
            parse("subscribe public.users").unwrap(),
            Command::Subscribe {
                target: Target::table("public", "users"),
                operations: vec![Insert, Update, Delete]
            }
        );
        assert_eq!(
            parse("SUBSCRIBE public.posts insert, Update").unwrap(),
            Command::Subscribe {
                target: Target::table("public", "posts"),
                operations: vec![Insert, Update]
            }
        );
        assert_eq!(
            parse(r#"Subscribe "My Schema"."odd table" TRUNCATE"#).unwrap(),
            Command::Subscribe {
                target: Target::table("My Schema", "odd table"),
                operations: vec![Truncate]
            }
        );
        assert_eq!(
            parse("unsubscribe app.*").unwrap(),
            Command::Unsubscribe {
                target: Target::schema("app")
            }
        );
        assert_eq!(
            parse("show   Subscriptions").unwrap(),
            Command::ShowSubscriptions
        );
    }

    #[test]
    fn listen_channels_are_the_name_as_given() {
        assert_eq!(
            parse(r#"LISTEN "public.users""#).unwrap(),
            Command::Listen {
                channel: "public.users".into(),
                target: Target::table("public", "users")
            }
        );
        assert_eq!(
            parse("listen Public.Users").unwrap(),
            Command::Listen {
                channel: "public.users".into(),
                target: Target::table("public", "users")
            }
        );
        assert_eq!(
            parse(r#"LISTEN "public.""weird.name""""#).unwrap(),
            Command::Listen {
                channel: r#"public."weird.name""#.into(),
                target: Target::table("public", "weird.name")
            }
        );
        assert_eq!(
            parse(r#"LISTEN public."weird.name""#).unwrap(),
            Command::Listen {
                channel: r#"public."weird.name""#.into(),
                target: Target::table("public", "weird.name")
            }
        );
        assert_eq!(
            parse("LISTEN app.*").unwrap(),
            Command::Listen {
                channel: "app.*".into(),
                target: Target::schema("app")
            }
        );
        assert_eq!(parse("UNLISTEN *").unwrap(), Command::UnlistenAll);
        assert_eq!(
            parse(r#"unlisten "public.users""#).unwrap(),
            Command::Unlisten {
                channel: "public.users".into()
            }
        );
        assert_eq!(
            parse("UNLISTEN no-such-thing").unwrap(),
            Command::Unlisten {
                channel: "no-such-thing".into()
            }
        );
    }

    #[test]
    fn anything_else_is_a_syntax_error_listing_the_commands() {
        for statement in ["SELECT 1", "DROP TABLE users", "SHOW ALL", "BEGIN"] {
            let err = parse(statement).unwrap_err();
            assert_eq!(err.sqlstate(), "42601", "{statement}");
            assert!(err.to_string().contains("SHOW SUBSCRIPTIONS"), "{err}");
        }
        assert!(matches!(
            parse("SUBSCRIBE").unwrap_err(),
            CommandError::MissingArgument { .. }
        ));
        assert!(matches!(
            parse("LISTEN a b").unwrap_err(),
            CommandError::Trailing { .. }
        ));
        assert_eq!(parse("SUBSCRIBE a.b.c").unwrap_err().sqlstate(), "42602");
        assert_eq!(
            parse("SUBSCRIBE a.b UPSERT").unwrap_err().sqlstate(),
            "22023"
        );
        assert_eq!(
            parse(r#"SUBSCRIBE public.users"; DROP TABLE x; --"#)
                .unwrap_err()
                .sqlstate(),
            "42602"
        );
    }
}
