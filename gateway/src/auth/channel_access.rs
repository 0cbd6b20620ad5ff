//! Channel authorization: may these claims join (and send to) this channel?
//!
//! A channel is a row of `realtime.channels` (by `slug`), and Row Level Security on that table
//! decides who sees it (migration 0002: public and presence channels for every authenticated
//! user, private and direct ones for their members, everything for `service_role`). So:
//!
//! * a row exists and the claims can see it: allowed; they may send if the channel is public
//!   or presence, if they are `service_role`, or if their membership has `can_send`;
//! * a row exists and the claims cannot see it: refused;
//! * no row: an open ad-hoc topic, unless the client asked for `private: true` or
//!   `REALTIME_REQUIRE_CHANNELS` is set.
//!
//! Whether a row exists is asked as the gateway's own role (the table owner, not subject to
//! RLS); what the claims see is asked in their session.
//!
//! A **private** join (`config.private`) may also be granted the Supabase way, by the app's
//! policies on `realtime.messages` ([`authorize_private`]): under the claims, with
//! `realtime.topic` set to the topic, a row of the topic with `extension` `broadcast` or
//! `presence` that a SELECT policy shows lets the user receive that extension, and one an INSERT
//! policy accepts lets them send broadcasts or track presence. Either source grants.
//!
//! Public and private joins of one topic land in separate rooms ([`room_name`]), as in
//! Supabase, so a broadcast to a private topic never reaches a public subscriber.

use super::session::{self, AllowedRoles, QueryAsError, SessionError};
use crate::db::Pooled;
use nself_realtime_shared::jwt::Claims;
use nself_realtime_shared::postgres_error::describe;
use tokio_postgres::types::ToSql;

/// The longest channel name (a `realtime.channels` slug, a topic, a room) accepted.
pub const MAX_CHANNEL_NAME: usize = 255;

/// Why a channel name is refused before anything looks it up. Control characters, NUL among
/// them (which Postgres text cannot hold), never reach a query, so no client sees a database
/// error for a name.
pub const CHANNEL_NAME_RULE: &str =
    "the channel name must be 1 to 255 bytes without control characters";

/// Whether `name` may name a channel on any protocol: 1 to [`MAX_CHANNEL_NAME`] bytes, no
/// control characters.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_NAME && !name.chars().any(char::is_control)
}

/// The prefix of a private room's name. No channel name can start with it (names hold no
/// control characters, see [`valid_channel_name`]) and no database text can (NUL), so no public
/// topic's room is a private one.
const PRIVATE_ROOM: &str = "\u{0}private:";

/// The room (in the broadcast, typing and presence relays) of `topic` joined publicly or
/// privately. A channel is private when the client asked (`config.private`) or when its
/// `realtime.channels` row is of type private or direct.
pub fn room_name(topic: &str, private: bool) -> String {
    if private {
        format!("{PRIVATE_ROOM}{topic}")
    } else {
        topic.to_string()
    }
}

/// The topic of a room, and whether the room is the private one.
pub fn room_topic(room: &str) -> (&str, bool) {
    match room.strip_prefix(PRIVATE_ROOM) {
        Some(topic) => (topic, true),
        None => (room, false),
    }
}

/// A room's name for operators: `private:<topic>` for a private room.
pub fn room_label(room: &str) -> String {
    match room_topic(room) {
        (topic, true) => format!("private:{topic}"),
        (topic, false) => topic.to_string(),
    }
}

/// Supabase's refusal of a private join the policies do not grant.
pub fn unauthorized_read(topic: &str) -> String {
    format!("Unauthorized: You do not have permissions to read from this Channel topic: {topic}")
}

/// The refusal of a presence track the channel's rights do not allow.
pub fn unauthorized_track(channel: &str) -> String {
    format!("Unauthorized: you may not track presence in channel {channel}")
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAccess {
    pub allowed: bool,
    /// Why not, for the client.
    pub reason: Option<String>,
    pub can_send: bool,
    /// May track presence (always, except on a private topic granted by the messages
    /// policies without a presence INSERT policy).
    pub can_track: bool,
    /// Receives broadcasts, and presence (a topic granted by the messages policies for one
    /// extension only receives that one).
    pub receive_broadcast: bool,
    pub receive_presence: bool,
    /// The channel is private: its room is the topic's private one ([`room_name`]).
    pub private: bool,
    /// The channel's type when it has a row (`public`, `private`, `presence`, `direct`).
    pub channel_type: Option<String>,
    /// The channel persists its messages (`persist_messages`).
    pub persisted: bool,
    /// The channel's `id` when it has a row.
    pub channel_id: Option<String>,
}

/// The question could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A policy raised, or the claims' role may not read `realtime.channels`.
    #[error("channel authorization failed: {0}")]
    Policy(String),
    #[error("channel authorization is unavailable: {0}")]
    Unavailable(String),
}

fn classify(e: tokio_postgres::Error) -> AccessError {
    if e.as_db_error().is_some() {
        AccessError::Policy(describe(&e))
    } else {
        AccessError::Unavailable(describe(&e))
    }
}

/// The channel row as the gateway's own role reads it (existence, not visibility).
const CHANNEL_ROW: &str =
    "SELECT type, persist_messages, id::text FROM realtime.channels WHERE slug = $1";

/// The channel row as the claims see it, and their membership's `can_send`.
const VISIBLE_CHANNEL: &str = "SELECT c.type,
        (SELECT m.can_send FROM realtime.channel_members m
          WHERE m.channel_id = c.id AND m.user_id = realtime.user_id())
   FROM realtime.channels c WHERE c.slug = $1";

/// Probe rows of the topic, one per extension, inserted as the gateway (not subject to RLS) so
/// that the claims' SELECT policies can be asked whether they show them.
const READ_PROBES: &str = "INSERT INTO realtime.messages (id, topic, extension)
     VALUES ($1::text::uuid, $3, 'broadcast'), ($2::text::uuid, $3, 'presence')";

/// Which probe rows the claims see.
const VISIBLE_PROBES: &str =
    "SELECT extension FROM realtime.messages WHERE id = ANY($1::text[]::uuid[])";

/// A row the claims' INSERT policies must accept to send (`broadcast`) or track (`presence`).
const WRITE_PROBE: &str = "INSERT INTO realtime.messages (topic, extension) VALUES ($1, $2)";

const SET_TOPIC: &str = "SELECT set_config('realtime.topic', $1, true)";

/// Decides whether `claims` may join the channel `slug` (see the module docs). A private join
/// is decided by [`authorize_private`].
pub async fn authorize(
    client: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    slug: &str,
    want_private: bool,
    require_channels: bool,
) -> Result<ChannelAccess, AccessError> {
    if want_private {
        return authorize_private(client, claims, roles, slug).await;
    }
    let role = session::role_of(claims, roles)?.to_string();
    // Existence first, as the gateway's role, before the session takes on the claims.
    let exists = client.prepared(CHANNEL_ROW).await.map_err(classify)?;
    let existing = client
        .query_opt(&exists, &[&slug])
        .await
        .map_err(classify)?;
    let Some(existing) = existing else {
        if require_channels {
            return Ok(ChannelAccess::refused(format!(
                "channel {slug} does not exist (REALTIME_REQUIRE_CHANNELS needs a realtime.channels row); create it with `nself-realtime channel create` or join a public topic"
            )));
        }
        return Ok(ChannelAccess::open());
    };
    let row = ChannelRow::read(&existing);
    let visible = session::query_as(client, claims, roles, VISIBLE_CHANNEL, &[&slug])
        .await
        .map_err(|e| match e {
            QueryAsError::Session(e) => AccessError::Session(e),
            QueryAsError::Query(e) => classify(e),
        })?
        .into_iter()
        .next();
    Ok(row.decide(visible.as_ref(), &role, slug, None))
}

/// What the app's policies on `realtime.messages` allow on one topic (Supabase's
/// authorization of private channels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicPolicies {
    pub broadcast_read: bool,
    pub presence_read: bool,
    pub broadcast_write: bool,
    pub presence_write: bool,
}

/// Decides a private join of `topic`: the channel rules (a visible `realtime.channels` row) or
/// the messages policies grant it, and each right is the union of both. Everything is asked in
/// one rolled-back transaction, in one round trip: the channel row and two probe rows as the
/// gateway, then under the claims (with `realtime.topic` set) the visible channel, the visible
/// probes, and one INSERT per extension, each in a savepoint.
pub async fn authorize_private(
    client: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    topic: &str,
) -> Result<ChannelAccess, AccessError> {
    let settings = session::ClaimSettings::new(claims, roles)?;
    let mut statements = Vec::with_capacity(7);
    for sql in [
        CHANNEL_ROW,
        READ_PROBES,
        session::TAKE_ON_CLAIMS,
        SET_TOPIC,
        VISIBLE_CHANNEL,
        VISIBLE_PROBES,
        WRITE_PROBE,
    ] {
        statements.push(client.prepared(sql).await.map_err(classify)?);
    }
    let [channel_row, read_probes, take_on, set_topic, visible_channel, visible_probes, write_probe] =
        <[_; 7]>::try_from(statements).expect("seven statements");
    let probe_ids = [random_uuid(), random_uuid()];
    let probe_list: Vec<&str> = probe_ids.iter().map(String::as_str).collect();
    let take_on_params = settings.params();
    let by_topic: [&(dyn ToSql + Sync); 1] = [&topic];
    let probes: [&(dyn ToSql + Sync); 3] = [&probe_ids[0], &probe_ids[1], &topic];
    let probe_list: [&(dyn ToSql + Sync); 1] = [&probe_list];
    let write_broadcast: [&(dyn ToSql + Sync); 2] = [&topic, &"broadcast"];
    let write_presence: [&(dyn ToSql + Sync); 2] = [&topic, &"presence"];
    client.set_in_user_session(true);
    let db: &tokio_postgres::Client = client;
    // Polled together, these go out back to back and are answered in order (see
    // `session::query_as`); a refused INSERT aborts only up to its savepoint.
    let (
        begun,
        existing,
        probed,
        taken_on,
        topic_set,
        visible,
        seen,
        _,
        broadcast,
        _,
        _,
        presence,
        _,
        ended,
    ) = tokio::join!(
        db.batch_execute("BEGIN"),
        db.query_opt(&channel_row, &by_topic),
        db.execute(&read_probes, &probes),
        db.execute(&take_on, &take_on_params),
        db.execute(&set_topic, &by_topic),
        db.query_opt(&visible_channel, &by_topic),
        db.query(&visible_probes, &probe_list),
        db.batch_execute("SAVEPOINT broadcast_write"),
        db.execute(&write_probe, &write_broadcast),
        db.batch_execute("ROLLBACK TO SAVEPOINT broadcast_write"),
        db.batch_execute("SAVEPOINT presence_write"),
        db.execute(&write_probe, &write_presence),
        db.batch_execute("ROLLBACK TO SAVEPOINT presence_write"),
        db.batch_execute("ROLLBACK"),
    );
    ended.map_err(classify)?;
    client.set_in_user_session(false);
    begun.map_err(classify)?;
    let existing = existing.map_err(classify)?;
    probed.map_err(classify)?;
    taken_on.map_err(|e| AccessError::Session(settings.failed(&e)))?;
    topic_set.map_err(classify)?;
    let visible = visible.map_err(classify)?;
    let seen: Vec<String> = seen
        .map_err(classify)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let policies = TopicPolicies {
        broadcast_read: seen.iter().any(|e| e == "broadcast"),
        presence_read: seen.iter().any(|e| e == "presence"),
        broadcast_write: insert_allowed(broadcast)?,
        presence_write: insert_allowed(presence)?,
    };
    Ok(match existing {
        Some(existing) => ChannelRow::read(&existing).decide(
            visible.as_ref(),
            settings.role(),
            topic,
            Some(policies),
        ),
        None => ChannelAccess::by_policies(policies, topic),
    })
}

/// Whether a probe INSERT passed the claims' policies: refused by RLS or grants (42501) is
/// `false`; any other failure is a policy error.
fn insert_allowed(result: Result<u64, tokio_postgres::Error>) -> Result<bool, AccessError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            Ok(false)
        }
        Err(e) => Err(classify(e)),
    }
}

/// A `realtime.channels` row read as the gateway.
struct ChannelRow {
    channel_type: String,
    persisted: bool,
    id: String,
}

impl ChannelRow {
    fn read(row: &tokio_postgres::Row) -> ChannelRow {
        ChannelRow {
            channel_type: row.get(0),
            persisted: row.get(1),
            id: row.get(2),
        }
    }

    /// The decision for claims of `role` that see the row as `visible` (none: they do not),
    /// with what the messages policies granted on a private join.
    fn decide(
        self,
        visible: Option<&tokio_postgres::Row>,
        role: &str,
        slug: &str,
        policies: Option<TopicPolicies>,
    ) -> ChannelAccess {
        let private =
            policies.is_some() || matches!(self.channel_type.as_str(), "private" | "direct");
        let mut access = match visible {
            None => match policies {
                Some(policies) => ChannelAccess::by_policies(policies, slug),
                None => ChannelAccess::refused(format!(
                    "Unauthorized: you do not have permission to join {} channel {slug}",
                    self.channel_type
                )),
            },
            Some(row) => {
                let member_can_send: Option<bool> = row.get(1);
                let open = matches!(self.channel_type.as_str(), "public" | "presence");
                let granted = policies.unwrap_or_default();
                ChannelAccess {
                    can_send: role == "service_role"
                        || member_can_send.unwrap_or(open)
                        || granted.broadcast_write,
                    ..ChannelAccess::open()
                }
            }
        };
        access.private = private;
        access.channel_type = Some(self.channel_type);
        access.persisted = self.persisted;
        access.channel_id = Some(self.id);
        access
    }
}

impl ChannelAccess {
    /// An open ad-hoc topic: everything allowed.
    fn open() -> ChannelAccess {
        ChannelAccess {
            allowed: true,
            reason: None,
            can_send: true,
            can_track: true,
            receive_broadcast: true,
            receive_presence: true,
            private: false,
            channel_type: None,
            persisted: false,
            channel_id: None,
        }
    }

    fn refused(reason: String) -> ChannelAccess {
        ChannelAccess {
            allowed: false,
            reason: Some(reason),
            can_send: false,
            can_track: false,
            receive_broadcast: false,
            receive_presence: false,
            ..ChannelAccess::open()
        }
    }

    /// A private topic as the messages policies decide it: joined when either extension may be
    /// read (Supabase's rule), refused with Supabase's words otherwise.
    fn by_policies(policies: TopicPolicies, topic: &str) -> ChannelAccess {
        if !(policies.broadcast_read || policies.presence_read) {
            return ChannelAccess {
                private: true,
                ..ChannelAccess::refused(unauthorized_read(topic))
            };
        }
        ChannelAccess {
            can_send: policies.broadcast_write,
            can_track: policies.presence_write,
            receive_broadcast: policies.broadcast_read,
            receive_presence: policies.presence_read,
            private: true,
            ..ChannelAccess::open()
        }
    }
}

/// A random (version 4) UUID, for probe rows.
pub fn random_uuid() -> String {
    let bits: u128 = rand::random::<u128>() & !(0xf000 << 64) & !(0xc000 << 48);
    let bits = bits | (0x4000 << 64) | (0x8000 << 48);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(random_uuid(), id);
    }

    #[test]
    fn private_rooms_are_apart_from_every_public_name() {
        assert_eq!(room_name("room:1", false), "room:1");
        let private = room_name("room:1", true);
        assert_ne!(private, "room:1");
        assert_eq!(room_topic(&private), ("room:1", true));
        assert_eq!(room_topic("room:1"), ("room:1", false));
        assert_eq!(room_label(&private), "private:room:1");
        // A client cannot name the private room: its name has a control character.
        assert!(!valid_channel_name(&private));
        assert_eq!(room_topic("private:room:1"), ("private:room:1", false));
    }

    #[test]
    fn policies_grant_what_they_allow_and_refuse_with_supabase_words() {
        let none = ChannelAccess::by_policies(TopicPolicies::default(), "room:1");
        assert!(!none.allowed);
        assert_eq!(
            none.reason.as_deref(),
            Some(
                "Unauthorized: You do not have permissions to read from this Channel topic: room:1"
            )
        );
        let read_only = ChannelAccess::by_policies(
            TopicPolicies {
                broadcast_read: true,
                ..TopicPolicies::default()
            },
            "room:1",
        );
        assert!(read_only.allowed && read_only.private && read_only.receive_broadcast);
        assert!(!read_only.receive_presence && !read_only.can_send && !read_only.can_track);
    }
}
