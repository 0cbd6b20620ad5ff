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

use super::session::{self, AllowedRoles, QueryAsError, SessionError};
use crate::db::Pooled;
use nself_realtime_shared::jwt::Claims;
use nself_realtime_shared::postgres_error::describe;

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

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAccess {
    pub allowed: bool,
    /// Why not, for the client.
    pub reason: Option<String>,
    pub can_send: bool,
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

/// Decides whether `claims` may join the channel `slug` (see the module docs).
pub async fn authorize(
    client: &mut Pooled,
    claims: &Claims,
    roles: &AllowedRoles,
    slug: &str,
    want_private: bool,
    require_channels: bool,
) -> Result<ChannelAccess, AccessError> {
    let role = session::role_of(claims, roles)?.to_string();
    // Existence first, as the gateway's role, before the session takes on the claims.
    let exists = client
        .prepared("SELECT type, persist_messages, id::text FROM realtime.channels WHERE slug = $1")
        .await
        .map_err(classify)?;
    let existing = client
        .query_opt(&exists, &[&slug])
        .await
        .map_err(classify)?;
    let Some(existing) = existing else {
        if want_private || require_channels {
            let why = if want_private {
                "private: true"
            } else {
                "REALTIME_REQUIRE_CHANNELS"
            };
            return Ok(ChannelAccess {
                allowed: false,
                reason: Some(format!(
                    "channel {slug} does not exist ({why} needs a realtime.channels row); create it with `nself-realtime channel create` or join a public topic"
                )),
                can_send: false,
                channel_type: None,
                persisted: false,
                channel_id: None,
            });
        }
        return Ok(ChannelAccess {
            allowed: true,
            reason: None,
            can_send: true,
            channel_type: None,
            persisted: false,
            channel_id: None,
        });
    };
    let channel_type: String = existing.get(0);
    let persisted: bool = existing.get(1);
    let channel_id: String = existing.get(2);
    let visible = session::query_as(
        client,
        claims,
        roles,
        "SELECT c.type,
                (SELECT m.can_send FROM realtime.channel_members m
                  WHERE m.channel_id = c.id AND m.user_id = realtime.user_id())
         FROM realtime.channels c WHERE c.slug = $1",
        &[&slug],
    )
    .await
    .map_err(|e| match e {
        QueryAsError::Session(e) => AccessError::Session(e),
        QueryAsError::Query(e) => classify(e),
    })?
    .into_iter()
    .next();
    Ok(match visible {
        None => ChannelAccess {
            allowed: false,
            reason: Some(format!(
                "Unauthorized: you do not have permission to join {channel_type} channel {slug}"
            )),
            can_send: false,
            channel_type: Some(channel_type),
            persisted,
            channel_id: Some(channel_id),
        },
        Some(row) => {
            let member_can_send: Option<bool> = row.get(1);
            let open = matches!(channel_type.as_str(), "public" | "presence");
            ChannelAccess {
                allowed: true,
                reason: None,
                can_send: role == "service_role" || member_can_send.unwrap_or(open),
                channel_type: Some(channel_type),
                persisted,
                channel_id: Some(channel_id),
            }
        }
    })
}
