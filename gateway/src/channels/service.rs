//! The join service: one way to join, re-authorize and leave a channel, whatever protocol asks.
//!
//! A protocol adapter turns its frame into a [`JoinRequest`]; [`ChannelService::join`]
//! authorizes it (the channel rules under the joiner's claims, then the tables its
//! postgres_changes bindings name), creates the channel's [`Subscriber`] and registers it with
//! every relay the request asks for, and hands back a [`JoinedChannel`]. The subscriber is
//! gated: nothing reaches the client until the adapter has queued its reply and opened it, so
//! "joined" means live. A failure half way unregisters what was registered and returns a
//! [`JoinError`], which each adapter words in its own protocol.
//!
//! The service also logs its decisions, once for every protocol ([`crate::decision_log`]): a
//! refused join, a channel whose new token lost access, a send or track it refused or could not
//! decide; and counts the rooms it holds ([`RoomCensus`]).

use super::census::RoomCensus;
use super::error::JoinError;
use super::tables;
use crate::auth::channel_access::{
    self, room_name, unauthorized_read, unauthorized_track, ChannelAccess, Write,
};
use crate::auth::identity::Identity;
use crate::auth::session::AllowedRoles;
use crate::broadcast::{Broadcasts, Membership, Replay};
use crate::changes::binding::Binding;
use crate::changes::feed::{ChangeFeeds, FeedMembership};
use crate::changes::subscription::TableSubscription;
use crate::database_broadcasts::DatabaseBroadcasts;
use crate::db::Pool;
use crate::decision_log::{self, Severity};
use crate::messages::Messages;
use crate::outbox::{ConnId, Outbox};
use crate::presence::{PresenceMembership, Presences};
use crate::subscriber::{Subscriber, Wire};
use nself_realtime_shared::bus::StartAt;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What a client asks for when it joins a channel.
pub struct JoinRequest {
    /// The topic as the client wrote it (`realtime:room1`, or a room name): frames carry it.
    pub topic: Arc<str>,
    /// The join's ref: frames for this join instance carry it (Phoenix).
    pub join_ref: Option<String>,
    /// The channel name that authorization and the relays use (`room1`).
    pub channel: String,
    pub wire: Wire,
    pub identity: Arc<Identity>,
    /// The client asked for a private channel (`config.private`).
    pub private: bool,
    /// Receive its own broadcasts (`config.broadcast.self`).
    pub receive_own: bool,
    /// Receive the channel's NOTIFY payloads (`db:notification`).
    pub notifications: bool,
    /// Receive who is typing.
    pub typing: bool,
    /// Receive presence state and changes.
    pub presence: bool,
    /// Track this connection in the channel's presence at once, under this key and meta.
    pub track: Option<(String, Map<String, Value>)>,
    pub postgres_changes: Vec<Binding>,
    /// Replay table changes from this point (`postgres_changes_options.since`).
    pub resume: Option<StartAt>,
    /// Replay stored broadcasts first (`config.broadcast.replay`, private channels only).
    pub replay: Option<ReplayRequest>,
}

/// `config.broadcast.replay`: the stored broadcasts of the topic since `since_ms` (milliseconds
/// since the epoch), at most `limit` (1 to 25) of the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequest {
    pub since_ms: i64,
    pub limit: i64,
}

/// A joined channel: its subscriber, what it was authorized as, and its place in each relay.
pub struct JoinedChannel {
    pub subscriber: Arc<Subscriber>,
    pub channel: String,
    /// The client asked for a private channel.
    pub private: bool,
    /// The channel's room in the broadcast, typing and presence relays: the topic's private
    /// room when the channel is private ([`channel_access::room_name`]).
    pub room_name: String,
    pub identity: Arc<Identity>,
    pub access: ChannelAccess,
    /// Tracked in the channel's presence (removed when the channel closes).
    pub tracked: bool,
    /// Warnings for the client from the table checks (unpublished tables).
    pub warnings: Vec<String>,
    /// A refused write was logged (later ones are not: a client retrying is not news).
    write_refusal_logged: bool,
    resume: Option<StartAt>,
    room: Option<Membership>,
    notify: Option<Membership>,
    typing: Option<Membership>,
    presence: Option<PresenceMembership>,
    feeds: Vec<(FeedMembership, Arc<TableSubscription>)>,
}

impl JoinedChannel {
    /// The postgres_changes bindings the channel follows.
    pub fn bindings(&self) -> Vec<Binding> {
        self.feeds
            .iter()
            .flat_map(|(_, subscription)| subscription.bindings.iter().cloned())
            .collect()
    }

    /// Whether the channel receives presence.
    pub fn has_presence(&self) -> bool {
        self.presence.is_some()
    }

    /// Whether the channel follows typing.
    pub fn has_typing(&self) -> bool {
        self.typing.is_some()
    }

    /// Whether the channel persists its chat messages.
    pub fn is_persisted(&self) -> bool {
        self.access.persisted
    }
}

/// Joins, re-authorizes and leaves channels: the authorization context and the relays.
pub struct ChannelService {
    pub pool: Pool,
    pub roles: Arc<AllowedRoles>,
    /// `REALTIME_REQUIRE_CHANNELS`: a topic without a `realtime.channels` row is refused.
    pub require_channels: bool,
    /// `REALTIME_MAX_CHANNELS_PER_CLIENT`.
    pub max_channels: usize,
    pub broadcasts: Arc<Broadcasts>,
    pub notifications: Arc<Broadcasts>,
    pub typing: Arc<Broadcasts>,
    pub presences: Arc<Presences>,
    pub messages: Arc<Messages>,
    pub database_broadcasts: Arc<DatabaseBroadcasts>,
    pub feeds: Arc<ChangeFeeds>,
    /// The rooms joined here, by type.
    pub census: RoomCensus,
}

impl ChannelService {
    /// Joins `request` for the connection of `outbox`, which has `joined` channels already.
    /// The returned channel's subscriber is still gated: open it once the reply is queued. A
    /// refusal is logged here, for every protocol.
    pub async fn join(
        &self,
        outbox: &Arc<Outbox>,
        joined: usize,
        request: JoinRequest,
    ) -> Result<JoinedChannel, JoinError> {
        let channel = request.channel.clone();
        let result = self.authorize_and_register(outbox, joined, request).await;
        if let Err(e) = &result {
            decision_log::join_refused(&channel, e.severity(), e);
        }
        result
    }

    /// [`Self::join`]'s stages: the channel rules, the writes a track needs, the replay's
    /// conditions, the tables; then the subscriber and its relays.
    async fn authorize_and_register(
        &self,
        outbox: &Arc<Outbox>,
        joined: usize,
        request: JoinRequest,
    ) -> Result<JoinedChannel, JoinError> {
        if joined >= self.max_channels {
            return Err(JoinError::TooMany(self.max_channels));
        }
        let mut access = self
            .authorize(&request.identity, &request.channel, request.private)
            .await?;
        if request.track.is_some() {
            self.ask_writes(
                &request.identity,
                &request.channel,
                &mut access,
                Write::Presence,
            )
            .await?;
        }
        if request.replay.is_some() {
            if !access.private {
                return Err(JoinError::Replay(
                    "Replay is not allowed for public channels".into(),
                ));
            }
            if !access.receive_broadcast {
                return Err(JoinError::Denied(Some(unauthorized_read(&request.channel))));
            }
        }
        if request.track.is_some() && !access.can_track {
            return Err(JoinError::Denied(Some(unauthorized_track(
                &request.channel,
            ))));
        }
        let warnings = tables::check(
            &self.pool,
            &self.roles,
            &request.identity,
            &request.postgres_changes,
        )
        .await?;
        let subscriber = Arc::new(Subscriber::new(
            outbox.clone(),
            request.wire,
            request.topic.clone(),
            request.join_ref.clone(),
        ));
        let mut channel = JoinedChannel {
            subscriber,
            room_name: room_name(&request.channel, access.private),
            channel: request.channel.clone(),
            private: request.private,
            identity: request.identity.clone(),
            access,
            tracked: false,
            warnings,
            write_refusal_logged: false,
            resume: request.resume,
            room: None,
            notify: None,
            typing: None,
            presence: None,
            feeds: Vec::new(),
        };
        // Counted in now: a failed registration leaves through `leave`, which counts it out.
        self.census
            .joined(&channel.room_name, channel.access.room_type());
        match self.register(&mut channel, outbox.id, request).await {
            Ok(()) => Ok(channel),
            Err(e) => {
                self.leave(channel, outbox.id).await;
                Err(e)
            }
        }
    }

    /// Registers the channel's subscriber with every relay the request asks for (and its
    /// rights allow), then delivers the broadcast replay it asked for.
    async fn register(
        &self,
        channel: &mut JoinedChannel,
        conn: ConnId,
        request: JoinRequest,
    ) -> Result<(), JoinError> {
        let (room, subscriber) = (channel.room_name.as_str(), channel.subscriber.clone());
        let replay = request.replay.map(|wanted| (wanted, Replay::new()));
        if channel.access.receive_broadcast {
            self.database_broadcasts.follow().await?;
            channel.room = Some(
                self.broadcasts
                    .join(
                        room,
                        subscriber.clone(),
                        request.receive_own,
                        replay.as_ref().map(|(_, replay)| replay.clone()),
                    )
                    .await?,
            );
        }
        if request.notifications {
            channel.notify = Some(
                self.notifications
                    .join(&request.channel, subscriber.clone(), true, None)
                    .await?,
            );
        }
        if request.typing {
            channel.typing = Some(
                self.typing
                    .join(room, subscriber.clone(), true, None)
                    .await?,
            );
        }
        if request.presence && channel.access.receive_presence {
            channel.presence = Some(self.presences.join(room, subscriber.clone()).await?);
        }
        if let Some((key, meta)) = request.track {
            self.presences.track(room, conn, &key, meta).await?;
            channel.tracked = true;
        }
        for (subject, bindings) in by_subject(&request.postgres_changes)? {
            let subscription = TableSubscription::new(
                subscriber.clone(),
                bindings,
                request.identity.clone(),
                request.resume.is_some(),
            );
            let membership = self
                .feeds
                .subscribe(&subject, subscription.clone())
                .await
                .map_err(JoinError::Feed)?;
            channel.feeds.push((membership, subscription));
        }
        if let Some((wanted, replay)) = replay {
            let (replayed, cut) = self
                .database_broadcasts
                .replay(&request.channel, wanted.since_ms, wanted.limit)
                .await
                .map_err(|e| {
                    tracing::warn!(channel = %request.channel, error = %e, "broadcast replay failed");
                    JoinError::ReplayFailed
                })?;
            replay.finish(&subscriber, &replayed, cut);
        }
        Ok(())
    }

    /// The channel rules' decision for `identity` (RLS on `realtime.channels`): an error when
    /// it may not join.
    pub async fn authorize(
        &self,
        identity: &Identity,
        channel: &str,
        private: bool,
    ) -> Result<ChannelAccess, JoinError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        let access = channel_access::authorize(
            &mut client,
            &identity.claims,
            &self.roles,
            channel,
            private,
            self.require_channels,
        )
        .await
        .map_err(JoinError::Access)?;
        if !access.allowed {
            return Err(JoinError::Denied(access.reason.clone()));
        }
        Ok(access)
    }

    /// Whether the channel's claims may `write`. On a private channel the messages policies'
    /// INSERT rules are asked the first time a write needs them, then remembered (until an
    /// `access_token` re-authorizes the channel), as Supabase does.
    ///
    /// A failure to decide is logged each time; a refusal, the first time for the channel.
    pub async fn may_write(
        &self,
        channel: &mut JoinedChannel,
        write: Write,
    ) -> Result<bool, JoinError> {
        let asked = self
            .ask_writes(
                &channel.identity,
                &channel.channel,
                &mut channel.access,
                write,
            )
            .await;
        if let Err(e) = &asked {
            decision_log::write_refused(&channel.channel, write.label(), e.severity(), e);
        }
        asked?;
        let allowed = channel.access.allows(write);
        if !allowed && !channel.write_refusal_logged {
            channel.write_refusal_logged = true;
            decision_log::write_refused(
                &channel.channel,
                write.label(),
                Severity::Refusal,
                &"the channel's rights do not allow it",
            );
        }
        Ok(allowed)
    }

    /// Asks the messages policies what `identity` may write on `channel` when `write` is not
    /// allowed yet and they were not asked.
    async fn ask_writes(
        &self,
        identity: &Identity,
        channel: &str,
        access: &mut ChannelAccess,
        write: Write,
    ) -> Result<(), JoinError> {
        if access.writes_asked || access.allows(write) {
            return Ok(());
        }
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        channel_access::ask_writes(&mut client, &identity.claims, &self.roles, channel, access)
            .await
            .map_err(JoinError::Access)
    }

    /// Checks a joined channel under new claims (`access_token`, a re-authentication): the
    /// channel and every table its bindings name. On success the channel acts as `identity`
    /// from now on; on failure it is unchanged and the caller closes it (logged here).
    pub async fn reauthorize(
        &self,
        channel: &mut JoinedChannel,
        identity: Arc<Identity>,
    ) -> Result<(), JoinError> {
        let checked = self.check_again(channel, identity).await;
        if let Err(e) = &checked {
            decision_log::channel_closed(
                &channel.channel,
                e.severity(),
                &format_args!("the new token lost access: {e}"),
            );
        }
        checked
    }

    /// [`Self::reauthorize`]'s checks, and the switch to the new claims once they pass.
    async fn check_again(
        &self,
        channel: &mut JoinedChannel,
        identity: Arc<Identity>,
    ) -> Result<(), JoinError> {
        let access = self
            .authorize(&identity, &channel.channel, channel.private)
            .await?;
        // Supabase closes a channel whose new token lost a read right it joined with.
        let revoked = (channel.room.is_some() && !access.receive_broadcast)
            || (channel.presence.is_some() && !access.receive_presence);
        if revoked {
            return Err(JoinError::Denied(Some(unauthorized_read(&channel.channel))));
        }
        tables::check(&self.pool, &self.roles, &identity, &channel.bindings()).await?;
        for (_, subscription) in &channel.feeds {
            self.feeds.set_identity(subscription, identity.clone());
        }
        channel.identity = identity;
        channel.access = access;
        Ok(())
    }

    /// Starts the replay a join asked for (`postgres_changes_options.since`); call after the
    /// join reply was queued.
    pub fn start_replay(&self, channel: &JoinedChannel) {
        let Some(start) = channel.resume else { return };
        for (membership, subscription) in &channel.feeds {
            self.feeds.replay(
                membership.subject().to_string(),
                subscription.clone(),
                start,
            );
        }
    }

    /// Unregisters a channel everywhere; a tracked member of its presence leaves.
    pub async fn leave(&self, channel: JoinedChannel, conn: ConnId) {
        channel.subscriber.close();
        self.census.left(&channel.room_name);
        if let Some(room) = &channel.room {
            self.broadcasts.leave(room);
        }
        if let Some(notify) = &channel.notify {
            self.notifications.leave(notify);
        }
        if let Some(typing) = &channel.typing {
            self.typing.leave(typing);
        }
        if let Some(presence) = &channel.presence {
            self.presences.leave(presence);
        }
        if channel.tracked {
            if let Err(e) = self.presences.untrack(&channel.room_name, conn).await {
                tracing::warn!(channel = %channel.channel, error = %e, "could not remove presence");
            }
        }
        for (membership, _) in &channel.feeds {
            self.feeds.unsubscribe(membership);
        }
    }
}

/// The bindings grouped by the change-log subject each reads: one feed subscription per
/// distinct subject, in the bindings' order.
fn by_subject(bindings: &[Binding]) -> Result<Vec<(String, Vec<Binding>)>, JoinError> {
    let mut groups: Vec<(String, Vec<Binding>)> = Vec::new();
    for binding in bindings {
        let subject = binding
            .subject_filter()
            .map_err(|e| JoinError::Invalid(e.to_string()))?;
        match groups.iter_mut().find(|(s, _)| *s == subject) {
            Some((_, list)) => list.push(binding.clone()),
            None => groups.push((subject, vec![binding.clone()])),
        }
    }
    Ok(groups)
}
