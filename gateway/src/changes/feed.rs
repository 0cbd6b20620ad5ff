//! Table feeds: the change log read once per table (or schema, or everything) that has
//! subscribers on this gateway, and each change filtered, authorized and fanned out.
//!
//! ```text
//! ChangeLog ─follow(realtime.db.<schema>.<table>.*)─▶ Feed task ─batch─▶ match bindings
//!     ─▶ RLS: one query per (table, claims) per batch ─▶ frames per (topic, ids) ─▶ subscribers
//! ```
//!
//! A feed starts when the first channel needs its subject and stops when the last leaves. A
//! channel is added to a feed *before* its join is answered, and the feed's reader is in place
//! before that, so a row committed after the reply is always delivered.
//!
//! Resume (`postgres_changes_options.since`): the subscription starts in replay mode. Live changes
//! are held while a second reader replays the log from the requested point through the same
//! filters and checks; once the replay has caught up with the log, held changes past its last
//! sequence follow, and the subscription is live: no gap and no duplicate.

use super::binding::Binding;
use super::owner_rule;
use super::rls::{self, RlsError, TableCatalog, TableInfo};
use crate::auth::identity::Identity;
use crate::auth::session::AllowedRoles;
use crate::db::Pool;
use crate::metrics::Metrics;
use crate::outbox::OutFrame;
use crate::subscriber::Subscriber;
use crate::subscriber::Wire;
use crate::wire;
use futures::{FutureExt, StreamExt};
use nself_realtime_shared::bus::{BusError, ChangeLog, LoggedChange, StartAt};
use nself_realtime_shared::event::{ChangeEvent, EventType, Row};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// Most changes processed as one batch (one RLS query per table and claims covers them all).
const MAX_BATCH: usize = 512;
/// Most changes one join may replay; past it the channel gets an error and stays live-only.
const MAX_REPLAY: u64 = 100_000;

enum Flow {
    /// Replaying: live changes wait here with their sequences.
    Replaying(Vec<(u64, OutFrame)>),
    /// Live: changes at or below `last` were already delivered by the replay.
    Live { last: u64 },
    /// The claims' checks failed; the channel was told and gets nothing more.
    Failed,
}

/// The subscriptions owner rules decide for one table (see [`ChangeFeeds::owner_index`]).
#[derive(Default)]
struct OwnerIndex {
    /// column → value → the subscriptions whose rows carry that value in that column.
    by_column: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Subscriptions the general path decides.
    undecided: Vec<usize>,
}

impl OwnerIndex {
    /// The subscriptions that own `row`.
    fn owners_of<'a>(&'a self, row: Option<&'a Row>) -> impl Iterator<Item = usize> + 'a {
        self.by_column.iter().flat_map(move |(column, by_value)| {
            owner_rule::row_value(row, column)
                .and_then(|value| by_value.get(&value))
                .into_iter()
                .flatten()
                .copied()
        })
    }
}

/// One channel's interest in one feed.
pub struct TableSubscription {
    pub subscriber: Arc<Subscriber>,
    /// The channel's bindings served by this feed.
    pub bindings: Vec<Binding>,
    identity: RwLock<Arc<Identity>>,
    flow: Mutex<Flow>,
}

impl TableSubscription {
    pub fn new(
        subscriber: Arc<Subscriber>,
        bindings: Vec<Binding>,
        identity: Arc<Identity>,
        replaying: bool,
    ) -> Arc<TableSubscription> {
        Arc::new(TableSubscription {
            subscriber,
            bindings,
            identity: RwLock::new(identity),
            flow: Mutex::new(if replaying {
                Flow::Replaying(Vec::new())
            } else {
                Flow::Live { last: 0 }
            }),
        })
    }

    /// Switches to new claims (after `access_token`).
    pub fn set_identity(&self, identity: Arc<Identity>) {
        *self.identity.write().expect("identity lock") = identity;
    }

    fn identity(&self) -> Arc<Identity> {
        self.identity.read().expect("identity lock").clone()
    }

    fn failed(&self) -> bool {
        matches!(*self.flow.lock().expect("flow lock"), Flow::Failed)
    }

    /// A live change.
    fn offer(&self, sequence: u64, frame: OutFrame) {
        let mut flow = self.flow.lock().expect("flow lock");
        match &mut *flow {
            Flow::Replaying(held) => held.push((sequence, frame)),
            Flow::Live { last } if sequence > *last => {
                *last = sequence;
                self.subscriber.deliver(frame);
            }
            Flow::Live { .. } | Flow::Failed => {}
        }
    }

    /// Ends the replay at `last_replayed`: held changes after it go out, then live.
    fn finish_replay(&self, last_replayed: u64) {
        let mut flow = self.flow.lock().expect("flow lock");
        if let Flow::Replaying(held) = std::mem::replace(
            &mut *flow,
            Flow::Live {
                last: last_replayed,
            },
        ) {
            let mut last = last_replayed;
            for (sequence, frame) in held {
                if sequence > last {
                    last = sequence;
                    self.subscriber.deliver(frame);
                }
            }
            *flow = Flow::Live { last };
        }
    }

    /// Marks the subscription failed and tells the client why, once.
    fn fail(&self, message: &str) {
        let mut flow = self.flow.lock().expect("flow lock");
        if matches!(*flow, Flow::Failed) {
            return;
        }
        *flow = Flow::Failed;
        drop(flow);
        self.subscriber
            .deliver(system_error(&self.subscriber, message));
    }
}

/// A `system` message with status `error` for the postgres_changes extension.
pub fn system_error(subscriber: &Subscriber, message: &str) -> OutFrame {
    wire::channel_error(
        subscriber.wire,
        subscriber.join_ref.as_deref(),
        &subscriber.topic,
        "postgres_changes",
        message,
    )
}

struct Feed {
    filter: String,
    subscriptions: RwLock<HashMap<u64, Arc<TableSubscription>>>,
    joining: AtomicUsize,
    started: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A subscription's place in a feed, to leave it.
#[derive(Debug, Clone)]
pub struct FeedMembership {
    filter: String,
    key: u64,
}

impl FeedMembership {
    /// The change-log subject filter of the feed.
    pub fn subject(&self) -> &str {
        &self.filter
    }
}

/// Every feed of this gateway.
pub struct ChangeFeeds {
    log: Arc<dyn ChangeLog>,
    pool: Pool,
    roles: Arc<AllowedRoles>,
    catalog: TableCatalog,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    metrics: Arc<Metrics>,
    /// Owner indexes by table, each for the exact subscriptions it was built from; rebuilt
    /// when the table's facts or the subscriptions change, or after [`OWNER_INDEX_TTL`].
    owner_indexes: Mutex<HashMap<(String, String), Vec<CachedOwnerIndex>>>,
}

/// How long an owner index serves before it is rebuilt (to pick up refreshed values).
const OWNER_INDEX_TTL: std::time::Duration = std::time::Duration::from_secs(1);

struct CachedOwnerIndex {
    built: std::time::Instant,
    info: Arc<TableInfo>,
    /// The subscriptions and identities it was built for, in order. Holding them keeps their
    /// addresses from being reused, so pointer equality below means the same subscriptions.
    members: Vec<(Arc<TableSubscription>, Arc<Identity>)>,
    index: Option<Arc<OwnerIndex>>,
}

impl CachedOwnerIndex {
    fn serves(&self, info: &Arc<TableInfo>, subscriptions: &[Arc<TableSubscription>]) -> bool {
        self.built.elapsed() < OWNER_INDEX_TTL
            && Arc::ptr_eq(&self.info, info)
            && self.members.len() == subscriptions.len()
            && self
                .members
                .iter()
                .zip(subscriptions)
                .all(|((s, i), now)| Arc::ptr_eq(s, now) && Arc::ptr_eq(i, &now.identity()))
    }
}

/// How a batch's deliveries go out.
#[derive(Clone, Copy)]
enum Mode {
    Live,
    Replay,
}

impl ChangeFeeds {
    pub fn new(
        log: Arc<dyn ChangeLog>,
        pool: Pool,
        roles: Arc<AllowedRoles>,
        metrics: Arc<Metrics>,
    ) -> Arc<ChangeFeeds> {
        Arc::new(ChangeFeeds {
            log,
            catalog: TableCatalog::new(pool.clone(), roles.clone()),
            pool,
            roles,
            feeds: Mutex::new(HashMap::new()),
            metrics,
            owner_indexes: Mutex::new(HashMap::new()),
        })
    }

    pub fn catalog(&self) -> &TableCatalog {
        &self.catalog
    }

    /// Adds a subscription to the feed of `filter`, starting the feed if needed; returns once
    /// the feed's reader is in place.
    pub async fn subscribe(
        self: &Arc<Self>,
        filter: &str,
        subscription: Arc<TableSubscription>,
    ) -> Result<FeedMembership, BusError> {
        let key = Arc::as_ptr(&subscription) as usize as u64;
        let feed = {
            let mut feeds = self.feeds.lock().expect("feeds lock");
            let feed = feeds
                .entry(filter.to_string())
                .or_insert_with(|| {
                    Arc::new(Feed {
                        filter: filter.to_string(),
                        subscriptions: RwLock::new(HashMap::new()),
                        joining: AtomicUsize::new(0),
                        started: OnceCell::new(),
                        task: Mutex::new(None),
                    })
                })
                .clone();
            feed.subscriptions
                .write()
                .expect("subscriptions lock")
                .insert(key, subscription);
            feed.joining.fetch_add(1, Ordering::AcqRel);
            feed
        };
        let membership = FeedMembership {
            filter: filter.to_string(),
            key,
        };
        let started = feed
            .started
            .get_or_try_init(|| self.start(feed.clone()))
            .await;
        feed.joining.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = started {
            self.unsubscribe(&membership);
            return Err(e);
        }
        Ok(membership)
    }

    async fn start(self: &Arc<Self>, feed: Arc<Feed>) -> Result<(), BusError> {
        let mut following = self.log.follow(&feed.filter, StartAt::New).await?;
        let feeds = Arc::downgrade(self);
        let weak_feed = Arc::downgrade(&feed);
        let filter = feed.filter.clone();
        let task = tokio::spawn(async move {
            loop {
                let batch = next_batch(&mut following.changes).await;
                let (changes, error) = match batch {
                    Some(batch) => batch,
                    None => break,
                };
                let (Some(feeds), Some(feed)) = (feeds.upgrade(), weak_feed.upgrade()) else {
                    break;
                };
                let subscriptions: Vec<Arc<TableSubscription>> = feed
                    .subscriptions
                    .read()
                    .expect("subscriptions lock")
                    .values()
                    .cloned()
                    .collect();
                feeds
                    .process(&changes, &subscriptions, Mode::Live, None)
                    .await;
                if let Some(e) = error {
                    // The reader broke (the log is gone or unreachable for good): tell the
                    // channels, which may rejoin.
                    tracing::error!(filter = %filter, error = %e, "change feed stopped");
                    for subscription in subscriptions {
                        subscription
                            .fail(&format!("the change feed stopped: {e}; rejoin the channel"));
                    }
                    break;
                }
            }
        });
        *feed.task.lock().expect("task lock") = Some(task);
        Ok(())
    }

    /// Removes a subscription; the last one out stops the feed.
    pub fn unsubscribe(&self, membership: &FeedMembership) {
        let mut feeds = self.feeds.lock().expect("feeds lock");
        let Some(feed) = feeds.get(&membership.filter) else {
            return;
        };
        let mut subscriptions = feed.subscriptions.write().expect("subscriptions lock");
        subscriptions.remove(&membership.key);
        if subscriptions.is_empty() && feed.joining.load(Ordering::Acquire) == 0 {
            drop(subscriptions);
            if let Some(task) = feed.task.lock().expect("task lock").take() {
                task.abort();
            }
            feeds.remove(&membership.filter);
        }
    }

    /// Replays the log for one subscription from `start`, then switches it to live. Runs in the
    /// background; call after the join reply was queued.
    pub fn replay(
        self: &Arc<Self>,
        filter: String,
        subscription: Arc<TableSubscription>,
        start: StartAt,
    ) {
        let feeds = self.clone();
        tokio::spawn(async move {
            let since = match start {
                StartAt::Time(t) => Some(t),
                _ => None,
            };
            let mut last = 0;
            match feeds.log.follow(&filter, start).await {
                Err(e) => subscription.fail(&format!("cannot replay changes: {e}")),
                Ok(following) if following.pending_at_start == 0 => {}
                Ok(following) if following.pending_at_start > MAX_REPLAY => {
                    subscription.fail(&format!(
                    "cannot replay {} changes (at most {MAX_REPLAY}); resume from a later point",
                    following.pending_at_start
                ))
                }
                Ok(mut following) => loop {
                    let Some((changes, error)) = next_batch(&mut following.changes).await else {
                        break;
                    };
                    let caught_up = changes.last().is_some_and(|c| c.pending == 0);
                    if let Some(change) = changes.last() {
                        last = change.sequence;
                    }
                    feeds
                        .process(
                            &changes,
                            std::slice::from_ref(&subscription),
                            Mode::Replay,
                            since,
                        )
                        .await;
                    if let Some(e) = error {
                        subscription.fail(&format!("the replay stopped: {e}"));
                        break;
                    }
                    if caught_up || changes.iter().any(|c| c.pending == 0) {
                        break;
                    }
                },
            }
            subscription.finish_replay(last);
        });
    }

    /// The owner index of a table for `members` (subscriptions and the identities they act as,
    /// in order), when an owner rule decides any of them: each rule's expression is evaluated
    /// once per distinct claims (cached), and a subscription goes under the value its rows must
    /// carry. Subscriptions with no rule, or whose expression failed, stay for the general
    /// path; a NULL value admits nothing.
    async fn owner_index(
        &self,
        info: &TableInfo,
        members: &[(Arc<TableSubscription>, Arc<Identity>)],
    ) -> Option<OwnerIndex> {
        let mut rules: HashMap<String, Option<owner_rule::OwnerRule>> = HashMap::new();
        let mut index = OwnerIndex::default();
        let mut ruled: Vec<(usize, owner_rule::OwnerRule, Arc<Identity>)> = Vec::new();
        for (s, (_, identity)) in members.iter().enumerate() {
            let identity = identity.clone();
            let rule = crate::auth::session::role_of(&identity.claims, &self.roles)
                .ok()
                .and_then(|role| {
                    rules
                        .entry(role.to_string())
                        .or_insert_with(|| info.owner_rule(role))
                        .clone()
                });
            match rule {
                Some(rule) => ruled.push((s, rule, identity)),
                None => index.undecided.push(s),
            }
        }
        if ruled.is_empty() {
            return None;
        }
        let mut distinct: HashMap<(&str, &str), &Arc<Identity>> = HashMap::new();
        for (_, rule, identity) in &ruled {
            distinct
                .entry((rule.expression.as_str(), &identity.key))
                .or_insert(identity);
        }
        let values: HashMap<(&str, &str), Option<String>> =
            futures::future::join_all(distinct.into_iter().map(|(key, identity)| async move {
                let value = self
                    .catalog
                    .owner_value(&self.roles, identity, key.0, &self.metrics.rls_queries)
                    .await;
                (key, value)
            }))
            .await
            .into_iter()
            .filter_map(|(key, value)| value.ok().map(|value| (key, value)))
            .collect();
        for (s, rule, identity) in &ruled {
            match values.get(&(rule.expression.as_str(), &*identity.key)) {
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
        Some(index)
    }

    /// Filters, authorizes and delivers one batch of changes to `subscriptions`.
    async fn process(
        &self,
        changes: &[LoggedChange],
        subscriptions: &[Arc<TableSubscription>],
        mode: Mode,
        since: Option<time::OffsetDateTime>,
    ) {
        self.metrics.changes_received.inc_by(changes.len() as u64);
        let events: Vec<Option<ChangeEvent>> = changes
            .iter()
            .map(|change| {
                let event: Option<ChangeEvent> = serde_json::from_slice(&change.payload)
                    .map_err(|e| tracing::warn!(subject = %change.subject, error = %e, "skipping a change that is not a change event"))
                    .ok();
                event.filter(|event| since.is_none_or(|since| committed_at_or_after(event, since)))
            })
            .collect();

        // The batch's tables and what their checks need: RLS on (or unknown) means check
        // inserts and updates, and reduce deletes to their key.
        let mut tables: HashMap<(&str, &str), Option<Arc<TableInfo>>> = HashMap::new();
        for event in events.iter().flatten() {
            let key = (event.schema.as_str(), event.table.as_str());
            if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(key) {
                let info = match self.catalog.info(key.0, key.1).await {
                    Ok(info) => Some(info),
                    Err(e) => {
                        tracing::warn!(schema = key.0, table = key.1, error = %e, "cannot tell whether the table has RLS; its rows are withheld");
                        None
                    }
                };
                slot.insert(info);
            }
        }
        let protected = |event: &ChangeEvent| -> bool {
            tables
                .get(&(event.schema.as_str(), event.table.as_str()))
                .is_none_or(|info| info.as_ref().is_none_or(|info| info.rls))
        };
        let needs_check = |event: &ChangeEvent| {
            matches!(event.operation, EventType::Insert | EventType::Update) && protected(event)
        };

        // Owner policies: per table, the subscriptions an owner rule decides, by the value a
        // row's column must have, so that a row meets only its owners (owner_rule.rs).
        let mut owner_indexes: HashMap<(&str, &str), Arc<OwnerIndex>> = HashMap::new();
        for (&(schema, table), info) in &tables {
            let Some(info) = info.as_ref().filter(|info| info.rls) else {
                continue;
            };
            let checked = events
                .iter()
                .flatten()
                .any(|e| e.schema == schema && e.table == table && needs_check(e));
            if !checked {
                continue;
            }
            let key = (schema.to_string(), table.to_string());
            let cached = self
                .owner_indexes
                .lock()
                .expect("owner index lock")
                .get(&key)
                .and_then(|built| {
                    built
                        .iter()
                        .find(|c| c.serves(info, subscriptions))
                        .map(|c| c.index.clone())
                });
            let index = match cached {
                Some(index) => index,
                None => {
                    // The identities are read once, and the index is built from exactly these.
                    let members: Vec<(Arc<TableSubscription>, Arc<Identity>)> = subscriptions
                        .iter()
                        .map(|s| (s.clone(), s.identity()))
                        .collect();
                    let index = self.owner_index(info, &members).await.map(Arc::new);
                    let mut cache = self.owner_indexes.lock().expect("owner index lock");
                    for built in cache.values_mut() {
                        built.retain(|c| c.built.elapsed() < OWNER_INDEX_TTL);
                    }
                    cache.retain(|_, built| !built.is_empty());
                    cache.entry(key).or_default().push(CachedOwnerIndex {
                        built: std::time::Instant::now(),
                        info: info.clone(),
                        members,
                        index: index.clone(),
                    });
                    index
                }
            };
            if let Some(index) = index {
                owner_indexes.insert((schema, table), index);
            }
        }

        // Candidate deliveries: (change index, subscription index, matching binding ids), and
        // whether an owner rule already admitted the row.
        let mut candidates: Vec<(usize, usize, Vec<u32>)> = Vec::new();
        let mut admitted: Vec<bool> = Vec::new();
        for (c, event) in events.iter().enumerate() {
            let Some(event) = event else { continue };
            let index = needs_check(event)
                .then(|| owner_indexes.get(&(event.schema.as_str(), event.table.as_str())))
                .flatten();
            let info = tables
                .get(&(event.schema.as_str(), event.table.as_str()))
                .and_then(Option::as_ref);
            let mut consider = |s: usize, owner_admits: bool| {
                let subscription = &subscriptions[s];
                if subscription.failed() {
                    return;
                }
                let ids = matching_ids(&subscription.bindings, event);
                if ids.is_empty() {
                    return;
                }
                // A role that may not SELECT from the table gets none of its changes, whether
                // its binding names the table or `*`.
                if !may_read(info, &subscription.identity(), &self.roles) {
                    self.metrics.rls_denied_rows.inc();
                    return;
                }
                candidates.push((c, s, ids));
                admitted.push(owner_admits);
            };
            match index {
                Some(index) => {
                    for s in index.owners_of(event.record.as_ref()) {
                        consider(s, true);
                    }
                    for &s in &index.undecided {
                        consider(s, false);
                    }
                }
                None => (0..subscriptions.len()).for_each(|s| consider(s, false)),
            }
        }
        if candidates.is_empty() {
            return;
        }
        let mut allowed = vec![true; candidates.len()];

        // One visibility query per (table, claims) covering every other candidate row.
        /// (schema, table, claims key) → (identity, candidate indexes, event indexes).
        type Groups<'a> =
            HashMap<(&'a str, &'a str, Arc<str>), (Arc<Identity>, Vec<usize>, Vec<usize>)>;
        let mut groups: Groups = HashMap::new();
        for (index, (c, s, _)) in candidates.iter().enumerate() {
            let event = events[*c].as_ref().expect("candidates have events");
            if admitted[index] || !needs_check(event) {
                continue;
            }
            let identity = subscriptions[*s].identity();
            let group = groups
                .entry((
                    event.schema.as_str(),
                    event.table.as_str(),
                    identity.key.clone(),
                ))
                .or_insert_with(|| (identity, Vec::new(), Vec::new()));
            group.1.push(index);
            group.2.push(*c);
        }
        let checks = groups
            .into_iter()
            .map(|((schema, table, _), (identity, members, rows))| {
                let info = tables.get(&(schema, table)).cloned().flatten();
                let events = &events;
                async move {
                    let Some(info) = info else {
                        return (
                            members,
                            Err(RlsError::Unavailable("table facts unknown".into())),
                        );
                    };
                    // Distinct rows of this table in the batch, as key text.
                    let mut keys: Vec<Vec<String>> = Vec::new();
                    let mut row_of_change: HashMap<usize, usize> = HashMap::new();
                    for &c in &rows {
                        if row_of_change.contains_key(&c) {
                            continue;
                        }
                        let event = events[c].as_ref().expect("candidates have events");
                        row_of_change.insert(c, keys.len());
                        keys.push(key_text(&info, event.record.as_ref()));
                    }
                    self.metrics.rls_queries.inc();
                    let result = rls::visible(&self.pool, &self.roles, &identity, &info, &keys)
                        .await
                        .map(|seen| {
                            rows.iter()
                                .map(|c| seen[row_of_change[c]])
                                .collect::<Vec<bool>>()
                        });
                    (members, result)
                }
            });
        for (members, result) in futures::future::join_all(checks).await {
            match result {
                Ok(seen) => {
                    for (index, visible) in members.into_iter().zip(seen) {
                        if !visible {
                            allowed[index] = false;
                            self.metrics.rls_denied_rows.inc();
                        }
                    }
                }
                Err(e) => {
                    let message = format!("row authorization failed: {e}");
                    for index in members {
                        allowed[index] = false;
                        let (_, s, _) = &candidates[index];
                        if matches!(e, RlsError::Denied(_) | RlsError::NoPrimaryKey(..)) {
                            subscriptions[*s].fail(&message);
                        }
                    }
                    if matches!(e, RlsError::Unavailable(_)) {
                        tracing::warn!(error = %e, "rows withheld: their authorization could not be checked");
                    }
                }
            }
        }

        // Frames, encoded once per (change, wire format, topic, ids).
        let mut data: HashMap<usize, Box<RawValue>> = HashMap::new();
        let mut frames: HashMap<(usize, Wire, Arc<str>, Vec<u32>), OutFrame> = HashMap::new();
        for (index, (c, s, ids)) in candidates.into_iter().enumerate() {
            if !allowed[index] {
                continue;
            }
            let subscription = &subscriptions[s];
            if subscription.failed() {
                continue;
            }
            let event = events[c].as_ref().expect("candidates have events");
            let subscriber = &subscription.subscriber;
            let key = (c, subscriber.wire, subscriber.topic.clone(), ids);
            let frame = match frames.get(&key) {
                Some(frame) => frame.clone(),
                None => {
                    let data = data.entry(c).or_insert_with(|| {
                        client_data(&changes[c].payload, event, protected(event))
                    });
                    let payload = format!(
                        "{{\"ids\":[{}],\"data\":{}}}",
                        key.3
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        data.get()
                    );
                    let payload = RawValue::from_string(payload).expect("ids and data are JSON");
                    let frame = wire::change(subscriber.wire, &subscriber.topic, &payload);
                    frames.insert(key, frame.clone());
                    frame
                }
            };
            self.metrics.change_deliveries.inc();
            match mode {
                Mode::Live => subscription.offer(changes[c].sequence, frame),
                Mode::Replay => {
                    subscription.subscriber.deliver(frame);
                }
            }
        }
    }

    /// Feeds running on this gateway.
    pub fn feed_count(&self) -> usize {
        self.feeds.lock().expect("feeds lock").len()
    }
}

/// Takes the next batch: waits for one change, then takes whatever else is ready (up to
/// [`MAX_BATCH`]). `None` when the stream ended; an error ends the batch and is returned with it.
async fn next_batch(
    changes: &mut nself_realtime_shared::bus::ChangeStream,
) -> Option<(Vec<LoggedChange>, Option<BusError>)> {
    let first = changes.next().await?;
    let mut batch = Vec::new();
    match first {
        Ok(change) => batch.push(change),
        Err(e) => return Some((batch, Some(e))),
    }
    while batch.len() < MAX_BATCH {
        match changes.next().now_or_never() {
            Some(Some(Ok(change))) => {
                let caught_up = change.pending == 0;
                batch.push(change);
                if caught_up {
                    break;
                }
            }
            Some(Some(Err(e))) => return Some((batch, Some(e))),
            Some(None) | None => break,
        }
    }
    Some((batch, None))
}

/// The ids of the bindings that want this change.
fn matching_ids(bindings: &[Binding], event: &ChangeEvent) -> Vec<u32> {
    bindings
        .iter()
        .filter(|b| b.events.includes(event.operation))
        .filter(|b| b.schema.as_deref().is_none_or(|s| s == event.schema))
        .filter(|b| b.table.as_deref().is_none_or(|t| t == event.table))
        .filter(|b| match &b.filter {
            None => true,
            Some(filter) => {
                let row = match event.operation {
                    EventType::Delete => event.old_record.as_ref(),
                    _ => event.record.as_ref(),
                };
                row.is_some_and(|row| filter.matches(&event.columns, row))
            }
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

fn committed_at_or_after(event: &ChangeEvent, since: time::OffsetDateTime) -> bool {
    time::OffsetDateTime::parse(
        &event.commit_timestamp,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t >= since)
    .unwrap_or(true)
}

/// A row's key columns as text, in key order (JSON strings as they are, other values as JSON).
fn key_text(info: &TableInfo, row: Option<&Row>) -> Vec<String> {
    info.key
        .iter()
        .map(|(name, _)| match row.and_then(|r| r.get(name)) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
        .collect()
}

/// The `data` realtime-js reads: the change event as the CDC built it (extra fields are
/// ignored by the client), except that a DELETE on a protected table carries only the key.
fn client_data(payload: &[u8], event: &ChangeEvent, protected: bool) -> Box<RawValue> {
    if event.operation == EventType::Delete && protected {
        let mut reduced = event.clone();
        reduced.old_record = event.old_record.as_ref().map(|old| {
            old.iter()
                .filter(|(name, _)| event.primary_key.contains(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        });
        return serde_json::value::to_raw_value(&reduced).expect("events serialize");
    }
    std::str::from_utf8(payload)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_string()).ok())
        .unwrap_or_else(|| serde_json::value::to_raw_value(event).expect("events serialize"))
}
