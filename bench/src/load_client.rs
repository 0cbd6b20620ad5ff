//! Phoenix clients cheap enough to run by the ten thousand in the load generator.
//!
//! Each [`LoadSocket`] is one WebSocket (vsn 1.0.0, JSON objects) on a TCP connection whose
//! source address can be any 127.0.0.x, so that tens of thousands of sockets to one gateway port
//! do not run out of ephemeral ports. Frames are read as text; scenarios pick out the few fields
//! they need with [`field_after`] rather than parsing JSON, so that the load generator spends
//! its CPU share on the wire, not on parsing.

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Sockets per source address before moving to the next 127.0.0.x (of ~28,000 ephemeral ports).
const SOCKETS_PER_SOURCE: u32 = 20_000;

static OPENED: AtomicU32 = AtomicU32::new(0);

/// The source address of the next socket: 127.0.0.2, .3, ... in turn.
fn next_source() -> IpAddr {
    let n = OPENED.fetch_add(1, Ordering::Relaxed) / SOCKETS_PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8))
}

/// One Phoenix WebSocket.
pub struct LoadSocket {
    ws: WebSocketStream<TcpStream>,
    next_ref: u64,
    /// The ref of the last successful join.
    pub join_ref: Option<String>,
}

impl LoadSocket {
    /// Connects to `ws://127.0.0.1:<port>/realtime/v1/websocket?apikey=<apikey>&vsn=1.0.0`.
    pub async fn connect(port: u16, apikey: &str) -> anyhow::Result<LoadSocket> {
        let socket = TcpSocket::new_v4()?;
        socket.set_nodelay(true)?;
        socket
            .bind(SocketAddr::new(next_source(), 0))
            .context("bind a 127.0.0.x source address")?;
        let stream = socket
            .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .context("connect to the gateway")?;
        let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={apikey}&vsn=1.0.0");
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .context("WebSocket handshake")?;
        Ok(LoadSocket {
            ws,
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
        let frame = json!({"join_ref": join_ref, "ref": ref_, "topic": topic, "event": event, "payload": payload});
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(ref_)
    }

    /// Joins `topic` with `payload` and waits for an ok reply; returns the join ref.
    pub async fn join(&mut self, topic: &str, payload: Value) -> anyhow::Result<String> {
        let join_ref = self.next_ref.to_string();
        self.push(Some(&join_ref.clone()), topic, "phx_join", payload)
            .await?;
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
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Close(frame))) => bail!("closed by the gateway: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection ended"),
            }
        }
    }
}

impl LoadSocket {
    /// Hands every later text frame to `on_text` until the connection ends; frames are not
    /// copied.
    pub async fn read_texts(mut self, mut on_text: impl FnMut(&str)) {
        while let Some(Ok(message)) = self.ws.next().await {
            match message {
                Message::Text(text) => on_text(text.as_str()),
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
}

/// The number right after `key` (e.g. `"t":`) in `text`.
pub fn field_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
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
