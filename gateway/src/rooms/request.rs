//! The requests of the nself API and the errors they can get, independent of the protocol that
//! carried them.
//!
//! Socket.IO names a request by its event (`room:join`, `message:send`, ... and seed 000's
//! `subscribe`), the plain WebSocket protocol by its `type` (`subscribe`, `message`, ...); both
//! map to one [`Request`] here, read from the same payload fields (a room is `roomName`,
//! `channel` or `room`), so the two protocols cannot drift apart.

use crate::auth::channel_access::{self, MAX_CHANNEL_NAME};
use serde_json::{json, Map, Value};

/// A request of the nself API.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Authenticate (or re-authenticate) with a JWT.
    Authenticate {
        token: String,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        content: Value,
        message_type: Option<Value>,
        metadata: Option<Value>,
        thread_id: Option<Value>,
    },
    Typing {
        room: String,
        thread_id: Option<String>,
        typing: bool,
    },
    /// Presence status, in one room or (no room) every joined room.
    Presence {
        room: Option<String>,
        status: String,
        custom_status: Option<Value>,
        metadata: Option<Map<String, Value>>,
    },
    /// An ephemeral application event to a room (cursor moves, app events).
    Broadcast {
        room: String,
        event: String,
        payload: Value,
    },
    Ping,
}

/// The error codes of seeds 001/003, plus the ones the seeds leave unnamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    AuthenticationFailed,
    RoomAccessDenied,
    RateLimitExceeded,
    ValidationError,
    /// The request is valid but a dependency (Postgres, NATS) failed.
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::RoomAccessDenied => "ROOM_ACCESS_DENIED",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::ServerError => "SERVER_ERROR",
        }
    }
}

/// A refused request: `{code, message, details?}` for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ValidationError, message)
    }

    /// The error as the JSON body both protocols send.
    pub fn to_json(&self) -> Value {
        let mut body = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }
}

/// Reads a request named `name` (a Socket.IO event or a `/ws` type) from its payload.
pub fn parse(name: &str, payload: &Value) -> Result<Request, ApiError> {
    let empty = Map::new();
    let fields = match payload {
        Value::Object(fields) => fields,
        Value::Null => &empty,
        // Socket.IO clients may emit a bare room name: `socket.emit("room:join", "general")`.
        Value::String(_) if matches!(name, "room:join" | "subscribe") => {
            return Ok(Request::Join {
                room: room_name(Some(payload))?,
            })
        }
        Value::String(_) if matches!(name, "room:leave" | "unsubscribe") => {
            return Ok(Request::Leave {
                room: room_name(Some(payload))?,
            })
        }
        _ => {
            return Err(ApiError::validation(format!(
                "the payload of {name} must be a JSON object"
            )))
        }
    };
    let room = || {
        room_name(
            fields
                .get("roomName")
                .or(fields.get("channel"))
                .or(fields.get("room")),
        )
    };
    Ok(match name {
        "auth" | "authenticate" => Request::Authenticate {
            token: fields
                .get("token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::validation("auth needs {\"token\": \"<jwt>\"}"))?
                .to_string(),
        },
        "room:join" | "subscribe" => Request::Join { room: room()? },
        "room:leave" | "unsubscribe" => Request::Leave { room: room()? },
        "message:send" | "message" => Request::Send {
            room: room()?,
            content: fields.get("content").cloned().unwrap_or(Value::Null),
            message_type: fields
                .get("messageType")
                .or(fields.get("message_type"))
                .cloned(),
            metadata: fields.get("metadata").cloned(),
            thread_id: fields.get("threadId").or(fields.get("thread_id")).cloned(),
        },
        "typing:start" | "typing:stop" | "typing" => Request::Typing {
            room: room()?,
            thread_id: match fields.get("threadId").or(fields.get("thread_id")) {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if t.len() <= MAX_CHANNEL_NAME => Some(t.clone()),
                Some(_) => {
                    return Err(ApiError::validation(
                        "threadId must be a string of at most 255 bytes",
                    ))
                }
            },
            typing: match name {
                "typing:start" => true,
                "typing:stop" => false,
                _ => match fields.get("typing").or(fields.get("isTyping")) {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(typing)) => *typing,
                    Some(_) => return Err(ApiError::validation("typing must be true or false")),
                },
            },
        },
        "presence:update" | "presence" => Request::Presence {
            room: match fields.get("roomName").or(fields.get("channel")).or(fields.get("room")) {
                None | Some(Value::Null) => None,
                some => Some(room_name(some)?),
            },
            status: match fields.get("status") {
                None | Some(Value::Null) => "online".to_string(),
                Some(Value::String(status)) => status.clone(),
                Some(_) => return Err(ApiError::validation("status must be a string")),
            },
            custom_status: fields
                .get("customStatus")
                .or(fields.get("custom_status"))
                .cloned()
                .filter(|v| !v.is_null()),
            metadata: match fields.get("metadata") {
                None | Some(Value::Null) => None,
                Some(Value::Object(meta)) => Some(meta.clone()),
                Some(_) => return Err(ApiError::validation("metadata must be an object")),
            },
        },
        "broadcast" => Request::Broadcast {
            room: room()?,
            event: fields
                .get("event")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty() && e.len() <= MAX_CHANNEL_NAME)
                .ok_or_else(|| {
                    ApiError::validation("broadcast needs an event name of 1 to 255 bytes")
                })?
                .to_string(),
            payload: fields.get("payload").cloned().unwrap_or_else(|| json!({})),
        },
        "ping" => Request::Ping,
        other => {
            return Err(ApiError::validation(format!(
                "unknown request {other:?}; expected room:join, room:leave, message:send, typing:start, typing:stop, presence:update, broadcast or ping"
            )))
        }
    })
}

/// A room name: a valid channel name ([`channel_access::valid_channel_name`]).
fn room_name(value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(name)) if channel_access::valid_channel_name(name) => Ok(name.clone()),
        Some(Value::String(_)) => Err(ApiError::validation(channel_access::CHANNEL_NAME_RULE)),
        _ => Err(ApiError::validation(
            "name the room: {\"roomName\": \"general\"} (or \"channel\")",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_protocols_spellings_read_the_same() {
        let socketio = parse("room:join", &json!({"roomName": "general"})).unwrap();
        let ws = parse("subscribe", &json!({"channel": "general"})).unwrap();
        assert_eq!(socketio, ws);
        assert_eq!(
            parse("room:join", &json!("general")).unwrap(),
            Request::Join {
                room: "general".into()
            }
        );
        assert_eq!(
            parse("typing:stop", &json!({"roomName": "g", "threadId": "t"})).unwrap(),
            Request::Typing {
                room: "g".into(),
                thread_id: Some("t".into()),
                typing: false
            }
        );
        assert_eq!(
            parse("typing", &json!({"channel": "g", "typing": false})).unwrap(),
            parse("typing:stop", &json!({"roomName": "g"})).unwrap()
        );
    }

    #[test]
    fn bad_requests_are_validation_errors() {
        for (name, payload) in [
            ("room:join", json!({})),
            ("room:join", json!({"roomName": ""})),
            ("room:join", json!({"roomName": "a\nb"})),
            ("room:join", json!({"roomName": "x".repeat(256)})),
            ("room:join", json!([1])),
            ("auth", json!({})),
            ("broadcast", json!({"roomName": "g"})),
            ("presence:update", json!({"status": 3})),
            ("typing", json!({"channel": "g", "typing": "yes"})),
            ("nonsense", json!({})),
        ] {
            let error = parse(name, &payload).unwrap_err();
            assert_eq!(error.code, ErrorCode::ValidationError, "{name} {payload}");
        }
    }
}
