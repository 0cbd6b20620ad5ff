//! Who a connection or channel acts as: verified JWT claims, or the anonymous identity when
//! `REALTIME_ALLOW_ANONYMOUS` lets a client in without a token.
//!
//! The claims' JSON text doubles as the identity's key: subscribers with equal claims share one
//! row-visibility query per batch of changes.

use nself_realtime_shared::jwt::Claims;
use std::sync::Arc;

/// Verified claims and their grouping key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub claims: Claims,
    /// The claims as JSON text: equal for equal claims.
    pub key: Arc<str>,
}

impl Identity {
    pub fn new(claims: Claims) -> Identity {
        let key = claims.to_json().to_string().into();
        Identity { claims, key }
    }

    /// The identity of a client without a token, when `REALTIME_ALLOW_ANONYMOUS` allows one:
    /// role `anon` and nothing else.
    pub fn anonymous() -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), serde_json::Value::String("anon".into()));
        Identity::new(Claims::from_map(claims))
    }

    /// The user the claims name: `sub`, else the Hasura user id.
    pub fn user_id(&self) -> Option<String> {
        self.claims.sub().map(str::to_string).or_else(|| {
            self.claims
                .hasura_user()
                .get("x-hasura-user-id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    }

    /// Seconds since the Unix epoch at which the token expires, if it does.
    pub fn expires_at(&self) -> Option<i64> {
        self.claims.exp()
    }
}
