//! Server events in each wire protocol.
//!
//! The relays (broadcast rooms, presence topics, table feeds) know *what* happened in a channel;
//! this module knows how each protocol shows it. Every function builds the frames for one
//! (wire, topic) and the relays cache them, so each encoding is built once per event and shared
//! by every subscriber that reads it.
//!
//! | event | Phoenix (realtime-js) | Socket.IO | plain WebSocket (`/ws`) |
//! | --- | --- | --- | --- |
//! | user broadcast | `broadcast` | `broadcast` `{roomName, event, payload}` | `{"type":"broadcast"}` |
//! | chat message | `broadcast`, event `message:new`… | `message:new`… | `{"type":"message"}` |
//! | typing | `broadcast`, event `typing:event` | `typing:event` | `{"type":"typing"}` |
//! | NOTIFY | `broadcast`, event `db:notification` | `db:notification` | `{"type":"notification"}` |
//! | presence | `presence_state` / `presence_diff` | `presence:state`, `user:joined`, `user:left`, `presence:changed` | `{"type":"presence"}` |
//! | row change | `postgres_changes` | `db:change` | `{"type":"change"}` |
//!
//! A plain-WebSocket frame is always `{"type", "channel", "event", "payload"}`.

use crate::envelope::{BroadcastPayload, Envelope, Kind};
use crate::json_write::{is_json, write_str};
use crate::outbox::OutFrame;
use crate::phoenix::frame;
use crate::socketio::packet;
use crate::subscriber::Wire;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// A room message (broadcast, chat message, typing, NOTIFY) for `wire`, or `None` when that
/// protocol cannot carry it (a binary payload outside Phoenix vsn 2.0.0).
pub fn envelope(wire: Wire, topic: &str, envelope: &Envelope) -> Option<OutFrame> {
    let event = envelope.event.as_str();
    if let Wire::Phoenix(vsn) = wire {
        return frame::user_broadcast(vsn, topic, event, &envelope.payload, envelope.meta.as_ref());
    }
    // The nself protocols carry JSON payloads only.
    let BroadcastPayload::Json(json) = &envelope.payload else {
        return None;
    };
    if !is_json(json) {
        return None;
    }
    Some(match (wire, envelope.kind) {
        (Wire::SocketIo, Kind::User) => {
            let mut body = Vec::with_capacity(48 + topic.len() + event.len() + json.len());
            body.extend_from_slice(b"{\"roomName\":");
            write_str(&mut body, topic);
            body.extend_from_slice(b",\"event\":");
            write_str(&mut body, event);
            body.extend_from_slice(b",\"payload\":");
            body.extend_from_slice(json);
            body.push(b'}');
            packet::event("broadcast", &body)
        }
        (Wire::SocketIo, _) => packet::event(event, json),
        (_, kind) => {
            let kind = match kind {
                Kind::User => "broadcast",
                Kind::Message => "message",
                Kind::Typing => "typing",
                Kind::Notification => "notification",
            };
            json_frame(kind, topic, event, json)
        }
    })
}

/// A row change (`{"ids": [...], "data": {...}}`) for a table subscription.
pub fn change(wire: Wire, topic: &str, payload: &RawValue) -> OutFrame {
    match wire {
        Wire::Phoenix(vsn) => frame::push(vsn, None, topic, "postgres_changes", payload),
        Wire::SocketIo => packet::event("db:change", payload.get().as_bytes()),
        Wire::Json => json_frame(
            "change",
            topic,
            "postgres_changes",
            payload.get().as_bytes(),
        ),
    }
}

/// A channel-level error from a relay (the feed failed its authorization, say).
pub fn channel_error(
    wire: Wire,
    join_ref: Option<&str>,
    topic: &str,
    extension: &str,
    message: &str,
) -> OutFrame {
    match wire {
        Wire::Phoenix(vsn) => {
            let channel = topic.strip_prefix("realtime:").unwrap_or(topic);
            let payload = json!({
                "extension": extension,
                "status": "error",
                "message": message,
                "channel": channel,
            });
            let raw = serde_json::value::to_raw_value(&payload).expect("JSON values serialize");
            frame::push(vsn, join_ref, topic, "system", &raw)
        }
        Wire::SocketIo => packet::event_value(
            "error",
            &json!({ "code": "SERVER_ERROR", "message": message, "details": { "roomName": topic, "extension": extension } }),
        ),
        Wire::Json => error_frame(
            None,
            "SERVER_ERROR",
            message,
            Some(&json!({ "channel": topic, "extension": extension })),
        ),
    }
}

/// One member of a channel's presence: the presence key and its metadata.
pub struct PresenceMember<'a> {
    pub key: &'a str,
    pub meta: &'a Value,
}

/// What happened to a user (all connections of one presence key) in a channel.
pub enum PresenceEvent<'a> {
    /// The key's first connection arrived.
    Joined(PresenceMember<'a>),
    /// The key's last connection left.
    Left(PresenceMember<'a>),
    /// A connection of the key changed what it tracks.
    Updated(PresenceMember<'a>),
}

/// The presence of a user as the nself protocols show it: `{userId, status, customStatus?,
/// ...}`; `userId` is the tracked `userId` or else the presence key, `status` defaults to
/// `online`.
fn user_json(topic: &str, member: &PresenceMember) -> Value {
    let mut user = Map::new();
    user.insert("roomName".into(), Value::String(topic.to_string()));
    if let Value::Object(meta) = member.meta {
        for (k, v) in meta {
            if k != "phx_ref" {
                user.insert(k.clone(), v.clone());
            }
        }
    }
    user.entry("userId")
        .or_insert_with(|| Value::String(member.key.to_string()));
    user.entry("status")
        .or_insert_with(|| Value::String("online".into()));
    Value::Object(user)
}

/// The presence state a subscriber receives when it joins, for the nself protocols (Phoenix
/// builds its own `presence_state` from the raw entries). One entry per user.
pub fn presence_state(wire: Wire, topic: &str, members: &[PresenceMember]) -> Option<OutFrame> {
    let mut seen = std::collections::HashSet::new();
    let users: Vec<Value> = members
        .iter()
        .filter(|m| seen.insert(m.key))
        .map(|m| user_json(topic, m))
        .collect();
    let body = json!({ "roomName": topic, "users": users });
    match wire {
        Wire::Phoenix(_) => None,
        Wire::SocketIo => Some(packet::event_value("presence:state", &body)),
        Wire::Json => Some(json_frame(
            "presence",
            topic,
            "state",
            &serde_json::to_vec(&body).expect("JSON values serialize"),
        )),
    }
}

/// A user-level presence change for the nself protocols.
pub fn presence_event(wire: Wire, topic: &str, event: &PresenceEvent) -> Option<OutFrame> {
    let (socketio_event, json_event, member) = match event {
        PresenceEvent::Joined(m) => ("user:joined", "join", m),
        PresenceEvent::Left(m) => ("user:left", "leave", m),
        PresenceEvent::Updated(m) => ("presence:changed", "update", m),
    };
    let mut body = user_json(topic, member);
    body["timestamp"] = Value::String(now_rfc3339());
    match wire {
        Wire::Phoenix(_) => None,
        Wire::SocketIo => Some(packet::event_value(socketio_event, &body)),
        Wire::Json => Some(json_frame(
            "presence",
            topic,
            json_event,
            &serde_json::to_vec(&body).expect("JSON values serialize"),
        )),
    }
}

/// `{"type": kind, "channel": topic, "event": event, "payload": payload}`; `payload` is JSON
/// text written as it is.
pub fn json_frame(kind: &str, topic: &str, event: &str, payload: &[u8]) -> OutFrame {
    let mut out = Vec::with_capacity(48 + kind.len() + topic.len() + event.len() + payload.len());
    out.extend_from_slice(b"{\"type\":");
    write_str(&mut out, kind);
    out.extend_from_slice(b",\"channel\":");
    write_str(&mut out, topic);
    out.extend_from_slice(b",\"event\":");
    write_str(&mut out, event);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload);
    out.push(b'}');
    OutFrame::Text(Bytes::from(out))
}

/// A plain-WebSocket `error` frame: `{"type":"error","id"?,"code","message","details"?}`.
pub fn error_frame(
    id: Option<&Value>,
    code: &str,
    message: &str,
    details: Option<&Value>,
) -> OutFrame {
    let mut body = json!({ "type": "error", "code": code, "message": message });
    if let Some(id) = id {
        body["id"] = id.clone();
    }
    if let Some(details) = details {
        body["details"] = details.clone();
    }
    OutFrame::Text(Bytes::from(
        serde_json::to_vec(&body).expect("JSON values serialize"),
    ))
}

/// The current time as RFC 3339 UTC with milliseconds (`2026-01-30T10:15:23.123Z`).
pub fn now_rfc3339() -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phoenix::frame::Vsn;

    fn text(frame: &OutFrame) -> &str {
        std::str::from_utf8(frame.bytes()).unwrap()
    }

    fn message(kind: Kind, event: &str, payload: &'static [u8]) -> Envelope {
        Envelope {
            from: None,
            kind,
            event: event.into(),
            payload: BroadcastPayload::Json(Bytes::from_static(payload)),
            meta: None,
        }
    }

    #[test]
    fn each_protocol_sees_a_chat_message_its_way() {
        let m = message(Kind::Message, "message:new", br#"{"content":"hi"}"#);
        assert_eq!(
            text(&envelope(Wire::SocketIo, "general", &m).unwrap()),
            r#"42["message:new",{"content":"hi"}]"#
        );
        assert_eq!(
            text(&envelope(Wire::Json, "general", &m).unwrap()),
            r#"{"type":"message","channel":"general","event":"message:new","payload":{"content":"hi"}}"#
        );
        let phoenix = envelope(Wire::Phoenix(Vsn::V1), "realtime:general", &m).unwrap();
        assert!(text(&phoenix).contains(r#""event":"message:new""#));
    }

    #[test]
    fn user_broadcasts_keep_their_event_inside_a_broadcast_event() {
        let m = message(Kind::User, "message:new", br#"{"x":1}"#);
        // A client broadcast cannot pose as a chat message on Socket.IO.
        assert_eq!(
            text(&envelope(Wire::SocketIo, "general", &m).unwrap()),
            r#"42["broadcast",{"roomName":"general","event":"message:new","payload":{"x":1}}]"#
        );
        let binary = Envelope {
            payload: BroadcastPayload::Binary(Bytes::from_static(&[1, 2])),
            ..m
        };
        assert!(envelope(Wire::SocketIo, "general", &binary).is_none());
        assert!(envelope(Wire::Json, "general", &binary).is_none());
        let broken = message(Kind::User, "x", b"{not json");
        assert!(envelope(Wire::Json, "general", &broken).is_none());
    }

    #[test]
    fn presence_users_default_their_id_and_status() {
        let meta = json!({"status": "away", "phx_ref": "r1"});
        let member = PresenceMember {
            key: "u1",
            meta: &meta,
        };
        let frame =
            presence_event(Wire::SocketIo, "general", &PresenceEvent::Updated(member)).unwrap();
        let text = text(&frame);
        assert!(text.starts_with(r#"42["presence:changed",{"#));
        assert!(text.contains(r#""userId":"u1""#) && text.contains(r#""status":"away""#));
        assert!(!text.contains("phx_ref"));
    }
}
