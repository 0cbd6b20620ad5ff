//! Why joining (or re-authorizing) a channel failed: one error for every protocol, which each
//! adapter words in its own terms (a Phoenix reason, an nself error code).

use crate::auth::channel_access::AccessError;
use crate::auth::session::SessionError;
use crate::decision_log::Severity;
use nself_realtime_shared::bus::BusError;

/// Why a join (or a re-authorization) failed. The texts are the ones clients see where the
/// protocol has no words of its own.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("too many channels: at most {0} per connection (REALTIME_MAX_CHANNELS_PER_CLIENT)")]
    TooMany(usize),
    /// No connection to authorize with.
    #[error("authorization is unavailable: {0}")]
    Unavailable(String),
    /// The authorization question could not be answered.
    #[error(transparent)]
    Access(AccessError),
    /// The channel rules refuse the claims; the rules' reason, if they gave one.
    #[error("{}", .0.as_deref().unwrap_or("Unauthorized: you do not have permission to join this channel"))]
    Denied(Option<String>),
    /// A table a binding names does not exist, may not be read, or a filter cannot match.
    #[error("{0}")]
    Tables(String),
    /// A binding names a table that cannot become a subject.
    #[error("{0}")]
    Invalid(String),
    /// Registering with a relay (broadcast, presence, typing, chat) failed.
    #[error("{0}")]
    Relay(#[from] BusError),
    #[error("cannot follow table changes: {0}")]
    Feed(BusError),
    /// `config.broadcast.replay` is refused (Supabase's words).
    #[error("UnableToReplayMessages: {0}")]
    Replay(String),
    /// `config.broadcast.replay` could not be read (the cause is logged where it happened).
    #[error("UnableToReplayMessages: Realtime was unable to replay messages")]
    ReplayFailed,
}

impl JoinError {
    /// Whether the rules or the request said no ([`Severity::Refusal`]), or the question could
    /// not be answered ([`Severity::Failure`]: Postgres or NATS failed, a policy raised, the
    /// database lacks a role the gateway may switch to).
    pub fn severity(&self) -> Severity {
        match self {
            JoinError::TooMany(_)
            | JoinError::Denied(_)
            | JoinError::Tables(_)
            | JoinError::Invalid(_)
            | JoinError::Replay(_)
            | JoinError::Access(AccessError::Session(SessionError::RoleNotAllowed(_))) => {
                Severity::Refusal
            }
            JoinError::Unavailable(_)
            | JoinError::Access(_)
            | JoinError::Relay(_)
            | JoinError::Feed(_)
            | JoinError::ReplayFailed => Severity::Failure,
        }
    }
}
