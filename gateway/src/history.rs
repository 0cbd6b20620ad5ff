//! Message history over HTTP, under Row Level Security:
//! `GET /api/messages/{channel}?limit=50&before=<time>&since=<time>` (also under
//! `/realtime/v1/`), with the user's JWT as `Authorization: Bearer` (or `apikey`).
//!
//! The query runs in the token's Postgres session ([`query_as`]), so `realtime.channels` and
//! `realtime.messages` policies decide: a channel the user cannot see answers 404 exactly like
//! one that does not exist, and only messages the user may read come back. Deleted messages
//! (`deleted_at`) are left out. The answer is `{"channel", "messages": [...], "has_more"}`,
//! oldest first, each message in the form subscribers receive (`message:new`); `before` pages
//! back (the `sentAt` of the oldest message received), `since` replays from a time.
//!
//! [`query_as`]: crate::auth::session::query_as

use crate::auth::session::{self, QueryAsError};
use crate::http_auth::{authenticate, refusal, Refusal};
use crate::state::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Messages per page by default, and at most.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    since: Option<String>,
}

/// A time parameter: RFC 3339, checked here so a bad one is a 400 naming it.
fn time_param(name: &str, value: Option<&str>) -> Result<Option<String>, Refusal> {
    let Some(value) = value else { return Ok(None) };
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|_| Some(value.to_string()))
        .map_err(|_| {
            refusal(
                StatusCode::BAD_REQUEST,
                format!("{name}={value:?} is not an RFC 3339 time; use e.g. 2026-01-30T10:15:23Z"),
            )
        })
}

pub async fn messages(
    State(gateway): State<Arc<Gateway>>,
    Path(channel): Path<String>,
    Query(params): Query<HistoryParams>,
    headers: HeaderMap,
) -> Result<Json<Value>, Refusal> {
    let identity = authenticate(&gateway.verifier, &headers)?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                refusal(
                    StatusCode::BAD_REQUEST,
                    format!("limit={text:?}: use a number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let before = time_param("before", params.before.as_deref())?;
    let since = time_param("since", params.since.as_deref())?;
    let mut client = gateway.pool.get().await.map_err(|e| {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("history is unavailable: {e}"),
        )
    })?;
    // One more than asked tells whether there is more.
    let fetch = limit + 1;
    let rows = session::query_as(
        &mut client,
        &identity.claims,
        &gateway.roles,
        "SELECT c.id IS NOT NULL,
                (SELECT coalesce(json_agg(m.payload), '[]')::text FROM (
                    SELECT m.payload FROM realtime.messages m
                    WHERE m.channel_id = c.id AND m.deleted_at IS NULL
                      AND ($2::text IS NULL OR m.sent_at < $2::text::timestamptz)
                      AND ($3::text IS NULL OR m.sent_at >= $3::text::timestamptz)
                    ORDER BY m.sent_at DESC, m.id DESC
                    LIMIT $4) m)
         FROM (SELECT NULL) AS one
         LEFT JOIN realtime.channels c ON c.slug = $1",
        &[&channel, &before, &since, &fetch],
    )
    .await
    .map_err(|e| match e {
        QueryAsError::Session(e) => refusal(StatusCode::FORBIDDEN, e.to_string()),
        QueryAsError::Query(e) if e.as_db_error().is_some() => refusal(
            StatusCode::FORBIDDEN,
            nself_realtime_shared::postgres_error::describe(&e),
        ),
        QueryAsError::Query(e) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            nself_realtime_shared::postgres_error::describe(&e),
        ),
    })?;
    let row = rows.first().ok_or_else(|| {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "history query returned nothing",
        )
    })?;
    let visible: bool = row.get(0);
    if !visible {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("channel {channel} does not exist or you may not read it"),
        ));
    }
    let text: Option<String> = row.get(1);
    // Each message as clients see it: the row's payload, which its trigger keeps.
    let mut stored: Vec<Value> =
        serde_json::from_str(text.as_deref().unwrap_or("[]")).map_err(|e| {
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unreadable history: {e}"),
            )
        })?;
    let has_more = stored.len() as i64 > limit;
    stored.truncate(limit as usize);
    // Newest first from the query; oldest first for the client.
    stored.reverse();
    Ok(Json(json!({
        "channel": channel,
        "messages": stored,
        "has_more": has_more,
    })))
}
