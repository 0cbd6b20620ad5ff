//! The Phoenix wire format as realtime-js 2.x reads and writes it: client frames in, server
//! frames out, for both protocol versions the `vsn` query parameter selects.
//!
//! This module is pure (no I/O): [`super::connection`] hands it every WebSocket message it reads
//! and sends what it builds, and the relays (broadcast, presence, postgres_changes) use it to
//! encode a message **once** per wire format and topic and share the resulting [`Bytes`] with
//! every subscriber; the fanout never does per-subscriber JSON work.
//!
//! # What goes over the wire
//!
//! * `vsn=1.0.0` ([`Vsn::V1`], Phoenix' default when `vsn` is absent): text frames holding one
//!   JSON object `{"topic", "event", "payload", "ref", "join_ref"}` in both directions.
//! * `vsn=2.0.0` ([`Vsn::V2`], realtime-js' default): text frames holding a JSON array
//!   `[join_ref, ref, topic, event, payload]`, plus two binary frames for broadcasts, from
//!   realtime-js' `lib/serializer.js`:
//!   * client → server, kind 3 (`userBroadcastPush`): `[3, join_ref len, ref len, topic len,
//!     user event len, metadata len, payload encoding]` then those five UTF-8 strings, then the
//!     payload (encoding 0: raw bytes, 1: JSON text). realtime-js 2.119 sends *every* broadcast
//!     whose `event` is a string this way, JSON ones included. Absent refs are empty strings.
//!   * server → client, kind 4 (`userBroadcast`): `[4, topic len, user event len, metadata len,
//!     payload encoding]` then topic, user event, metadata, payload. The client turns it into
//!     the message `{topic, event: "broadcast", payload: {type: "broadcast", event, payload,
//!     meta?}}` with null refs.
//!
//! Every header length is one byte, so a topic, user event or metadata longer than 255 bytes
//! cannot be sent as kind 4: [`user_broadcast`] then falls back to the JSON array form.
//!
//! # Broadcasts, uniformly
//!
//! A client broadcast arrives either as a kind-3 binary frame or as a text frame whose payload is
//! `{type: "broadcast", event, payload}`. Both decode to [`Payload::Broadcast`], whose
//! [`BroadcastPayload`] keeps the user payload as the client's own bytes (JSON text, never
//! re-serialized, so big numbers keep their digits; or raw bytes), which is also what the broker
//! carries and what [`user_broadcast`] encodes from.
//!
//! # Errors
//!
//! Decoding never panics, whatever the input. A [`FrameError`] says precisely what is wrong in
//! words a client developer can act on: the gateway sends it back in a `phx_reply` error.

use crate::envelope::BroadcastPayload;
use crate::json_write::{is_json, write_optional_str, write_str, write_value};
use crate::outbox::OutFrame;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// Binary frame kind of a client broadcast (realtime-js `KINDS.userBroadcastPush`).
pub const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Binary frame kind of a server broadcast (realtime-js `KINDS.userBroadcast`).
pub const KIND_USER_BROADCAST: u8 = 4;
/// Payload encoding byte: the payload is raw bytes.
pub const ENCODING_BINARY: u8 = 0;
/// Payload encoding byte: the payload is JSON text.
pub const ENCODING_JSON: u8 = 1;
/// Longest topic, event, ref or metadata a binary header can describe (one length byte).
pub const MAX_BINARY_FIELD: usize = 255;
/// Header bytes of a kind-3 frame before its strings.
const PUSH_HEADER: usize = 7;
/// Keys of a text broadcast that are frame metadata rather than user payload (realtime-js
/// `Serializer.DEFAULT_METADATA_KEYS`); a kind-3 frame carries them in its metadata field.
pub const METADATA_KEYS: &[&str] = &["persist"];

/// The protocol version of a connection, from its `vsn` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `1.0.0`: JSON objects.
    V1,
    /// `2.0.0`: JSON arrays and binary broadcast frames.
    V2,
}

/// A `vsn` this server does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported protocol version vsn={0:?}: use vsn=1.0.0 (JSON objects) or vsn=2.0.0 (JSON \
     arrays and binary broadcasts)"
)]
pub struct UnsupportedVsn(pub String);

impl Vsn {
    /// The version a `vsn` query parameter asks for. Absent means `1.0.0`, as on a Phoenix
    /// server; like Phoenix' `~> 1.0.0` / `~> 2.0.0` requirements, any patch release matches.
    pub fn parse(param: Option<&str>) -> Result<Vsn, UnsupportedVsn> {
        let Some(text) = param else {
            return Ok(Vsn::V1);
        };
        let patch = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
        match (text.strip_prefix("1.0."), text.strip_prefix("2.0.")) {
            (Some(rest), _) if patch(rest) => Ok(Vsn::V1),
            (_, Some(rest)) if patch(rest) => Ok(Vsn::V2),
            _ => Err(UnsupportedVsn(text.to_string())),
        }
    }

    /// The canonical text form, `1.0.0` or `2.0.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFrame {
    /// The ref of the join this frame belongs to; `None` when null, absent or empty.
    pub join_ref: Option<String>,
    /// The frame's own ref, echoed in the reply; `None` when null, absent or empty.
    pub ref_: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Payload,
}

/// The payload of a client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Any frame but a well-formed broadcast: the payload as JSON (`Null` when absent).
    Json(Value),
    /// A broadcast (event `broadcast`), from a kind-3 binary frame or from a text frame whose
    /// payload is `{"type": "broadcast", "event": <string>, "payload": ...}`.
    Broadcast {
        /// The user's event name (`channel.send({event})`).
        event: String,
        /// The user's payload, as sent (`{}` when a text broadcast has none).
        data: BroadcastPayload,
        /// Frame metadata: a kind-3 frame's metadata JSON, or the [`METADATA_KEYS`] of a text
        /// broadcast; `None` when there is none.
        meta: Option<Value>,
    },
}

/// Why a client frame could not be decoded. The text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error(
        "with vsn=1.0.0 a message is a JSON object {{\"topic\", \"event\", \"payload\", \"ref\", \
         \"join_ref\"}}, not {found}{hint}"
    )]
    NotObject {
        found: &'static str,
        hint: &'static str,
    },
    #[error(
        "with vsn=2.0.0 a message is a JSON array [join_ref, ref, topic, event, payload], not \
         {found}{hint}"
    )]
    NotArray {
        found: &'static str,
        hint: &'static str,
    },
    #[error(
        "a vsn=2.0.0 message has exactly 5 elements [join_ref, ref, topic, event, payload], \
         this one has {0}"
    )]
    Arity(usize),
    #[error("`{field}` must be {expected}, not {found}")]
    FieldType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{0}` is missing")]
    MissingField(&'static str),
    #[error("`{0}` must not be empty")]
    EmptyField(&'static str),
    #[error("binary frames need vsn=2.0.0; with vsn=1.0.0 send JSON text")]
    BinaryNeedsV2,
    #[error(
        "unknown binary frame kind {0}: a client may only send kind 3 (a broadcast, as \
         realtime-js encodes it)"
    )]
    UnknownKind(u8),
    #[error("binary frame truncated: its header needs {needed} bytes, the frame has {len}")]
    Truncated { needed: usize, len: usize },
    #[error(
        "binary frame truncated: the header gives `{field}` {len} bytes but only {available} \
         remain"
    )]
    PastEnd {
        field: &'static str,
        len: usize,
        available: usize,
    },
    #[error("`{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("unknown payload encoding {0} in a binary frame: 0 is binary, 1 is JSON")]
    UnknownEncoding(u8),
    #[error("`{field}` is not valid JSON: {reason}")]
    InvalidJson { field: &'static str, reason: String },
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes a text frame of a `vsn` connection.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<InFrame, FrameError> {
    let text = crate::json_input::prepare(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let raw: &RawValue =
        serde_json::from_str(&text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let found = json_kind(raw);
    match vsn {
        Vsn::V1 => {
            if found != "an object" {
                let hint = if found == "an array" {
                    " (is the client using vsn=2.0.0?)"
                } else {
                    ""
                };
                return Err(FrameError::NotObject { found, hint });
            }
            let fields: BTreeMap<String, &RawValue> =
                serde_json::from_str(raw.get()).map_err(|e| FrameError::NotJson(e.to_string()))?;
            let field = |name: &str| fields.get(name).copied();
            let join_ref = optional_string(field("join_ref"), "join_ref")?;
            let ref_ = optional_string(field("ref"), "ref")?;
            let topic = required_string(field("topic"), "topic")?;
            let event = required_string(field("event"), "event")?;
            let payload = payload_of(&event, field("payload"))?;
            Ok(InFrame {
                join_ref,
                ref_,
                topic,
                event,
                payload,
            })
        }
        Vsn::V2 => {
            if found != "an array" {
                let hint = if found == "an object" {
                    " (is the client using vsn=1.0.0?)"
                } else {
                    ""
                };
                return Err(FrameError::NotArray { found, hint });
            }
            let elements: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|e| FrameError::NotJson(e.to_string()))?;
            let [join_ref, ref_, topic, event, payload] = elements[..] else {
                return Err(FrameError::Arity(elements.len()));
            };
            let join_ref = optional_string(Some(join_ref), "join_ref")?;
            let ref_ = optional_string(Some(ref_), "ref")?;
            let topic = required_string(Some(topic), "topic")?;
            let event = required_string(Some(event), "event")?;
            let payload = payload_of(&event, Some(payload))?;
            Ok(InFrame {
                join_ref,
                ref_,
                topic,
                event,
                payload,
            })
        }
    }
}

/// Decodes a binary frame: only a kind-3 broadcast of a `vsn=2.0.0` connection is one.
pub fn decode_binary(vsn: Vsn, frame: &[u8]) -> Result<InFrame, FrameError> {
    if vsn == Vsn::V1 {
        return Err(FrameError::BinaryNeedsV2);
    }
    let Some(&kind) = frame.first() else {
        return Err(FrameError::Truncated {
            needed: PUSH_HEADER,
            len: 0,
        });
    };
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(FrameError::UnknownKind(kind));
    }
    let Some(header) = frame.get(..PUSH_HEADER) else {
        return Err(FrameError::Truncated {
            needed: PUSH_HEADER,
            len: frame.len(),
        });
    };
    let encoding = header[6];
    if encoding != ENCODING_BINARY && encoding != ENCODING_JSON {
        return Err(FrameError::UnknownEncoding(encoding));
    }
    let mut rest = &frame[PUSH_HEADER..];
    let mut take = |field: &'static str, len: u8| -> Result<&str, FrameError> {
        let len = usize::from(len);
        if rest.len() < len {
            return Err(FrameError::PastEnd {
                field,
                len,
                available: rest.len(),
            });
        }
        let (bytes, tail) = rest.split_at(len);
        rest = tail;
        std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidUtf8(field))
    };
    let join_ref = take("join_ref", header[1])?;
    let ref_ = take("ref", header[2])?;
    let topic = take("topic", header[3])?;
    let event = take("event", header[4])?;
    let metadata = take("metadata", header[5])?;
    if topic.is_empty() {
        return Err(FrameError::EmptyField("topic"));
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Value>(metadata).map_err(|e| FrameError::InvalidJson {
                field: "metadata",
                reason: e.to_string(),
            })?,
        )
    };
    let data = if encoding == ENCODING_JSON {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(rest) {
            return Err(FrameError::InvalidJson {
                field: "payload",
                reason: e.to_string(),
            });
        }
        BroadcastPayload::Json(Bytes::copy_from_slice(rest))
    } else {
        BroadcastPayload::Binary(Bytes::copy_from_slice(rest))
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(InFrame {
        join_ref: non_empty(join_ref),
        ref_: non_empty(ref_),
        topic: topic.to_string(),
        event: "broadcast".to_string(),
        payload: Payload::Broadcast {
            event: event.to_string(),
            data,
            meta,
        },
    })
}

/// What kind of JSON value this is, for error messages.
fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().bytes().next() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn optional_string(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<String>, FrameError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match json_kind(raw) {
        "null" => Ok(None),
        "a string" => {
            let text: String =
                serde_json::from_str(raw.get()).map_err(|e| FrameError::NotJson(e.to_string()))?;
            Ok((!text.is_empty()).then_some(text))
        }
        found => Err(FrameError::FieldType {
            field,
            expected: "a string or null",
            found,
        }),
    }
}

fn required_string(raw: Option<&RawValue>, field: &'static str) -> Result<String, FrameError> {
    let raw = raw.ok_or(FrameError::MissingField(field))?;
    match json_kind(raw) {
        "a string" => {
            let text: String =
                serde_json::from_str(raw.get()).map_err(|e| FrameError::NotJson(e.to_string()))?;
            if text.is_empty() {
                return Err(FrameError::EmptyField(field));
            }
            Ok(text)
        }
        found => Err(FrameError::FieldType {
            field,
            expected: "a string",
            found,
        }),
    }
}

/// The payload of a text frame: a broadcast when it is one, else its JSON.
fn payload_of(event: &str, raw: Option<&RawValue>) -> Result<Payload, FrameError> {
    let Some(raw) = raw else {
        return Ok(Payload::Json(Value::Null));
    };
    if event == "broadcast" {
        if let Some(broadcast) = text_broadcast(raw) {
            return Ok(broadcast);
        }
    }
    serde_json::from_str(raw.get())
        .map(Payload::Json)
        .map_err(|e| FrameError::InvalidJson {
            field: "payload",
            reason: e.to_string(),
        })
}

/// `{"type": "broadcast", "event": <string>, "payload": ...}` as a [`Payload::Broadcast`] that
/// keeps the user payload's own bytes; `None` for anything else (left to the caller as JSON).
fn text_broadcast(raw: &RawValue) -> Option<Payload> {
    if json_kind(raw) != "an object" {
        return None;
    }
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
    let string = |key: &str| -> Option<Option<String>> {
        match fields.get(key) {
            None => Some(None),
            Some(value) if json_kind(value) == "a string" => {
                serde_json::from_str(value.get()).ok().map(Some)
            }
            Some(_) => None,
        }
    };
    if !matches!(string("type")?.as_deref(), None | Some("broadcast")) {
        return None;
    }
    let event = string("event")??;
    let data = match fields.get("payload") {
        Some(payload) => Bytes::copy_from_slice(payload.get().as_bytes()),
        None => Bytes::from_static(b"{}"),
    };
    let mut meta = serde_json::Map::new();
    for key in METADATA_KEYS {
        if let Some(value) = fields.get(*key) {
            meta.insert(key.to_string(), serde_json::from_str(value.get()).ok()?);
        }
    }
    Some(Payload::Broadcast {
        event,
        data: BroadcastPayload::Json(data),
        meta: (!meta.is_empty()).then_some(Value::Object(meta)),
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// A `phx_reply` to a client frame: payload `{"status": status, "response": response}` with the
/// frame's refs echoed (heartbeat replies, join/leave replies, acks, errors).
pub fn reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    status: &str,
    response: &Value,
) -> OutFrame {
    text_frame(vsn, join_ref, ref_, topic, "phx_reply", 64, |out| {
        out.extend_from_slice(b"{\"status\":");
        write_str(out, status);
        out.extend_from_slice(b",\"response\":");
        write_value(out, response);
        out.push(b'}');
    })
}

/// A server push (ref null): `postgres_changes`, `presence_state`, `presence_diff`, `system`,
/// `phx_close` (payload `{}`), `phx_error`. The payload is embedded as it is, never re-parsed,
/// so a change event that arrived as JSON bytes is wrapped with one copy.
pub fn push(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &RawValue,
) -> OutFrame {
    let json = payload.get();
    text_frame(vsn, join_ref, None, topic, event, json.len(), |out| {
        out.extend_from_slice(json.as_bytes())
    })
}

/// A broadcast to a subscriber of `topic`, as realtime-js expects it on `vsn`:
///
/// * `V2`: the binary kind-4 frame; when the topic, the event or the metadata JSON is longer
///   than 255 bytes (a header length is one byte), the text frame
///   `[null, null, topic, "broadcast", {"type": "broadcast", "event", "payload", "meta"?}]`
///   instead.
/// * `V1`: the text frame `{"topic", "event": "broadcast", "payload": {"type": "broadcast",
///   "event", "payload", "meta"?}, "ref": null, "join_ref": null}`.
///
/// `meta` is included when given (V2 clients see it as `payload.meta` either way).
///
/// Returns `None` when the broadcast cannot be delivered in that form: a binary payload to a
/// V1 client (JSON has no bytes type; realtime-js V1 cannot receive binary broadcasts), or to a
/// V2 client when a field is too long for the binary header; or a [`BroadcastPayload::Json`]
/// that is not valid JSON (never the case for payloads [`decode_text`] / [`decode_binary`] or
/// the REST endpoint produced, which validate it). The check is one pass over the payload, done
/// once per frame, not per subscriber.
pub fn user_broadcast(
    vsn: Vsn,
    topic: &str,
    user_event: &str,
    payload: &BroadcastPayload,
    meta: Option<&Value>,
) -> Option<OutFrame> {
    if let BroadcastPayload::Json(json) = payload {
        if !is_json(json) {
            return None;
        }
    }
    let metadata = meta.map(|m| serde_json::to_vec(m).unwrap_or_default());
    let metadata = metadata.as_deref().unwrap_or_default();
    let fits = |len: usize| len <= MAX_BINARY_FIELD;
    if vsn == Vsn::V2 && fits(topic.len()) && fits(user_event.len()) && fits(metadata.len()) {
        let (encoding, body) = match payload {
            BroadcastPayload::Json(json) => (ENCODING_JSON, json),
            BroadcastPayload::Binary(bytes) => (ENCODING_BINARY, bytes),
        };
        let mut out = BytesMut::with_capacity(
            5 + topic.len() + user_event.len() + metadata.len() + body.len(),
        );
        // The lengths fit a byte: checked just above.
        out.put_u8(KIND_USER_BROADCAST);
        out.put_u8(topic.len() as u8);
        out.put_u8(user_event.len() as u8);
        out.put_u8(metadata.len() as u8);
        out.put_u8(encoding);
        out.put_slice(topic.as_bytes());
        out.put_slice(user_event.as_bytes());
        out.put_slice(metadata);
        out.put_slice(body);
        return Some(OutFrame::Binary(out.freeze()));
    }
    let BroadcastPayload::Json(json) = payload else {
        return None;
    };
    let extra = user_event.len() + metadata.len() + json.len() + 64;
    Some(text_frame(
        vsn,
        None,
        None,
        topic,
        "broadcast",
        extra,
        |out| {
            out.extend_from_slice(b"{\"type\":\"broadcast\",\"event\":");
            write_str(out, user_event);
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(json);
            if !metadata.is_empty() {
                out.extend_from_slice(b",\"meta\":");
                out.extend_from_slice(metadata);
            }
            out.push(b'}');
        },
    ))
}

/// A text frame: V1 `{"topic","event","payload","ref","join_ref"}`, V2 `[join_ref, ref, topic,
/// event, payload]`. `payload` writes valid JSON; `extra` is its expected size.
fn text_frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    event: &str,
    extra: usize,
    payload: impl FnOnce(&mut Vec<u8>),
) -> OutFrame {
    let refs = join_ref.map_or(4, str::len) + ref_.map_or(4, str::len);
    let mut out = Vec::with_capacity(64 + refs + topic.len() + event.len() + extra);
    match vsn {
        Vsn::V1 => {
            out.extend_from_slice(b"{\"topic\":");
            write_str(&mut out, topic);
            out.extend_from_slice(b",\"event\":");
            write_str(&mut out, event);
            out.extend_from_slice(b",\"payload\":");
            payload(&mut out);
            out.extend_from_slice(b",\"ref\":");
            write_optional_str(&mut out, ref_);
            out.extend_from_slice(b",\"join_ref\":");
            write_optional_str(&mut out, join_ref);
            out.push(b'}');
        }
        Vsn::V2 => {
            out.push(b'[');
            write_optional_str(&mut out, join_ref);
            out.push(b',');
            write_optional_str(&mut out, ref_);
            out.push(b',');
            write_str(&mut out, topic);
            out.push(b',');
            write_str(&mut out, event);
            out.push(b',');
            payload(&mut out);
            out.push(b']');
        }
    }
    OutFrame::Text(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- realtime-js, ported line by line -----------------------------------------------------

    /// `Serializer._encodeUserBroadcastPush` (lib/serializer.js): what realtime-js sends for
    /// `channel.send({type: "broadcast", event, payload})` on vsn 2.0.0. `metadata` is the
    /// already-stringified picked keys ('' when none).
    fn js_encode_user_broadcast_push(
        join_ref: Option<&str>,
        ref_: Option<&str>,
        topic: &str,
        user_event: &str,
        metadata: &str,
        encoding: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        // TextEncoder: UTF-8 bytes; lengths are byte counts.
        let join_ref = join_ref.unwrap_or("").as_bytes();
        let ref_ = ref_.unwrap_or("").as_bytes();
        let topic = topic.as_bytes();
        let user_event = user_event.as_bytes();
        let metadata = metadata.as_bytes();
        for len in [
            join_ref.len(),
            ref_.len(),
            topic.len(),
            user_event.len(),
            metadata.len(),
        ] {
            assert!(len <= 255, "realtime-js throws here");
        }
        let mut out = vec![
            3,
            join_ref.len() as u8,
            ref_.len() as u8,
            topic.len() as u8,
            user_event.len() as u8,
            metadata.len() as u8,
            encoding,
        ];
        for field in [join_ref, ref_, topic, user_event, metadata] {
            out.extend_from_slice(field);
        }
        out.extend_from_slice(payload);
        out
    }

    /// What realtime-js' `Serializer._decodeUserBroadcast` makes of a kind-4 frame: the
    /// message `{join_ref, ref, topic, event, payload}` as JSON (binary payloads as an array of
    /// byte values, standing in for the ArrayBuffer).
    fn js_decode_user_broadcast(buffer: &[u8]) -> Value {
        assert_eq!(buffer[0], 4, "realtime-js only decodes kind 4");
        let topic_size = usize::from(buffer[1]);
        let user_event_size = usize::from(buffer[2]);
        let metadata_size = usize::from(buffer[3]);
        let payload_encoding = buffer[4];
        let mut offset = 1 + 4;
        let decode = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let topic = decode(&buffer[offset..offset + topic_size]);
        offset += topic_size;
        let user_event = decode(&buffer[offset..offset + user_event_size]);
        offset += user_event_size;
        let metadata = decode(&buffer[offset..offset + metadata_size]);
        offset += metadata_size;
        let payload = &buffer[offset..];
        let parsed: Value = if payload_encoding == 1 {
            serde_json::from_str(&decode(payload)).unwrap()
        } else {
            Value::from(payload.to_vec())
        };
        let mut data = json!({"type": "broadcast", "event": user_event, "payload": parsed});
        if metadata_size > 0 {
            data["meta"] = serde_json::from_str(&metadata).unwrap();
        }
        json!({"join_ref": null, "ref": null, "topic": topic, "event": "broadcast", "payload": data})
    }

    /// What realtime-js makes of a text frame on `vsn`: the message as JSON.
    fn js_decode_text(vsn: Vsn, frame: &OutFrame) -> Value {
        let OutFrame::Text(bytes) = frame else {
            panic!("expected a text frame, got {frame:?}");
        };
        let text = std::str::from_utf8(bytes).expect("text frames are UTF-8");
        let value: Value = serde_json::from_str(text).unwrap();
        match vsn {
            Vsn::V1 => value,
            Vsn::V2 => {
                let [join_ref, ref_, topic, event, payload] = value.as_array().unwrap().as_slice()
                else {
                    panic!("not 5 elements: {text}")
                };
                json!({"join_ref": join_ref, "ref": ref_, "topic": topic, "event": event, "payload": payload})
            }
        }
    }

    fn text(frame: &OutFrame) -> &str {
        match frame {
            OutFrame::Text(bytes) => std::str::from_utf8(bytes).unwrap(),
            OutFrame::Binary(_) => panic!("expected a text frame"),
        }
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    // --- vsn ------------------------------------------------------------------------------------

    #[test]
    fn vsn_defaults_to_v1_and_rejects_unknown_versions() {
        assert_eq!(Vsn::parse(None), Ok(Vsn::V1));
        assert_eq!(Vsn::parse(Some("1.0.0")), Ok(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Ok(Vsn::V2));
        assert_eq!(Vsn::parse(Some("2.0.12")), Ok(Vsn::V2));
        for bad in [
            "",
            "2",
            "2.0",
            "2.0.",
            "2.1.0",
            "3.0.0",
            "2.0.0-rc1",
            " 2.0.0",
            "v2.0.0",
        ] {
            let e = Vsn::parse(Some(bad)).unwrap_err();
            assert_eq!(e.0, bad);
            assert!(e.to_string().contains("use vsn=1.0.0"), "{e}");
        }
        assert_eq!(Vsn::V1.as_str(), "1.0.0");
        assert_eq!(Vsn::V2.as_str(), "2.0.0");
    }

    // --- decoding text ----------------------------------------------------------------------------

    #[test]
    fn v1_objects_decode() {
        let frame = decode_text(
            Vsn::V1,
            r#"{"topic":"realtime:room","event":"phx_join","payload":{"config":{"private":false}},"ref":"1","join_ref":"1"}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            InFrame {
                join_ref: Some("1".into()),
                ref_: Some("1".into()),
                topic: "realtime:room".into(),
                event: "phx_join".into(),
                payload: Payload::Json(json!({"config": {"private": false}})),
            }
        );
        // JSON.stringify drops undefined refs; null refs and a missing payload are fine too.
        let heartbeat = decode_text(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"5"}"#,
        )
        .unwrap();
        assert_eq!(heartbeat.join_ref, None);
        assert_eq!(heartbeat.ref_.as_deref(), Some("5"));
        let bare = decode_text(
            Vsn::V1,
            r#"{"topic":"t","event":"e","ref":null,"join_ref":null}"#,
        )
        .unwrap();
        assert_eq!((bare.ref_, bare.join_ref), (None, None));
        assert_eq!(bare.payload, Payload::Json(Value::Null));
        // Unknown keys are ignored; key order does not matter.
        let reordered = decode_text(
            Vsn::V1,
            r#" {"x":1,"payload":[1],"event":"e","topic":"t","ref":""} "#,
        )
        .unwrap();
        assert_eq!(reordered.payload, Payload::Json(json!([1])));
        assert_eq!(reordered.ref_, None, "an empty ref is no ref");
    }

    #[test]
    fn v2_arrays_decode() {
        let frame = decode_text(
            Vsn::V2,
            r#"["3","4","realtime:room","presence",{"type":"presence","event":"track","payload":{"a":1}}]"#,
        )
        .unwrap();
        assert_eq!(frame.join_ref.as_deref(), Some("3"));
        assert_eq!(frame.ref_.as_deref(), Some("4"));
        assert_eq!(frame.topic, "realtime:room");
        assert_eq!(frame.event, "presence");
        assert_eq!(
            frame.payload,
            Payload::Json(json!({"type":"presence","event":"track","payload":{"a":1}}))
        );
        let heartbeat = decode_text(Vsn::V2, r#"[null,"7","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(heartbeat.join_ref, None);
        assert_eq!(heartbeat.ref_.as_deref(), Some("7"));
        assert_eq!(heartbeat.payload, Payload::Json(json!({})));
        let null_payload = decode_text(Vsn::V2, r#"[null,null,"t","e",null]"#).unwrap();
        assert_eq!(null_payload.payload, Payload::Json(Value::Null));
    }

    #[test]
    fn text_errors_are_specific() {
        let err = |vsn, text: &str| decode_text(vsn, text).unwrap_err();
        assert!(matches!(err(Vsn::V1, "{"), FrameError::NotJson(_)));
        assert!(matches!(err(Vsn::V2, ""), FrameError::NotJson(_)));
        assert!(matches!(err(Vsn::V2, "[1] x"), FrameError::NotJson(_)));
        assert_eq!(
            err(Vsn::V1, r#"[null,null,"t","e",{}]"#),
            FrameError::NotObject {
                found: "an array",
                hint: " (is the client using vsn=2.0.0?)"
            }
        );
        assert_eq!(
            err(Vsn::V2, r#"{"topic":"t"}"#).to_string(),
            "with vsn=2.0.0 a message is a JSON array [join_ref, ref, topic, event, payload], \
             not an object (is the client using vsn=1.0.0?)"
        );
        assert!(matches!(
            err(Vsn::V2, "42"),
            FrameError::NotArray {
                found: "a number",
                ..
            }
        ));
        assert!(matches!(
            err(Vsn::V1, "\"x\""),
            FrameError::NotObject {
                found: "a string",
                ..
            }
        ));
        assert_eq!(err(Vsn::V2, r#"[null,null,"t","e"]"#), FrameError::Arity(4));
        assert_eq!(
            err(Vsn::V2, r#"[null,null,"t","e",{},1]"#),
            FrameError::Arity(6)
        );
        assert_eq!(err(Vsn::V2, "[]"), FrameError::Arity(0));
        assert_eq!(
            err(Vsn::V2, r#"[null,1,"t","e",{}]"#),
            FrameError::FieldType {
                field: "ref",
                expected: "a string or null",
                found: "a number"
            }
        );
        assert_eq!(
            err(Vsn::V2, r#"[{},null,"t","e",{}]"#).to_string(),
            "`join_ref` must be a string or null, not an object"
        );
        assert_eq!(
            err(Vsn::V2, r#"[null,null,null,"e",{}]"#).to_string(),
            "`topic` must be a string, not null"
        );
        assert_eq!(
            err(Vsn::V2, r#"[null,null,"t",true,{}]"#),
            FrameError::FieldType {
                field: "event",
                expected: "a string",
                found: "a boolean"
            }
        );
        assert_eq!(
            err(Vsn::V2, r#"[null,null,"","e",{}]"#),
            FrameError::EmptyField("topic")
        );
        assert_eq!(
            err(Vsn::V1, r#"{"event":"e"}"#),
            FrameError::MissingField("topic")
        );
        assert_eq!(
            err(Vsn::V1, r#"{"topic":"t"}"#).to_string(),
            "`event` is missing"
        );
        assert_eq!(
            err(Vsn::V1, r#"{"topic":"t","event":""}"#).to_string(),
            "`event` must not be empty"
        );
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(
            "[null,null,\"t\",\"e\",{}{}]",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = err(Vsn::V2, &deep);
        assert!(e.to_string().contains("nested deeper than 128"), "{e}");
    }

    #[test]
    fn text_broadcasts_decode_as_broadcasts_with_the_senders_bytes() {
        // Big numbers keep their digits: the payload is never re-serialized.
        let payload = r#"{"n":12345678901234567890123, "x" : [1.10]}"#;
        for (vsn, frame) in [
            (
                Vsn::V2,
                format!(
                    r#"["1","2","realtime:room","broadcast",{{"type":"broadcast","event":"cursor","payload":{payload}}}]"#
                ),
            ),
            (
                Vsn::V1,
                format!(
                    r#"{{"topic":"realtime:room","event":"broadcast","payload":{{"type":"broadcast","event":"cursor","payload":{payload}}},"ref":"2","join_ref":"1"}}"#
                ),
            ),
        ] {
            let decoded = decode_text(vsn, &frame).unwrap();
            assert_eq!(decoded.event, "broadcast");
            assert_eq!(decoded.ref_.as_deref(), Some("2"));
            assert_eq!(
                decoded.payload,
                Payload::Broadcast {
                    event: "cursor".into(),
                    data: BroadcastPayload::Json(Bytes::from(payload)),
                    meta: None,
                }
            );
        }
        // No `type` is fine; `persist` is metadata; a missing payload is `{}`.
        let decoded = decode_text(
            Vsn::V2,
            r#"[null,"2","t","broadcast",{"event":"e","persist":true,"other":1}]"#,
        )
        .unwrap();
        assert_eq!(
            decoded.payload,
            Payload::Broadcast {
                event: "e".into(),
                data: BroadcastPayload::Json(Bytes::from_static(b"{}")),
                meta: Some(json!({"persist": true})),
            }
        );
        // Not a well-formed broadcast: left as JSON for the channel to refuse.
        for payload in [
            r#"{"type":"broadcast","event":1,"payload":{}}"#,
            r#"{"type":"presence","event":"e","payload":{}}"#,
            r#"{"type":"broadcast","payload":{}}"#,
            r#"[1]"#,
            r#""x""#,
        ] {
            let frame = format!(r#"[null,"2","t","broadcast",{payload}]"#);
            let decoded = decode_text(Vsn::V2, &frame).unwrap();
            let expected: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(decoded.payload, Payload::Json(expected), "{payload}");
        }
        // Other events never become broadcasts.
        let other = decode_text(Vsn::V2, r#"[null,"2","t","presence",{"event":"e"}]"#).unwrap();
        assert_eq!(other.payload, Payload::Json(json!({"event": "e"})));
    }

    // --- decoding binary --------------------------------------------------------------------------

    #[test]
    fn kind_3_frames_decode_as_realtime_js_encodes_them() {
        // channel.send({type: 'broadcast', event: 'cursor', payload: {x: 1}}) on a joined channel
        let frame = js_encode_user_broadcast_push(
            Some("1"),
            Some("2"),
            "realtime:room",
            "cursor",
            "",
            ENCODING_JSON,
            br#"{"x":1}"#,
        );
        assert_eq!(
            &frame[..7],
            &[3, 1, 1, 13, 6, 0, 1],
            "kind, join_ref, ref, topic, event, metadata lengths, encoding"
        );
        let decoded = decode_binary(Vsn::V2, &frame).unwrap();
        assert_eq!(
            decoded,
            InFrame {
                join_ref: Some("1".into()),
                ref_: Some("2".into()),
                topic: "realtime:room".into(),
                event: "broadcast".into(),
                payload: Payload::Broadcast {
                    event: "cursor".into(),
                    data: BroadcastPayload::Json(Bytes::from_static(br#"{"x":1}"#)),
                    meta: None,
                },
            }
        );

        // Multi-byte UTF-8 everywhere, a binary payload, `persist` metadata, no refs.
        let topic = "realtime:café-🚀";
        let event = "ñandú";
        let bytes = [0u8, 255, 128, 10];
        let frame = js_encode_user_broadcast_push(
            None,
            None,
            topic,
            event,
            r#"{"persist":true}"#,
            ENCODING_BINARY,
            &bytes,
        );
        assert_eq!(frame[3] as usize, topic.len());
        assert_eq!(topic.len(), 19, "byte length, not UTF-16 length");
        let decoded = decode_binary(Vsn::V2, &frame).unwrap();
        assert_eq!((decoded.join_ref, decoded.ref_), (None, None));
        assert_eq!(decoded.topic, topic);
        assert_eq!(
            decoded.payload,
            Payload::Broadcast {
                event: event.into(),
                data: BroadcastPayload::Binary(Bytes::copy_from_slice(&bytes)),
                meta: Some(json!({"persist": true})),
            }
        );

        // An empty binary payload (`payload ?? new ArrayBuffer(0)`) and an empty event name.
        let frame = js_encode_user_broadcast_push(Some("9"), Some("10"), "t", "", "", 0, b"");
        let decoded = decode_binary(Vsn::V2, &frame).unwrap();
        assert_eq!(
            decoded.payload,
            Payload::Broadcast {
                event: String::new(),
                data: BroadcastPayload::Binary(Bytes::new()),
                meta: None
            }
        );
    }

    #[test]
    fn binary_errors_are_specific() {
        let good = js_encode_user_broadcast_push(
            Some("1"),
            Some("2"),
            "room",
            "ev",
            r#"{"persist":false}"#,
            ENCODING_JSON,
            b"[1,2]",
        );
        assert!(decode_binary(Vsn::V2, &good).is_ok());
        assert_eq!(
            decode_binary(Vsn::V1, &good),
            Err(FrameError::BinaryNeedsV2)
        );
        assert_eq!(
            decode_binary(Vsn::V2, &[]),
            Err(FrameError::Truncated { needed: 7, len: 0 })
        );
        assert_eq!(
            decode_binary(Vsn::V2, &good[..4]),
            Err(FrameError::Truncated { needed: 7, len: 4 })
        );
        for kind in [0u8, 1, 2, 4, 5, 255] {
            let mut frame = good.clone();
            frame[0] = kind;
            assert_eq!(
                decode_binary(Vsn::V2, &frame),
                Err(FrameError::UnknownKind(kind))
            );
        }
        let mut frame = good.clone();
        frame[6] = 2;
        assert_eq!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::UnknownEncoding(2))
        );
        // Each length past the end names its field.
        for (index, field) in [
            (1, "join_ref"),
            (2, "ref"),
            (3, "topic"),
            (4, "event"),
            (5, "metadata"),
        ] {
            let mut frame = good[..7].to_vec();
            frame[index] = 200;
            frame.extend_from_slice(&[b'a'; 50]);
            match decode_binary(Vsn::V2, &frame) {
                Err(FrameError::PastEnd {
                    field: f, len: 200, ..
                }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut frame = js_encode_user_broadcast_push(None, None, "ab", "e", "", 1, b"{}");
        frame[7] = 0xff;
        assert_eq!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::InvalidUtf8("topic"))
        );
        let frame = js_encode_user_broadcast_push(None, None, "t", "e", "", 1, b"{x}");
        assert!(matches!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::InvalidJson {
                field: "payload",
                ..
            })
        ));
        let frame = js_encode_user_broadcast_push(None, None, "t", "e", "", 1, b"");
        assert!(matches!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::InvalidJson {
                field: "payload",
                ..
            })
        ));
        let frame = js_encode_user_broadcast_push(None, None, "t", "e", "{", 1, b"{}");
        assert!(matches!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::InvalidJson {
                field: "metadata",
                ..
            })
        ));
        let frame = js_encode_user_broadcast_push(None, None, "", "e", "", 1, b"{}");
        assert_eq!(
            decode_binary(Vsn::V2, &frame),
            Err(FrameError::EmptyField("topic"))
        );
        assert_eq!(
            FrameError::PastEnd {
                field: "topic",
                len: 9,
                available: 2
            }
            .to_string(),
            "binary frame truncated: the header gives `topic` 9 bytes but only 2 remain"
        );
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let binary = js_encode_user_broadcast_push(
            Some("12"),
            Some("13"),
            "realtime:café",
            "cursor",
            r#"{"persist":true}"#,
            ENCODING_JSON,
            br#"{"x":[1,2,3]}"#,
        );
        for end in 0..binary.len() {
            assert!(
                decode_binary(Vsn::V2, &binary[..end]).is_err(),
                "prefix {end}"
            );
        }
        assert!(decode_binary(Vsn::V2, &binary).is_ok());
        let texts = [
            r#"["1","2","realtime:café","broadcast",{"type":"broadcast","event":"é","payload":{"x":1}}]"#,
            r#"{"topic":"realtime:café","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}"#,
        ];
        for (vsn, text) in [(Vsn::V2, texts[0]), (Vsn::V1, texts[1])] {
            for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                assert!(decode_text(vsn, &text[..end]).is_err(), "prefix {end}");
            }
            assert!(decode_text(vsn, text).is_ok());
        }
    }

    /// xorshift64: deterministic random inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Random bytes, mostly with kind 3 and small lengths so the parser gets deep.
        for _ in 0..20_000 {
            let len = rng.below(48);
            let mut frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if !frame.is_empty() && rng.below(4) != 0 {
                frame[0] = 3;
                for b in frame.iter_mut().skip(1).take(5) {
                    *b %= 8;
                }
                if let Some(b) = frame.get_mut(6) {
                    *b %= 3;
                }
            }
            for vsn in [Vsn::V1, Vsn::V2] {
                let _ = decode_binary(vsn, &frame);
                if let Ok(text) = std::str::from_utf8(&frame) {
                    let _ = decode_text(vsn, text);
                }
            }
        }
        // Random strings from JSON-ish tokens, so many of them parse.
        let tokens = [
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "null",
            "\"t\"",
            "\"broadcast\"",
            "\"event\"",
            "\"payload\"",
            "\"type\"",
            "\"topic\"",
            "\"ref\"",
            "\"join_ref\"",
            "1",
            "-2.5e3",
            "true",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            " ",
            "\"",
            "\\",
            "é",
            "🚀",
        ];
        for _ in 0..20_000 {
            let count = rng.below(24);
            let soup: String = (0..count)
                .map(|_| tokens[rng.below(tokens.len())])
                .collect();
            // Bare, and inside valid frames so the field and payload checks get exercised.
            let texts = [
                format!(r#"[null,"1","t","broadcast",{soup}]"#),
                format!(r#"[{soup},"1","t","broadcast",{{"event":{soup}}}]"#),
                format!(
                    r#"{{"topic":"t","event":"broadcast","payload":{{"event":"e","payload":{soup}}}}}"#
                ),
                soup,
            ];
            for text in &texts {
                for vsn in [Vsn::V1, Vsn::V2] {
                    let _ = decode_text(vsn, text);
                }
            }
        }
        // And valid frames with random fields, which must decode.
        for _ in 0..2_000 {
            let field = |rng: &mut Rng| -> String {
                (0..rng.below(6))
                    .map(|_| tokens[rng.below(tokens.len())])
                    .collect()
            };
            let topic = format!("t{}", field(&mut rng));
            let event = field(&mut rng);
            let frame = js_encode_user_broadcast_push(
                Some(&field(&mut rng)),
                None,
                &topic,
                &event,
                "",
                0,
                field(&mut rng).as_bytes(),
            );
            let frame = decode_binary(Vsn::V2, &frame).unwrap();
            assert_eq!(frame.topic, topic);
            let text = serde_json::to_string(&json!([null, "1", topic, "broadcast", {"event": event, "payload": [field(&mut rng)]}])).unwrap();
            assert!(decode_text(Vsn::V2, &text).is_ok(), "{text}");
        }
    }

    // --- encoding ---------------------------------------------------------------------------------

    #[test]
    fn replies_have_the_phoenix_shapes() {
        let ok = reply(
            Vsn::V2,
            Some("1"),
            Some("2"),
            "realtime:room",
            "ok",
            &json!({}),
        );
        assert_eq!(
            text(&ok),
            r#"["1","2","realtime:room","phx_reply",{"status":"ok","response":{}}]"#
        );
        let ok = reply(
            Vsn::V1,
            Some("1"),
            Some("2"),
            "realtime:room",
            "ok",
            &json!({}),
        );
        assert_eq!(
            text(&ok),
            r#"{"topic":"realtime:room","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"2","join_ref":"1"}"#
        );
        let heartbeat = reply(Vsn::V2, None, Some("9"), "phoenix", "ok", &json!({}));
        assert_eq!(
            text(&heartbeat),
            r#"[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]"#
        );
        let error = reply(
            Vsn::V1,
            None,
            None,
            "phoenix",
            "error",
            &json!({"reason": "malformed message: \"quoted\"\n"}),
        );
        assert_eq!(
            text(&error),
            r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"error","response":{"reason":"malformed message: \"quoted\"\n"}},"ref":null,"join_ref":null}"#
        );
        // Escaping and non-ASCII in every string field.
        for vsn in [Vsn::V1, Vsn::V2] {
            let frame = reply(
                vsn,
                Some("a\"b"),
                Some("\\"),
                "realtime:café\u{1}",
                "ok",
                &json!([1]),
            );
            assert_eq!(
                js_decode_text(vsn, &frame),
                json!({"join_ref": "a\"b", "ref": "\\", "topic": "realtime:café\u{1}",
                       "event": "phx_reply", "payload": {"status": "ok", "response": [1]}})
            );
        }
    }

    #[test]
    fn pushes_embed_raw_json_as_is() {
        let payload = raw(r#"{"ids":[12,7],"data":{"n":12345678901234567890123,"s":"é"}}"#);
        let v2 = push(Vsn::V2, None, "realtime:db", "postgres_changes", &payload);
        assert_eq!(
            text(&v2),
            r#"[null,null,"realtime:db","postgres_changes",{"ids":[12,7],"data":{"n":12345678901234567890123,"s":"é"}}]"#
        );
        let v1 = push(
            Vsn::V1,
            Some("4"),
            "realtime:db",
            "postgres_changes",
            &payload,
        );
        assert_eq!(
            text(&v1),
            r#"{"topic":"realtime:db","event":"postgres_changes","payload":{"ids":[12,7],"data":{"n":12345678901234567890123,"s":"é"}},"ref":null,"join_ref":"4"}"#
        );
        let close = push(Vsn::V2, Some("4"), "realtime:room", "phx_close", &raw("{}"));
        assert_eq!(text(&close), r#"["4",null,"realtime:room","phx_close",{}]"#);
        let error = push(Vsn::V1, Some("4"), "realtime:room", "phx_error", &raw("{}"));
        assert_eq!(
            js_decode_text(Vsn::V1, &error),
            json!({"topic": "realtime:room", "event": "phx_error", "payload": {}, "ref": null, "join_ref": "4"})
        );
        let system = serde_json::value::to_raw_value(
            &json!({"message": "Token has expired", "status": "error", "extension": "system", "channel": "room"}),
        )
        .unwrap();
        let frame = push(Vsn::V2, Some("4"), "realtime:room", "system", &system);
        assert_eq!(
            js_decode_text(Vsn::V2, &frame)["payload"]["message"],
            "Token has expired"
        );
        // A shared frame is one allocation whatever the number of clones.
        let copy = v2.clone();
        assert_eq!(copy.bytes().as_ptr(), v2.bytes().as_ptr());
        assert_eq!(copy.len(), text(&v2).len());
        assert!(!copy.is_empty());
    }

    #[test]
    fn v2_broadcasts_are_kind_4_frames() {
        let json_payload = BroadcastPayload::Json(Bytes::from_static(br#"{"a":1}"#));
        let frame = user_broadcast(Vsn::V2, "t", "e", &json_payload, None).unwrap();
        let mut expected = vec![4u8, 1, 1, 0, 1, b't', b'e'];
        expected.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(frame, OutFrame::Binary(Bytes::from(expected)));

        let meta = json!({"id": "6f1c"});
        let frame = user_broadcast(
            Vsn::V2,
            "realtime:café",
            "cursor",
            &json_payload,
            Some(&meta),
        )
        .unwrap();
        let OutFrame::Binary(bytes) = &frame else {
            panic!()
        };
        assert_eq!(&bytes[..5], &[4, 14, 6, 13, 1]);
        assert_eq!(
            js_decode_user_broadcast(bytes),
            json!({"join_ref": null, "ref": null, "topic": "realtime:café", "event": "broadcast",
                   "payload": {"type": "broadcast", "event": "cursor", "payload": {"a": 1}, "meta": {"id": "6f1c"}}})
        );

        let binary = BroadcastPayload::Binary(Bytes::from_static(&[0, 159, 146, 150]));
        let frame = user_broadcast(Vsn::V2, "t", "bin", &binary, None).unwrap();
        let OutFrame::Binary(bytes) = &frame else {
            panic!()
        };
        assert_eq!(
            &bytes[..],
            &[4, 1, 3, 0, 0, b't', b'b', b'i', b'n', 0, 159, 146, 150]
        );
        assert_eq!(
            js_decode_user_broadcast(bytes)["payload"]["payload"],
            json!([0, 159, 146, 150])
        );
    }

    #[test]
    fn long_fields_fall_back_to_json_arrays_on_v2() {
        let json_payload = BroadcastPayload::Json(Bytes::from_static(br#"{"a":1}"#));
        let long = "é".repeat(128); // 256 bytes
        let at_limit = "x".repeat(255);
        assert!(matches!(
            user_broadcast(Vsn::V2, &at_limit, &at_limit, &json_payload, None),
            Some(OutFrame::Binary(_))
        ));
        let meta = json!({"k": "x".repeat(300)});
        for (topic, event, meta) in [
            (long.as_str(), "e", None),
            ("t", long.as_str(), None),
            ("t", "e", Some(&meta)),
        ] {
            let frame = user_broadcast(Vsn::V2, topic, event, &json_payload, meta).unwrap();
            let mut payload = json!({"type": "broadcast", "event": event, "payload": {"a": 1}});
            if let Some(meta) = meta {
                payload["meta"] = meta.clone();
            }
            assert_eq!(
                js_decode_text(Vsn::V2, &frame),
                json!({"join_ref": null, "ref": null, "topic": topic, "event": "broadcast", "payload": payload})
            );
            let binary = BroadcastPayload::Binary(Bytes::from_static(b"\x00"));
            assert_eq!(user_broadcast(Vsn::V2, topic, event, &binary, meta), None);
        }
    }

    #[test]
    fn v1_broadcasts_are_json_and_binary_ones_cannot_be_sent() {
        let json_payload =
            BroadcastPayload::Json(Bytes::from_static(br#"{"n":12345678901234567890123}"#));
        let frame =
            user_broadcast(Vsn::V1, "realtime:room", "cursor", &json_payload, None).unwrap();
        assert_eq!(
            text(&frame),
            r#"{"topic":"realtime:room","event":"broadcast","payload":{"type":"broadcast","event":"cursor","payload":{"n":12345678901234567890123}},"ref":null,"join_ref":null}"#
        );
        let meta = json!({"id": 1});
        let frame = user_broadcast(
            Vsn::V1,
            "realtime:room",
            "cursor",
            &json_payload,
            Some(&meta),
        )
        .unwrap();
        assert!(text(&frame).contains(r#","meta":{"id":1}}"#));
        let binary = BroadcastPayload::Binary(Bytes::from_static(b"\x01\x02"));
        assert_eq!(
            user_broadcast(Vsn::V1, "realtime:room", "cursor", &binary, None),
            None
        );
        // A "JSON" payload that is not JSON is never put on the wire.
        for bad in [&b""[..], b"{", b"\xff", b"{} {}"] {
            let payload = BroadcastPayload::Json(Bytes::copy_from_slice(bad));
            for vsn in [Vsn::V1, Vsn::V2] {
                assert_eq!(user_broadcast(vsn, "t", "e", &payload, None), None);
            }
        }
    }

    #[test]
    fn client_broadcasts_round_trip_to_every_client() {
        // What a V2 client sends, decoded, re-encoded for V1 and V2 subscribers, decoded by them.
        for (encoding, body) in [
            (ENCODING_JSON, r#"{"x":1.5,"s":"ü"}"#.as_bytes()),
            (ENCODING_BINARY, b"\x00\xff"),
        ] {
            let sent = js_encode_user_broadcast_push(
                Some("1"),
                Some("2"),
                "realtime:ça",
                "move",
                r#"{"persist":true}"#,
                encoding,
                body,
            );
            let InFrame { topic, payload, .. } = decode_binary(Vsn::V2, &sent).unwrap();
            let Payload::Broadcast { event, data, meta } = payload else {
                panic!("a broadcast")
            };
            let v2 = user_broadcast(Vsn::V2, &topic, &event, &data, meta.as_ref()).unwrap();
            let OutFrame::Binary(bytes) = &v2 else {
                panic!()
            };
            let received = js_decode_user_broadcast(bytes);
            assert_eq!(received["topic"], "realtime:ça");
            assert_eq!(received["payload"]["event"], "move");
            assert_eq!(received["payload"]["meta"], json!({"persist": true}));
            match encoding {
                ENCODING_JSON => {
                    assert_eq!(received["payload"]["payload"], json!({"x": 1.5, "s": "ü"}));
                    let v1 = user_broadcast(Vsn::V1, &topic, &event, &data, None).unwrap();
                    assert_eq!(
                        js_decode_text(Vsn::V1, &v1)["payload"],
                        json!({"type": "broadcast", "event": "move", "payload": {"x": 1.5, "s": "ü"}})
                    );
                }
                _ => {
                    assert_eq!(received["payload"]["payload"], json!([0, 255]));
                    assert_eq!(user_broadcast(Vsn::V1, &topic, &event, &data, None), None);
                }
            }
        }
    }

    #[test]
    fn every_text_frame_is_utf8() {
        let payload = BroadcastPayload::Json(Bytes::from_static("\"é🚀\"".as_bytes()));
        let frames = [
            reply(Vsn::V1, Some("é"), None, "🚀", "ok", &json!("\u{0}")),
            push(Vsn::V2, None, "é", "ü", &raw("\"\\ud83d\\ude80\"")),
            user_broadcast(Vsn::V1, "é", "ü", &payload, None).unwrap(),
            user_broadcast(Vsn::V2, &"é".repeat(200), "ü", &payload, None).unwrap(),
        ];
        for frame in frames {
            assert!(std::str::from_utf8(text(&frame).as_bytes()).is_ok());
        }
    }
}
