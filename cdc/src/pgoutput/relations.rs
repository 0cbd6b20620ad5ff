//! The relation cache: what the stream has said about each table, keyed by relation id.
//!
//! pgoutput sends a table's `Relation` message before its first row in a session and again
//! whenever its definition changes (ALTER TABLE ADD/DROP/ALTER COLUMN, a replica identity
//! change), always before the first row in the new shape. So the rule is simply: a `Relation`
//! message replaces the entry, and every row is read with the entry current at that point of
//! the stream. `Type` messages name the user types those relations use.
//!
//! For the hot path, each entry is *resolved* once against the [`TypeCache`]: the event's
//! column list, each column's [`Conversion`] and the primary key are computed once and reused
//! for every row until the relation, its primary key or the type facts change.

use super::messages::{Relation, ReplicaIdentity, TypeMessage};
use super::types::TypeCache;
use super::values::Conversion;
use nself_realtime_shared::event::Column;
use std::collections::HashMap;

/// Relations and user type names announced by one replication stream.
#[derive(Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, CachedRelation>,
    type_names: HashMap<u32, TypeMessage>,
}

#[derive(Debug)]
struct CachedRelation {
    relation: Relation,
    /// The table's primary key as read from the catalog, when the Relation message cannot tell
    /// it (see [`ResolvedRelation::primary_key`]).
    catalog_primary_key: Option<Vec<String>>,
    resolved: Option<ResolvedRelation>,
}

/// A relation ready for building events.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRelation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    pub replica_identity: ReplicaIdentity,
    /// The event's `columns`: name and `pg_type` name, in column order.
    pub columns: Vec<Column>,
    /// How each column's text becomes JSON, in column order.
    pub conversions: Vec<Conversion>,
    /// Whether each column is part of the replica identity (what a `K` old tuple holds).
    pub identity: Vec<bool>,
    /// The event's `primary_key`. Under `REPLICA IDENTITY DEFAULT` the identity columns are the
    /// primary key. Under `FULL` pgoutput flags every column and under `NOTHING` none, and
    /// under `USING INDEX` the flags name the index, so for those the primary key comes from the
    /// catalog ([`RelationCache::load_primary_key`]); until it is loaded, the identity columns
    /// stand in.
    pub primary_key: Vec<String>,
    types_generation: u64,
}

/// `SELECT` of a table's primary key columns, in key order.
const PRIMARY_KEY_QUERY: &str = "\
    SELECT a.attname::text \
    FROM pg_index i \
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
    WHERE i.indrelid = $1 AND i.indisprimary \
    ORDER BY k.ord";

impl RelationCache {
    pub fn new() -> RelationCache {
        RelationCache::default()
    }

    /// Stores a relation from a `Relation` message, replacing any earlier version.
    pub fn insert(&mut self, relation: Relation) {
        self.relations.insert(
            relation.id,
            CachedRelation {
                relation,
                catalog_primary_key: None,
                resolved: None,
            },
        );
    }

    /// Stores the name of a user type from a `Type` message.
    pub fn insert_type(&mut self, message: TypeMessage) {
        if self.type_names.get(&message.oid) != Some(&message) {
            self.type_names.insert(message.oid, message);
            // Names may appear in resolved column lists.
            for entry in self.relations.values_mut() {
                entry.resolved = None;
            }
        }
    }

    /// The relation as its latest `Relation` message described it.
    pub fn get(&self, id: u32) -> Option<&Relation> {
        self.relations.get(&id).map(|e| &e.relation)
    }

    /// The name of a user type as its `Type` message gave it.
    pub fn type_name(&self, oid: u32) -> Option<&str> {
        self.type_names.get(&oid).map(|t| t.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// Forgets every relation (a new replication session re-sends them); type names stay.
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    /// Whether the event's `primary_key` for this relation needs the catalog: true unless the
    /// replica identity is the primary key.
    pub fn needs_primary_key(&self, id: u32) -> bool {
        self.relations.get(&id).is_some_and(|e| {
            e.relation.replica_identity != ReplicaIdentity::Default
                && e.catalog_primary_key.is_none()
        })
    }

    /// Sets the primary key columns of a relation (from the catalog).
    pub fn set_primary_key(&mut self, id: u32, columns: Vec<String>) {
        if let Some(entry) = self.relations.get_mut(&id) {
            entry.catalog_primary_key = Some(columns);
            entry.resolved = None;
        }
    }

    /// Reads a relation's primary key from `pg_index` (no rows: no primary key, or the table
    /// is gone) and stores it.
    pub async fn load_primary_key(
        &mut self,
        client: &tokio_postgres::Client,
        id: u32,
    ) -> Result<(), tokio_postgres::Error> {
        let rows = client.query(PRIMARY_KEY_QUERY, &[&id]).await?;
        let columns = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        self.set_primary_key(id, columns);
        Ok(())
    }

    /// The relation resolved against `types`, computed on first use and again after the
    /// relation, its primary key or the type facts changed. `None` for an unknown relation id.
    pub fn resolve(&mut self, id: u32, types: &TypeCache) -> Option<&ResolvedRelation> {
        let type_names = &self.type_names;
        let entry = self.relations.get_mut(&id)?;
        let fresh = entry
            .resolved
            .as_ref()
            .is_some_and(|r| r.types_generation == types.generation());
        if !fresh {
            entry.resolved = Some(resolve(entry, types, type_names));
        }
        entry.resolved.as_ref()
    }
}

fn resolve(
    entry: &CachedRelation,
    types: &TypeCache,
    type_names: &HashMap<u32, TypeMessage>,
) -> ResolvedRelation {
    let relation = &entry.relation;
    let columns = relation
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            type_name: types
                .name(c.type_oid)
                .or_else(|| type_names.get(&c.type_oid).map(|t| t.name.as_str()))
                .map_or_else(|| c.type_oid.to_string(), str::to_owned),
        })
        .collect();
    let identity: Vec<bool> = relation.columns.iter().map(|c| c.is_key()).collect();
    let primary_key = match (&entry.catalog_primary_key, relation.replica_identity) {
        (Some(pk), ReplicaIdentity::Full | ReplicaIdentity::Nothing | ReplicaIdentity::Index) => {
            pk.clone()
        }
        _ => relation
            .columns
            .iter()
            .filter(|c| c.is_key())
            .map(|c| c.name.clone())
            .collect(),
    };
    ResolvedRelation {
        id: relation.id,
        schema: relation.namespace.clone(),
        table: relation.name.clone(),
        replica_identity: relation.replica_identity,
        columns,
        conversions: relation
            .columns
            .iter()
            .map(|c| types.conversion(c.type_oid))
            .collect(),
        identity,
        primary_key,
        types_generation: types.generation(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::messages::RelationColumn;
    use crate::pgoutput::types::{TypeFacts, TypeKind};

    fn relation(id: u32, identity: ReplicaIdentity, columns: &[(bool, &str, u32)]) -> Relation {
        Relation {
            id,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: identity,
            columns: columns
                .iter()
                .map(|&(key, name, oid)| RelationColumn {
                    flags: u8::from(key),
                    name: name.into(),
                    type_oid: oid,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_relation_message_replaces_the_entry() {
        let mut cache = RelationCache::new();
        let types = TypeCache::new();
        cache.insert(relation(
            1,
            ReplicaIdentity::Default,
            &[(true, "id", 23), (false, "v", 25)],
        ));
        let r = cache.resolve(1, &types).unwrap();
        assert_eq!(r.columns.len(), 2);
        assert_eq!(r.primary_key, vec!["id"]);
        assert_eq!(r.columns[0].type_name, "int4");
        // ALTER TABLE ... ALTER COLUMN v TYPE int8, ADD COLUMN w
        cache.insert(relation(
            1,
            ReplicaIdentity::Default,
            &[(true, "id", 23), (false, "v", 20), (false, "w", 16)],
        ));
        let r = cache.resolve(1, &types).unwrap();
        assert_eq!(r.columns.len(), 3);
        assert_eq!(r.columns[1].type_name, "int8");
        assert_eq!(r.conversions[1], Conversion::Integer);
        assert_eq!(r.conversions[2], Conversion::Bool);
        assert!(cache.resolve(2, &types).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn user_types_resolve_once_loaded() {
        let mut cache = RelationCache::new();
        let mut types = TypeCache::new();
        cache.insert_type(TypeMessage {
            oid: 16500,
            namespace: "public".into(),
            name: "mood".into(),
        });
        cache.insert(relation(
            1,
            ReplicaIdentity::Default,
            &[(true, "id", 23), (false, "m", 16500), (false, "ms", 16501)],
        ));
        let r = cache.resolve(1, &types).unwrap();
        assert_eq!(r.columns[1].type_name, "mood");
        assert_eq!(r.columns[2].type_name, "16501");
        assert_eq!(r.conversions[2], Conversion::Text);
        types.insert(TypeFacts {
            oid: 16501,
            name: "_mood".into(),
            namespace: "public".into(),
            kind: TypeKind::Array { element: 16500 },
            delimiter: b',',
        });
        let r = cache.resolve(1, &types).unwrap();
        assert_eq!(r.columns[2].type_name, "_mood");
        assert!(matches!(r.conversions[2], Conversion::Array { .. }));
    }

    #[test]
    fn primary_key_under_each_replica_identity() {
        let mut cache = RelationCache::new();
        let types = TypeCache::new();
        let cols = [(true, "id", 23), (true, "v", 25)];
        cache.insert(relation(1, ReplicaIdentity::Full, &cols));
        assert!(cache.needs_primary_key(1));
        assert_eq!(
            cache.resolve(1, &types).unwrap().primary_key,
            vec!["id", "v"]
        );
        cache.set_primary_key(1, vec!["id".into()]);
        assert!(!cache.needs_primary_key(1));
        let r = cache.resolve(1, &types).unwrap();
        assert_eq!(r.primary_key, vec!["id"]);
        assert_eq!(r.identity, vec![true, true]);
        cache.insert(relation(2, ReplicaIdentity::Default, &[(true, "id", 23)]));
        assert!(!cache.needs_primary_key(2));
        cache.insert(relation(3, ReplicaIdentity::Nothing, &[(false, "id", 23)]));
        assert!(cache.needs_primary_key(3));
        cache.set_primary_key(3, vec!["id".into()]);
        assert_eq!(cache.resolve(3, &types).unwrap().primary_key, vec!["id"]);
    }
}
