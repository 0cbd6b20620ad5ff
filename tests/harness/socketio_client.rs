//! A raw Socket.IO client for tests: Engine.IO v4 text packets over the websocket transport,
//! the default namespace, sent and read as the text the server sees (so tests can also send
//! malformed packets). Real `socket.io-client` runs in `tests/js/`; this one is for Rust tests
//! that need the wire itself.

use crate::{token, ws_connect, WsMessage, WsStream};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;

/// One Socket.IO connection.
pub struct SocketIoClient {
    socket: WsStream,
}

impl SocketIoClient {
    /// Opens `/socket.io/` on `port` and reads the Engine.IO open packet (`0{...}`), which it
    /// returns with the client; the namespace is not connected yet.
    pub async fn open(port: u16) -> (SocketIoClient, String) {
        let socket = ws_connect(&format!(
            "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        ))
        .await
        .expect("the gateway accepts the Socket.IO upgrade");
        let mut client = SocketIoClient { socket };
        let open = client.next_text().await;
        assert!(open.starts_with("0{"), "{open}");
        (client, open)
    }

    /// A connection authenticated as `sub` (role authenticated): through the CONNECT and the
    /// server's `authenticated` event.
    pub async fn connect(port: u16, sub: &str) -> SocketIoClient {
        let (mut client, _) = SocketIoClient::open(port).await;
        let token = token(json!({"role": "authenticated", "sub": sub}));
        client
            .send(&format!("40{}", json!({ "token": token })))
            .await;
        client.next_starting("40{").await;
        client.next_starting(r#"42["authenticated""#).await;
        client
    }

    /// Joins `room` (which tracks the user's presence there), waiting for the ack.
    pub async fn join(&mut self, room: &str) {
        self.send(&format!(
            "421{}",
            json!(["room:join", { "roomName": room }])
        ))
        .await;
        self.next_starting("431[").await;
    }

    /// Sends one text message as it is.
    pub async fn send(&mut self, text: &str) {
        self.socket
            .send(WsMessage::Text(text.to_string().into()))
            .await
            .expect("the socket is open");
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(WsMessage::Binary(bytes.into()))
            .await
            .expect("the socket is open");
    }

    /// The next text message, within 10 s.
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s")
                .expect("the socket is open")
                .expect("a readable message");
            if let WsMessage::Text(text) = message {
                return text.to_string();
            }
        }
    }

    /// The next text message that starts with `prefix` (others are skipped).
    pub async fn next_starting(&mut self, prefix: &str) -> String {
        loop {
            let text = self.next_text().await;
            if text.starts_with(prefix) {
                return text;
            }
        }
    }
}
