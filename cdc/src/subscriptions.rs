//! Subscriptions: which tables (and which of their operations) the CDC publishes.
//!
//! `SUBSCRIBE public.posts INSERT,UPDATE` is two facts kept in step inside one transaction:
//!
//! * a row of `realtime.subscriptions` (`schema_name`, `table_name` — NULL for a whole schema —
//!   and `operations`), which is what `SHOW SUBSCRIPTIONS` and the CLI's `subscriptions` list;
//! * membership of the table (or, for `schema.*`, the schema) in exactly one of the fifteen
//!   op-set publications of [`crate::publications`], the one whose `publish` option matches the
//!   operations. Postgres then decodes and sends only those operations.
//!
//! This module owns the user-facing side of that: parsing a target (`schema.table`,
//! `schema.*`, `"My Schema"."odd.table"`, a bare `table` meaning `public.table`) the way Postgres
//! reads identifiers, parsing an operation list, and the SQL that applies a subscription. User
//! input reaches SQL only as bind parameters or, where Postgres takes no parameters
//! (`ALTER PUBLICATION`), as identifiers quoted by [`quote_ident`]; nothing is concatenated raw.
//!
//! A table whose replica identity cannot identify rows (no primary key under `REPLICA IDENTITY
//! DEFAULT`, or `NOTHING`) is refused when UPDATE or DELETE is asked for: once such a table is in a
//! publication that publishes updates, Postgres refuses the application's own UPDATEs on it.

use crate::postgres_error;
use crate::publications;
use crate::sql::quote_ident;
use nself_realtime_shared::subject::Operation;
use std::borrow::Cow;
use std::fmt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

/// The operations subscribed when none are given.
pub const DEFAULT_OPERATIONS: [Operation; 3] =
    [Operation::Insert, Operation::Update, Operation::Delete];

/// Postgres truncates longer names (NAMEDATALEN - 1); we refuse them instead of silently
/// addressing a different table.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Advisory lock serialising subscription changes, so two concurrent `SUBSCRIBE`s of one table
/// cannot interleave their publication moves ("nselfsub" as bytes).
const SUBSCRIPTIONS_LOCK: i64 = 0x6e73_656c_6673_7562;

/// `created_at` as RFC 3339 in UTC, formatted by Postgres (no date-time crate needed here).
const CREATED_AT_UTC: &str =
    r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

/// What a subscription covers: one table, or every table of a schema (`table` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub schema: String,
    pub table: Option<String>,
}

/// A target spec that is not `schema.table`, `schema.*` or `table`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("no table given: use schema.table, schema.* or a table name")]
    Empty,
    #[error("table names cannot contain NUL characters")]
    Nul,
    #[error("{0:?} has an unbalanced double quote: close every quoted name, and write a quote inside one as \"\"")]
    UnbalancedQuote(String),
    #[error("{0:?} has text right after a closing quote: quote the whole name, as in public.\"my table\"")]
    TextAfterQuote(String),
    #[error("{0:?} has an empty name: use schema.table, schema.* or a table name")]
    EmptyPart(String),
    #[error("{0:?} has more than two dot-separated parts: use schema.table, and double-quote names containing dots, as in public.\"my.table\"")]
    TooManyParts(String),
    #[error("{part:?} in {spec:?} must be double-quoted: unquoted names are letters, digits, _ and $, not starting with a digit")]
    NeedsQuotes { spec: String, part: String },
    #[error("{0:?} is longer than {MAX_IDENTIFIER_BYTES} bytes, the Postgres limit for names")]
    TooLong(String),
    #[error("{0:?}: the schema cannot be *; use schema.* for every table of one schema")]
    WildcardSchema(String),
}

/// An operation list with a word that is not an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}: use a comma list of INSERT, UPDATE, DELETE and TRUNCATE, as in INSERT,UPDATE")]
pub struct OperationsError(pub String);

/// One part of a dotted name as written.
enum Part {
    Name(String),
    Star,
}

impl Target {
    /// One table.
    pub fn table(schema: impl Into<String>, table: impl Into<String>) -> Target {
        Target {
            schema: schema.into(),
            table: Some(table.into()),
        }
    }

    /// Every table of one schema (`schema.*`).
    pub fn schema(schema: impl Into<String>) -> Target {
        Target {
            schema: schema.into(),
            table: None,
        }
    }

    /// Parses `schema.table`, `schema.*`, `table` (in `public`) or `*` (all of `public`), with
    /// Postgres' identifier rules: unquoted names are folded to lower case, `"Quoted"` names are
    /// taken as written with `""` standing for one quote.
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(TargetError::Empty);
        }
        if spec.contains('\0') {
            return Err(TargetError::Nul);
        }
        let parts = split_parts(spec)?;
        let (schema, table) = match parts.len() {
            1 => (Part::Name("public".to_string()), parts.into_iter().next()),
            2 => {
                let mut parts = parts.into_iter();
                (parts.next().expect("two parts"), parts.next())
            }
            _ => return Err(TargetError::TooManyParts(spec.to_string())),
        };
        let schema = match schema {
            Part::Name(name) => name,
            Part::Star => return Err(TargetError::WildcardSchema(spec.to_string())),
        };
        let table = match table {
            Some(Part::Name(name)) => Some(name),
            _ => None,
        };
        for name in std::iter::once(&schema).chain(table.as_ref()) {
            if name.len() > MAX_IDENTIFIER_BYTES {
                return Err(TargetError::TooLong(name.clone()));
            }
        }
        Ok(Target { schema, table })
    }

    /// Whether this covers a whole schema.
    pub fn is_schema(&self) -> bool {
        self.table.is_none()
    }

    /// The quoted SQL name of the table (`"public"."users"`), or of the schema for `schema.*`.
    pub fn sql_name(&self) -> String {
        match &self.table {
            Some(table) => format!("{}.{}", quote_ident(&self.schema), quote_ident(table)),
            None => quote_ident(&self.schema),
        }
    }
}

/// The canonical text form, which [`Target::parse`] reads back to the same target:
/// `public.users`, `public.*`, `"My Schema"."odd.table"`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            Some(table) => write!(
                f,
                "{}.{}",
                display_ident(&self.schema),
                display_ident(table)
            ),
            None => write!(f, "{}.*", display_ident(&self.schema)),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        Target::parse(s)
    }
}

/// Splits `a."b.c"` into its dot-separated parts, unquoting and folding each.
fn split_parts(spec: &str) -> Result<Vec<Part>, TargetError> {
    let mut parts = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        let part = if chars.peek() == Some(&'"') {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next() {
                    None => return Err(TargetError::UnbalancedQuote(spec.to_string())),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    Some('"') => break,
                    Some(c) => name.push(c),
                }
            }
            if name.is_empty() {
                return Err(TargetError::EmptyPart(spec.to_string()));
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(TargetError::TextAfterQuote(spec.to_string()));
            }
            Part::Name(name)
        } else {
            let mut raw = String::new();
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' {
                    return Err(TargetError::UnbalancedQuote(spec.to_string()));
                }
                raw.push(c);
                chars.next();
            }
            if raw.is_empty() {
                return Err(TargetError::EmptyPart(spec.to_string()));
            }
            if raw == "*" {
                Part::Star
            } else if is_unquoted_identifier(&raw) {
                Part::Name(raw.to_ascii_lowercase())
            } else {
                return Err(TargetError::NeedsQuotes {
                    spec: spec.to_string(),
                    part: raw,
                });
            }
        };
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') if chars.peek().is_none() => {
                return Err(TargetError::EmptyPart(spec.to_string()))
            }
            Some('.') => continue,
            Some(_) => unreachable!("a part ends at '.' or at the end"),
        }
    }
}

/// Postgres' unquoted identifier: a letter (any script) or `_`, then letters, digits, `_`, `$`.
fn is_unquoted_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c == '_' || c.is_alphabetic());
    first_ok && chars.all(|c| c == '_' || c == '$' || c.is_alphanumeric())
}

/// An identifier as people write it: bare when that reads back unchanged, quoted otherwise.
fn display_ident(name: &str) -> Cow<'_, str> {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b == b'_' || b == b'$' || b.is_ascii_lowercase() || b.is_ascii_digit());
    if plain {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(quote_ident(name))
    }
}

/// Parses `INSERT,UPDATE` (any case; commas and/or white space between words) into operations in
/// canonical order without duplicates. An empty list means [`DEFAULT_OPERATIONS`].
pub fn parse_operations(list: &str) -> Result<Vec<Operation>, OperationsError> {
    let mut wanted = Vec::new();
    for word in list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        wanted.push(Operation::parse(word).ok_or_else(|| OperationsError(word.to_string()))?);
    }
    if wanted.is_empty() {
        return Ok(DEFAULT_OPERATIONS.to_vec());
    }
    Ok(canonical(&wanted))
}

/// `INSERT, UPDATE, DELETE`: operations as the CLI and `SHOW SUBSCRIPTIONS` print them.
pub fn format_operations(operations: &[Operation]) -> String {
    operations
        .iter()
        .map(|op| op.keyword())
        .collect::<Vec<_>>()
        .join(", ")
}

fn canonical(operations: &[Operation]) -> Vec<Operation> {
    Operation::ALL
        .into_iter()
        .filter(|op| operations.contains(op))
        .collect()
}

/// One row of `realtime.subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub target: Target,
    pub operations: Vec<Operation>,
    /// RFC 3339 in UTC with microseconds.
    pub created_at: String,
}

/// A subscription change that could not be made. Each message is one line naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("schema {0:?} does not exist: check the name (unquoted names are folded to lower case; quote mixed-case ones)")]
    SchemaNotFound(String),
    #[error("table {0} does not exist: check the name (unquoted names are folded to lower case; quote mixed-case ones, as in public.\"Users\")")]
    TableNotFound(String),
    #[error("{name} is a {kind}, not a table: only tables can be subscribed")]
    NotATable { name: String, kind: &'static str },
    #[error("{}", no_replica_identity_message(.0))]
    NoReplicaIdentity(Vec<Target>),
    #[error("{0} is not subscribed (SHOW SUBSCRIPTIONS lists what is)")]
    NotSubscribed(String),
    #[error("{0} is not published, so none of its changes reach a listener: publish it with SUBSCRIBE {0} (nself-realtime subscribe {0})")]
    NotPublished(String),
    #[error("no operations given: subscribe to at least one of INSERT, UPDATE, DELETE, TRUNCATE")]
    NoOperations,
    #[error("subscribing to a whole schema ({target}) needs PostgreSQL 15 or newer (this server is {version}): subscribe to its tables one by one")]
    SchemaNeedsPostgres15 { target: String, version: i32 },
    #[error(
        "realtime.subscriptions does not exist: run `nself-realtime init` against this database"
    )]
    NotInitialised,
    #[error("{}", postgres_error::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

fn no_replica_identity_message(tables: &[Target]) -> String {
    let names = tables
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (verb, example) = match tables {
        [one] => ("has", one.sql_name()),
        _ => ("have", tables[0].sql_name()),
    };
    format!(
        "{names} {verb} no replica identity, so Postgres would refuse UPDATE and DELETE on it once published: \
         run ALTER TABLE {example} REPLICA IDENTITY FULL (or add a primary key), or subscribe with INSERT only"
    )
}

impl SubscriptionError {
    /// The SQLSTATE the Postgres-wire endpoint answers with.
    pub fn sqlstate(&self) -> String {
        match self {
            SubscriptionError::SchemaNotFound(_) => "3F000".into(),
            SubscriptionError::TableNotFound(_) => "42P01".into(),
            SubscriptionError::NotATable { .. } => "42809".into(),
            SubscriptionError::NoReplicaIdentity(_) => "55000".into(),
            SubscriptionError::NotSubscribed(_) => "42704".into(),
            SubscriptionError::NotPublished(_) => "55000".into(),
            SubscriptionError::NoOperations => "22023".into(),
            SubscriptionError::SchemaNeedsPostgres15 { .. } => "0A000".into(),
            SubscriptionError::NotInitialised => "55000".into(),
            SubscriptionError::Postgres(e) => e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| "08006".into()),
        }
    }
}

/// The `realtime.subscriptions` table is missing when a statement on it fails with 42P01.
fn on_subscriptions_table(error: tokio_postgres::Error) -> SubscriptionError {
    if error.code() == Some(&SqlState::UNDEFINED_TABLE) {
        SubscriptionError::NotInitialised
    } else {
        SubscriptionError::Postgres(error)
    }
}

/// A target resolved to catalog objects: the schema's oid and, for a table target, the table's.
struct Resolved {
    schema_oid: u32,
    table_oid: Option<u32>,
}

/// Replica-identity facts of one table.
struct TableInfo {
    name: String,
    kind: String,
    identity: String,
    has_primary_key: bool,
    has_identity_index: bool,
}

impl TableInfo {
    /// Whether Postgres can log old-row identity for UPDATE/DELETE of this table.
    fn identifies_rows(&self) -> bool {
        match self.identity.as_str() {
            "f" => true,
            "d" => self.has_primary_key,
            "i" => self.has_identity_index,
            _ => false,
        }
    }
}

async fn schema_oid(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<u32>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT oid FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await?
        .map(|row| row.get(0)))
}

/// The tables `target` covers (one, or every table of the schema) with their identity facts.
async fn tables(
    client: &impl GenericClient,
    schema_oid: u32,
    table: Option<&str>,
) -> Result<Vec<(u32, TableInfo)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.oid, c.relname::text, c.relkind::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
               FROM pg_class c
              WHERE c.relnamespace = $1
                AND (($2::text IS NULL AND c.relkind IN ('r', 'p')) OR c.relname = $2::text)
              ORDER BY c.relname",
            &[&schema_oid, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                TableInfo {
                    name: row.get(1),
                    kind: row.get(2),
                    identity: row.get(3),
                    has_primary_key: row.get(4),
                    has_identity_index: row.get(5),
                },
            )
        })
        .collect())
}

/// The oid of the one relation `tables` found for `target`, if it is a table (plain or
/// partitioned); else why not.
fn the_table(found: &[(u32, TableInfo)], target: &Target) -> Result<u32, SubscriptionError> {
    let (oid, info) = found
        .first()
        .ok_or_else(|| SubscriptionError::TableNotFound(target.to_string()))?;
    if !matches!(info.kind.as_str(), "r" | "p") {
        return Err(SubscriptionError::NotATable {
            name: target.to_string(),
            kind: relkind_name(&info.kind),
        });
    }
    Ok(*oid)
}

fn relkind_name(kind: &str) -> &'static str {
    match kind {
        "v" => "view",
        "m" => "materialized view",
        "i" | "I" => "index",
        "S" => "sequence",
        "c" => "composite type",
        "f" => "foreign table",
        "t" => "TOAST table",
        _ => "relation of another kind",
    }
}

/// Resolves `target` for subscribing: it must exist, be a table (or a schema), and have a usable
/// replica identity when UPDATE or DELETE is wanted.
async fn resolve_for_subscribe(
    tx: &Transaction<'_>,
    target: &Target,
    operations: &[Operation],
) -> Result<Resolved, SubscriptionError> {
    if target.is_schema() {
        let version: i32 = tx
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await?
            .get(0);
        if version < 150_000 {
            return Err(SubscriptionError::SchemaNeedsPostgres15 {
                target: target.to_string(),
                version,
            });
        }
    }
    let schema_oid = schema_oid(tx, &target.schema)
        .await?
        .ok_or_else(|| SubscriptionError::SchemaNotFound(target.schema.clone()))?;
    let found = tables(tx, schema_oid, target.table.as_deref()).await?;
    let table_oid = match &target.table {
        None => None,
        Some(_) => Some(the_table(&found, target)?),
    };
    let needs_identity = operations
        .iter()
        .any(|op| matches!(op, Operation::Update | Operation::Delete));
    if needs_identity {
        let lacking: Vec<Target> = found
            .iter()
            .filter(|(_, info)| !info.identifies_rows())
            .map(|(_, info)| Target::table(target.schema.clone(), info.name.clone()))
            .collect();
        if !lacking.is_empty() {
            return Err(SubscriptionError::NoReplicaIdentity(lacking));
        }
    }
    Ok(Resolved {
        schema_oid,
        table_oid,
    })
}

/// Resolves `target` for unsubscribing: `None` when the table or schema no longer exists.
async fn resolve_existing(
    tx: &Transaction<'_>,
    target: &Target,
) -> Result<Option<Resolved>, SubscriptionError> {
    let Some(schema_oid) = schema_oid(tx, &target.schema).await? else {
        return Ok(None);
    };
    let table_oid = match &target.table {
        None => None,
        Some(table) => match tables(tx, schema_oid, Some(table)).await?.first() {
            Some((oid, _)) => Some(*oid),
            None => return Ok(None),
        },
    };
    Ok(Some(Resolved {
        schema_oid,
        table_oid,
    }))
}

/// Which of our publications hold the target (the table itself, or the schema as a whole).
async fn publications_holding(
    tx: &Transaction<'_>,
    resolved: &Resolved,
    base: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let ours = publications::all(base);
    let names: Vec<&str> = ours.iter().map(|p| p.name.as_str()).collect();
    let rows = match resolved.table_oid {
        Some(oid) => {
            tx.query(
                "SELECT p.pubname::text
                   FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                  WHERE r.prrelid = $1 AND p.pubname = ANY($2)",
                &[&oid, &names],
            )
            .await?
        }
        None => {
            tx.query(
                "SELECT p.pubname::text
                   FROM pg_publication_namespace n JOIN pg_publication p ON p.oid = n.pnpubid
                  WHERE n.pnnspid = $1 AND p.pubname = ANY($2)",
                &[&resolved.schema_oid, &names],
            )
            .await?
        }
    };
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// `ALTER PUBLICATION "p" ADD|DROP TABLE "s"."t"` (or `TABLES IN SCHEMA "s"`), every name quoted.
async fn alter_publication(
    tx: &Transaction<'_>,
    publication: &str,
    action: &str,
    target: &Target,
) -> Result<(), tokio_postgres::Error> {
    let object = if target.is_schema() {
        "TABLES IN SCHEMA"
    } else {
        "TABLE"
    };
    tx.batch_execute(&format!(
        "ALTER PUBLICATION {} {action} {object} {}",
        quote_ident(publication),
        target.sql_name()
    ))
    .await
}

/// Creates missing publications. Two first-time subscribers may race to create them; the loser
/// sees `duplicate_object` and simply checks again.
async fn ensure_publications(client: &Client, base: &str) -> Result<(), tokio_postgres::Error> {
    match publications::ensure_exist(client, base).await {
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
            publications::ensure_exist(client, base).await
        }
        other => other,
    }
}

/// Subscribes `target` to `operations`: records it in `realtime.subscriptions` and moves the
/// table (or schema) into the one publication publishing exactly those operations, all in one
/// transaction. Subscribing again replaces the operations and keeps `created_at`.
pub async fn subscribe(
    client: &mut Client,
    base_publication: &str,
    target: &Target,
    operations: &[Operation],
) -> Result<Subscription, SubscriptionError> {
    let operations = canonical(operations);
    let publication = publications::for_operations(base_publication, &operations)
        .ok_or(SubscriptionError::NoOperations)?;
    ensure_publications(client, base_publication).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SUBSCRIPTIONS_LOCK])
        .await?;
    let resolved = resolve_for_subscribe(&tx, target, &operations).await?;
    let keywords: Vec<&str> = operations.iter().map(|op| op.keyword()).collect();
    let created_at: String = tx
        .query_one(
            &format!(
                "INSERT INTO realtime.subscriptions (schema_name, table_name, operations)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (schema_name, coalesce(table_name, ''))
                 DO UPDATE SET operations = EXCLUDED.operations
                 RETURNING {CREATED_AT_UTC}"
            ),
            &[&target.schema, &target.table, &keywords],
        )
        .await
        .map_err(on_subscriptions_table)?
        .get(0);
    let holding = publications_holding(&tx, &resolved, base_publication).await?;
    for name in holding.iter().filter(|name| **name != publication.name) {
        alter_publication(&tx, name, "DROP", target).await?;
    }
    if !holding.contains(&publication.name) {
        alter_publication(&tx, &publication.name, "ADD", target).await?;
    }
    tx.commit().await?;
    Ok(Subscription {
        target: target.clone(),
        operations,
        created_at,
    })
}

/// Removes `target`'s subscription: its row and its publication membership. An error when it is
/// in neither. A table dropped since it was subscribed loses its row without complaint.
pub async fn unsubscribe(
    client: &mut Client,
    base_publication: &str,
    target: &Target,
) -> Result<(), SubscriptionError> {
    ensure_publications(client, base_publication).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SUBSCRIPTIONS_LOCK])
        .await?;
    let deleted = tx
        .execute(
            "DELETE FROM realtime.subscriptions
              WHERE schema_name = $1 AND table_name IS NOT DISTINCT FROM $2",
            &[&target.schema, &target.table],
        )
        .await
        .map_err(on_subscriptions_table)?;
    let holding = match resolve_existing(&tx, target).await? {
        Some(resolved) => {
            let holding = publications_holding(&tx, &resolved, base_publication).await?;
            for name in &holding {
                alter_publication(&tx, name, "DROP", target).await?;
            }
            holding
        }
        None => Vec::new(),
    };
    if deleted == 0 && holding.is_empty() {
        return Err(SubscriptionError::NotSubscribed(target.to_string()));
    }
    tx.commit().await?;
    Ok(())
}

/// Whether changes of `target` can reach a listener: it exists, is a table (or a schema), and
/// one of the CDC's publications holds it (a schema: at least one of its tables), however it
/// got there (`SUBSCRIBE`, or `ALTER PUBLICATION` by hand). The error says which is not so.
pub async fn check_published(
    client: &impl GenericClient,
    base_publication: &str,
    target: &Target,
) -> Result<(), SubscriptionError> {
    let schema_oid = schema_oid(client, &target.schema)
        .await?
        .ok_or_else(|| SubscriptionError::SchemaNotFound(target.schema.clone()))?;
    if let Some(table) = &target.table {
        the_table(&tables(client, schema_oid, Some(table)).await?, target)?;
    }
    let names: Vec<String> = publications::all(base_publication)
        .into_iter()
        .map(|p| p.name)
        .collect();
    // Publications publish partitioned tables as their root, so a root is listed here.
    let published: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication_tables
                             WHERE pubname = ANY($1) AND schemaname = $2
                               AND ($3::text IS NULL OR tablename = $3::text))",
            &[&names, &target.schema, &target.table],
        )
        .await?
        .get(0);
    if published {
        Ok(())
    } else {
        Err(SubscriptionError::NotPublished(target.to_string()))
    }
}

/// Every subscription, ordered by schema then table (a schema's `*` first).
pub async fn list(client: &Client) -> Result<Vec<Subscription>, SubscriptionError> {
    let rows = client
        .query(
            &format!(
                "SELECT schema_name, table_name, operations, {CREATED_AT_UTC}
                   FROM realtime.subscriptions
                  ORDER BY schema_name, table_name NULLS FIRST"
            ),
            &[],
        )
        .await
        .map_err(on_subscriptions_table)?;
    Ok(rows
        .iter()
        .map(|row| {
            let words: Vec<String> = row.get(2);
            let operations: Vec<Operation> =
                words.iter().filter_map(|w| Operation::parse(w)).collect();
            Subscription {
                target: Target {
                    schema: row.get(0),
                    table: row.get(1),
                },
                operations: canonical(&operations),
                created_at: row.get(3),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    fn t(schema: &str, table: &str) -> Target {
        Target::table(schema, table)
    }

    #[test]
    fn targets_parse_like_postgres_identifiers() {
        assert_eq!(Target::parse("public.users").unwrap(), t("public", "users"));
        assert_eq!(
            Target::parse("  Public.Users ").unwrap(),
            t("public", "users")
        );
        assert_eq!(Target::parse("users").unwrap(), t("public", "users"));
        assert_eq!(Target::parse("app.*").unwrap(), Target::schema("app"));
        assert_eq!(Target::parse("*").unwrap(), Target::schema("public"));
        assert_eq!(
            Target::parse(r#""My Schema"."odd.table""#).unwrap(),
            t("My Schema", "odd.table")
        );
        assert_eq!(Target::parse(r#"public."*""#).unwrap(), t("public", "*"));
        assert_eq!(
            Target::parse(r#"public."say ""hi""""#).unwrap(),
            t("public", r#"say "hi""#)
        );
        assert_eq!(Target::parse("café.crème$1").unwrap(), t("café", "crème$1"));
        assert_eq!(Target::parse("_a.b1").unwrap(), t("_a", "b1"));
    }

    #[test]
    fn bad_targets_are_clear_errors() {
        use TargetError::*;
        type Check = fn(&TargetError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, Empty)),
            ("   ", |e| matches!(e, Empty)),
            ("public.us\0ers", |e| matches!(e, Nul)),
            (r#"public."users"#, |e| matches!(e, UnbalancedQuote(_))),
            (r#"public.us"ers"#, |e| matches!(e, UnbalancedQuote(_))),
            (r#"public."a"b"#, |e| matches!(e, TextAfterQuote(_))),
            ("public.", |e| matches!(e, EmptyPart(_))),
            (".users", |e| matches!(e, EmptyPart(_))),
            ("a..b", |e| matches!(e, EmptyPart(_))),
            (r#"public."""#, |e| matches!(e, EmptyPart(_))),
            ("a.b.c", |e| matches!(e, TooManyParts(_))),
            ("*.users", |e| matches!(e, WildcardSchema(_))),
            ("public.my table", |e| matches!(e, NeedsQuotes { .. })),
            ("public.users;drop", |e| matches!(e, NeedsQuotes { .. })),
            ("public.1abc", |e| matches!(e, NeedsQuotes { .. })),
            ("public.a-b", |e| matches!(e, NeedsQuotes { .. })),
        ];
        for (spec, expected) in cases {
            let err = Target::parse(spec).unwrap_err();
            assert!(expected(&err), "{spec:?} gave {err:?}");
            assert!(!err.to_string().contains('\n'));
        }
        let long = format!("public.{}", "a".repeat(64));
        assert!(matches!(Target::parse(&long), Err(TargetError::TooLong(_))));
        assert!(Target::parse(&format!("public.{}", "a".repeat(63))).is_ok());
    }

    #[test]
    fn display_reads_back_to_the_same_target() {
        let targets = [
            t("public", "users"),
            Target::schema("public"),
            t("My Schema", "odd.table"),
            t("public", "*"),
            t("public", r#"say "hi""#),
            t("public", "Users"),
            t("public", "café"),
            t("x", "a$1"),
        ];
        for target in targets {
            let text = target.to_string();
            assert_eq!(Target::parse(&text).unwrap(), target, "{text}");
        }
        assert_eq!(t("public", "users").to_string(), "public.users");
        assert_eq!(Target::schema("public").to_string(), "public.*");
        assert_eq!(
            t("My Schema", "odd.table").to_string(),
            r#""My Schema"."odd.table""#
        );
    }

    #[test]
    fn sql_names_are_always_quoted() {
        assert_eq!(t("public", "users").sql_name(), r#""public"."users""#);
        assert_eq!(
            t("public", r#"x"; DROP TABLE y; --"#).sql_name(),
            r#""public"."x""; DROP TABLE y; --""#
        );
        assert_eq!(Target::schema("app").sql_name(), r#""app""#);
        assert_eq!(quote_ident(r#"a""b"#), r#""a""""b""#);
    }

    #[test]
    fn operations_parse_any_case_in_canonical_order() {
        assert_eq!(parse_operations("").unwrap(), DEFAULT_OPERATIONS.to_vec());
        assert_eq!(
            parse_operations("update,insert").unwrap(),
            vec![Insert, Update]
        );
        assert_eq!(
            parse_operations("DELETE, truncate  Insert,delete").unwrap(),
            vec![Insert, Delete, Truncate]
        );
        let err = parse_operations("INSERT,UPSERT").unwrap_err();
        assert_eq!(err, OperationsError("UPSERT".into()));
        assert!(err
            .to_string()
            .contains("INSERT, UPDATE, DELETE and TRUNCATE"));
        assert_eq!(
            format_operations(&[Insert, Update, Delete]),
            "INSERT, UPDATE, DELETE"
        );
    }

    #[test]
    fn replica_identity_rules() {
        let info = |identity: &str, pk: bool, index: bool| TableInfo {
            name: "t".into(),
            kind: "r".into(),
            identity: identity.into(),
            has_primary_key: pk,
            has_identity_index: index,
        };
        assert!(info("d", true, false).identifies_rows());
        assert!(!info("d", false, false).identifies_rows());
        assert!(info("f", false, false).identifies_rows());
        assert!(!info("n", true, false).identifies_rows());
        assert!(info("i", false, true).identifies_rows());
        assert!(!info("i", false, false).identifies_rows());
        let msg = no_replica_identity_message(&[t("public", "logs")]);
        assert!(
            msg.contains(r#"ALTER TABLE "public"."logs" REPLICA IDENTITY FULL"#),
            "{msg}"
        );
        assert!(msg.contains("INSERT only"));
    }
}
