//! Framing of the Postgres wire protocol over a [`Socket`]: whole backend messages in, buffered
//! frontend messages out.
//!
//! Reading is cancel-safe: bytes read from the socket stay in `read_buf` until a whole message
//! is there, so a [`Connection::receive`] dropped inside `tokio::select!` loses nothing and the
//! next call resumes where it stopped. Writing is cancel-safe the same way: messages are encoded
//! into `write_buf` and [`Connection::flush`] only removes what the socket accepted, so a
//! half-written message is completed by the next flush instead of corrupting the stream.
//!
//! A message's length is checked against a cap before any of it is buffered, so a misbehaving
//! server announcing a huge message gets an error, not an out-of-memory abort.
//!
//! Messages every state must accept (`NoticeResponse`, `ParameterStatus`) are handled here;
//! everything else goes to the caller as an [`Incoming`]. postgres-protocol parses the regular
//! messages; the replication-only ones (`CopyBothResponse`, and `CopyData` kept as zero-copy
//! `Bytes`) are split off first because its parser does not know `CopyBothResponse`.

use super::error::{ReplicationError, ServerError};
use super::socket::Socket;
use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Default cap of a single backend message (its body), 1 GiB: Postgres' own limit for a datum,
/// so a legitimate XLogData never reaches it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;
/// Buffer growth per read while a large message is arriving; memory follows the bytes that
/// really arrived, not the length a server announced.
const READ_CHUNK: usize = 64 * 1024;

/// A backend message the caller has to handle.
pub(crate) enum Incoming {
    /// `CopyData` payload (without the message header).
    CopyData(Bytes),
    /// `CopyBothResponse`: the server entered streaming replication.
    CopyBothResponse,
    /// Any other message, parsed by postgres-protocol.
    Message(Message),
}

/// A framed protocol connection.
pub(crate) struct Connection {
    socket: Socket,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_message_size: usize,
    /// `ParameterStatus` values the server reported (server_version, client_encoding, ...).
    pub(crate) parameters: HashMap<String, String>,
}

impl Connection {
    pub(crate) fn new(socket: Socket, max_message_size: usize) -> Connection {
        Connection {
            socket,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(256),
            max_message_size,
            parameters: HashMap::new(),
        }
    }

    /// Encodes a frontend message into the write buffer (nothing is sent until [`flush`]).
    ///
    /// [`flush`]: Connection::flush
    pub(crate) fn buffer(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> Result<(), ReplicationError> {
        let mark = self.write_buf.len();
        encode(&mut self.write_buf).map_err(|e| {
            // An encoding error (a NUL in a string) leaves no partial message behind.
            self.write_buf.truncate(mark);
            ReplicationError::InvalidArgument(e.to_string())
        })
    }

    /// Whether buffered output is waiting to be sent.
    pub(crate) fn has_pending_output(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Sends everything buffered. Cancel-safe: unsent bytes stay buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), ReplicationError> {
        while self.write_buf.has_remaining() {
            let n = self.socket.write_buf(&mut self.write_buf).await?;
            if n == 0 {
                return Err(ReplicationError::ConnectionClosed);
            }
        }
        self.socket.flush().await?;
        Ok(())
    }

    /// Closes the write side of the socket (after a `Terminate`).
    pub(crate) async fn shutdown(&mut self) -> Result<(), ReplicationError> {
        self.flush().await?;
        self.socket.shutdown().await?;
        Ok(())
    }

    /// The next message the caller must handle. Cancel-safe.
    pub(crate) async fn receive(&mut self) -> Result<Incoming, ReplicationError> {
        loop {
            let frame = self.read_frame().await?;
            match frame[0] {
                b'd' => return Ok(Incoming::CopyData(frame.freeze().slice(5..))),
                b'W' => return Ok(Incoming::CopyBothResponse),
                _ => {}
            }
            let mut frame = frame;
            let message = Message::parse(&mut frame)
                .map_err(|e| ReplicationError::Protocol(format!("malformed message: {e}")))?
                .ok_or_else(|| ReplicationError::Protocol("truncated message".into()))?;
            match message {
                Message::NoticeResponse(body) => {
                    let notice = ServerError::from_fields(body.fields())?;
                    log_notice(&notice);
                }
                Message::ParameterStatus(body) => {
                    let (name, value) = match (body.name(), body.value()) {
                        (Ok(n), Ok(v)) => (n.to_string(), v.to_string()),
                        _ => {
                            return Err(ReplicationError::Protocol(
                                "ParameterStatus is not valid UTF-8".into(),
                            ))
                        }
                    };
                    tracing::debug!(%name, %value, "server parameter");
                    self.parameters.insert(name, value);
                }
                other => return Ok(Incoming::Message(other)),
            }
        }
    }

    /// Reads one whole message (header included). Cancel-safe: `read_buf` is only appended to
    /// by `read_buf`, and a frame is split off synchronously once complete.
    async fn read_frame(&mut self) -> Result<BytesMut, ReplicationError> {
        loop {
            if let Some(frame) = self.split_frame()? {
                return Ok(frame);
            }
            let n = self.socket.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                if !self.read_buf.is_empty() {
                    tracing::debug!(
                        buffered = self.read_buf.len(),
                        "connection closed in the middle of a message"
                    );
                }
                return Err(ReplicationError::ConnectionClosed);
            }
        }
    }

    /// Splits a complete message off the read buffer, or makes room for more bytes.
    fn split_frame(&mut self) -> Result<Option<BytesMut>, ReplicationError> {
        if self.read_buf.len() < 5 {
            self.read_buf.reserve(READ_CHUNK);
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]) as usize;
        if len < 4 {
            return Err(ReplicationError::Protocol(format!(
                "message length {len} is below the minimum of 4"
            )));
        }
        let body = len - 4;
        if body > self.max_message_size {
            return Err(ReplicationError::MessageTooLarge {
                len: body,
                limit: self.max_message_size,
            });
        }
        let total = len + 1;
        if self.read_buf.len() < total {
            let missing = total - self.read_buf.len();
            self.read_buf
                .reserve(missing.min(READ_CHUNK.max(self.read_buf.len())));
            return Ok(None);
        }
        Ok(Some(self.read_buf.split_to(total)))
    }
}

/// Notices are informational: log them, at the level their severity deserves.
fn log_notice(notice: &ServerError) {
    match notice.severity.as_str() {
        "WARNING" => tracing::warn!(code = %notice.code, "Postgres: {}", notice.message),
        _ => tracing::debug!(
            severity = %notice.severity,
            code = %notice.code,
            "Postgres: {}",
            notice.message
        ),
    }
}
