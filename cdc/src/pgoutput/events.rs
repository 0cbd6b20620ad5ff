//! From decoded messages to change events: [`EventBuilder`] follows one replication stream,
//! message by message, and turns each row change into a [`ChangeEvent`].
//!
//! It holds the stream's state: the open transaction (its commit LSN, which names every event,
//! and its commit time), the [`RelationCache`] and the [`TypeCache`]. The pipeline drives it:
//!
//! ```text
//! loop {
//!     let message = Message::decode(xlogdata_payload)?;
//!     match builder.handle(message, &mut events)? {
//!         Step::NeedCatalog(needs) => builder.load_catalog(&client, &needs).await?,
//!         // publish events.drain(..); confirm end_lsn once JetStream acked them
//!         Step::Commit { end_lsn, .. } => {}
//!         _ => {}
//!     }
//! }
//! ```
//!
//! Event ids are `(commit LSN, position)`, the position counting the transaction's events from
//! 0, so decoding the same WAL again yields the same ids. `Origin` and logical decoding
//! messages (`pg_logical_emit_message`) produce no events: the first only says where a
//! replicated transaction came from, the second is not a row change (it is reported as
//! [`Step::Other`] so a future feature can pick it up).
//!
//! Old values follow the table's replica identity: `old_record` is the whole old row under
//! `FULL`, else the key columns: from the key tuple pgoutput sends for a DELETE or an UPDATE that
//! changed the key, and from the new row for an UPDATE that did not (Postgres sends no old
//! tuple then, because the key is unchanged). It is `null` only when the table has no identity
//! (`NOTHING`). An unchanged TOASTed column of an UPDATE
//! is copied from the old values when they hold it, and otherwise left out of `record` and
//! named in `unchanged_toast`: never a fake `null`.

use super::messages::{Message, OldTuple, TupleValue};
use super::relations::{RelationCache, ResolvedRelation};
use super::types::TypeCache;
use super::values::{binary_to_json, text_to_json, Conversion};
use nself_realtime_shared::event::{
    postgres_micros_to_rfc3339, ChangeEvent, EventId, EventType, Row,
};
use nself_realtime_shared::lsn::Lsn;
use serde_json::Value;

/// What a handled message means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A transaction started; its events follow.
    Begin { commit_lsn: Lsn, xid: u32 },
    /// The transaction ended. `events` were produced for it (all already pushed to the output);
    /// once they are safe downstream, `end_lsn` may be confirmed to Postgres.
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        events: u32,
    },
    /// A relation was (re)defined and the catalog knows things the stream did not say: call
    /// [`EventBuilder::load_catalog`] before handling the next message. Skipping it is safe but
    /// degrades the events (unknown types as text, see [`ResolvedRelation::primary_key`]).
    NeedCatalog(CatalogNeeds),
    /// Nothing for the caller to do (row changes push their events to the output).
    Other,
}

/// Catalog facts a relation needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogNeeds {
    /// Type oids the [`TypeCache`] does not know.
    pub type_oids: Vec<u32>,
    /// The relation whose primary key must be read from `pg_index` (its replica identity is
    /// not the primary key).
    pub primary_key_of: Option<u32>,
}

/// A message that does not fit the stream so far. Each means the stream or the decoder is
/// broken, so the pipeline should stop (and restart from the last confirmed LSN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("change for relation {0}, which no Relation message announced")]
    UnknownRelation(u32),
    #[error("{0} message outside a transaction")]
    OutsideTransaction(&'static str),
    #[error(
        "Begin of the transaction committing at {new} while the one committing at {open} is open"
    )]
    NestedBegin { open: Lsn, new: Lsn },
    #[error("Commit at {commit} ends the transaction that began for commit LSN {begin}")]
    CommitMismatch { begin: Lsn, commit: Lsn },
    #[error("row of relation {relation} has {got} columns, its Relation message has {expected}")]
    ColumnCount {
        relation: u32,
        expected: usize,
        got: usize,
    },
    #[error("more than 2^32 events in one transaction")]
    TooManyEvents,
}

/// The transaction being decoded.
#[derive(Debug)]
struct Transaction {
    commit_lsn: Lsn,
    lsn_text: String,
    commit_timestamp: String,
    next_position: u32,
}

impl Transaction {
    fn event(
        &mut self,
        relation: &ResolvedRelation,
        operation: EventType,
        record: Option<Row>,
        old_record: Option<Row>,
        unchanged_toast: Vec<String>,
    ) -> Result<ChangeEvent, EventError> {
        let position = self.next_position;
        self.next_position = position.checked_add(1).ok_or(EventError::TooManyEvents)?;
        Ok(ChangeEvent {
            id: EventId {
                commit_lsn: self.commit_lsn,
                position,
            },
            lsn: self.lsn_text.clone(),
            commit_timestamp: self.commit_timestamp.clone(),
            schema: relation.schema.clone(),
            table: relation.table.clone(),
            operation,
            columns: relation.columns.clone(),
            record,
            old_record,
            primary_key: relation.primary_key.clone(),
            unchanged_toast,
            errors: Vec::new(),
        })
    }
}

/// Turns the messages of one replication stream into change events.
#[derive(Debug, Default)]
pub struct EventBuilder {
    relations: RelationCache,
    types: TypeCache,
    transaction: Option<Transaction>,
}

impl EventBuilder {
    pub fn new() -> EventBuilder {
        EventBuilder::default()
    }

    /// A builder starting with known type facts (kept across reconnects by the caller).
    pub fn with_types(types: TypeCache) -> EventBuilder {
        EventBuilder {
            types,
            ..EventBuilder::default()
        }
    }

    pub fn relations(&self) -> &RelationCache {
        &self.relations
    }

    pub fn relations_mut(&mut self) -> &mut RelationCache {
        &mut self.relations
    }

    pub fn types(&self) -> &TypeCache {
        &self.types
    }

    pub fn types_mut(&mut self) -> &mut TypeCache {
        &mut self.types
    }

    /// Whether a Begin was handled and its Commit not yet.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Forgets the open transaction and the relations, for a new replication session (which
    /// re-sends Relation messages and restarts at a transaction boundary). Type facts stay.
    pub fn reset_stream(&mut self) {
        self.transaction = None;
        self.relations.clear();
    }

    /// Loads what a [`Step::NeedCatalog`] asked for, over a plain (non-replication) connection.
    pub async fn load_catalog(
        &mut self,
        client: &tokio_postgres::Client,
        needs: &CatalogNeeds,
    ) -> Result<(), tokio_postgres::Error> {
        self.types.load(client, &needs.type_oids).await?;
        if let Some(id) = needs.primary_key_of {
            self.relations.load_primary_key(client, id).await?;
        }
        Ok(())
    }

    /// Handles one message: row changes push their events to `out` (one per row, one per
    /// truncated table); the returned [`Step`] says what else the caller must do.
    pub fn handle(
        &mut self,
        message: Message,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<Step, EventError> {
        match message {
            Message::Begin(begin) => {
                if let Some(open) = &self.transaction {
                    return Err(EventError::NestedBegin {
                        open: open.commit_lsn,
                        new: begin.final_lsn,
                    });
                }
                self.transaction = Some(Transaction {
                    commit_lsn: begin.final_lsn,
                    lsn_text: begin.final_lsn.to_string(),
                    commit_timestamp: postgres_micros_to_rfc3339(begin.timestamp),
                    next_position: 0,
                });
                Ok(Step::Begin {
                    commit_lsn: begin.final_lsn,
                    xid: begin.xid,
                })
            }
            Message::Commit(commit) => {
                let open = self
                    .transaction
                    .take()
                    .ok_or(EventError::OutsideTransaction("Commit"))?;
                if open.commit_lsn != commit.commit_lsn {
                    return Err(EventError::CommitMismatch {
                        begin: open.commit_lsn,
                        commit: commit.commit_lsn,
                    });
                }
                Ok(Step::Commit {
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                    events: open.next_position,
                })
            }
            Message::Relation(relation) => {
                let id = relation.id;
                let type_oids = self
                    .types
                    .missing(relation.columns.iter().map(|c| c.type_oid));
                self.relations.insert(relation);
                let needs = CatalogNeeds {
                    type_oids,
                    primary_key_of: self.relations.needs_primary_key(id).then_some(id),
                };
                if needs == CatalogNeeds::default() {
                    Ok(Step::Other)
                } else {
                    Ok(Step::NeedCatalog(needs))
                }
            }
            Message::Type(message) => {
                self.relations.insert_type(message);
                Ok(Step::Other)
            }
            Message::Origin(_) | Message::Message(_) => Ok(Step::Other),
            Message::Insert(insert) => {
                let (transaction, relation) = self.row_context("Insert", insert.relation_id)?;
                check_width(relation, insert.new.len())?;
                let mut unchanged_toast = Vec::new();
                let record = new_row(relation, &insert.new, None, &mut unchanged_toast);
                out.push(transaction.event(
                    relation,
                    EventType::Insert,
                    Some(record),
                    None,
                    unchanged_toast,
                )?);
                Ok(Step::Other)
            }
            Message::Update(update) => {
                let (transaction, relation) = self.row_context("Update", update.relation_id)?;
                check_width(relation, update.new.len())?;
                if let Some(old) = &update.old {
                    check_width(relation, old.tuple().len())?;
                }
                let mut unchanged_toast = Vec::new();
                let record = new_row(
                    relation,
                    &update.new,
                    update.old.as_ref(),
                    &mut unchanged_toast,
                );
                let old_record = match &update.old {
                    Some(old) => Some(old_row(relation, old)),
                    None => unchanged_key(relation, &record),
                };
                out.push(transaction.event(
                    relation,
                    EventType::Update,
                    Some(record),
                    old_record,
                    unchanged_toast,
                )?);
                Ok(Step::Other)
            }
            Message::Delete(delete) => {
                let (transaction, relation) = self.row_context("Delete", delete.relation_id)?;
                check_width(relation, delete.old.tuple().len())?;
                let old_record = old_row(relation, &delete.old);
                out.push(transaction.event(
                    relation,
                    EventType::Delete,
                    None,
                    Some(old_record),
                    Vec::new(),
                )?);
                Ok(Step::Other)
            }
            Message::Truncate(truncate) => {
                let transaction = self
                    .transaction
                    .as_mut()
                    .ok_or(EventError::OutsideTransaction("Truncate"))?;
                for id in truncate.relation_ids {
                    let relation = self
                        .relations
                        .resolve(id, &self.types)
                        .ok_or(EventError::UnknownRelation(id))?;
                    out.push(transaction.event(
                        relation,
                        EventType::Truncate,
                        None,
                        None,
                        Vec::new(),
                    )?);
                }
                Ok(Step::Other)
            }
        }
    }

    /// The open transaction and the resolved relation a row message needs.
    fn row_context(
        &mut self,
        what: &'static str,
        relation_id: u32,
    ) -> Result<(&mut Transaction, &ResolvedRelation), EventError> {
        let transaction = self
            .transaction
            .as_mut()
            .ok_or(EventError::OutsideTransaction(what))?;
        let relation = self
            .relations
            .resolve(relation_id, &self.types)
            .ok_or(EventError::UnknownRelation(relation_id))?;
        Ok((transaction, relation))
    }
}

fn check_width(relation: &ResolvedRelation, got: usize) -> Result<(), EventError> {
    if got != relation.columns.len() {
        return Err(EventError::ColumnCount {
            relation: relation.id,
            expected: relation.columns.len(),
            got,
        });
    }
    Ok(())
}

/// A value as JSON; `None` for an unchanged TOASTed value, which has none.
fn json(conversion: &Conversion, value: &TupleValue) -> Option<Value> {
    match value {
        TupleValue::Null => Some(Value::Null),
        TupleValue::UnchangedToast => None,
        TupleValue::Text(text) => Some(text_to_json(conversion, text)),
        TupleValue::Binary(bytes) => Some(binary_to_json(bytes)),
    }
}

/// The value an old tuple holds for column `i`, if it really holds one: a key tuple's
/// non-key columns are placeholders.
fn old_value<'a>(
    relation: &ResolvedRelation,
    old: Option<&'a OldTuple>,
    i: usize,
) -> Option<&'a TupleValue> {
    let value = match old? {
        OldTuple::Full(tuple) => tuple.get(i)?,
        OldTuple::Key(tuple) if relation.identity.get(i) == Some(&true) => tuple.get(i)?,
        OldTuple::Key(_) => return None,
    };
    (*value != TupleValue::UnchangedToast).then_some(value)
}

/// `record`: every column of the new tuple; an unchanged TOASTed one from the old values when
/// they hold it, else named in `unchanged_toast`.
fn new_row(
    relation: &ResolvedRelation,
    tuple: &[TupleValue],
    old: Option<&OldTuple>,
    unchanged_toast: &mut Vec<String>,
) -> Row {
    let mut row = Row::new();
    for (i, ((column, conversion), value)) in relation
        .columns
        .iter()
        .zip(&relation.conversions)
        .zip(tuple)
        .enumerate()
    {
        let value = match value {
            TupleValue::UnchangedToast => old_value(relation, old, i),
            value => Some(value),
        };
        match value.and_then(|v| json(conversion, v)) {
            Some(json) => {
                row.insert(column.name.clone(), json);
            }
            None => unchanged_toast.push(column.name.clone()),
        }
    }
    row
}

/// `old_record`: the whole old row, or only the key columns of a key tuple; values the old
/// tuple does not hold (unchanged TOAST) are left out.
/// The old key of an UPDATE that sent no old tuple: Postgres omits it exactly when the replica
/// identity columns did not change, so their new values are the old ones. `None` when the
/// table has no identity columns (`REPLICA IDENTITY NOTHING`).
fn unchanged_key(relation: &ResolvedRelation, record: &Row) -> Option<Row> {
    let key: Row = relation
        .columns
        .iter()
        .zip(&relation.identity)
        .filter(|(_, is_key)| **is_key)
        .filter_map(|(column, _)| {
            record
                .get(&column.name)
                .map(|value| (column.name.clone(), value.clone()))
        })
        .collect();
    (!key.is_empty()).then_some(key)
}

fn old_row(relation: &ResolvedRelation, old: &OldTuple) -> Row {
    let mut row = Row::new();
    for (i, (column, conversion)) in relation
        .columns
        .iter()
        .zip(&relation.conversions)
        .enumerate()
    {
        if let Some(json) = old_value(relation, Some(old), i).and_then(|v| json(conversion, v)) {
            row.insert(column.name.clone(), json);
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::messages::wire;
    use serde_json::json;

    const TS: i64 = 823_602_923_123_456;

    fn feed(
        builder: &mut EventBuilder,
        bytes: Vec<u8>,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<Step, EventError> {
        builder.handle(Message::decode_slice(&bytes).unwrap(), out)
    }

    fn users(identity: u8) -> Vec<u8> {
        wire::relation(
            16390,
            "public",
            "users",
            identity,
            &[(true, "id", 23), (false, "name", 25), (false, "bio", 25)],
        )
    }

    fn row(v: serde_json::Value) -> Option<Row> {
        Some(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_transaction_becomes_numbered_events() {
        let mut b = EventBuilder::new();
        let mut out = Vec::new();
        assert_eq!(feed(&mut b, users(b'd'), &mut out), Ok(Step::Other));
        assert_eq!(
            feed(&mut b, wire::begin(0x16B3748, TS, 7), &mut out),
            Ok(Step::Begin {
                commit_lsn: Lsn(0x16B3748),
                xid: 7
            })
        );
        feed(
            &mut b,
            wire::insert(16390, &[Some(Some("1")), Some(Some("ann")), None]),
            &mut out,
        )
        .unwrap();
        feed(
            &mut b,
            wire::update(
                16390,
                None,
                &[Some(Some("1")), Some(Some("bea")), Some(None)],
            ),
            &mut out,
        )
        .unwrap();
        feed(
            &mut b,
            wire::update(
                16390,
                Some((b'K', &[Some(Some("1")), None, None])),
                &[Some(Some("2")), Some(Some("bea")), Some(None)],
            ),
            &mut out,
        )
        .unwrap();
        feed(
            &mut b,
            wire::delete(16390, b'K', &[Some(Some("2")), None, None]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            feed(&mut b, wire::commit(0x16B3748, 0x16B3780, TS), &mut out),
            Ok(Step::Commit {
                commit_lsn: Lsn(0x16B3748),
                end_lsn: Lsn(0x16B3780),
                events: 4
            })
        );
        assert!(!b.in_transaction());
        assert_eq!(out.len(), 4);
        for (i, e) in out.iter().enumerate() {
            assert_eq!(
                e.id,
                EventId {
                    commit_lsn: Lsn(0x16B3748),
                    position: i as u32
                }
            );
            assert_eq!(e.lsn, "0/16B3748");
            assert_eq!(e.commit_timestamp, "2026-02-05T10:35:23.123456Z");
            assert_eq!((e.schema.as_str(), e.table.as_str()), ("public", "users"));
            assert_eq!(e.primary_key, vec!["id"]);
            assert_eq!(e.columns[2].type_name, "text");
        }
        let insert = &out[0];
        assert_eq!(insert.operation, EventType::Insert);
        assert_eq!(
            insert.record,
            row(json!({"id": 1, "name": "ann", "bio": null}))
        );
        assert_eq!(insert.old_record, None);
        // No old tuple under DEFAULT when the key did not change: the old key is the new one;
        // bio is unchanged and unsent.
        let update = &out[1];
        assert_eq!(update.record, row(json!({"id": 1, "name": "bea"})));
        assert_eq!(update.unchanged_toast, vec!["bio"]);
        assert_eq!(update.old_record, row(json!({"id": 1})));
        // Key changed: the old key, and only the key.
        let key_change = &out[2];
        assert_eq!(key_change.old_record, row(json!({"id": 1})));
        assert_eq!(key_change.unchanged_toast, vec!["bio"]);
        let delete = &out[3];
        assert_eq!(delete.operation, EventType::Delete);
        assert_eq!(delete.record, None);
        assert_eq!(delete.old_record, row(json!({"id": 2})));
    }

    #[test]
    fn full_identity_fills_unchanged_toast_from_the_old_row() {
        let mut b = EventBuilder::new();
        let mut out = Vec::new();
        let step = feed(&mut b, users(b'f'), &mut out).unwrap();
        assert_eq!(
            step,
            Step::NeedCatalog(CatalogNeeds {
                type_oids: vec![],
                primary_key_of: Some(16390)
            })
        );
        b.relations_mut().set_primary_key(16390, vec!["id".into()]);
        feed(&mut b, wire::begin(100, TS, 1), &mut out).unwrap();
        let old: &[Option<Option<&str>>] =
            &[Some(Some("1")), Some(Some("ann")), Some(Some("long"))];
        feed(
            &mut b,
            wire::update(
                16390,
                Some((b'O', old)),
                &[Some(Some("1")), Some(Some("bea")), Some(None)],
            ),
            &mut out,
        )
        .unwrap();
        let e = &out[0];
        assert_eq!(
            e.record,
            row(json!({"id": 1, "name": "bea", "bio": "long"}))
        );
        assert!(e.unchanged_toast.is_empty());
        assert_eq!(
            e.old_record,
            row(json!({"id": 1, "name": "ann", "bio": "long"}))
        );
        assert_eq!(e.primary_key, vec!["id"]);
    }

    #[test]
    fn truncate_makes_one_event_per_table() {
        let mut b = EventBuilder::new();
        let mut out = Vec::new();
        feed(&mut b, users(b'd'), &mut out).unwrap();
        feed(
            &mut b,
            wire::relation(16400, "app", "posts", b'd', &[(true, "id", 20)]),
            &mut out,
        )
        .unwrap();
        feed(&mut b, wire::begin(100, TS, 1), &mut out).unwrap();
        feed(&mut b, wire::truncate(0, &[16390, 16400]), &mut out).unwrap();
        feed(&mut b, wire::commit(100, 120, TS), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].table.as_str(), out[1].table.as_str()),
            ("users", "posts")
        );
        assert_eq!(out[1].id.position, 1);
        for e in &out {
            assert_eq!(e.operation, EventType::Truncate);
            assert_eq!((e.record.as_ref(), e.old_record.as_ref()), (None, None));
        }
    }

    #[test]
    fn user_types_ask_for_the_catalog() {
        let mut b = EventBuilder::new();
        let mut out = Vec::new();
        feed(
            &mut b,
            wire::type_message(16500, "public", "mood"),
            &mut out,
        )
        .unwrap();
        let rel = wire::relation(
            1,
            "public",
            "t",
            b'd',
            &[(true, "id", 23), (false, "m", 16500), (false, "ms", 16501)],
        );
        assert_eq!(
            feed(&mut b, rel, &mut out),
            Ok(Step::NeedCatalog(CatalogNeeds {
                type_oids: vec![16500, 16501],
                primary_key_of: None
            }))
        );
        // Not loading degrades to text, it does not fail.
        feed(&mut b, wire::begin(1, TS, 1), &mut out).unwrap();
        feed(
            &mut b,
            wire::insert(
                1,
                &[
                    Some(Some("1")),
                    Some(Some("happy")),
                    Some(Some("{sad,happy}")),
                ],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out[0].record,
            row(json!({"id": 1, "m": "happy", "ms": "{sad,happy}"}))
        );
        assert_eq!(out[0].columns[1].type_name, "mood");
    }

    #[test]
    fn stream_errors_are_typed() {
        let mut b = EventBuilder::new();
        let mut out = Vec::new();
        assert_eq!(
            feed(&mut b, wire::insert(1, &[None]), &mut out),
            Err(EventError::OutsideTransaction("Insert"))
        );
        assert_eq!(
            feed(&mut b, wire::commit(1, 2, 0), &mut out),
            Err(EventError::OutsideTransaction("Commit"))
        );
        feed(&mut b, wire::begin(5, 0, 1), &mut out).unwrap();
        assert_eq!(
            feed(&mut b, wire::insert(1, &[None]), &mut out),
            Err(EventError::UnknownRelation(1))
        );
        assert_eq!(
            feed(&mut b, wire::truncate(0, &[9]), &mut out),
            Err(EventError::UnknownRelation(9))
        );
        assert_eq!(
            feed(&mut b, wire::begin(6, 0, 1), &mut out),
            Err(EventError::NestedBegin {
                open: Lsn(5),
                new: Lsn(6)
            })
        );
        feed(&mut b, users(b'd'), &mut out).unwrap();
        assert_eq!(
            feed(&mut b, wire::insert(16390, &[None]), &mut out),
            Err(EventError::ColumnCount {
                relation: 16390,
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            feed(&mut b, wire::commit(7, 8, 0), &mut out),
            Err(EventError::CommitMismatch {
                begin: Lsn(5),
                commit: Lsn(7)
            })
        );
        assert!(out.is_empty());
        b.reset_stream();
        assert!(!b.in_transaction() && b.relations().is_empty());
    }
}
