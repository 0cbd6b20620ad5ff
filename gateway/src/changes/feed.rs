//! Table feeds: the change log read once per table (or schema, or everything) that has
//! subscribers on this gateway, and each change filtered, authorized and fanned out.
//!
//! ```text
//! ChangeLog ─follow(realtime.db.<schema>.<table>.*)─▶ Feed task ─batch─▶ stages (batch.rs)
//!     decode ─▶ facts ─▶ candidates ─▶ authorize (one RLS query per table and claims) ─▶ encode
//!     ─▶ each subscription's flow (subscription.rs) ─▶ subscribers
//! ```
//!
//! A feed starts when the first channel needs its subject and stops when the last leaves. A
//! channel is added to a feed *before* its join is answered, and the feed's reader is in place
//! before that, so a row committed after the reply is always delivered.
//!
//! Resume (`postgres_changes_options.since`): [`ChangeFeeds::replay`] reads the log from the
//! requested point for one subscription, through the same stages, while its live changes wait
//! (see [`TableSubscription`]).

use super::batch::{self, StageContext};
use super::owner_index::OwnerIndexes;
use super::rls::TableCatalog;
use super::subscription::TableSubscription;
use crate::auth::identity::Identity;
use crate::auth::session::AllowedRoles;
use crate::db::Pool;
use crate::metrics::Metrics;
use futures::{FutureExt, StreamExt};
use nself_realtime_shared::bus::{BusError, ChangeLog, LoggedChange, StartAt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// Most changes processed as one batch (one RLS query per table and claims covers them all).
const MAX_BATCH: usize = 512;
/// Most changes one join may replay; past it the channel gets an error and stays live-only.
const MAX_REPLAY: u64 = 100_000;

struct Feed {
    filter: String,
    subscriptions: RwLock<Members>,
    joining: AtomicUsize,
    started: OnceCell<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A feed's subscriptions by key, and the snapshot its task reads: rebuilt by the next batch
/// after they change, so a batch takes it with one reference count rather than collecting every
/// subscription, and a join costs the same however many others there are.
#[derive(Default)]
struct Members {
    by_key: HashMap<u64, Arc<TableSubscription>>,
    /// `None` once the subscriptions changed.
    snapshot: Option<Snapshot>,
}

/// The subscriptions of a feed at one moment, and the columns their filters name.
#[derive(Clone)]
pub struct Snapshot {
    pub subscriptions: Arc<[Arc<TableSubscription>]>,
    pub filtered: Arc<[String]>,
}

impl Snapshot {
    fn of(subscriptions: Vec<Arc<TableSubscription>>) -> Snapshot {
        let filtered = batch::filtered_columns(&subscriptions)
            .into_iter()
            .map(str::to_string)
            .collect();
        Snapshot {
            subscriptions: subscriptions.into(),
            filtered,
        }
    }
}

impl Members {
    fn insert(&mut self, key: u64, subscription: Arc<TableSubscription>) {
        self.by_key.insert(key, subscription);
        self.snapshot = None;
    }

    fn remove(&mut self, key: u64) {
        if self.by_key.remove(&key).is_some() {
            self.snapshot = None;
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        self.snapshot
            .get_or_insert_with(|| Snapshot::of(self.by_key.values().cloned().collect()))
            .clone()
    }
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
    owners: OwnerIndexes,
    /// Bumped whenever a subscription changes identity, so a cached owner index built under
    /// the old claims is not used.
    identity_epoch: AtomicU64,
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
            owners: OwnerIndexes::default(),
            identity_epoch: AtomicU64::new(0),
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
                        subscriptions: RwLock::new(Members::default()),
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
                let snapshot = feed
                    .subscriptions
                    .write()
                    .expect("subscriptions lock")
                    .snapshot();
                feeds.process(&changes, &snapshot, Mode::Live, None).await;
                if let Some(e) = error {
                    // The reader broke (the log is gone or unreachable for good): tell the
                    // channels, which may rejoin.
                    tracing::error!(filter = %filter, error = %e, "change feed stopped");
                    for subscription in snapshot.subscriptions.iter() {
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

    /// Switches a subscription to new claims (after `access_token`): its rows are checked
    /// under them from the next batch on.
    pub fn set_identity(&self, subscription: &TableSubscription, identity: Arc<Identity>) {
        subscription.set_identity(identity);
        self.identity_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes a subscription; the last one out stops the feed.
    pub fn unsubscribe(&self, membership: &FeedMembership) {
        let mut feeds = self.feeds.lock().expect("feeds lock");
        let Some(feed) = feeds.get(&membership.filter) else {
            return;
        };
        let mut subscriptions = feed.subscriptions.write().expect("subscriptions lock");
        subscriptions.remove(membership.key);
        if subscriptions.by_key.is_empty() && feed.joining.load(Ordering::Acquire) == 0 {
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
                Ok(mut following) => {
                    let alone = Snapshot::of(vec![subscription.clone()]);
                    loop {
                        let Some((changes, error)) = next_batch(&mut following.changes).await
                        else {
                            break;
                        };
                        let caught_up = changes.last().is_some_and(|c| c.pending == 0);
                        if let Some(change) = changes.last() {
                            last = change.sequence;
                        }
                        feeds.process(&changes, &alone, Mode::Replay, since).await;
                        if let Some(e) = error {
                            subscription.fail(&format!("the replay stopped: {e}"));
                            break;
                        }
                        if caught_up || changes.iter().any(|c| c.pending == 0) {
                            break;
                        }
                    }
                }
            }
            subscription.finish_replay(last);
        });
    }

    /// Runs one batch of changes through the stages ([`batch`]) and delivers it to
    /// `subscriptions`: live changes through each subscription's flow, replayed ones directly.
    async fn process(
        &self,
        changes: &[LoggedChange],
        snapshot: &Snapshot,
        mode: Mode,
        since: Option<time::OffsetDateTime>,
    ) {
        self.metrics.changes_received.inc_by(changes.len() as u64);
        let subscriptions = &snapshot.subscriptions;
        let context = StageContext {
            catalog: &self.catalog,
            owners: &self.owners,
            pool: &self.pool,
            roles: &self.roles,
            metrics: &self.metrics,
            identity_epoch: self.identity_epoch.load(Ordering::Acquire),
        };
        let headers = batch::decode(changes, since);
        let facts = batch::facts(&context, &headers, subscriptions).await;
        let filtered = snapshot.filtered.iter().map(String::as_str).collect();
        let routed = facts.route(headers, &filtered);
        let (candidates, refused) = batch::candidates(&routed, &facts, subscriptions, &self.roles);
        self.metrics.rls_denied_rows.inc_by(refused);
        if candidates.is_empty() {
            return;
        }
        let allowed = batch::authorize(&context, &candidates, &routed, &facts, subscriptions).await;
        let deliveries = batch::encode(
            changes,
            &routed,
            &facts,
            candidates,
            &allowed,
            subscriptions,
        );
        self.metrics
            .change_deliveries
            .inc_by(deliveries.len() as u64);
        // A change's frames for one subscription come together (more than one where its
        // bindings select different columns) and are offered together.
        let mut deliveries = deliveries.into_iter().peekable();
        while let Some(first) = deliveries.next() {
            let mut frames = vec![first.frame];
            while let Some(next) = deliveries
                .next_if(|d| (d.subscription, d.sequence) == (first.subscription, first.sequence))
            {
                frames.push(next.frame);
            }
            let subscription = &subscriptions[first.subscription];
            match mode {
                Mode::Live => subscription.offer(first.sequence, frames),
                Mode::Replay => {
                    for frame in frames {
                        subscription.subscriber.deliver(frame);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::fixtures::{self, identity};
    use crate::subscriber::Wire;
    use serde_json::json;

    fn subscription(filter: Option<&str>) -> Arc<TableSubscription> {
        let mut binding = json!({"event": "*", "schema": "public", "table": "todos"});
        if let Some(filter) = filter {
            binding["filter"] = json!(filter);
        }
        fixtures::subscription(
            Wire::Json,
            "t",
            json!([binding]),
            identity("authenticated", "u1"),
        )
    }

    #[test]
    fn a_snapshot_is_reused_until_the_members_change() {
        let mut members = Members::default();
        members.insert(1, subscription(Some("done=eq.true")));
        let first = members.snapshot();
        assert_eq!(first.subscriptions.len(), 1);
        assert_eq!(&*first.filtered, ["done".to_string()]);
        assert!(Arc::ptr_eq(
            &first.subscriptions,
            &members.snapshot().subscriptions
        ));
        members.insert(2, subscription(None));
        let second = members.snapshot();
        assert_eq!(second.subscriptions.len(), 2);
        assert!(!Arc::ptr_eq(&first.subscriptions, &second.subscriptions));
        members.remove(1);
        let third = members.snapshot();
        assert_eq!(third.subscriptions.len(), 1);
        assert!(third.filtered.is_empty());
        // Removing what is not there keeps the snapshot.
        members.remove(1);
        assert!(Arc::ptr_eq(
            &third.subscriptions,
            &members.snapshot().subscriptions
        ));
    }
}
