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
//! policy accepts lets them send broadcasts or track presence. Either source grants. As in
//! Supabase, the INSERT rules are asked at the first send or track ([`ask_writes`]), not at the
//! join.
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

/// The room an operator names by its label ([`room_label`]): `private:<topic>` is the topic's
/// private room. (A public topic whose own name starts with `private:` has the same label; an
/// operator command then means the private room.)
pub fn room_of_label(label: &str) -> String {
    match label.strip_prefix("private:") {
        Some(topic) => room_name(topic, true),
        None => label.to_string(),
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
    /// Whether the messages policies were asked what the claims may write ([`ask_writes`]).
    /// A private join asks only what they may read, as Supabase does; until the first send or
    /// track asks, `can_send` and `can_track` hold what the channel rules alone grant.
    pub writes_asked: bool,
    /// The channel is private: its room is the topic's private one ([`room_name`]).
    pub private: bool,
    /// The channel's type when it has a row (`public`, `private`, `presence`, `direct`).
    pub channel_type: Option<String>,
    /// The channel persists its messages (`persist_messages`).
    pub persisted: bool,
    /// The channel's `id` when it has a row.
    pub channel_id: Option<String>,
}

/// A write a channel's rights may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Send a broadcast.
    Broadcast,
    /// Track presence.
    Presence,
}

impl ChannelAccess {
    /// Whether `write` is allowed as far as the rights asked so far go ([`Self::writes_asked`]).
    pub fn allows(&self, write: Write) -> bool {
        match write {
            Write::Broadcast => self.can_send,
            Write::Presence => self.can_track,
        }
    }

    /// The channel's type as metrics label it: its row's type, else `private` for a private
    /// join (granted by the messages policies) and `adhoc` for an open topic.
    pub fn room_type(&self) -> &str {
        match self.channel_type.as_deref() {
            Some(channel_type) => channel_type,
            None if self.private => "private",
            None => "adhoc",
        }
    }
}

impl Write {
    /// Its name in logs.
    pub fn label(self) -> &'static str {
        match self {
            Write::Broadcast => "broadcast",
            Write::Presence => "presence",
        }
    }
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

/// [`CHANNEL_ROW`] of the topic $3, after inserting two probe rows of it, one per extension,
/// as the gateway (not subject to RLS), so that the claims' SELECT policies can be asked
/// whether they show them. One statement, one answer to wait for.
const PROBES_AND_CHANNEL_ROW: &str = "WITH probes AS (
         INSERT INTO realtime.messages (id, topic, extension)
         VALUES ($1::text::uuid, $3, 'broadcast'), ($2::text::uuid, $3, 'presence'))
     SELECT type, persist_messages, id::text FROM realtime.channels WHERE slug = $3";

/// Which probe rows the claims see. Two scalar ids (not an array, whose length only a custom
/// plan knows) and the probes' `inserted_at` (the transaction's time, their default) let
/// Postgres keep one generic plan that reads only today's partition; a custom plan would be
/// made at every join, and planning the policies is most of a join's cost.
const VISIBLE_PROBES: &str = "SELECT extension FROM realtime.messages
     WHERE id IN ($1::text::uuid, $2::text::uuid) AND inserted_at = (now() AT TIME ZONE 'utc')";

/// A row the claims' INSERT policies must accept to send (`broadcast`) or track (`presence`).
const WRITE_PROBE: &str = "INSERT INTO realtime.messages (topic, extension) VALUES ($1, $2)";

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

/// What the app's SELECT policies on `realtime.messages` let the claims read on one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadPolicies {
    pub broadcast: bool,
    pub presence: bool,
}

/// What its INSERT policies let them write on one topic: send broadcasts, track presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePolicies {
    pub broadcast: bool,
    pub presence: bool,
}

/// Decides a private join of `topic`: the channel rules (a visible `realtime.channels` row) or
/// the messages policies' SELECT rules grant it. Everything is asked in one rolled-back
/// transaction, in one round trip: the channel row and two probe rows as the gateway, then
/// under the claims (with `realtime.topic` set) the visible channel and the visible probes. A
/// policy that fails refuses the join only where the channel rules do not grant it.
///
/// As in Supabase, the INSERT policies are not asked at the join but at the first send or track
/// ([`ask_writes`]): a join costs one probe INSERT instead of three, and most subscribers
/// never write.
pub async fn authorize_private(
    client: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    topic: &str,
) -> Result<ChannelAccess, AccessError> {
    let settings = session::ClaimSettings::new(claims, roles)?;
    let mut statements = Vec::with_capacity(4);
    for sql in [
        PROBES_AND_CHANNEL_ROW,
        session::TAKE_ON_CLAIMS_IN_TOPIC,
        VISIBLE_CHANNEL,
        VISIBLE_PROBES,
    ] {
        statements.push(client.prepared(sql).await.map_err(classify)?);
    }
    let [channel_row, take_on, visible_channel, visible_probes] =
        <[_; 4]>::try_from(statements).expect("four statements");
    let probe_ids = [random_uuid(), random_uuid()];
    let take_on_params = settings.params_in_topic(&topic);
    let by_topic: [&(dyn ToSql + Sync); 1] = [&topic];
    let probes: [&(dyn ToSql + Sync); 3] = [&probe_ids[0], &probe_ids[1], &topic];
    let probe_list: [&(dyn ToSql + Sync); 2] = [&probe_ids[0], &probe_ids[1]];
    client.set_in_user_session(true);
    let db: &tokio_postgres::Client = client;
    // Polled together, these go out back to back and are answered in order (see
    // `session::query_as`). The policies are asked last, so that one failing leaves the
    // answers before it standing.
    let (begun, existing, taken_on, visible, seen, ended) = tokio::join!(
        db.batch_execute("BEGIN"),
        db.query_opt(&channel_row, &probes),
        db.execute(&take_on, &take_on_params),
        db.query_opt(&visible_channel, &by_topic),
        db.query(&visible_probes, &probe_list),
        db.batch_execute("ROLLBACK"),
    );
    ended.map_err(classify)?;
    client.set_in_user_session(false);
    begun.map_err(classify)?;
    let existing = existing.map_err(classify)?;
    taken_on.map_err(|e| AccessError::Session(settings.failed(&e)))?;
    let visible = visible.map_err(classify)?;
    let read = seen.map_err(classify).map(|seen| {
        let seen = |extension: &str| seen.iter().any(|row| row.get::<_, &str>(0) == extension);
        ReadPolicies {
            broadcast: seen("broadcast"),
            presence: seen("presence"),
        }
    });
    Ok(match existing {
        Some(existing) => {
            // Where the channel rules grant the join, a policy that fails for these claims
            // (Supabase's `auth.uid()` casting a seed user's non-UUID `sub`) grants nothing
            // more rather than refusing what the rules allow.
            let read = match (visible.is_some(), read) {
                (true, Err(e)) => {
                    tracing::debug!(topic, error = %e, "messages policies failed; the channel rules decide");
                    ReadPolicies::default()
                }
                (_, read) => read?,
            };
            ChannelRow::read(&existing).decide(visible.as_ref(), settings.role(), topic, Some(read))
        }
        None => ChannelAccess::by_policies(read?, topic),
    })
}

/// Asks the messages policies' INSERT rules what `access`'s claims may write on `topic`, if
/// that is still unknown ([`ChannelAccess::writes_asked`]), and adds what they grant: one
/// rolled-back transaction, in one round trip, with one probe INSERT per extension, each in a
/// savepoint. A policy that fails is an error (the send or track is refused with it).
pub async fn ask_writes(
    client: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    topic: &str,
    access: &mut ChannelAccess,
) -> Result<(), AccessError> {
    if access.writes_asked {
        return Ok(());
    }
    let settings = session::ClaimSettings::new(claims, roles)?;
    let take_on = client
        .prepared(session::TAKE_ON_CLAIMS_IN_TOPIC)
        .await
        .map_err(classify)?;
    let write_probe = client.prepared(WRITE_PROBE).await.map_err(classify)?;
    let take_on_params = settings.params_in_topic(&topic);
    let write_broadcast: [&(dyn ToSql + Sync); 2] = [&topic, &"broadcast"];
    let write_presence: [&(dyn ToSql + Sync); 2] = [&topic, &"presence"];
    client.set_in_user_session(true);
    let db: &tokio_postgres::Client = client;
    // As in `authorize_private`; a refused INSERT aborts only up to its savepoint.
    let (begun, taken_on, _, broadcast, _, _, presence, _, ended) = tokio::join!(
        db.batch_execute("BEGIN"),
        db.execute(&take_on, &take_on_params),
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
    taken_on.map_err(|e| AccessError::Session(settings.failed(&e)))?;
    access.grant_writes(WritePolicies {
        broadcast: insert_allowed(broadcast)?,
        presence: insert_allowed(presence)?,
    });
    Ok(())
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
    /// with what the messages policies let them read on a private join (`None`: a public one).
    fn decide(
        self,
        visible: Option<&tokio_postgres::Row>,
        role: &str,
        slug: &str,
        read: Option<ReadPolicies>,
    ) -> ChannelAccess {
        let private = read.is_some() || matches!(self.channel_type.as_str(), "private" | "direct");
        let mut access = match visible {
            None => match read {
                Some(read) => ChannelAccess::by_policies(read, slug),
                None => ChannelAccess::refused(format!(
                    "Unauthorized: you do not have permission to join {} channel {slug}",
                    self.channel_type
                )),
            },
            Some(row) => {
                let member_can_send: Option<bool> = row.get(1);
                let open = matches!(self.channel_type.as_str(), "public" | "presence");
                let can_send = role == "service_role" || member_can_send.unwrap_or(open);
                ChannelAccess {
                    can_send,
                    // On a private join the INSERT policies may still grant sending.
                    writes_asked: can_send || read.is_none(),
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
            writes_asked: true,
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
    /// read (Supabase's rule), refused with Supabase's words otherwise. Sending and tracking
    /// wait for [`ask_writes`].
    fn by_policies(read: ReadPolicies, topic: &str) -> ChannelAccess {
        if !(read.broadcast || read.presence) {
            return ChannelAccess {
                private: true,
                ..ChannelAccess::refused(unauthorized_read(topic))
            };
        }
        ChannelAccess {
            can_send: false,
            can_track: false,
            writes_asked: false,
            receive_broadcast: read.broadcast,
            receive_presence: read.presence,
            private: true,
            ..ChannelAccess::open()
        }
    }

    /// Adds what the INSERT policies grant to what the channel rules did.
    fn grant_writes(&mut self, writes: WritePolicies) {
        self.can_send |= writes.broadcast;
        self.can_track |= writes.presence;
        self.writes_asked = true;
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
        assert_eq!(room_of_label("private:room:1"), private);
        assert_eq!(room_of_label("room:1"), "room:1");
        // A client cannot name the private room: its name has a control character.
        assert!(!valid_channel_name(&private));
        assert_eq!(room_topic("private:room:1"), ("private:room:1", false));
    }

    #[test]
    fn policies_grant_what_they_allow_and_refuse_with_supabase_words() {
        let none = ChannelAccess::by_policies(ReadPolicies::default(), "room:1");
        assert!(!none.allowed);
        assert_eq!(
            none.reason.as_deref(),
            Some(
                "Unauthorized: You do not have permissions to read from this Channel topic: room:1"
            )
        );
        let mut read_only = ChannelAccess::by_policies(
            ReadPolicies {
                broadcast: true,
                ..ReadPolicies::default()
            },
            "room:1",
        );
        assert!(read_only.allowed && read_only.private && read_only.receive_broadcast);
        assert!(!read_only.receive_presence && !read_only.can_send && !read_only.can_track);
        assert!(
            !read_only.writes_asked,
            "writes are asked at the first send"
        );
        read_only.grant_writes(WritePolicies {
            broadcast: false,
            presence: true,
        });
        assert!(read_only.writes_asked && !read_only.can_send && read_only.can_track);
    }
}
