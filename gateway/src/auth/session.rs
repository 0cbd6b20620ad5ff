//! Claims as the Postgres session of an authorization query.
//!
//! Every query that decides something for a user (channel access, row visibility, persisted
//! writes) runs in its own transaction that first takes on the user's identity, so Row Level
//! Security policies see what they expect in both styles our users write them:
//!
//! | setting | value |
//! | --- | --- |
//! | `role` | the token's role (`SET LOCAL ROLE`), one of `REALTIME_DB_ROLES` |
//! | `request.jwt.claims` | the claims JSON (Supabase's `auth.jwt()`) |
//! | `request.jwt.claim.sub`, `request.jwt.claim.role` | Supabase's older per-claim settings |
//! | `hasura.user` | the `x-hasura-*` claims JSON (Hasura/nself style) |
//! | `hasura.user.id` | the user id |
//!
//! All are transaction-local (`set_config(..., true)`), set in one statement with the values
//! as bind parameters. [`query_as`] pipelines `BEGIN`, that statement, the query and `ROLLBACK`
//! on prepared statements, so deciding something for a user costs one round trip. A token
//! without a role claim acts as `anon`. The gateway's own database
//! user must be allowed to `SET ROLE` to each of these roles (a superuser, or `GRANT anon,
//! authenticated, service_role TO <gateway user>`).

use crate::db::Pooled;
use nself_realtime_shared::config::{comma_list, ConfigError};
use nself_realtime_shared::jwt::Claims;
use nself_realtime_shared::postgres_error::describe;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The text of [`TAKE_ON_CLAIMS`], for the statements built on it.
macro_rules! take_on_claims {
    () => {
        "SELECT set_config('role', $1, true),
        set_config('request.jwt.claims', $2, true),
        set_config('request.jwt.claim.sub', $3, true),
        set_config('request.jwt.claim.role', $1, true),
        set_config('hasura.user', $4, true),
        set_config('hasura.user.id', $5, true)"
    };
}

/// The statement that takes on the claims (see the module docs).
pub const TAKE_ON_CLAIMS: &str = take_on_claims!();

/// [`TAKE_ON_CLAIMS`] that also sets `realtime.topic` (Supabase's `realtime.topic()`) to $6,
/// in the same statement: the messages policies of one topic are asked under it.
pub const TAKE_ON_CLAIMS_IN_TOPIC: &str = concat!(
    take_on_claims!(),
    ", set_config('realtime.topic', $6, true)"
);

/// The role of a token without one.
pub const DEFAULT_ROLE: &str = "anon";

/// Roles a token's role claim may name (`REALTIME_DB_ROLES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRoles(Vec<String>);

/// Taking on the claims' identity failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("role {0:?} is not allowed (REALTIME_DB_ROLES)")]
    RoleNotAllowed(String),
    #[error("cannot take on role {role:?}: {reason}")]
    Postgres { role: String, reason: String },
}

/// A query run as some claims failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryAsError {
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The query itself failed (a policy raised, permission denied, Postgres went away).
    #[error("{}", describe(.0))]
    Query(tokio_postgres::Error),
}

impl AllowedRoles {
    /// Parses a comma list of role names.
    pub fn parse(list: &str) -> Result<AllowedRoles, ConfigError> {
        let roles = comma_list(list);
        if roles.is_empty() {
            return Err(ConfigError {
                var: "REALTIME_DB_ROLES",
                value: list.to_string(),
                problem: "name at least one role, e.g. anon,authenticated,service_role".into(),
            });
        }
        Ok(AllowedRoles(roles))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn allows(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }
}

impl Default for AllowedRoles {
    fn default() -> AllowedRoles {
        AllowedRoles(vec![
            "anon".into(),
            "authenticated".into(),
            "service_role".into(),
        ])
    }
}

/// The role a token acts as, if allowed.
pub fn role_of<'a>(claims: &'a Claims, roles: &AllowedRoles) -> Result<&'a str, SessionError> {
    let role = claims.role().unwrap_or(DEFAULT_ROLE);
    if roles.allows(role) {
        Ok(role)
    } else {
        Err(SessionError::RoleNotAllowed(role.to_string()))
    }
}

/// Runs `sql` with `params` as `claims` (see the module docs), in one round trip, and rolls
/// back: for questions.
pub async fn query_as(
    connection: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, QueryAsError> {
    run_as(connection, claims, roles, sql, params, "ROLLBACK").await
}

/// Runs `sql` with `params` as `claims`, in one round trip, and commits: for writes the
/// claims' policies decide (a persisted message). A failed statement commits nothing (COMMIT of
/// a failed transaction rolls it back).
pub async fn write_as(
    connection: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, QueryAsError> {
    run_as(connection, claims, roles, sql, params, "COMMIT").await
}

/// The values [`TAKE_ON_CLAIMS`] sets for some claims, as its bind parameters.
pub struct ClaimSettings {
    role: String,
    claims_json: String,
    sub: String,
    hasura_json: String,
    user_id: String,
}

impl ClaimSettings {
    /// The settings of `claims`, if their role is allowed.
    pub fn new(claims: &Claims, roles: &AllowedRoles) -> Result<ClaimSettings, SessionError> {
        let role = role_of(claims, roles)?.to_string();
        let hasura = claims.hasura_user();
        let user_id = hasura
            .get("x-hasura-user-id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        Ok(ClaimSettings {
            role,
            claims_json: claims.to_json().to_string(),
            sub: claims.sub().unwrap_or("").to_string(),
            hasura_json: serde_json::Value::Object(hasura).to_string(),
            user_id,
        })
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// The bind parameters of [`TAKE_ON_CLAIMS`].
    pub fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.role,
            &self.claims_json,
            &self.sub,
            &self.hasura_json,
            &self.user_id,
        ]
    }

    /// The bind parameters of [`TAKE_ON_CLAIMS_IN_TOPIC`] for `topic`.
    pub fn params_in_topic<'a>(&'a self, topic: &'a &'a str) -> [&'a (dyn ToSql + Sync); 6] {
        let [role, claims, sub, hasura, user] = self.params();
        [role, claims, sub, hasura, user, topic]
    }

    /// The error for a failure to take these claims on.
    pub fn failed(&self, e: &tokio_postgres::Error) -> SessionError {
        SessionError::Postgres {
            role: self.role.clone(),
            reason: describe(e),
        }
    }
}

async fn run_as(
    connection: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: &'static str,
) -> Result<Vec<Row>, QueryAsError> {
    let settings = ClaimSettings::new(claims, roles)?;
    let take_on = connection
        .prepared(TAKE_ON_CLAIMS)
        .await
        .map_err(QueryAsError::Query)?;
    let query = connection
        .prepared(sql)
        .await
        .map_err(QueryAsError::Query)?;
    connection.set_in_user_session(true);
    let client: &tokio_postgres::Client = connection;
    let take_on_params = settings.params();
    // Polled together, these go out back to back and are answered in order; each extended-
    // protocol request ends in its own Sync, so a failing query does not swallow the ROLLBACK.
    let (begun, taken_on, rows, rolled_back) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.execute(&take_on, &take_on_params),
        client.query(&query, params),
        client.batch_execute(end),
    );
    rolled_back.map_err(QueryAsError::Query)?;
    connection.set_in_user_session(false);
    begun.map_err(|e| settings.failed(&e))?;
    taken_on.map_err(|e| settings.failed(&e))?;
    rows.map_err(QueryAsError::Query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_parse_and_default_to_anon() {
        let roles = AllowedRoles::parse("anon, authenticated").unwrap();
        assert!(roles.allows("anon") && !roles.allows("service_role"));
        assert!(AllowedRoles::parse(" , ").is_err());
        let claims = |v: serde_json::Value| Claims::from_map(v.as_object().unwrap().clone());
        assert_eq!(role_of(&claims(json!({})), &roles).unwrap(), "anon");
        assert!(matches!(
            role_of(&claims(json!({"role": "postgres"})), &roles),
            Err(SessionError::RoleNotAllowed(r)) if r == "postgres"
        ));
    }
}
