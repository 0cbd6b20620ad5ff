//! Socket.IO clients cheap enough to run by the thousand in the load generator: Engine.IO v4
//! and Socket.IO v5 over the websocket transport only (no polling, no upgrade), text packets
//! only, the default namespace.
//!
//! The WebSocket layer is the same minimum as [`crate::load_client`]'s (masked text frames out,
//! unmasked frames in, read in 16 KiB reads that may hold many frames) on a TCP connection from
//! one of the 127.0.0.x source addresses. On top of it: the Engine.IO open packet (`0{...}`),
//! the namespace connect with the token as auth (`40{"token":...}` → `40{"sid":...}`, or `44`
//! refused), events (`42[...]`), and the heartbeat: the server sends `2` every `pingInterval`
//! and the client answers `3`, which [`SioSocket::read_events`] does while it hands the other
//! packets on. The socket's write half is shared ([`SioWriter`]) so that a publisher can send
//! while its reader answers pings.

use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

/// Sockets per source address before moving to the next 127.0.0.x (see load_client.rs).
const SOCKETS_PER_SOURCE: u32 = 5_000;
const READ_SIZE: usize = 16 * 1024;

static OPENED: AtomicU32 = AtomicU32::new(0);

/// The source address of the next socket: 127.0.0.2, .3, ... in turn.
fn next_source() -> IpAddr {
    let n = OPENED.fetch_add(1, Ordering::Relaxed) / SOCKETS_PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8))
}

/// A complete frame at the start of `buf`: (opcode, payload range, frame length).
fn parse_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= header + len).then_some((opcode, header..header + len, header + len))
}

/// `text` as a masked WebSocket text frame (the all-zero mask leaves the payload as it is).
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(text.len() + 14);
    frame.push(0x81);
    match text.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    frame
}

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
    reader: OwnedReadHalf,
    writer: SioWriter,
    /// Received bytes not yet parsed into frames.
    pending: Vec<u8>,
}

impl SioSocket {
    /// Opens `ws://127.0.0.1:<port>/socket.io/?EIO=4&transport=websocket` and connects to the
    /// default namespace with `{"token": token}` as auth; fails if the server refuses.
    pub async fn connect(port: u16, token: &str) -> anyhow::Result<SioSocket> {
        let socket = TcpSocket::new_v4()?;
        // Choose the source port at connect time, per destination (see load_client.rs).
        let yes: libc::c_int = 1;
        // SAFETY: setsockopt reads `yes` for the length given; the descriptor is the socket's.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&yes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .bind(SocketAddr::new(next_source(), 0))
            .context("bind a 127.0.0.x source address")?;
        let mut stream = socket
            .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .context("connect to the Socket.IO server")?;
        stream.set_nodelay(true)?;
        // The key must be 16 bytes in base64 (Node's `ws` answers 400 otherwise): RFC 6455's.
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut pending = Vec::with_capacity(1024);
        let end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if stream.read_buf(&mut pending).await? == 0 || pending.len() > 16 * 1024 {
                bail!("the server ended the WebSocket handshake");
            }
        };
        if !pending.starts_with(b"HTTP/1.1 101") {
            bail!(
                "WebSocket upgrade refused: {}",
                String::from_utf8_lossy(&pending).trim()
            );
        }
        pending.drain(..end);
        let (reader, writer) = stream.into_split();
        let mut socket = SioSocket {
            reader,
            writer: SioWriter(Arc::new(tokio::sync::Mutex::new(writer))),
            pending,
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
            if let Some((opcode, payload, length)) = parse_frame(&self.pending) {
                let text = String::from_utf8_lossy(&self.pending[payload]).into_owned();
                self.pending.drain(..length);
                match opcode {
                    1 if text == "2" => self.writer.send("3").await?,
                    1 if text.starts_with('1') || text.starts_with("41") => {
                        bail!("closed by the server: {text}")
                    }
                    1 => return Ok(text),
                    8 => bail!("closed by the server: {text}"),
                    _ => {}
                }
                continue;
            }
            self.pending.reserve(READ_SIZE);
            if self.reader.read_buf(&mut self.pending).await? == 0 {
                bail!("connection ended");
            }
        }
    }

    /// Hands every later packet but pings to `on_packet`, answering the pings, until the
    /// connection ends.
    pub async fn read_events(mut self, mut on_packet: impl FnMut(&str)) {
        loop {
            let mut at = 0;
            let mut pings = 0;
            while let Some((opcode, payload, length)) = parse_frame(&self.pending[at..]) {
                if opcode == 1 {
                    let range = at + payload.start..at + payload.end;
                    match std::str::from_utf8(&self.pending[range]) {
                        Ok("2") => pings += 1,
                        Ok(text) => on_packet(text),
                        Err(_) => {}
                    }
                } else if opcode == 8 {
                    return;
                }
                at += length;
            }
            self.pending.drain(..at);
            for _ in 0..pings {
                if self.writer.send("3").await.is_err() {
                    return;
                }
            }
            self.pending.reserve(READ_SIZE);
            match self.reader.read_buf(&mut self.pending).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
