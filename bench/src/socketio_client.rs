//! Socket.IO clients cheap enough to run by the thousand in the load generator: Engine.IO v4
//! and Socket.IO v5 over the websocket transport only (no polling, no upgrade), text packets
//! only, the default namespace.
//!
//! The WebSocket layer is [`crate::load_client`]'s (masked text frames out, unmasked frames in,
//! read in 16 KiB reads that may hold many frames) on a TCP connection from one of the
//! 127.0.0.x source addresses. On top of it: the Engine.IO open packet (`0{...}`),
//! the namespace connect with the token as auth (`40{"token":...}` → `40{"sid":...}`, or `44`
//! refused), events (`42[...]`), and the heartbeat: the server sends `2` every `pingInterval`
//! and the client answers `3`, which [`SioSocket::read_events`] does while it hands the other
//! packets on. The socket's write half is shared ([`SioWriter`]) so that a publisher can send
//! while its reader answers pings.

use crate::load_client::{connect_websocket, text_frame, FrameReader};
use anyhow::{bail, Context};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// The sending side of a [`SioSocket`], shared between its reader (pongs) and whoever sends.
#[derive(Clone)]
pub struct SioWriter(Arc<tokio::sync::Mutex<OwnedWriteHalf>>);

impl SioWriter {
    /// Sends one Engine.IO packet (`42[...]`, `3`, ...) as a text frame.
    pub async fn send(&self, packet: &str) -> anyhow::Result<()> {
        let frame = text_frame(packet);
        self.0.lock().await.write_all(&frame).await?;
        Ok(())
    }

    /// Emits `event` with `data` (a JSON text) on the default namespace.
    pub async fn emit(&self, event: &str, data: &str) -> anyhow::Result<()> {
        self.send(&format!(r#"42["{event}",{data}]"#)).await
    }
}

/// One Socket.IO connection to the default namespace.
pub struct SioSocket {
    frames: FrameReader,
    writer: SioWriter,
}

impl SioSocket {
    /// Opens `ws://127.0.0.1:<port>/socket.io/?EIO=4&transport=websocket` and connects to the
    /// default namespace with `{"token": token}` as auth; fails if the server refuses.
    pub async fn connect(port: u16, token: &str) -> anyhow::Result<SioSocket> {
        let (frames, writer) = connect_websocket(port, "/socket.io/?EIO=4&transport=websocket")
            .await
            .context("connect to the Socket.IO server")?;
        let mut socket = SioSocket {
            frames,
            writer: SioWriter(Arc::new(tokio::sync::Mutex::new(writer))),
        };
        let open = socket.next_packet().await?;
        if !open.starts_with('0') {
            bail!("expected the Engine.IO open packet, got {open}");
        }
        let auth = serde_json::json!({ "token": token });
        socket.writer.send(&format!("40{auth}")).await?;
        loop {
            let packet = socket.next_packet().await?;
            if packet.starts_with("40") {
                return Ok(socket);
            }
            if packet.starts_with("44") {
                bail!("connect refused: {packet}");
            }
        }
    }

    /// The sending side, to keep when the socket goes to [`SioSocket::read_events`].
    pub fn writer(&self) -> SioWriter {
        self.writer.clone()
    }

    /// Joins `room` (`room:join`) and waits for `room:joined`; fails on an `error` event.
    pub async fn join(&mut self, room: &str) -> anyhow::Result<()> {
        let data = serde_json::json!({ "roomName": room });
        self.writer.emit("room:join", &data.to_string()).await?;
        loop {
            let packet = self.next_packet().await?;
            if packet.starts_with(r#"42["room:joined""#) {
                return Ok(());
            }
            if packet.starts_with(r#"42["error""#) {
                bail!("join of {room} refused: {packet}");
            }
        }
    }

    /// The next Engine.IO packet other than a ping (which it answers).
    async fn next_packet(&mut self) -> anyhow::Result<String> {
        loop {
            let text = self.frames.next_text().await?;
            if text == "2" {
                self.writer.send("3").await?;
            } else if text.starts_with('1') || text.starts_with("41") {
                bail!("closed by the server: {text}");
            } else {
                return Ok(text);
            }
        }
    }

    /// Hands every later packet but pings to `on_packet`, answering the pings, until the
    /// connection ends.
    pub async fn read_events(mut self, mut on_packet: impl FnMut(&str)) {
        loop {
            let mut pings = 0;
            let open = self.frames.drain_texts(|text| match text {
                "2" => pings += 1,
                text => on_packet(text),
            });
            for _ in 0..pings {
                if self.writer.send("3").await.is_err() {
                    return;
                }
            }
            if !open || !self.frames.read_more().await {
                return;
            }
        }
    }
}
