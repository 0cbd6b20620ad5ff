//! Row visibility under Row Level Security, checked in batches.
//!
//! For a table with RLS enabled, a subscriber receives an inserted or updated row only if its
//! claims can SELECT that row. The check is one query per (table, distinct claims) per batch of
//! changes, never one per change per subscriber: the candidate rows' primary keys go in as
//! arrays, and the query returns which of them the claims can see:
//!
//! ```sql
//! SELECT u.i FROM unnest($1::text[]::<key type>[], ...) WITH ORDINALITY AS u(k0, ..., i)
//! WHERE EXISTS (SELECT 1 FROM <table> t WHERE t.<key0> = u.k0 AND ...)
//! ```
//!
//! run inside the claims' session (role, `request.jwt.claims`, Hasura settings), so Postgres
//! applies the table's policies. The row is looked up by key as it is *now*, like Supabase's
//! walrus: a row deleted or changed since the event is judged by its current state.
//!
//! [`TableCatalog`] caches what the check needs per table (is RLS on, the primary key's columns
//! and SQL types) for a couple of seconds, so enabling RLS on a table takes effect quickly.

use super::owner_rule::{owner_rule, OwnerRule, Policy, VALUE_TTL};
use crate::auth::identity::Identity;
use crate::auth::session::{self, AllowedRoles, QueryAsError};
use crate::db::Pool;
use nself_realtime_shared::postgres_error::describe;
use nself_realtime_shared::sql::quote_ident;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a table's catalog facts are trusted.
const CATALOG_TTL: Duration = Duration::from_secs(2);

/// What the visibility check needs to know about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub table: String,
    /// Row Level Security is enabled (`relrowsecurity`).
    pub rls: bool,
    /// Primary key columns and their SQL types (`format_type`), in key order.
    pub key: Vec<(String, String)>,
    /// Every column and its SQL type, in table order.
    pub columns: Vec<(String, String)>,
    /// The table's policies.
    pub policies: Vec<Policy>,
    /// The owning role, which RLS does not apply to unless `force_rls`.
    pub owner: String,
    pub force_rls: bool,
    /// Roles with BYPASSRLS.
    pub bypass_roles: Vec<String>,
    /// The roles of `REALTIME_DB_ROLES` that may SELECT from the table (`has_table_privilege`,
    /// memberships and PUBLIC grants included). A change reaches only subscribers acting as one
    /// of them, whatever their bindings name: `*` must not widen what a role may read.
    pub readers: Vec<String>,
}

impl TableInfo {
    /// Whether `role` may SELECT from the table.
    pub fn readable_by(&self, role: &str) -> bool {
        self.readers.iter().any(|r| r == role)
    }

    /// The fast path for `role`, when the table's policies allow it ([`owner_rule`]).
    pub fn owner_rule(&self, role: &str) -> Option<OwnerRule> {
        if (role == self.owner && !self.force_rls) || self.bypass_roles.iter().any(|r| r == role) {
            return None;
        }
        owner_rule(&self.policies, &self.columns, role)
    }
}

/// Why a check or lookup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RlsError {
    #[error("table {0}.{1} does not exist")]
    NoSuchTable(String, String),
    #[error("table {0}.{1} has Row Level Security but no primary key, so its rows cannot be authorized; add a primary key")]
    NoPrimaryKey(String, String),
    /// The claims' session or the policies raised (permission denied, a policy error, ...).
    #[error("{0}")]
    Denied(String),
    #[error("cannot reach Postgres: {0}")]
    Unavailable(String),
}

/// (schema, table) → the facts and when they were read.
type CatalogCache = HashMap<(String, String), (Arc<TableInfo>, Instant)>;

/// (owner rule expression, claims key) → its value as those claims, and when it was read.
type ValueCache = HashMap<(String, Arc<str>), (Option<String>, Instant)>;

/// Most expression values kept (one per distinct claims and rule).
const MAX_VALUES: usize = 200_000;

/// Cached [`TableInfo`]s, and the values of owner-rule expressions per claims.
pub struct TableCatalog {
    pool: Pool,
    /// The roles whose SELECT privilege [`TableInfo::readers`] records.
    roles: Arc<AllowedRoles>,
    cache: Mutex<CatalogCache>,
    values: Arc<Mutex<ValueCache>>,
    /// Background refreshes of values in flight at most ([`REFRESH_SLOTS`]).
    refreshes: Arc<tokio::sync::Semaphore>,
}

/// Owner values refreshed at once: a quarter of a default pool, leaving the rest to the
/// queries a batch waits for.
const REFRESH_SLOTS: usize = 2;

impl TableCatalog {
    pub fn new(pool: Pool, roles: Arc<AllowedRoles>) -> TableCatalog {
        TableCatalog {
            pool,
            roles,
            cache: Mutex::new(HashMap::new()),
            values: Arc::new(Mutex::new(HashMap::new())),
            refreshes: Arc::new(tokio::sync::Semaphore::new(REFRESH_SLOTS)),
        }
    }

    /// `expression` (an owner rule's) evaluated as `identity`, as text (`None`: NULL). A value
    /// is read once per claims and refreshed when older than [`VALUE_TTL`]: the stale value
    /// serves while a background query refreshes it (at most [`REFRESH_SLOTS`] at once), so a
    /// batch never waits for a thousand refreshes. `queries` counts the queries issued. An error means the general
    /// path must decide.
    pub async fn owner_value(
        &self,
        roles: &AllowedRoles,
        identity: &Arc<Identity>,
        expression: &str,
        queries: &prometheus::IntCounter,
    ) -> Result<Option<String>, RlsError> {
        let cache_key = (expression.to_string(), identity.key.clone());
        {
            let mut values = self.values.lock().expect("values lock");
            if let Some((value, at)) = values.get_mut(&cache_key) {
                // Stale: refresh in the background, a few at a time so that the feed's own
                // queries (catalog, general path) always find a free connection; a value
                // that finds no refresh slot is served stale and tried again next batch.
                let slot = (at.elapsed() >= VALUE_TTL)
                    .then(|| self.refreshes.clone().try_acquire_owned().ok())
                    .flatten();
                if let Some(slot) = slot {
                    *at = Instant::now();
                    let (pool, roles, identity, values, queries) = (
                        self.pool.clone(),
                        roles.clone(),
                        identity.clone(),
                        self.values.clone(),
                        queries.clone(),
                    );
                    let (expression, cache_key) = (expression.to_string(), cache_key.clone());
                    tokio::spawn(async move {
                        let _slot = slot;
                        queries.inc();
                        match evaluate(&pool, &roles, &identity, &expression).await {
                            Ok(fresh) => {
                                values
                                    .lock()
                                    .expect("values lock")
                                    .insert(cache_key, (fresh, Instant::now()));
                            }
                            Err(_) => {
                                // Let the next batch decide on the general path.
                                values.lock().expect("values lock").remove(&cache_key);
                            }
                        }
                    });
                }
                return Ok(value.clone());
            }
        }
        queries.inc();
        let value = evaluate(&self.pool, roles, identity, expression).await?;
        let mut values = self.values.lock().expect("values lock");
        if values.len() >= MAX_VALUES {
            values.clear();
        }
        values.insert(cache_key, (value.clone(), Instant::now()));
        Ok(value)
    }

    /// The table's facts, from the cache when fresh.
    pub async fn info(&self, schema: &str, table: &str) -> Result<Arc<TableInfo>, RlsError> {
        let cache_key = (schema.to_string(), table.to_string());
        if let Some((info, at)) = self.cache.lock().expect("catalog lock").get(&cache_key) {
            if at.elapsed() < CATALOG_TTL {
                return Ok(info.clone());
            }
        }
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| RlsError::Unavailable(e.to_string()))?;
        let row = client
            .query_opt(
                "SELECT c.relrowsecurity,
                        coalesce(array_agg(a.attname::text ORDER BY k.n) FILTER (WHERE a.attname IS NOT NULL), '{}'),
                        coalesce(array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.n) FILTER (WHERE a.attname IS NOT NULL), '{}')
                 FROM pg_class c
                 JOIN pg_namespace s ON s.oid = c.relnamespace
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
                 LEFT JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE s.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
                 GROUP BY c.relrowsecurity",
                &[&schema, &table],
            )
            .await
            .map_err(|e| RlsError::Unavailable(describe(&e)))?
            .ok_or_else(|| RlsError::NoSuchTable(schema.to_string(), table.to_string()))?;
        let names: Vec<String> = row.get(1);
        let types: Vec<String> = row.get(2);
        let more = client
            .query_one(
                "SELECT pg_get_userbyid(c.relowner)::text, c.relforcerowsecurity,
                        (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
                           FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                        (SELECT coalesce(array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum), '{}')
                           FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                        (SELECT coalesce(array_agg(r.rolname::text), '{}') FROM pg_roles r WHERE r.rolbypassrls),
                        (SELECT coalesce(array_agg(r.rolname::text), '{}') FROM pg_roles r
                          WHERE r.rolname = ANY($3) AND has_table_privilege(r.oid, c.oid, 'SELECT'))
                 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                 WHERE s.nspname = $1 AND c.relname = $2",
                &[&schema, &table, &self.roles.names()],
            )
            .await
            .map_err(|e| RlsError::Unavailable(describe(&e)))?;
        let policies = client
            .query(
                "SELECT permissive = 'PERMISSIVE', roles::text[], cmd, qual
                 FROM pg_policies WHERE schemaname = $1 AND tablename = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| RlsError::Unavailable(describe(&e)))?
            .into_iter()
            .map(|p| Policy {
                permissive: p.get(0),
                roles: p.get(1),
                command: p.get(2),
                using: p.get(3),
            })
            .collect();
        let column_names: Vec<String> = more.get(2);
        let column_types: Vec<String> = more.get(3);
        let info = Arc::new(TableInfo {
            schema: schema.to_string(),
            table: table.to_string(),
            rls: row.get(0),
            key: names.into_iter().zip(types).collect(),
            columns: column_names.into_iter().zip(column_types).collect(),
            policies,
            owner: more.get(0),
            force_rls: more.get(1),
            bypass_roles: more.get(4),
            readers: more.get(5),
        });
        self.cache
            .lock()
            .expect("catalog lock")
            .insert(cache_key, (info.clone(), Instant::now()));
        Ok(info)
    }
}

/// `expression` evaluated as `identity`, as text.
async fn evaluate(
    pool: &Pool,
    roles: &AllowedRoles,
    identity: &Identity,
    expression: &str,
) -> Result<Option<String>, RlsError> {
    let sql = format!("SELECT ({expression})::text");
    let rows = query_as(pool, roles, identity, &sql, &[]).await?;
    Ok(rows.first().and_then(|row| row.get(0)))
}

/// `sql` run as `identity` on a pooled connection, its failures sorted into [`RlsError`]s.
async fn query_as(
    pool: &Pool,
    roles: &AllowedRoles,
    identity: &Identity,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, RlsError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| RlsError::Unavailable(e.to_string()))?;
    session::query_as(&mut client, &identity.claims, roles, sql, params)
        .await
        .map_err(|e| match e {
            QueryAsError::Session(e) => RlsError::Denied(e.to_string()),
            QueryAsError::Query(e) => classify(e),
        })
}

/// The visibility query of a table (text of the SQL; identifiers and catalog type names only,
/// values are parameters).
fn visibility_sql(info: &TableInfo) -> String {
    let arrays: Vec<String> = info
        .key
        .iter()
        .enumerate()
        .map(|(i, (_, sql_type))| format!("${}::text[]::{sql_type}[]", i + 1))
        .collect();
    let columns: Vec<String> = (0..info.key.len()).map(|i| format!("k{i}")).collect();
    let conditions: Vec<String> = info
        .key
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("t.{} = u.k{i}", quote_ident(name)))
        .collect();
    format!(
        "SELECT u.i FROM unnest({}) WITH ORDINALITY AS u({}, i) WHERE EXISTS (SELECT 1 FROM {}.{} t WHERE {})",
        arrays.join(", "),
        columns.join(", "),
        quote_ident(&info.schema),
        quote_ident(&info.table),
        conditions.join(" AND ")
    )
}

/// A server error (a policy raised, permission denied) is the claims' problem; anything else
/// is Postgres being unavailable.
fn classify(e: tokio_postgres::Error) -> RlsError {
    if e.as_db_error().is_some() {
        RlsError::Denied(describe(&e))
    } else {
        RlsError::Unavailable(describe(&e))
    }
}

/// Which of `keys` (each the key columns' values as text, in key order) `identity` can see.
pub async fn visible(
    pool: &Pool,
    roles: &AllowedRoles,
    identity: &Identity,
    info: &TableInfo,
    keys: &[Vec<String>],
) -> Result<Vec<bool>, RlsError> {
    if info.key.is_empty() {
        return Err(RlsError::NoPrimaryKey(
            info.schema.clone(),
            info.table.clone(),
        ));
    }
    let columns: Vec<Vec<&str>> = (0..info.key.len())
        .map(|c| {
            keys.iter()
                .map(|k| k.get(c).map_or("", String::as_str))
                .collect()
        })
        .collect();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = query_as(pool, roles, identity, &visibility_sql(info), &params).await?;
    let mut seen = vec![false; keys.len()];
    for row in rows {
        let ordinal: i64 = row.get(0);
        if let Some(slot) = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|i| seen.get_mut(i))
        {
            *slot = true;
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visibility_query_quotes_names_and_binds_values() {
        let info = TableInfo {
            schema: "public".into(),
            table: "odd\"name".into(),
            rls: true,
            key: vec![
                ("id".into(), "integer".into()),
                ("org".into(), "uuid".into()),
            ],
            columns: Vec::new(),
            policies: Vec::new(),
            owner: "postgres".into(),
            force_rls: false,
            bypass_roles: Vec::new(),
            readers: Vec::new(),
        };
        assert_eq!(
            visibility_sql(&info),
            "SELECT u.i FROM unnest($1::text[]::integer[], $2::text[]::uuid[]) WITH ORDINALITY AS u(k0, k1, i) \
             WHERE EXISTS (SELECT 1 FROM \"public\".\"odd\"\"name\" t WHERE t.\"id\" = u.k0 AND t.\"org\" = u.k1)"
        );
    }
}
