//! Who an HTTP request is, and how it is refused: the token a request or WebSocket upgrade
//! carries, the identity it proves, and [`Refusal`], the `{"error": ...}` answer every HTTP
//! handler (REST broadcast, history, the control API, upgrades) gives.

use crate::auth::identity::Identity;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nself_realtime_shared::jwt::Verifier;
use serde_json::json;
use std::sync::Arc;

/// The token a request carries: `Authorization: Bearer`, else the `apikey` header, else the
/// `apikey` query parameter.
pub fn request_token<'a>(headers: &'a HeaderMap, query_apikey: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()))
        .or(query_apikey)
        .filter(|t| !t.is_empty())
}

/// A refused request: its status and the message of its JSON body `{"error": ...}`.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// The message of the refusal's body.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Refuse a request with `status` and `message`.
pub fn refusal(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// The identity a WebSocket upgrade carries: `None` when it carries no token; a bad token is
/// refused with 401.
pub fn upgrade_identity(
    verifier: &Verifier,
    headers: &HeaderMap,
    query_apikey: Option<&str>,
) -> Result<Option<Arc<Identity>>, Refusal> {
    match request_token(headers, query_apikey) {
        Some(token) => match verifier.verify(token) {
            Ok(claims) => Ok(Some(Arc::new(Identity::new(claims)))),
            Err(e) => {
                let reason = format!("invalid token: {e}");
                crate::decision_log::connection_refused(&reason);
                Err(refusal(StatusCode::UNAUTHORIZED, reason))
            }
        },
        None => Ok(None),
    }
}

/// The identity an HTTP request's token proves; a missing or bad token is refused with 401.
pub fn authenticate(verifier: &Verifier, headers: &HeaderMap) -> Result<Identity, Refusal> {
    let token = request_token(headers, None).ok_or_else(|| {
        refusal(
            StatusCode::UNAUTHORIZED,
            "missing token: send `Authorization: Bearer <jwt>` or an `apikey` header",
        )
    })?;
    let claims = verifier
        .verify(token)
        .map_err(|e| refusal(StatusCode::UNAUTHORIZED, format!("invalid token: {e}")))?;
    Ok(Identity::new(claims))
}
