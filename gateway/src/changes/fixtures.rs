//! Test fixtures of the change feed's unit tests: identities, subscriptions and table facts
//! built in memory, the way the feed receives them from the join service and the catalog.

use super::binding::Binding;
use super::rls::TableInfo;
use super::subscription::TableSubscription;
use crate::auth::identity::Identity;
use crate::outbox::Outbox;
use crate::subscriber::{Subscriber, Wire};
use nself_realtime_shared::jwt::Claims;
use serde_json::{json, Value};
use std::sync::Arc;

/// Verified claims with this role and `sub`.
pub fn identity(role: &str, sub: &str) -> Arc<Identity> {
    let claims = json!({"role": role, "sub": sub});
    Arc::new(Identity::new(Claims::from_map(
        claims.as_object().expect("an object").clone(),
    )))
}

/// A live subscription of a gated subscriber reading `wire` on `topic`, with the bindings of
/// `config.postgres_changes` (a JSON list).
pub fn subscription(
    wire: Wire,
    topic: &str,
    bindings: Value,
    identity: Arc<Identity>,
) -> Arc<TableSubscription> {
    let (outbox, _receiver) = Outbox::new(16);
    let subscriber = Arc::new(Subscriber::new(outbox, wire, topic.into(), None));
    let bindings = Binding::parse_all(Some(&bindings)).expect("valid bindings");
    TableSubscription::new(subscriber, bindings, identity, false)
}

/// The facts of `public.todos` (key `id`), owned by `postgres`, readable by `readers`.
pub fn todos(rls: bool, readers: &[&str]) -> Arc<TableInfo> {
    Arc::new(TableInfo {
        schema: "public".into(),
        table: "todos".into(),
        rls,
        key: vec![("id".into(), "integer".into())],
        columns: vec![],
        policies: vec![],
        owner: "postgres".into(),
        force_rls: false,
        bypass_roles: vec![],
        readers: readers.iter().map(|r| r.to_string()).collect(),
    })
}
