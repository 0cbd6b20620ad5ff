//! Phoenix clients cheap enough to run by the ten thousand in the load generator, and the
//! minimal WebSocket client under them and under [`crate::socketio_client`].
//!
//! Each [`LoadSocket`] is one WebSocket (vsn 1.0.0, JSON objects) on a TCP connection whose
//! source address can be any 127.0.0.x, so that tens of thousands of sockets to one gateway port
//! do not run out of ephemeral ports. The WebSocket layer ([`connect_websocket`],
//! [`text_frame`], [`FrameReader`]) is the minimum a client needs (RFC 6455: the upgrade
//! request, masked text frames out, unmasked frames in), read straight from the socket in
//! 16 KiB reads that may hold many frames: a general WebSocket client costs the load generator
//! several times more CPU per frame, CPU the gateways share on this machine. Scenarios pick the
//! few fields they need out of frames with [`field_after`] rather than parsing JSON.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

/// Sockets per source address before moving to the next 127.0.0.x (of ~28,000 ephemeral ports,
/// some of which earlier runs' connections hold in TIME_WAIT).
const SOCKETS_PER_SOURCE: u32 = 5_000;
const READ_SIZE: usize = 16 * 1024;

static OPENED: AtomicU32 = AtomicU32::new(0);

/// The source address of the next socket: 127.0.0.2, .3, ... in turn.
fn next_source() -> IpAddr {
    let n = OPENED.fetch_add(1, Ordering::Relaxed) / SOCKETS_PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8))
}

/// Opens `ws://127.0.0.1:<port><path>` from the next 127.0.0.x source address and completes
/// the upgrade; returns the reading side (holding any bytes that came after the upgrade
/// response) and the writing side.
pub(crate) async fn connect_websocket(
    port: u16,
    path: &str,
) -> anyhow::Result<(FrameReader, OwnedWriteHalf)> {
    let socket = TcpSocket::new_v4()?;
    // Choose the source port at connect time, per destination, not at bind time from the
    // whole range (which slows every bind down as the ports fill up).
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
        .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    // The key must be 16 bytes in base64 (Node's `ws` answers 400 otherwise): RFC 6455's.
    let request = format!(
        "GET {path} HTTP/1.1\r\n\
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
    Ok((FrameReader { reader, pending }, writer))
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
pub(crate) fn text_frame(text: &str) -> Vec<u8> {
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

/// The receiving side of a WebSocket: the read half and the bytes read but not yet parsed.
pub(crate) struct FrameReader {
    reader: OwnedReadHalf,
    pending: Vec<u8>,
}

impl FrameReader {
    /// The next text frame; fails at a close frame or the end of the connection.
    pub(crate) async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some((opcode, payload, length)) = parse_frame(&self.pending) {
                let text = String::from_utf8_lossy(&self.pending[payload]).into_owned();
                self.pending.drain(..length);
                match opcode {
                    1 => return Ok(text),
                    8 => bail!("closed by the server: {text}"),
                    _ => continue,
                }
            }
            if !self.read_more().await {
                bail!("connection ended");
            }
        }
    }

    /// Hands the complete text frames received so far to `on_text` (without copying them);
    /// false once a close frame came.
    pub(crate) fn drain_texts(&mut self, mut on_text: impl FnMut(&str)) -> bool {
        let mut at = 0;
        let mut open = true;
        while let Some((opcode, payload, length)) = parse_frame(&self.pending[at..]) {
            if opcode == 1 {
                let range = at + payload.start..at + payload.end;
                if let Ok(text) = std::str::from_utf8(&self.pending[range]) {
                    on_text(text);
                }
            } else if opcode == 8 {
                open = false;
                break;
            }
            at += length;
        }
        self.pending.drain(..at);
        open
    }

    /// Reads what the socket has (waiting for at least one byte); false when it ended.
    pub(crate) async fn read_more(&mut self) -> bool {
        self.pending.reserve(READ_SIZE);
        matches!(self.reader.read_buf(&mut self.pending).await, Ok(n) if n > 0)
    }
}

/// One Phoenix WebSocket.
pub struct LoadSocket {
    frames: FrameReader,
    writer: OwnedWriteHalf,
    next_ref: u64,
    /// The ref of the last successful join.
    pub join_ref: Option<String>,
}

impl LoadSocket {
    /// Connects to `ws://127.0.0.1:<port>/realtime/v1/websocket?apikey=<apikey>&vsn=1.0.0`.
    pub async fn connect(port: u16, apikey: &str) -> anyhow::Result<LoadSocket> {
        let path = format!("/realtime/v1/websocket?apikey={apikey}&vsn=1.0.0");
        let (frames, writer) = connect_websocket(port, &path)
            .await
            .context("connect to the gateway")?;
        Ok(LoadSocket {
            frames,
            writer,
            next_ref: 1,
            join_ref: None,
        })
    }

    /// Sends one frame; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> anyhow::Result<String> {
        let ref_ = self.next_ref.to_string();
        self.next_ref += 1;
        let text = json!({"join_ref": join_ref, "ref": ref_, "topic": topic, "event": event, "payload": payload})
            .to_string();
        self.writer.write_all(&text_frame(&text)).await?;
        Ok(ref_)
    }

    /// Sends a `phx_join` of `topic` with `payload`; returns its ref (also its join ref).
    pub async fn send_join(&mut self, topic: &str, payload: Value) -> anyhow::Result<String> {
        let join_ref = self.next_ref.to_string();
        self.push(Some(&join_ref.clone()), topic, "phx_join", payload)
            .await
    }

    /// Joins `topic` with `payload` and waits for an ok reply; returns the join ref.
    pub async fn join(&mut self, topic: &str, payload: Value) -> anyhow::Result<String> {
        let join_ref = self.send_join(topic, payload).await?;
        let reply = self.reply_to(&join_ref).await?;
        if !reply.contains(r#""status":"ok""#) {
            bail!("join of {topic} refused: {reply}");
        }
        self.join_ref = Some(join_ref.clone());
        Ok(join_ref)
    }

    /// Waits for the reply to `ref_` (10 s at most); returns its text.
    pub async fn reply_to(&mut self, ref_: &str) -> anyhow::Result<String> {
        let wanted = format!(r#""ref":"{ref_}""#);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let text = self.next_text().await?;
                if text.contains(r#""event":"phx_reply""#) && text.contains(&wanted) {
                    return Ok(text);
                }
            }
        })
        .await
        .context("no reply within 10 s")?
    }

    /// The next text frame.
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        self.frames.next_text().await
    }

    /// Hands every later text frame to `on_text` until the connection ends.
    pub async fn read_texts(mut self, mut on_text: impl FnMut(&str)) {
        while self.frames.drain_texts(&mut on_text) && self.frames.read_more().await {}
    }
}

/// The number right after `key` (e.g. `"t":`) in `text`, spaces between them skipped.
pub fn field_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = text[start..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Raises this process' open-files limits (soft and hard) to `wanted`, as root may; the gateway
/// processes started afterwards inherit them.
pub fn raise_open_files_limit(wanted: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed");
        }
        if limit.rlim_max < wanted {
            limit.rlim_max = wanted;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    Ok(limit.rlim_cur)
}
