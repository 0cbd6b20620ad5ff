//! One batch of changes through a table feed, in five stages:
//!
//! ```text
//! decode ─▶ facts ─▶ candidates ─▶ authorize ─▶ encode
//! ```
//!
//! * [`decode`]: each change's slim header ([`ChangeHeader`]), read from the event bytes;
//! * [`facts`]: what the batch's tables need (RLS on or off, key, readers, owner indexes) and
//!   the one row of each change that routing reads, with only the columns it needs
//!   ([`Facts::route`]);
//! * [`candidates`]: the (change, subscription, binding ids) the bindings want and the role may
//!   read, owner-routed rows marked as already admitted;
//! * [`authorize`]: the other rows of RLS tables, checked with one visibility query per
//!   (table, claims) ([`rls_groups`]);
//! * [`encode`]: one frame per (change, wire format, topic, ids), built from the event's own
//!   bytes, shared by every subscriber that reads it.
//!
//! The feed ([`super::feed`]) runs them in order and delivers what [`encode`] returns. Only
//! [`facts`] and [`authorize`] do I/O; the others are plain functions of their inputs.

use super::binding::Binding;
use super::header::{ChangeHeader, ColumnNames};
use super::owner_index::{OwnerIndex, OwnerIndexes};
use super::rls::{self, RlsError, TableCatalog, TableInfo};
use super::subscription::TableSubscription;
use crate::auth::identity::Identity;
use crate::auth::session::AllowedRoles;
use crate::db::Pool;
use crate::decision_log;
use crate::metrics::Metrics;
use crate::outbox::OutFrame;
use crate::subscriber::Wire;
use crate::wire;
use nself_realtime_shared::bus::LoggedChange;
use nself_realtime_shared::event::{ChangeEvent, Column, EventType, Row};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// What the stages that do I/O use: the feed's catalog, pool, roles, owner indexes and metrics.
pub struct StageContext<'a> {
    pub catalog: &'a TableCatalog,
    pub owners: &'a OwnerIndexes,
    pub pool: &'a Pool,
    pub roles: &'a AllowedRoles,
    pub metrics: &'a Metrics,
    /// [`super::feed::ChangeFeeds`]' identity epoch when the batch started.
    pub identity_epoch: u64,
}

/// Stage 1: the header of each change, or `None` for a change that is not a change event
/// (logged and skipped) or was committed before `since` (a resume's start).
pub fn decode(
    changes: &[LoggedChange],
    since: Option<time::OffsetDateTime>,
) -> Vec<Option<ChangeHeader<'_>>> {
    changes
        .iter()
        .map(|change| {
            ChangeHeader::read(&change.payload)
                .map_err(|e| tracing::warn!(subject = %change.subject, error = %e, "skipping a change that is not a change event"))
                .ok()
                .filter(|header| since.is_none_or(|since| header.committed_at_or_after(since)))
        })
        .collect()
}

/// What one table of the batch needs.
pub struct TableFacts {
    pub schema: String,
    pub table: String,
    /// `None` when the facts could not be read: the table's rows are withheld.
    pub info: Option<Arc<TableInfo>>,
    /// Set for an RLS table with a row to check where an owner rule decides a subscription.
    pub owners: Option<Arc<OwnerIndex>>,
}

/// What the batch's tables need, from the catalog (a batch touches few tables: a list).
#[derive(Default)]
pub struct Facts {
    pub tables: Vec<TableFacts>,
}

impl Facts {
    /// The position of a change's table.
    fn position(&self, header: &ChangeHeader) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.schema == header.schema && t.table == header.table)
    }

    fn of(&self, header: &ChangeHeader) -> Option<&TableFacts> {
        self.position(header).map(|p| &self.tables[p])
    }

    fn info(&self, header: &ChangeHeader) -> Option<&Arc<TableInfo>> {
        self.of(header).and_then(|t| t.info.as_ref())
    }

    /// RLS on, or unknown: inserts and updates are checked, deletes reduced to their key.
    pub fn protected(&self, header: &ChangeHeader) -> bool {
        self.of(header)
            .is_none_or(|t| t.info.as_ref().is_none_or(|info| info.rls))
    }

    /// Whether the change's row must be checked for visibility.
    pub fn needs_check(&self, header: &ChangeHeader) -> bool {
        matches!(header.operation, EventType::Insert | EventType::Update) && self.protected(header)
    }

    fn owner_index(&self, header: &ChangeHeader) -> Option<&Arc<OwnerIndex>> {
        self.of(header).and_then(|t| t.owners.as_ref())
    }

    /// Each change with the one row routing reads, holding the columns that `filtered` (the
    /// bindings' filters), the table's key and its owner index name.
    pub fn route<'a>(
        &self,
        headers: Vec<Option<ChangeHeader<'a>>>,
        filtered: &ColumnNames,
    ) -> Vec<Option<Routed<'a>>> {
        // What routing reads of each table's rows, gathered once per table of the batch.
        let wanted: Vec<ColumnNames> = self
            .tables
            .iter()
            .map(|table| {
                let mut wanted = filtered.clone();
                if let Some(info) = &table.info {
                    wanted.extend(info.key.iter().map(|(name, _)| name.as_str()));
                }
                if let Some(index) = &table.owners {
                    wanted.extend(index.columns());
                }
                wanted
            })
            .collect();
        headers
            .into_iter()
            .map(|header| {
                let header = header?;
                let wanted = self.position(&header).map_or(filtered, |p| &wanted[p]);
                let row = header.routing_row(wanted);
                let columns = header.columns(filtered);
                Some(Routed {
                    header,
                    row,
                    columns,
                })
            })
            .collect()
    }
}

/// A change as the later stages see it.
pub struct Routed<'a> {
    pub header: ChangeHeader<'a>,
    /// The `record` (a DELETE's `old_record`), with the columns routing needs.
    pub row: Row,
    /// The filtered columns with their types.
    pub columns: Vec<Column>,
}

/// The columns the bindings' filters name.
pub fn filtered_columns(subscriptions: &[Arc<TableSubscription>]) -> ColumnNames<'_> {
    subscriptions
        .iter()
        .flat_map(|s| &s.bindings)
        .filter_map(|b| b.filter.as_ref())
        .flat_map(|f| f.conditions())
        .map(|c| c.column.as_str())
        .collect()
}

/// Stage 2: the facts of the batch's tables, and the owner indexes of those with a row to
/// check.
pub async fn facts(
    context: &StageContext<'_>,
    headers: &[Option<ChangeHeader<'_>>],
    subscriptions: &Arc<[Arc<TableSubscription>]>,
) -> Facts {
    let mut facts = Facts::default();
    for header in headers.iter().flatten() {
        if facts.position(header).is_some() {
            continue;
        }
        let (schema, table) = (header.schema.as_ref(), header.table.as_ref());
        let info = match context.catalog.info(schema, table).await {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(schema, table, error = %e, "cannot tell whether the table has RLS; its rows are withheld");
                None
            }
        };
        facts.tables.push(TableFacts {
            schema: schema.to_string(),
            table: table.to_string(),
            info,
            owners: None,
        });
    }
    for position in 0..facts.tables.len() {
        let Some(info) = facts.tables[position].info.clone().filter(|info| info.rls) else {
            continue;
        };
        let checked = headers
            .iter()
            .flatten()
            .any(|h| facts.position(h) == Some(position) && facts.needs_check(h));
        if !checked {
            continue;
        }
        facts.tables[position].owners = context
            .owners
            .for_table(
                context.catalog,
                context.roles,
                &info,
                subscriptions,
                context.identity_epoch,
                &context.metrics.rls_queries,
            )
            .await;
    }
    facts
}

/// A delivery the bindings want: a change, a subscription, the ids of its bindings that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub change: usize,
    pub subscription: usize,
    pub ids: Vec<u32>,
    /// An owner rule already admitted the row (no visibility query needed).
    pub admitted: bool,
}

/// Stage 3: the candidate deliveries, and how many were refused because the subscription's
/// role may not SELECT from the table. Failed subscriptions get nothing; where the table has an
/// owner index, a checked row meets only its owners and the undecided subscriptions.
pub fn candidates(
    routed: &[Option<Routed>],
    facts: &Facts,
    subscriptions: &[Arc<TableSubscription>],
    roles: &AllowedRoles,
) -> (Vec<Candidate>, u64) {
    let mut found = Vec::new();
    let mut refused = 0;
    for (c, change) in routed.iter().enumerate() {
        let Some(change) = change else { continue };
        let info = facts.info(&change.header);
        let mut consider = |s: usize, admitted: bool| {
            let subscription = &subscriptions[s];
            if subscription.failed() {
                return;
            }
            let ids = matching_ids(&subscription.bindings, change);
            if ids.is_empty() {
                return;
            }
            // A role that may not SELECT from the table gets none of its changes, whether its
            // binding names the table or `*`.
            if !may_read(info, &subscription.identity(), roles) {
                refused += 1;
                return;
            }
            found.push(Candidate {
                change: c,
                subscription: s,
                ids,
                admitted,
            });
        };
        let index = facts
            .needs_check(&change.header)
            .then(|| facts.owner_index(&change.header))
            .flatten();
        match index {
            Some(index) => {
                for s in index.owners_of(&change.row) {
                    consider(s, true);
                }
                for &s in &index.undecided {
                    consider(s, false);
                }
            }
            None => (0..subscriptions.len()).for_each(|s| consider(s, false)),
        }
    }
    (found, refused)
}

/// The ids of the bindings that want this change.
fn matching_ids(bindings: &[Binding], change: &Routed) -> Vec<u32> {
    let header = &change.header;
    bindings
        .iter()
        .filter(|b| b.events.includes(header.operation))
        .filter(|b| b.schema.as_deref().is_none_or(|s| s == header.schema))
        .filter(|b| b.table.as_deref().is_none_or(|t| t == header.table))
        .filter(|b| match &b.filter {
            None => true,
            Some(filter) => filter.matches(&change.columns, &change.row),
        })
        .map(|b| b.id)
        .collect()
}

/// Whether `identity`'s role may SELECT from the table of `info` (unknown facts: no).
fn may_read(info: Option<&Arc<TableInfo>>, identity: &Identity, roles: &AllowedRoles) -> bool {
    info.is_some_and(|info| {
        crate::auth::session::role_of(&identity.claims, roles)
            .is_ok_and(|role| info.readable_by(role))
    })
}

/// One visibility query: a table, the claims it runs under, the candidates it decides and
/// their changes (by position).
#[derive(Debug)]
pub struct RlsGroup {
    /// The table's position in [`Facts::tables`].
    pub table: usize,
    pub identity: Arc<Identity>,
    pub candidates: Vec<usize>,
    pub changes: Vec<usize>,
}

/// The visibility queries the candidates need: one per (table, claims), covering every
/// candidate that must be checked and no owner rule admitted.
pub fn rls_groups(
    candidates: &[Candidate],
    routed: &[Option<Routed>],
    facts: &Facts,
    subscriptions: &[Arc<TableSubscription>],
) -> Vec<RlsGroup> {
    let mut groups: HashMap<(usize, Arc<str>), RlsGroup> = HashMap::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let header = &routed[candidate.change]
            .as_ref()
            .expect("candidates have changes")
            .header;
        if candidate.admitted || !facts.needs_check(header) {
            continue;
        }
        let identity = subscriptions[candidate.subscription].identity();
        let table = facts
            .position(header)
            .expect("every change's table has facts");
        let group = groups
            .entry((table, identity.key.clone()))
            .or_insert_with(|| RlsGroup {
                table,
                identity,
                candidates: Vec::new(),
                changes: Vec::new(),
            });
        group.candidates.push(index);
        group.changes.push(candidate.change);
    }
    groups.into_values().collect()
}

/// Stage 4: whether each candidate may be delivered. Candidates of a group whose query fails
/// are withheld; a query refused by Postgres (or a table without a primary key) also fails the
/// subscription, which is told why.
pub async fn authorize(
    context: &StageContext<'_>,
    candidates: &[Candidate],
    routed: &[Option<Routed<'_>>],
    facts: &Facts,
    subscriptions: &[Arc<TableSubscription>],
) -> Vec<bool> {
    let mut allowed = vec![true; candidates.len()];
    let checks = rls_groups(candidates, routed, facts, subscriptions)
        .into_iter()
        .map(|group| {
            let info = facts.tables[group.table].info.clone();
            async move {
                let Some(info) = info else {
                    let unknown = RlsError::Unavailable("table facts unknown".into());
                    return (group.candidates, Err(unknown));
                };
                // Distinct rows of this table in the group, as key text.
                let mut keys: Vec<Vec<String>> = Vec::new();
                let mut row_of_change: HashMap<usize, usize> = HashMap::new();
                for &c in &group.changes {
                    if let std::collections::hash_map::Entry::Vacant(slot) = row_of_change.entry(c)
                    {
                        slot.insert(keys.len());
                        let row = &routed[c].as_ref().expect("candidates have changes").row;
                        keys.push(key_text(&info, row));
                    }
                }
                context.metrics.rls_queries.inc();
                let result =
                    rls::visible(context.pool, context.roles, &group.identity, &info, &keys)
                        .await
                        .map(|seen| {
                            group
                                .changes
                                .iter()
                                .map(|c| seen[row_of_change[c]])
                                .collect::<Vec<bool>>()
                        });
                (group.candidates, result)
            }
        });
    for (members, result) in futures::future::join_all(checks).await {
        match result {
            Ok(seen) => {
                for (index, visible) in members.into_iter().zip(seen) {
                    if !visible {
                        allowed[index] = false;
                        context.metrics.rls_denied_rows.inc();
                    }
                }
            }
            Err(e) => {
                let message = format!("row authorization failed: {e}");
                for index in members {
                    allowed[index] = false;
                    if matches!(e, RlsError::Denied(_) | RlsError::NoPrimaryKey(..)) {
                        let subscription = &subscriptions[candidates[index].subscription];
                        // Logged before the client hears it, once per subscription.
                        if !subscription.failed() {
                            let header = &routed[candidates[index].change]
                                .as_ref()
                                .expect("candidates have changes")
                                .header;
                            decision_log::rows_withheld(
                                subscription.subscriber.conn_id(),
                                &subscription.subscriber.topic,
                                &format!("{}.{}", header.schema, header.table),
                                &e,
                            );
                        }
                        subscription.fail(&message);
                    }
                }
                if matches!(e, RlsError::Unavailable(_)) {
                    tracing::warn!(error = %e, "rows withheld: their authorization could not be checked");
                }
            }
        }
    }
    allowed
}

/// A row's key columns as text, in key order (JSON strings as they are, other values as JSON).
fn key_text(info: &TableInfo, row: &Row) -> Vec<String> {
    info.key
        .iter()
        .map(|(name, _)| match row.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
        .collect()
}

/// A frame for one subscription, and the log position of its change.
#[derive(Debug)]
pub struct Delivery {
    pub subscription: usize,
    pub sequence: u64,
    pub frame: OutFrame,
}

/// Stage 5: a frame for each allowed candidate whose subscription has not failed, encoded once
/// per (change, wire format, topic, ids). A candidate whose matching bindings `select`
/// different columns gets one frame per selection, each naming its bindings' ids.
pub fn encode(
    changes: &[LoggedChange],
    routed: &[Option<Routed>],
    facts: &Facts,
    candidates: Vec<Candidate>,
    allowed: &[bool],
    subscriptions: &[Arc<TableSubscription>],
) -> Vec<Delivery> {
    // A change's client data per selection; `None` where it could not be cut.
    let mut data: HashMap<(usize, Selection), Option<Box<RawValue>>> = HashMap::new();
    let mut frames: HashMap<(usize, Wire, Arc<str>, Vec<u32>), OutFrame> = HashMap::new();
    let mut deliveries = Vec::new();
    for (candidate, _) in candidates.into_iter().zip(allowed).filter(|(_, a)| **a) {
        let subscription = &subscriptions[candidate.subscription];
        if subscription.failed() {
            continue;
        }
        let c = candidate.change;
        let subscriber = &subscription.subscriber;
        for (select, ids) in by_selection(&subscription.bindings, candidate.ids) {
            let key = (c, subscriber.wire, subscriber.topic.clone(), ids);
            let frame = match frames.get(&key) {
                Some(frame) => frame.clone(),
                None => {
                    let header = &routed[c].as_ref().expect("candidates have changes").header;
                    let data = data.entry((c, select)).or_insert_with(|| {
                        client_data(&changes[c].payload, header, facts.protected(header), select)
                    });
                    let Some(data) = data else { continue };
                    let frame = change_frame(subscriber.wire, &subscriber.topic, &key.3, data);
                    frames.insert(key, frame.clone());
                    frame
                }
            };
            deliveries.push(Delivery {
                subscription: candidate.subscription,
                sequence: changes[c].sequence,
                frame,
            });
        }
    }
    deliveries
}

/// The `postgres_changes` push `{ids, data}` for `wire`.
fn change_frame(wire: Wire, topic: &str, ids: &[u32], data: &RawValue) -> OutFrame {
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let payload = RawValue::from_string(format!(
        "{{\"ids\":[{}],\"data\":{}}}",
        ids.join(","),
        data.get()
    ))
    .expect("ids and data are JSON");
    wire::change(wire, topic, &payload)
}

/// The columns a binding selects; `None`: the whole row.
type Selection<'b> = Option<&'b [String]>;

/// The matching binding ids grouped by the columns their bindings select, in the order the
/// bindings come.
fn by_selection(bindings: &[Binding], ids: Vec<u32>) -> Vec<(Selection<'_>, Vec<u32>)> {
    let selection = |id: u32| {
        bindings
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| b.select.as_deref())
    };
    if ids.iter().all(|id| selection(*id).is_none()) {
        return vec![(None, ids)];
    }
    let mut groups: Vec<(Selection, Vec<u32>)> = Vec::new();
    for id in ids {
        let select = selection(id);
        match groups.iter_mut().find(|(s, _)| *s == select) {
            Some((_, group)) => group.push(id),
            None => groups.push((select, vec![id])),
        }
    }
    groups
}

/// The `data` realtime-js reads: the change event as the CDC built it, bytes untouched (extra
/// fields are ignored by the client), except where it must be cut, which parses that event:
/// a DELETE on a protected table carries only the key, and a `select` keeps only its columns
/// (in `columns`, `record`, `old_record`). `None`, and nothing sent, if it cannot be cut.
fn client_data(
    payload: &[u8],
    header: &ChangeHeader,
    protected: bool,
    select: Option<&[String]>,
) -> Option<Box<RawValue>> {
    let key_only = header.operation == EventType::Delete && protected;
    if !key_only && select.is_none() {
        // The header was read from these bytes, so they are one JSON value.
        let text = std::str::from_utf8(payload).ok()?;
        return RawValue::from_string(text.to_string()).ok();
    }
    let mut event: ChangeEvent = serde_json::from_slice(payload)
        .map_err(|e| tracing::warn!(schema = %header.schema, table = %header.table, error = %e, "a change that cannot be cut to its key or selection is withheld"))
        .ok()?;
    if key_only {
        let key = &event.primary_key;
        if let Some(old) = event.old_record.as_mut() {
            old.retain(|name, _| key.contains(name));
        }
    }
    if let Some(select) = select {
        let kept = |name: &String| select.contains(name);
        event.columns.retain(|c| kept(&c.name));
        for row in [event.record.as_mut(), event.old_record.as_mut()]
            .into_iter()
            .flatten()
        {
            row.retain(|name, _| kept(name));
        }
        event.unchanged_toast.retain(kept);
    }
    Some(serde_json::value::to_raw_value(&event).expect("events serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phoenix::frame::Vsn;
    use bytes::Bytes;
    use serde_json::json;

    fn change(sequence: u64, event: Value) -> LoggedChange {
        LoggedChange {
            sequence,
            pending: 0,
            subject: "realtime.db.public.todos.insert".into(),
            payload: Bytes::from(serde_json::to_vec(&event).unwrap()),
        }
    }

    fn event(operation: &str, record: Value, old_record: Value) -> Value {
        json!({
            "id": "0000000000000001-00000000", "lsn": "0/1", "commit_timestamp": "2026-12-06T10:00:00Z",
            "schema": "public", "table": "todos", "type": operation,
            "columns": [{"name": "id", "type": "int4"}, {"name": "owner", "type": "text"},
                        {"name": "done", "type": "bool"}, {"name": "note", "type": "text"}],
            "record": record, "old_record": old_record, "primary_key": ["id"], "errors": []
        })
    }

    fn insert(id: i64, owner: &str, done: bool) -> Value {
        event(
            "INSERT",
            json!({"id": id, "owner": owner, "done": done, "note": "secret"}),
            Value::Null,
        )
    }

    use crate::changes::fixtures::{identity, subscription, todos as info};

    fn facts(info: Arc<TableInfo>, owners: Option<OwnerIndex>) -> Facts {
        Facts {
            tables: vec![TableFacts {
                schema: "public".into(),
                table: "todos".into(),
                info: Some(info),
                owners: owners.map(Arc::new),
            }],
        }
    }

    fn roles() -> AllowedRoles {
        AllowedRoles::parse("anon,authenticated,service_role").unwrap()
    }

    fn all_inserts() -> Value {
        json!([{"event": "INSERT", "schema": "public", "table": "todos"}])
    }

    /// Runs decode and route over `changes` with `facts`.
    fn routed<'a>(
        changes: &'a [LoggedChange],
        facts: &Facts,
        subscriptions: &[Arc<TableSubscription>],
    ) -> Vec<Option<Routed<'a>>> {
        facts.route(decode(changes, None), &filtered_columns(subscriptions))
    }

    #[test]
    fn decode_skips_what_is_not_a_change_and_what_came_before_a_resume() {
        let mut early = insert(1, "u1", false);
        early["commit_timestamp"] = json!("2026-12-06T09:00:00Z");
        let changes = [
            change(1, early),
            change(2, json!({"not": "an event"})),
            change(3, insert(3, "u1", false)),
        ];
        let all = decode(&changes, None);
        assert!(all[0].is_some() && all[1].is_none() && all[2].is_some());
        let since = time::macros::datetime!(2026-12-06 09:30 UTC);
        let resumed = decode(&changes, Some(since));
        assert!(resumed[0].is_none() && resumed[1].is_none() && resumed[2].is_some());
    }

    #[test]
    fn route_reads_the_filtered_key_and_owner_columns_only() {
        let changes = [change(1, insert(7, "u1", true))];
        let filtered = subscription(
            Wire::Json,
            "room",
            json!([{"event": "*", "schema": "public", "table": "todos", "filter": "done=eq.true"}]),
            identity("authenticated", "u1"),
        );
        let mut owners = OwnerIndex::default();
        owners
            .by_column
            .insert("owner".into(), HashMap::from([("u1".into(), vec![0])]));
        let facts = facts(info(true, &["authenticated"]), Some(owners));
        let routed = routed(&changes, &facts, &[filtered]);
        let change = routed[0].as_ref().unwrap();
        assert_eq!(
            Value::Object(change.row.clone()),
            json!({"id": 7, "owner": "u1", "done": true})
        );
        let columns: Vec<&str> = change.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["done"]);
    }

    #[test]
    fn candidates_follow_bindings_filters_readers_and_failures() {
        let changes = [
            change(1, insert(1, "u1", true)),
            change(2, insert(2, "u2", false)),
            change(3, event("DELETE", Value::Null, json!({"id": 3}))),
        ];
        let subscriptions = [
            subscription(
                Wire::Json,
                "a",
                all_inserts(),
                identity("authenticated", "u1"),
            ),
            subscription(
                Wire::Json,
                "b",
                json!([{"event": "*", "schema": "public", "table": "todos", "filter": "done=eq.true"}]),
                identity("authenticated", "u2"),
            ),
            // anon may not read the table: refused, and counted.
            subscription(Wire::Json, "c", all_inserts(), identity("anon", "x")),
            subscription(
                Wire::Json,
                "d",
                all_inserts(),
                identity("authenticated", "u4"),
            ),
        ];
        subscriptions[3].fail("gone");
        let facts = facts(info(false, &["authenticated"]), None);
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, refused) = candidates(&routed, &facts, &subscriptions, &roles());
        let pairs: Vec<(usize, usize)> = found.iter().map(|c| (c.change, c.subscription)).collect();
        assert_eq!(pairs, [(0, 0), (0, 1), (1, 0)]);
        assert!(found.iter().all(|c| !c.admitted && c.ids.len() == 1));
        assert_eq!(refused, 2);
        // The delete matched only the `*` binding of subscription 1, whose filter needs a
        // column a DELETE's old record lacks.
        assert!(!pairs.iter().any(|(c, _)| *c == 2));
    }

    #[test]
    fn an_owner_index_routes_checked_rows_to_owners_and_the_undecided() {
        let changes = [change(1, insert(1, "u1", false))];
        let subscriptions: Vec<_> = ["u1", "u2", "u3"]
            .iter()
            .map(|u| subscription(Wire::Json, u, all_inserts(), identity("authenticated", u)))
            .collect();
        let mut owners = OwnerIndex {
            undecided: vec![2],
            ..OwnerIndex::default()
        };
        owners.by_column.insert(
            "owner".into(),
            HashMap::from([("u1".into(), vec![0]), ("u2".into(), vec![1])]),
        );
        let facts = facts(info(true, &["authenticated"]), Some(owners));
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, _) = candidates(&routed, &facts, &subscriptions, &roles());
        let decided: Vec<(usize, bool)> =
            found.iter().map(|c| (c.subscription, c.admitted)).collect();
        assert_eq!(decided, [(0, true), (2, false)]);
        // Only the undecided one needs a visibility query.
        let groups = rls_groups(&found, &routed, &facts, &subscriptions);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].candidates, [1]);
        assert_eq!(groups[0].changes, [0]);
    }

    #[test]
    fn rls_groups_are_one_per_table_and_claims() {
        let changes = [
            change(1, insert(1, "u1", false)),
            change(2, insert(2, "u1", false)),
            change(3, event("DELETE", Value::Null, json!({"id": 3}))),
        ];
        let same = identity("authenticated", "u1");
        let subscriptions = [
            subscription(
                Wire::Json,
                "a",
                json!([{"event": "*", "schema": "public", "table": "todos"}]),
                same.clone(),
            ),
            subscription(Wire::SocketIo, "b", all_inserts(), same),
            subscription(
                Wire::Json,
                "c",
                all_inserts(),
                identity("authenticated", "u2"),
            ),
        ];
        let facts = facts(info(true, &["authenticated"]), None);
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, _) = candidates(&routed, &facts, &subscriptions, &roles());
        // 2 inserts × 3 subscriptions, and the delete for the `*` binding.
        assert_eq!(found.len(), 7);
        let mut groups = rls_groups(&found, &routed, &facts, &subscriptions);
        groups.sort_by_key(|g| g.candidates.len());
        // Equal claims share a query; the delete is not checked.
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].changes, [0, 1]);
        assert_eq!(groups[1].changes, [0, 0, 1, 1]);
        // Without RLS nothing is checked.
        let open = self::facts(info(false, &["authenticated"]), None);
        assert!(rls_groups(&found, &routed, &open, &subscriptions).is_empty());
    }

    #[test]
    fn encode_builds_each_frame_once_and_reduces_protected_deletes() {
        let changes = [
            change(1, insert(1, "u1", false)),
            change(
                2,
                event("DELETE", Value::Null, json!({"id": 2, "note": "secret"})),
            ),
        ];
        let everything = json!([{"event": "*", "schema": "public", "table": "todos"}]);
        let phoenix = Wire::Phoenix(Vsn::V2);
        let subscriptions = [
            subscription(
                phoenix,
                "realtime:t",
                everything.clone(),
                identity("authenticated", "u1"),
            ),
            subscription(
                phoenix,
                "realtime:t",
                everything.clone(),
                identity("authenticated", "u2"),
            ),
            subscription(
                Wire::Json,
                "t",
                everything.clone(),
                identity("authenticated", "u3"),
            ),
            subscription(Wire::Json, "t", everything, identity("authenticated", "u4")),
        ];
        let facts = facts(info(true, &["authenticated"]), None);
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, _) = candidates(&routed, &facts, &subscriptions, &roles());
        assert_eq!(found.len(), 8);
        // Subscription 3's rows were refused by the visibility check.
        let allowed: Vec<bool> = found.iter().map(|c| c.subscription != 3).collect();
        subscriptions[2].fail("stopped");
        let deliveries = encode(&changes, &routed, &facts, found, &allowed, &subscriptions);
        let to: Vec<(usize, u64)> = deliveries
            .iter()
            .map(|d| (d.subscription, d.sequence))
            .collect();
        assert_eq!(to, [(0, 1), (1, 1), (0, 2), (1, 2)]);
        // Same change, wire, topic and ids: the same bytes, shared.
        let bytes = |i: usize| deliveries[i].frame.bytes().as_ptr();
        assert_eq!(bytes(0), bytes(1));
        assert_eq!(bytes(2), bytes(3));
        let text = |i: usize| String::from_utf8(deliveries[i].frame.bytes().to_vec()).unwrap();
        assert!(
            text(0).contains(r#""note":"secret""#),
            "an insert goes out as the CDC built it"
        );
        assert!(text(2).contains(r#""old_record":{"id":2}"#), "{}", text(2));
        assert!(!text(2).contains("secret"));
        // Without RLS a delete keeps its old record.
        let open = self::facts(info(false, &["authenticated"]), None);
        let (found, _) = candidates(&routed, &open, &subscriptions[..2], &roles());
        let allowed = vec![true; found.len()];
        let deliveries = encode(
            &changes,
            &routed,
            &open,
            found,
            &allowed,
            &subscriptions[..2],
        );
        let last = String::from_utf8(deliveries[3].frame.bytes().to_vec()).unwrap();
        assert!(last.contains("secret"));
    }

    #[test]
    fn a_protected_delete_that_cannot_be_reduced_is_withheld() {
        let mut broken = event("DELETE", Value::Null, json!({"id": 2, "note": "secret"}));
        broken["id"] = json!("not an event id");
        let changes = [change(1, broken)];
        let subscriptions = [subscription(
            Wire::Json,
            "t",
            json!([{"event": "DELETE", "schema": "public", "table": "todos"}]),
            identity("authenticated", "u1"),
        )];
        let facts = facts(info(true, &["authenticated"]), None);
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, _) = candidates(&routed, &facts, &subscriptions, &roles());
        assert_eq!(found.len(), 1);
        let deliveries = encode(&changes, &routed, &facts, found, &[true], &subscriptions);
        assert!(deliveries.is_empty());
    }

    #[test]
    fn a_select_gets_its_own_frame_with_only_its_columns() {
        let changes = [change(1, insert(1, "u1", false))];
        let subscriptions = [subscription(
            Wire::Json,
            "t",
            json!([
                {"event": "INSERT", "schema": "public", "table": "todos"},
                {"event": "*", "schema": "public", "table": "todos", "select": ["id", "done"]},
                {"event": "INSERT", "schema": "public", "table": "todos", "select": ["done", "id"]},
            ]),
            identity("authenticated", "u1"),
        )];
        let ids: Vec<u32> = subscriptions[0].bindings.iter().map(|b| b.id).collect();
        let facts = facts(info(false, &["authenticated"]), None);
        let routed = routed(&changes, &facts, &subscriptions);
        let (found, _) = candidates(&routed, &facts, &subscriptions, &roles());
        assert_eq!(found.len(), 1);
        let deliveries = encode(&changes, &routed, &facts, found, &[true], &subscriptions);
        assert_eq!(deliveries.len(), 3, "three different selections");
        let data = |i: usize| -> Value {
            let frame: Value = serde_json::from_slice(deliveries[i].frame.bytes()).unwrap();
            frame["payload"].clone()
        };
        assert_eq!(data(0)["ids"], json!([ids[0]]));
        assert_eq!(data(0)["data"]["record"]["note"], "secret");
        assert_eq!(data(1)["ids"], json!([ids[1]]));
        assert_eq!(data(1)["data"]["record"], json!({"id": 1, "done": false}));
        let columns = data(1)["data"]["columns"].clone();
        assert_eq!(
            columns,
            json!([{"name": "id", "type": "int4"}, {"name": "done", "type": "bool"}])
        );
        assert_eq!(data(2)["ids"], json!([ids[2]]));
        assert_eq!(data(2)["data"]["record"], json!({"id": 1, "done": false}));
    }
}
