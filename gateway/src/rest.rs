//! REST broadcast: `POST /api/broadcast` with `{"messages": [{topic, event, payload, private}]}`
//! (realtime-js `send` before subscribing), and `POST /api/broadcast/{topic}/events/{event}`
//! with the payload as the body (realtime-js `httpSend`, JSON or binary).
//!
//! The token (`Authorization: Bearer`, else `apikey`) is verified; `service_role` may send
//! anywhere, any other role where its channel authorization lets it send. Messages go out on the
//! same broker subjects as socket broadcasts, so subscribers on every gateway receive them.

use crate::auth::channel_access;
use crate::auth::identity::Identity;
use crate::envelope::{BroadcastPayload, Envelope, Kind};
use crate::http_auth::{authenticate, refusal, Refusal};
use crate::state::Gateway;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Most messages in one batch request.
const MAX_MESSAGES: usize = 100;

#[derive(Debug, Deserialize)]
struct Message {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    private: bool,
}

#[derive(Debug, Deserialize)]
struct Batch {
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
pub struct OneParams {
    #[serde(default)]
    private: Option<String>,
}

/// Whether `identity` may send to `topic` (privately: as a private channel's subscriber would,
/// by the channel rules or the messages policies); the room the broadcast goes to.
async fn may_send(
    gateway: &Gateway,
    identity: &Identity,
    topic: &str,
    private: bool,
) -> Result<String, Refusal> {
    if identity.claims.role() == Some("service_role") {
        return Ok(channel_access::room_name(topic, private));
    }
    let mut client = gateway.pool.get().await.map_err(|e| {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("authorization is unavailable: {e}"),
        )
    })?;
    let mut access = channel_access::authorize(
        &mut client,
        &identity.claims,
        &gateway.roles,
        topic,
        private,
        gateway.config.require_channels,
    )
    .await
    .map_err(|e| refusal(StatusCode::FORBIDDEN, e.to_string()))?;
    if access.allowed {
        channel_access::ask_writes(
            &mut client,
            &identity.claims,
            &gateway.roles,
            topic,
            &mut access,
        )
        .await
        .map_err(|e| refusal(StatusCode::FORBIDDEN, e.to_string()))?;
    }
    if access.allowed && access.can_send {
        Ok(channel_access::room_name(topic, access.private))
    } else {
        Err(refusal(
            StatusCode::FORBIDDEN,
            access
                .reason
                .unwrap_or_else(|| format!("Unauthorized: you may not send to channel {topic}")),
        ))
    }
}

/// A JSON request body under the gateway's JSON rules ([`crate::json_input`]).
fn client_json(body: &Bytes) -> Result<Bytes, Refusal> {
    let bad = |why: String| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {why}"),
        )
    };
    let text = std::str::from_utf8(body).map_err(|e| bad(e.to_string()))?;
    match crate::json_input::prepare(text).map_err(|e| bad(e.to_string()))? {
        std::borrow::Cow::Borrowed(_) => Ok(body.clone()),
        std::borrow::Cow::Owned(repaired) => Ok(Bytes::from(repaired)),
    }
}

fn valid_name(what: &str, name: &str) -> Result<(), Refusal> {
    if !channel_access::valid_channel_name(name) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!("{what} must be 1 to 255 bytes without control characters"),
        ));
    }
    Ok(())
}

async fn publish(gateway: &Gateway, room: &str, envelope: &Envelope) -> Result<(), Refusal> {
    gateway
        .channels
        .broadcasts
        .publish(room, envelope)
        .await
        .map_err(|e| {
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("broadcast failed: {e}"),
            )
        })
}

/// `POST /api/broadcast`: a batch of messages.
pub async fn broadcast_batch(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let identity = authenticate(&gateway.verifier, &headers)?;
    if body.len() > gateway.config.max_frame_bytes {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large (REALTIME_MAX_FRAME_BYTES)",
        ));
    }
    let body = client_json(&body)?;
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"messages\": [{{\"topic\", \"event\", \"payload\", \"private\"}}]}}: {e}"),
            ))
        }
    };
    if batch.messages.len() > MAX_MESSAGES {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_MESSAGES} messages per request"),
        ));
    }
    let mut rooms = Vec::with_capacity(batch.messages.len());
    for message in &batch.messages {
        valid_name("topic", &message.topic)?;
        valid_name("event", &message.event)?;
        rooms.push(may_send(&gateway, &identity, &message.topic, message.private).await?);
    }
    for (message, room) in batch.messages.into_iter().zip(rooms) {
        let envelope = Envelope {
            kind: Kind::User,
            from: None,
            event: message.event,
            payload: BroadcastPayload::Json(
                serde_json::to_vec(&message.payload)
                    .expect("JSON serializes")
                    .into(),
            ),
            meta: None,
        };
        publish(&gateway, &room, &envelope).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

/// `POST /api/broadcast/{topic}/events/{event}`: one message whose body is the payload.
pub async fn broadcast_one(
    State(gateway): State<Arc<Gateway>>,
    Path((topic, event)): Path<(String, String)>,
    Query(params): Query<OneParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let identity = authenticate(&gateway.verifier, &headers)?;
    valid_name("topic", &topic)?;
    valid_name("event", &event)?;
    if body.len() > gateway.config.max_frame_bytes {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large (REALTIME_MAX_FRAME_BYTES)",
        ));
    }
    let private = params.private.as_deref() == Some("true");
    let room = may_send(&gateway, &identity, &topic, private).await?;
    let binary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let payload = if binary {
        BroadcastPayload::Binary(body)
    } else {
        let body = client_json(&body)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the body must be JSON (or Content-Type: application/octet-stream)",
            ));
        }
        BroadcastPayload::Json(body)
    };
    let envelope = Envelope {
        kind: Kind::User,
        from: None,
        event,
        payload,
        meta: None,
    };
    publish(&gateway, &room, &envelope).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}
