//! The owner index of a table: which of a feed's subscriptions own which rows, for tables whose
//! policies an owner rule decides ([`super::owner_rule`]: `owner = realtime.user_id()` and its
//! kin).
//!
//! Each rule's expression is evaluated once per distinct claims (cached by the catalog), and a
//! subscription is filed under the value its rows must carry in the rule's column, so a row
//! meets only its owners instead of every subscriber. Subscriptions with no rule, or whose
//! expression failed, stay *undecided* for the general path (one visibility query per table
//! and claims). An index serves the exact set of subscriptions it was built from (the feed's
//! snapshot) while no subscription has changed identity (the feeds' identity epoch), for at
//! most `OWNER_INDEX_TTL` (1 s), so refreshed values are picked up: checking that costs the same
//! for ten subscriptions or ten thousand.

use super::owner_rule::{self, OwnerRule};
use super::rls::{TableCatalog, TableInfo};
use super::subscription::TableSubscription;
use crate::auth::identity::Identity;
use crate::auth::session::AllowedRoles;
use nself_realtime_shared::event::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an owner index serves before it is rebuilt (to pick up refreshed values).
const OWNER_INDEX_TTL: Duration = Duration::from_secs(1);

/// The subscriptions owner rules decide for one table, by subscription index.
#[derive(Debug, Default, PartialEq)]
pub struct OwnerIndex {
    /// column → value → the subscriptions whose rows carry that value in that column.
    pub by_column: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Subscriptions the general path decides.
    pub undecided: Vec<usize>,
}

impl OwnerIndex {
    /// The subscriptions that own `row`.
    pub fn owners_of<'a>(&'a self, row: &'a Row) -> impl Iterator<Item = usize> + 'a {
        self.by_column.iter().flat_map(move |(column, by_value)| {
            owner_rule::row_value(Some(row), column)
                .and_then(|value| by_value.get(&value))
                .into_iter()
                .flatten()
                .copied()
        })
    }

    /// The columns whose values route rows to owners.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.by_column.keys().map(String::as_str)
    }
}

/// A built index and what it was built for.
struct CachedOwnerIndex {
    built: Instant,
    info: Arc<TableInfo>,
    /// The subscriptions it was built for. Holding them keeps the list's address from being
    /// reused, so pointer equality below means the same list.
    subscriptions: Arc<[Arc<TableSubscription>]>,
    /// The identity epoch its identities were read in.
    epoch: u64,
    index: Option<Arc<OwnerIndex>>,
}

impl CachedOwnerIndex {
    fn serves(
        &self,
        info: &Arc<TableInfo>,
        subscriptions: &Arc<[Arc<TableSubscription>]>,
        epoch: u64,
    ) -> bool {
        self.built.elapsed() < OWNER_INDEX_TTL
            && self.epoch == epoch
            && Arc::ptr_eq(&self.info, info)
            && Arc::ptr_eq(&self.subscriptions, subscriptions)
    }
}

/// Owner indexes by table, each for the exact subscriptions it was built from.
#[derive(Default)]
pub struct OwnerIndexes {
    cache: Mutex<HashMap<(String, String), Vec<CachedOwnerIndex>>>,
}

impl OwnerIndexes {
    /// The owner index of `info`'s table for `subscriptions`, when an owner rule decides any of
    /// them: from the cache, or built now (`queries` counts the queries issued). `epoch` is
    /// the feeds' identity epoch, read before the subscriptions' identities.
    pub async fn for_table(
        &self,
        catalog: &TableCatalog,
        roles: &AllowedRoles,
        info: &Arc<TableInfo>,
        subscriptions: &Arc<[Arc<TableSubscription>]>,
        epoch: u64,
        queries: &prometheus::IntCounter,
    ) -> Option<Arc<OwnerIndex>> {
        let key = (info.schema.clone(), info.table.clone());
        let cached = self
            .cache
            .lock()
            .expect("owner index lock")
            .get(&key)
            .and_then(|built| {
                built
                    .iter()
                    .find(|c| c.serves(info, subscriptions, epoch))
                    .map(|c| c.index.clone())
            });
        if let Some(index) = cached {
            return index;
        }
        // The identities are read once, after the epoch, and the index is built from these.
        let identities: Vec<Arc<Identity>> = subscriptions.iter().map(|s| s.identity()).collect();
        let index = build(catalog, roles, info, &identities, queries)
            .await
            .map(Arc::new);
        let mut cache = self.cache.lock().expect("owner index lock");
        for built in cache.values_mut() {
            built.retain(|c| c.built.elapsed() < OWNER_INDEX_TTL);
        }
        cache.retain(|_, built| !built.is_empty());
        cache.entry(key).or_default().push(CachedOwnerIndex {
            built: Instant::now(),
            info: info.clone(),
            subscriptions: subscriptions.clone(),
            epoch,
            index: index.clone(),
        });
        index
    }
}

/// Builds the index for subscriptions acting as `identities` (by position).
async fn build(
    catalog: &TableCatalog,
    roles: &AllowedRoles,
    info: &TableInfo,
    identities: &[Arc<Identity>],
    queries: &prometheus::IntCounter,
) -> Option<OwnerIndex> {
    let (ruled, undecided) = rules_of(info, identities, roles);
    if ruled.is_empty() {
        return None;
    }
    let mut distinct: HashMap<ValueKey, &Arc<Identity>> = HashMap::new();
    for (_, rule, identity) in &ruled {
        distinct
            .entry((rule.expression.clone(), identity.key.clone()))
            .or_insert(identity);
    }
    let values: HashMap<ValueKey, Option<String>> =
        futures::future::join_all(distinct.into_iter().map(|(key, identity)| async move {
            let value = catalog.owner_value(roles, identity, &key.0, queries).await;
            (key, value)
        }))
        .await
        .into_iter()
        .filter_map(|(key, value)| value.ok().map(|value| (key, value)))
        .collect();
    Some(file_under_values(ruled, undecided, &values))
}

/// An owner rule's expression and the claims it was evaluated under.
type ValueKey = (String, Arc<str>);

/// A subscription an owner rule decides: its index, the rule, the identity it acts as.
type Ruled = (usize, OwnerRule, Arc<Identity>);

/// Which subscriptions an owner rule decides (the rule per role is derived once), and which
/// are left to the general path.
fn rules_of(
    info: &TableInfo,
    identities: &[Arc<Identity>],
    roles: &AllowedRoles,
) -> (Vec<Ruled>, Vec<usize>) {
    let mut rules: HashMap<String, Option<OwnerRule>> = HashMap::new();
    let (mut ruled, mut undecided) = (Vec::new(), Vec::new());
    for (s, identity) in identities.iter().enumerate() {
        let rule = crate::auth::session::role_of(&identity.claims, roles)
            .ok()
            .and_then(|role| {
                rules
                    .entry(role.to_string())
                    .or_insert_with(|| info.owner_rule(role))
                    .clone()
            });
        match rule {
            Some(rule) => ruled.push((s, rule, identity.clone())),
            None => undecided.push(s),
        }
    }
    (ruled, undecided)
}

/// Files each ruled subscription under the value its expression gave for its claims; a NULL
/// value admits nothing, a missing one (the query failed) leaves it undecided.
fn file_under_values(
    ruled: Vec<Ruled>,
    undecided: Vec<usize>,
    values: &HashMap<ValueKey, Option<String>>,
) -> OwnerIndex {
    let mut index = OwnerIndex {
        undecided,
        ..OwnerIndex::default()
    };
    for (s, rule, identity) in &ruled {
        match values.get(&(rule.expression.clone(), identity.key.clone())) {
            Some(Some(value)) => index
                .by_column
                .entry(rule.column.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(*s),
            Some(None) => {}
            None => index.undecided.push(*s),
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::fixtures::{self, identity, todos};
    use crate::subscriber::Wire;
    use serde_json::json;

    fn rule() -> OwnerRule {
        OwnerRule {
            column: "owner".into(),
            expression: "realtime.user_id()".into(),
        }
    }

    fn table() -> Arc<TableInfo> {
        todos(true, &["authenticated"])
    }

    fn subscription() -> Arc<TableSubscription> {
        fixtures::subscription(Wire::Json, "t", json!([]), identity("authenticated", "u1"))
    }

    #[test]
    fn a_cached_index_serves_the_same_subscriptions_in_the_same_epoch_only() {
        let info = table();
        let one = subscription();
        let list: Arc<[Arc<TableSubscription>]> = vec![one.clone()].into();
        let cached = CachedOwnerIndex {
            built: Instant::now(),
            info: info.clone(),
            subscriptions: list.clone(),
            epoch: 7,
            index: None,
        };
        assert!(cached.serves(&info, &list, 7));
        // Someone's identity changed since.
        assert!(!cached.serves(&info, &list, 8));
        // The same members in a new list (the feed's membership changed and came back).
        let again: Arc<[Arc<TableSubscription>]> = vec![one].into();
        assert!(!cached.serves(&info, &again, 7));
        // The table's facts were refreshed.
        assert!(!cached.serves(&table(), &list, 7));
        let old = CachedOwnerIndex {
            built: Instant::now() - OWNER_INDEX_TTL,
            ..cached
        };
        assert!(!old.serves(&info, &list, 7));
    }

    #[test]
    fn subscriptions_go_under_their_value_or_stay_undecided() {
        let (u1, u2, u3) = (
            identity("authenticated", "u1"),
            identity("authenticated", "u2"),
            identity("authenticated", "u3"),
        );
        let ruled = vec![
            (0, rule(), u1.clone()),
            (2, rule(), u2.clone()),
            (3, rule(), u3.clone()),
        ];
        let mut values = HashMap::new();
        values.insert(
            ("realtime.user_id()".to_string(), u1.key.clone()),
            Some("u1".to_string()),
        );
        // u2's expression is NULL: it owns nothing. u3's query failed: the general path decides.
        values.insert(("realtime.user_id()".to_string(), u2.key.clone()), None);
        let index = file_under_values(ruled, vec![1], &values);
        assert_eq!(index.undecided, vec![1, 3]);
        assert_eq!(index.by_column["owner"]["u1"], vec![0]);
        assert_eq!(index.by_column["owner"].len(), 1);
        let row: Row = serde_json::from_value(json!({"owner": "u1", "id": 1})).unwrap();
        assert_eq!(index.owners_of(&row).collect::<Vec<_>>(), vec![0]);
        let other: Row = serde_json::from_value(json!({"owner": "u9"})).unwrap();
        assert_eq!(index.owners_of(&other).count(), 0);
        assert_eq!(index.columns().collect::<Vec<_>>(), vec!["owner"]);
    }
}
