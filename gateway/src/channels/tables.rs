//! The tables a channel's postgres_changes bindings name, checked at join (and again on
//! `access_token`): each must exist and be readable under the joiner's role, each filter must be
//! able to match (its columns exist, its values convert to their types), and each `select`
//! must name columns of the table. Tables no publication carries are allowed, with a warning
//! for the client: their changes never come.

use super::error::JoinError;
use crate::auth::identity::Identity;
use crate::auth::session::{self, AllowedRoles};
use crate::changes::binding::Binding;
use crate::db::Pool;
use nself_realtime_shared::event::Column;
use serde_json::Value;

/// For each (schema, table): whether it exists, whether the session's role may SELECT from it,
/// whether a publication carries it, and (when `$3`: a filter or select to check) its columns and
/// their types as the CDC names them in change events (a domain as its base type).
const TABLES: &str =
    "SELECT u.s, u.t, c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT'), false),
     EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.schemaname = u.s AND p.tablename = u.t),
     coalesce(cols.names, '{}'), coalesce(cols.types, '{}')
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, t, i)
     LEFT JOIN pg_namespace n ON n.nspname = u.s
     LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t AND c.relkind IN ('r', 'p')
     LEFT JOIN LATERAL (
         SELECT array_agg(a.attname::text ORDER BY a.attnum) AS names,
         array_agg(coalesce(b.typname, t.typname)::text ORDER BY a.attnum) AS types
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
         WHERE $3 AND a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     ) cols ON true
     ORDER BY u.i";

/// Every table a binding names must exist and be readable under the identity's role, and
/// each filter must be able to match: its columns exist and its values convert to their
/// types. Returns warnings for the client: tables no publication carries, whose changes
/// would never come.
pub async fn check(
    pool: &Pool,
    roles: &AllowedRoles,
    identity: &Identity,
    bindings: &[Binding],
) -> Result<Vec<String>, JoinError> {
    let mut tables: Vec<(&str, &str)> = Vec::new();
    for binding in bindings {
        if let (Some(schema), Some(table)) = (&binding.schema, &binding.table) {
            if !tables.contains(&(schema.as_str(), table.as_str())) {
                tables.push((schema, table));
            }
        }
    }
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = pool
        .get()
        .await
        .map_err(|e| JoinError::Unavailable(e.to_string()))?;
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables.into_iter().unzip();
    let filtered = bindings
        .iter()
        .any(|b| b.filter.is_some() || b.select.is_some());
    let rows = session::query_as(
        &mut client,
        &identity.claims,
        roles,
        TABLES,
        &[&schemas, &names, &filtered],
    )
    .await
    .map_err(|e| match e {
        // Postgres went away: not a verdict on the tables.
        session::QueryAsError::Query(q) if q.as_db_error().is_none() => {
            JoinError::Unavailable(nself_realtime_shared::postgres_error::describe(&q))
        }
        other => JoinError::Tables(other.to_string()),
    })?;
    let mut warnings = Vec::new();
    for row in rows {
        let (schema, table, exists, readable, published): (&str, &str, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if !exists {
            return Err(JoinError::Tables(format!(
                "table {schema}.{table} does not exist"
            )));
        }
        if !readable {
            return Err(JoinError::Tables(format!(
                "Unauthorized: role {} may not SELECT from {schema}.{table}",
                identity.claims.role().unwrap_or("anon")
            )));
        }
        let names: Vec<String> = row.get(5);
        let types: Vec<String> = row.get(6);
        let columns: Vec<Column> = names
            .into_iter()
            .zip(types)
            .map(|(name, type_name)| Column { name, type_name })
            .collect();
        check_bindings(schema, table, &columns, bindings)?;
        if !published {
            warnings.push(format!(
                "table {schema}.{table} is not published, so no changes of it will arrive: run `nself-realtime subscribe {schema}.{table}`"
            ));
        }
    }
    Ok(warnings)
}

/// Every binding on `schema.table` (whose `columns` these are) must select columns it has and
/// filter on what it can match.
fn check_bindings(
    schema: &str,
    table: &str,
    columns: &[Column],
    bindings: &[Binding],
) -> Result<(), JoinError> {
    for binding in bindings
        .iter()
        .filter(|b| b.schema.as_deref() == Some(schema) && b.table.as_deref() == Some(table))
    {
        if let Some(missing) = binding
            .select
            .iter()
            .flatten()
            .find(|name| !columns.iter().any(|c| c.name == **name))
        {
            return Err(JoinError::Tables(format!(
                "select: column {missing:?} does not exist in {schema}.{table}"
            )));
        }
        if let Some(filter) = &binding.filter {
            filter.check_types(columns).map_err(|e| {
                JoinError::Tables(format!(
                    "invalid filter {:?} on {schema}.{table}: {e}",
                    binding
                        .echo
                        .get("filter")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ))
            })?;
        }
    }
    Ok(())
}
