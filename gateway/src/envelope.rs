//! A room message as it crosses the broker: an [`Envelope`] (who sent it, what kind of event,
//! its name, its payload and meta), encoded as `[u32 header length][header JSON][payload]`.
//!
//! The payload ([`BroadcastPayload`]) is the user's JSON text or raw bytes (realtime-js's binary
//! broadcasts), kept as the sender's bytes end to end: binary payloads cross gateways without
//! base64 and JSON payloads are never re-parsed. Broadcast rooms ([`crate::broadcast`]) carry
//! envelopes; [`crate::wire`] encodes each [`Kind`] per protocol.

use crate::outbox::ConnId;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// A broadcast's user payload, kept as bytes end to end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BroadcastPayload {
    /// JSON text (UTF-8), exactly as the sender wrote it.
    Json(Bytes),
    /// Raw bytes (realtime-js `ArrayBuffer` payloads): only `vsn=2.0.0` clients can receive them.
    Binary(Bytes),
}

/// Who sent a broadcast: a gateway and one of its connections (absent for REST broadcasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub gateway: u64,
    pub conn: ConnId,
}

/// What a room message is, which decides how each protocol shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A client's or the REST API's broadcast: any event name, any payload.
    #[default]
    User,
    /// A chat message (`message:new`, `message:updated`, `message:deleted`), built by a gateway.
    Message,
    /// Who is typing (`typing:event`), built by [`crate::typing`].
    Typing,
    /// A Postgres NOTIFY payload (`db:notification`), relayed from the CDC.
    Notification,
}

impl Kind {
    fn is_user(&self) -> bool {
        *self == Kind::User
    }
}

/// The header of a broadcast on the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<Sender>,
    #[serde(default, skip_serializing_if = "Kind::is_user")]
    kind: Kind,
    event: String,
    /// The payload is raw bytes rather than JSON text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<serde_json::Value>,
}

/// One broadcast message.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: Option<Sender>,
    pub kind: Kind,
    pub event: String,
    pub payload: BroadcastPayload,
    pub meta: Option<serde_json::Value>,
}

/// A broker message that is not an envelope.
#[derive(Debug, thiserror::Error)]
#[error("malformed broadcast envelope: {0}")]
pub struct EnvelopeError(pub String);

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let (binary, payload) = match &self.payload {
            BroadcastPayload::Json(json) => (false, json.clone()),
            BroadcastPayload::Binary(bytes) => (true, bytes.clone()),
        };
        let header = serde_json::to_vec(&Header {
            from: self.from,
            kind: self.kind,
            event: self.event.clone(),
            binary,
            meta: self.meta.clone(),
        })
        .expect("headers serialize");
        let mut out = BytesMut::with_capacity(4 + header.len() + payload.len());
        out.put_u32(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&payload);
        out.freeze()
    }

    pub fn decode(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
        let bad = |what: &str| EnvelopeError(what.to_string());
        let length = bytes
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("shorter than its length prefix"))?;
        let header = bytes
            .get(4..4 + length)
            .ok_or_else(|| bad("header longer than the message"))?;
        let header: Header =
            serde_json::from_slice(header).map_err(|e| EnvelopeError(e.to_string()))?;
        let payload = bytes.slice(4 + length..);
        let payload = if header.binary {
            BroadcastPayload::Binary(payload)
        } else {
            BroadcastPayload::Json(payload)
        };
        Ok(Envelope {
            from: header.from,
            kind: header.kind,
            event: header.event,
            payload,
            meta: header.meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_json_and_binary() {
        for payload in [
            BroadcastPayload::Json(Bytes::from_static(br#"{"x":1}"#)),
            BroadcastPayload::Binary(Bytes::from_static(&[0, 159, 146, 150])),
        ] {
            let envelope = Envelope {
                from: Some(Sender {
                    gateway: 7,
                    conn: 9,
                }),
                kind: Kind::User,
                event: "cursor".into(),
                payload: payload.clone(),
                meta: None,
            };
            let back = Envelope::decode(envelope.encode()).unwrap();
            assert_eq!(back.from, envelope.from);
            assert_eq!(back.kind, Kind::User);
            assert_eq!(back.event, "cursor");
            assert_eq!(back.payload, payload);
        }
        assert!(Envelope::decode(Bytes::from_static(b"\0\0\0\x09{}")).is_err());
        assert!(Envelope::decode(Bytes::from_static(b"\0")).is_err());
    }
}
