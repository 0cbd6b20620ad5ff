//! A Phoenix channels client for Rust tests: speaks `vsn=1.0.0` (JSON objects) and `vsn=2.0.0`
//! (JSON arrays and binary broadcast frames) like realtime-js, so tests can drive a gateway
//! frame by frame and see exactly what it sends.
//!
//! Received frames are normalised to [`Frame`] (binary `userBroadcast` frames become a
//! `broadcast` frame whose payload carries `event` and the payload bytes) and queued; tests
//! await the one they want with [`PhoenixClient::expect`].

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub ref_: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// The raw payload of a binary broadcast frame (encoding 0).
    pub binary: Option<Vec<u8>>,
}

/// How the connection ended, when it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

/// Something the reader saw.
#[derive(Debug)]
pub enum Received {
    Frame(Frame),
    Closed(Closed),
}

/// A connected client.
pub struct PhoenixClient {
    pub vsn: String,
    sink: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    received: mpsc::UnboundedReceiver<Received>,
    /// Frames that arrived while [`PhoenixClient::reply_to`] waited for a reply: a push may
    /// overtake the reply to the request that caused it, and must still be seen afterwards.
    overtaken: std::collections::VecDeque<Frame>,
    next_ref: u64,
}

fn string_or_null(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// Decodes a server text frame of either version.
fn decode_text(text: &str) -> Frame {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"));
    match value {
        Value::Array(items) => {
            assert_eq!(items.len(), 5, "v2 frames have 5 elements: {text}");
            Frame {
                join_ref: string_or_null(&items[0]),
                ref_: string_or_null(&items[1]),
                topic: items[2].as_str().expect("topic").to_string(),
                event: items[3].as_str().expect("event").to_string(),
                payload: items[4].clone(),
                binary: None,
            }
        }
        Value::Object(object) => Frame {
            join_ref: object.get("join_ref").and_then(string_or_null),
            ref_: object.get("ref").and_then(string_or_null),
            topic: object["topic"].as_str().expect("topic").to_string(),
            event: object["event"].as_str().expect("event").to_string(),
            payload: object["payload"].clone(),
            binary: None,
        },
        other => panic!("unexpected frame {other}"),
    }
}

/// Decodes a server binary frame (`userBroadcast`, kind 4).
fn decode_binary(bytes: &[u8]) -> Frame {
    assert_eq!(
        bytes[0], 4,
        "server binary frames are userBroadcast (kind 4)"
    );
    let (topic_len, event_len, meta_len, encoding) = (
        bytes[1] as usize,
        bytes[2] as usize,
        bytes[3] as usize,
        bytes[4],
    );
    let mut at = 5;
    let mut take = |n: usize| {
        let part = &bytes[at..at + n];
        at += n;
        part.to_vec()
    };
    let topic = String::from_utf8(take(topic_len)).expect("UTF-8 topic");
    let event = String::from_utf8(take(event_len)).expect("UTF-8 event");
    let meta = take(meta_len);
    let payload = bytes[at..].to_vec();
    let (json_payload, binary) = if encoding == 1 {
        (
            serde_json::from_slice(&payload).expect("JSON payload"),
            None,
        )
    } else {
        (Value::Null, Some(payload))
    };
    let mut body = json!({"type": "broadcast", "event": event, "payload": json_payload});
    if !meta.is_empty() {
        body["meta"] = serde_json::from_slice(&meta).expect("JSON metadata");
    }
    Frame {
        join_ref: None,
        ref_: None,
        topic,
        event: "broadcast".into(),
        payload: body,
        binary,
    }
}

impl PhoenixClient {
    /// Connects to a full WebSocket URL; the `vsn` query parameter picks the encoding.
    pub async fn connect(
        url: &str,
    ) -> Result<PhoenixClient, tokio_tungstenite::tungstenite::Error> {
        let vsn = if url.contains("vsn=2.0.0") {
            "2.0.0"
        } else {
            "1.0.0"
        }
        .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        let (sink, mut stream) = socket.split();
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let item = match message {
                    Ok(Message::Text(text)) => Received::Frame(decode_text(text.as_str())),
                    Ok(Message::Binary(bytes)) => Received::Frame(decode_binary(&bytes)),
                    Ok(Message::Close(frame)) => Received::Closed(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    }),
                    Ok(_) => continue,
                    Err(e) => Received::Closed(Closed {
                        code: None,
                        reason: e.to_string(),
                    }),
                };
                let closed = matches!(item, Received::Closed(_));
                if tx.send(item).is_err() || closed {
                    break;
                }
            }
        });
        Ok(PhoenixClient {
            vsn,
            sink,
            received,
            overtaken: Default::default(),
            next_ref: 1,
        })
    }

    fn make_ref(&mut self) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        r
    }

    /// Sends a text frame in this client's encoding; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let ref_ = self.make_ref();
        let text = if self.vsn == "2.0.0" {
            json!([join_ref, ref_, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": join_ref, "ref": ref_, "topic": topic, "event": event, "payload": payload}).to_string()
        };
        self.send_raw(Message::Text(text.into())).await;
        ref_
    }

    /// Sends any WebSocket message as is (malformed frames, binary frames).
    pub async fn send_raw(&mut self, message: Message) {
        self.sink.send(message).await.expect("send to the gateway");
    }

    /// Sends a `userBroadcastPush` binary frame (kind 3), as realtime-js does for broadcasts on
    /// vsn 2.0.0; `json` chooses the payload encoding.
    pub async fn push_binary_broadcast(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: &[u8],
        json: bool,
    ) -> String {
        let ref_ = self.make_ref();
        let mut frame = vec![
            3u8,
            join_ref.len() as u8,
            ref_.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            0,
            u8::from(json),
        ];
        for part in [
            join_ref.as_bytes(),
            ref_.as_bytes(),
            topic.as_bytes(),
            event.as_bytes(),
        ] {
            frame.extend_from_slice(part);
        }
        frame.extend_from_slice(payload);
        self.send_raw(Message::Binary(frame.into())).await;
        ref_
    }

    /// Joins `topic` with `config`; returns the join ref and the reply payload
    /// (`{status, response}`).
    pub async fn join(&mut self, topic: &str, payload: Value) -> (String, Value) {
        let ref_ = self.make_ref();
        self.next_ref -= 1;
        let join_ref = self.push(Some(&ref_), topic, "phx_join", payload).await;
        assert_eq!(join_ref, ref_);
        let reply = self.reply_to(&join_ref).await;
        (join_ref, reply)
    }

    /// Waits for the `phx_reply` to `ref_`; the frames before it stay for the next `expect`.
    pub async fn reply_to(&mut self, ref_: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(Received::Frame(frame)))
                    if frame.event == "phx_reply" && frame.ref_.as_deref() == Some(ref_) =>
                {
                    return frame.payload
                }
                Ok(Some(Received::Frame(frame))) => self.overtaken.push_back(frame),
                Ok(Some(Received::Closed(closed))) => {
                    panic!("connection closed while waiting for reply {ref_}: {closed:?}")
                }
                Ok(None) | Err(_) => panic!("no reply to {ref_} within 10 s"),
            }
        }
    }

    /// The next frame matching `wanted` (others are dropped); panics after 10 s.
    pub async fn expect(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        self.expect_within(Duration::from_secs(10), wanted)
            .await
            .expect("no matching frame within 10 s")
    }

    /// The next frame matching `wanted` within `limit`, or `None`.
    pub async fn expect_within(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Frame) -> bool,
    ) -> Option<Frame> {
        while let Some(frame) = self.overtaken.pop_front() {
            if wanted(&frame) {
                return Some(frame);
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(Received::Frame(frame))) if wanted(&frame) => return Some(frame),
                Ok(Some(Received::Frame(_))) => continue,
                Ok(Some(Received::Closed(closed))) => {
                    panic!("connection closed while waiting: {closed:?}")
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Every frame received within `limit` (to check that nothing unexpected arrives).
    pub async fn drain(&mut self, limit: Duration) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.overtaken.drain(..).collect();
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(Received::Frame(frame))) =
            tokio::time::timeout_at(deadline, self.received.recv()).await
        {
            frames.push(frame);
        }
        frames
    }

    /// Waits for the server to close the connection; returns the close code and reason.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.received.recv()).await {
                Ok(Some(Received::Closed(closed))) => return closed,
                Ok(Some(Received::Frame(_))) => continue,
                Ok(None) => {
                    return Closed {
                        code: None,
                        reason: "stream ended".into(),
                    }
                }
                Err(_) => panic!("the server did not close the connection within 10 s"),
            }
        }
    }
}
