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

/// Cached [`TableInfo`]s.
pub struct TableCatalog {
    pool: Pool,
    cache: Mutex<CatalogCache>,
}

impl TableCatalog {
    pub fn new(pool: Pool) -> TableCatalog {
        TableCatalog {
            pool,
            cache: Mutex::new(HashMap::new()),
        }
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
        let info = Arc::new(TableInfo {
            schema: schema.to_string(),
            table: table.to_string(),
            rls: row.get(0),
            key: names.into_iter().zip(types).collect(),
        });
        self.cache
            .lock()
            .expect("catalog lock")
            .insert(cache_key, (info.clone(), Instant::now()));
        Ok(info)
    }
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
    let mut client = pool
        .get()
        .await
        .map_err(|e| RlsError::Unavailable(e.to_string()))?;
    let rows = session::query_as(
        &mut client,
        &identity.claims,
        roles,
        &visibility_sql(info),
        &params,
    )
    .await
    .map_err(|e| match e {
        QueryAsError::Session(e) => RlsError::Denied(e.to_string()),
        QueryAsError::Query(e) => classify(e),
    })?;
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
        };
        assert_eq!(
            visibility_sql(&info),
            "SELECT u.i FROM unnest($1::text[]::integer[], $2::text[]::uuid[]) WITH ORDINALITY AS u(k0, k1, i) \
             WHERE EXISTS (SELECT 1 FROM \"public\".\"odd\"\"name\" t WHERE t.\"id\" = u.k0 AND t.\"org\" = u.k1)"
        );
    }
}
