//! The log lines of authorization decisions: a refused join, a channel the server closed, a
//! refused send or track, rows withheld because their policy failed. An operator asking "why
//! does this client receive nothing?" finds the answer here, whatever protocol the client speaks.
//!
//! Every line is one event with the same shape: a fixed message (`connection refused`, `join
//! refused`, `channel closed`, `write refused`, `rows withheld`), `channel` (the name
//! authorization used) and `reason` (what the client was told). The connection comes from the span every connection
//! runs in ([`crate::socket::serve`]: `connection{conn, protocol}`); lines written outside it
//! (the change feed's) name `conn` themselves. A decision the rules made (the claims may not) is
//! logged at info; one that could not be made (Postgres unreachable, a policy that raised) at
//! warn, since that is the operator's to fix. Tokens are never logged: reasons are built from
//! verification errors, which do not quote the token.
//!
//! The callers are the one join pipeline (`channels::service`) for what every protocol shares,
//! and the adapters only for their own refusals before it (a join whose token does not verify).

use crate::outbox::ConnId;
use std::fmt::Display;

/// Who is answerable for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The rules (or the request) said no: info.
    Refusal,
    /// The question could not be answered (a dependency failed, a policy raised): warn.
    Failure,
}

/// A connection refused for its token (at the upgrade, or Socket.IO's CONNECT).
pub fn connection_refused(reason: &dyn Display) {
    tracing::info!(reason = %reason, "connection refused");
}

/// A join (or its re-authorization by `access_token`) refused.
pub fn join_refused(channel: &str, severity: Severity, reason: &dyn Display) {
    match severity {
        Severity::Refusal => tracing::info!(channel, reason = %reason, "join refused"),
        Severity::Failure => tracing::warn!(channel, reason = %reason, "join refused"),
    }
}

/// A joined channel closed by the server (its token expired or lost access).
pub fn channel_closed(channel: &str, severity: Severity, reason: &dyn Display) {
    match severity {
        Severity::Refusal => tracing::info!(channel, reason = %reason, "channel closed"),
        Severity::Failure => tracing::warn!(channel, reason = %reason, "channel closed"),
    }
}

/// A send or track the channel's rights do not allow (`write`: `broadcast` or `presence`).
pub fn write_refused(channel: &str, write: &str, severity: Severity, reason: &dyn Display) {
    match severity {
        Severity::Refusal => tracing::info!(channel, write, reason = %reason, "write refused"),
        Severity::Failure => tracing::warn!(channel, write, reason = %reason, "write refused"),
    }
}

/// A subscription's rows withheld from here on: their row-level policy failed under its claims.
pub fn rows_withheld(conn: ConnId, channel: &str, table: &str, reason: &dyn Display) {
    tracing::warn!(conn, channel, table, reason = %reason, "rows withheld");
}
