//! Engine.IO v4 and Socket.IO v5 packets, as they travel in WebSocket text frames.
//!
//! Over the websocket transport one WebSocket message is one Engine.IO packet: a type digit
//! and its data. Type 4 (message) carries a Socket.IO packet, itself a type digit, an optional
//! namespace (`/admin,`), an optional ack id and a JSON body:
//!
//! | text | meaning |
//! | --- | --- |
//! | `0{"sid",…}` | server: Engine.IO open (handshake) |
//! | `2` / `3` | ping (server) / pong (client) |
//! | `40{"token":…}` | client: connect to the default namespace with an auth payload |
//! | `40{"sid":…}` / `44{"message":…}` | server: connected / connect refused |
//! | `42["event",data]`, `4213["event",data]` | an event; with an ack id (13) the receiver answers `4313[reply]` |
//! | `41` | disconnect from the namespace |
//!
//! Only the default namespace `/` is served. Binary events (Socket.IO types 5 and 6, whose
//! attachments follow as separate binary messages) are refused: the nself events are JSON.
//! Server packets are encoded once into shared bytes; the event name and the JSON body are
//! written as they are, so a payload that arrived as JSON bytes is never re-parsed.

use crate::outbox::OutFrame;
use bytes::Bytes;
use serde_json::Value;

/// A decoded client packet.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientPacket {
    /// Socket.IO CONNECT to `namespace`, with the client's `auth` object if any.
    Connect {
        namespace: String,
        auth: Option<Value>,
    },
    /// Socket.IO DISCONNECT from the default namespace.
    Disconnect,
    /// An event: its name, its arguments after the name, and the ack id to answer with.
    Event {
        name: String,
        args: Vec<Value>,
        ack: Option<u64>,
    },
    /// An ack of a server event (the server asks for none: ignored).
    Ack,
    /// A packet addressed to another namespace (ignored but for CONNECT).
    OtherNamespace,
    /// Engine.IO pong, the answer to the server's ping.
    Pong,
    /// Engine.IO ping from the client (answered with a pong), noop or upgrade probes.
    Ping,
    Noop,
    /// Engine.IO close.
    Close,
}

/// Why a client packet could not be read. The text goes back in an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty message: a Socket.IO packet starts with its Engine.IO type digit")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(char),
    #[error("Engine.IO message without a Socket.IO packet type")]
    NoSocketType,
    #[error("unknown Socket.IO packet type {0:?}")]
    SocketType(char),
    #[error("binary events are not supported: send JSON (Socket.IO packet type {0})")]
    Binary(char),
    #[error("namespace without the ',' that ends it")]
    Namespace,
    #[error("ack id {0:?} is not a number below 2^53")]
    AckId(String),
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("an event is a JSON array [\"name\", ...args] with a string name")]
    EventShape,
}

/// Decodes one client text message.
pub fn decode(text: &str) -> Result<ClientPacket, PacketError> {
    let mut chars = text.chars();
    let engine = chars.next().ok_or(PacketError::Empty)?;
    match engine {
        '1' => return Ok(ClientPacket::Close),
        '2' => return Ok(ClientPacket::Ping),
        '3' => return Ok(ClientPacket::Pong),
        '5' | '6' => return Ok(ClientPacket::Noop),
        '4' => {}
        other => return Err(PacketError::EngineType(other)),
    }
    let rest = &text[1..];
    let kind = rest.chars().next().ok_or(PacketError::NoSocketType)?;
    if matches!(kind, '5' | '6') {
        return Err(PacketError::Binary(kind));
    }
    if !matches!(kind, '0'..='4') {
        return Err(PacketError::SocketType(kind));
    }
    // The type is one ASCII digit, so the body starts at byte 1.
    let mut body = &rest[1..];
    let mut namespace = "/";
    if body.starts_with('/') {
        let end = body.find(',').ok_or(PacketError::Namespace)?;
        namespace = &body[..end];
        body = &body[end + 1..];
    }
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id = &body[..digits];
        body = &body[digits..];
        Some(
            id.parse::<u64>()
                .ok()
                .filter(|id| *id < 1 << 53)
                .ok_or_else(|| PacketError::AckId(id.to_string()))?,
        )
    } else {
        None
    };
    let json = |body: &str| -> Result<Option<Value>, PacketError> {
        if body.is_empty() {
            return Ok(None);
        }
        let body =
            crate::json_input::prepare(body).map_err(|e| PacketError::Json(e.to_string()))?;
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| PacketError::Json(e.to_string()))
    };
    if kind == '0' {
        return Ok(ClientPacket::Connect {
            namespace: namespace.to_string(),
            auth: json(body)?,
        });
    }
    if namespace != "/" {
        return Ok(ClientPacket::OtherNamespace);
    }
    match kind {
        '1' => Ok(ClientPacket::Disconnect),
        '3' => Ok(ClientPacket::Ack),
        '2' => {
            let Some(Value::Array(mut items)) = json(body)? else {
                return Err(PacketError::EventShape);
            };
            if items.is_empty() {
                return Err(PacketError::EventShape);
            }
            let Value::String(name) = items.remove(0) else {
                return Err(PacketError::EventShape);
            };
            Ok(ClientPacket::Event {
                name,
                args: items,
                ack,
            })
        }
        // Type 4 (CONNECT_ERROR) is a server packet; a client sending it is confused.
        other => Err(PacketError::SocketType(other)),
    }
}

fn text(bytes: Vec<u8>) -> OutFrame {
    OutFrame::Text(Bytes::from(bytes))
}

/// The Engine.IO open packet: the session id and the heartbeat the client must keep.
pub fn open(
    sid: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> OutFrame {
    let body = serde_json::json!({
        "sid": sid,
        "upgrades": [],
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    text(format!("0{body}").into_bytes())
}

/// The Engine.IO ping.
pub fn ping() -> OutFrame {
    OutFrame::Text(Bytes::from_static(b"2"))
}

/// The Engine.IO pong (answer to a client ping).
pub fn pong() -> OutFrame {
    OutFrame::Text(Bytes::from_static(b"3"))
}

/// The server's DISCONNECT of the default namespace: `41`.
pub fn disconnect() -> OutFrame {
    OutFrame::Text(Bytes::from_static(b"41"))
}

/// CONNECT accepted: `40{"sid":"…"}`.
pub fn connected(sid: &str) -> OutFrame {
    text(format!("40{}", serde_json::json!({ "sid": sid })).into_bytes())
}

/// CONNECT refused: `44{"message":…,"data":…}` (socket.io-client's `connect_error`, whose
/// `err.message` and `err.data` are these).
pub fn connect_error(namespace: &str, message: &str, data: &Value) -> OutFrame {
    let body = serde_json::json!({ "message": message, "data": data });
    let ns = if namespace == "/" {
        String::new()
    } else {
        format!("{namespace},")
    };
    text(format!("44{ns}{body}").into_bytes())
}

/// An event `42["name",payload]`; `payload` is JSON text written as it is.
pub fn event(name: &str, payload: &[u8]) -> OutFrame {
    let mut out = Vec::with_capacity(8 + name.len() + payload.len());
    out.extend_from_slice(b"42[");
    let _ = serde_json::to_writer(&mut out, name);
    out.push(b',');
    out.extend_from_slice(payload);
    out.push(b']');
    text(out)
}

/// An event whose payload is a JSON value.
pub fn event_value(name: &str, payload: &Value) -> OutFrame {
    event(
        name,
        &serde_json::to_vec(payload).expect("JSON values serialize"),
    )
}

/// The answer to an event that asked for an ack: `43<id>[payload]`.
pub fn ack(id: u64, payload: &Value) -> OutFrame {
    text(format!("43{id}[{payload}]").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_of(frame: &OutFrame) -> &str {
        std::str::from_utf8(frame.bytes()).unwrap()
    }

    #[test]
    fn decodes_what_socket_io_client_sends() {
        assert_eq!(
            decode(r#"40{"token":"abc"}"#).unwrap(),
            ClientPacket::Connect {
                namespace: "/".into(),
                auth: Some(json!({"token": "abc"}))
            }
        );
        assert_eq!(
            decode("40").unwrap(),
            ClientPacket::Connect {
                namespace: "/".into(),
                auth: None
            }
        );
        assert_eq!(
            decode(r#"42["room:join",{"roomName":"general"}]"#).unwrap(),
            ClientPacket::Event {
                name: "room:join".into(),
                args: vec![json!({"roomName": "general"})],
                ack: None
            }
        );
        assert_eq!(
            decode(r#"4217["ping"]"#).unwrap(),
            ClientPacket::Event {
                name: "ping".into(),
                args: vec![],
                ack: Some(17)
            }
        );
        assert_eq!(
            decode(r#"40/admin,{"token":"x"}"#).unwrap(),
            ClientPacket::Connect {
                namespace: "/admin".into(),
                auth: Some(json!({"token": "x"}))
            }
        );
        assert_eq!(
            decode(r#"42/admin,["x"]"#).unwrap(),
            ClientPacket::OtherNamespace
        );
        assert_eq!(decode("3").unwrap(), ClientPacket::Pong);
        assert_eq!(decode("41").unwrap(), ClientPacket::Disconnect);
        assert_eq!(decode("1").unwrap(), ClientPacket::Close);
    }

    #[test]
    fn refuses_malformed_packets_with_a_reason() {
        assert_eq!(decode(""), Err(PacketError::Empty));
        assert_eq!(decode("9"), Err(PacketError::EngineType('9')));
        assert_eq!(decode("4"), Err(PacketError::NoSocketType));
        assert_eq!(decode("47"), Err(PacketError::SocketType('7')));
        assert_eq!(decode("451-[\"x\"]"), Err(PacketError::Binary('5')));
        assert_eq!(decode("42/admin"), Err(PacketError::Namespace));
        assert!(matches!(decode("42[oops"), Err(PacketError::Json(_))));
        assert_eq!(decode("42{}"), Err(PacketError::EventShape));
        assert_eq!(decode("42[]"), Err(PacketError::EventShape));
        assert_eq!(decode("42[1,2]"), Err(PacketError::EventShape));
        assert!(matches!(
            decode("4299999999999999999999[\"x\"]"),
            Err(PacketError::AckId(_))
        ));
        // Multi-byte characters after the type digits do not split a char boundary.
        assert!(decode("4é").is_err());
        assert!(decode("é").is_err());
    }

    #[test]
    fn encodes_server_packets() {
        assert_eq!(
            text_of(&event("message:new", br#"{"a":1}"#)),
            r#"42["message:new",{"a":1}]"#
        );
        assert_eq!(
            text_of(&ack(3, &json!({"ok": true}))),
            r#"433[{"ok":true}]"#
        );
        assert_eq!(text_of(&connected("s1")), r#"40{"sid":"s1"}"#);
        assert_eq!(
            text_of(&connect_error(
                "/",
                "nope",
                &json!({"code": "AUTHENTICATION_FAILED"})
            )),
            r#"44{"data":{"code":"AUTHENTICATION_FAILED"},"message":"nope"}"#
        );
        let handshake = open("abc", 25000, 20000, 1000);
        let handshake = text_of(&handshake);
        assert!(handshake.starts_with("0{") && handshake.contains(r#""pingInterval":25000"#));
    }
}
