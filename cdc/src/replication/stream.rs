//! The streaming half of a replication session (CopyBoth mode): WAL data and keepalives in,
//! standby status updates out.
//!
//! Reading and acknowledging are separate calls on purpose. The CDC reads with
//! [`ReplicationStream::next`] inside `tokio::select!` (it must be cancel-safe, and is: see
//! [`super::connection`]); when its publisher falls behind it stops calling `next`, and TCP flow
//! control then holds the walsender back, while it keeps calling
//! [`ReplicationStream::send_status`] so `wal_sender_timeout` does not end the session. Nothing
//! here replies to keepalives on its own: only the caller knows which LSN is safe to confirm.

use super::connection::{Connection, Incoming};
use super::error::{ReplicationError, ServerError};
use bytes::{Buf, BufMut, Bytes};
use nself_realtime_shared::lsn::Lsn;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// How long [`ReplicationStream::finish`] waits for the server to end the COPY.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// One message of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// A chunk of WAL decoded by pgoutput (`XLogData`): `data` is one pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        /// Server time of sending, microseconds since 2000-01-01 UTC.
        server_clock: i64,
        data: Bytes,
    },
    /// The walsender's keepalive. When `reply_requested`, answer soon with
    /// [`ReplicationStream::send_status`] or the server ends the session at
    /// `wal_sender_timeout`.
    Keepalive {
        wal_end: Lsn,
        server_clock: i64,
        reply_requested: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// The server ended the COPY (CopyDone): no more events.
    Ended,
    /// An error ended the session.
    Failed,
}

/// A logical replication stream (the session after `START_REPLICATION`).
pub struct ReplicationStream {
    conn: Connection,
    state: State,
}

impl ReplicationStream {
    pub(crate) fn new(conn: Connection) -> ReplicationStream {
        ReplicationStream {
            conn,
            state: State::Streaming,
        }
    }

    /// The next event; `None` once the server ended the stream with CopyDone.
    ///
    /// Cancel-safe: dropping the future loses no data (partial messages stay buffered), so it
    /// can be one branch of `tokio::select!`. Any unsent status update is sent first.
    pub async fn next(&mut self) -> Result<Option<ReplicationEvent>, ReplicationError> {
        match self.state {
            State::Streaming => {}
            State::Ended => return Ok(None),
            State::Failed => return Err(ReplicationError::ConnectionClosed),
        }
        let result = self.read_event().await;
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    async fn read_event(&mut self) -> Result<Option<ReplicationEvent>, ReplicationError> {
        if self.conn.has_pending_output() {
            self.conn.flush().await?;
        }
        match self.conn.receive().await? {
            Incoming::CopyData(payload) => parse_copy_data(payload).map(Some),
            Incoming::Message(Message::CopyDone) => {
                tracing::debug!("server ended the replication stream (CopyDone)");
                self.state = State::Ended;
                Ok(None)
            }
            Incoming::Message(Message::ErrorResponse(body)) => {
                Err(ServerError::from_fields(body.fields())?.into())
            }
            _ => Err(ReplicationError::Protocol(
                "unexpected message in the replication stream".into(),
            )),
        }
    }

    /// Sends a Standby Status Update: WAL up to `written` received, up to `flushed` safely
    /// stored (the slot's `confirmed_flush_lsn` follows it), up to `applied` applied, with the
    /// current time. `reply_requested` asks the server for an immediate keepalive.
    ///
    /// Works whether or not the caller is reading: this is how a back-pressured CDC stays
    /// alive. Cancel-safe: a partly written update is completed by the next call (or by
    /// [`next`](Self::next)).
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        if self.state == State::Failed {
            return Err(ReplicationError::ConnectionClosed);
        }
        let update = status_update(
            written,
            flushed,
            applied,
            now_postgres_micros(),
            reply_requested,
        );
        self.conn.buffer(|buf| {
            frontend::CopyData::new(&update[..])?.write(buf);
            Ok(())
        })?;
        tracing::trace!(%written, %flushed, %applied, reply_requested, "standby status update");
        let result = self.conn.flush().await;
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Ends streaming: sends CopyDone, waits (bounded) for the server's CopyDone, discarding
    /// WAL still in flight, then sends Terminate and closes the socket. Status updates sent
    /// before are delivered first. On a stream that already failed there is nothing to close.
    pub async fn finish(mut self) -> Result<(), ReplicationError> {
        match self.state {
            State::Failed => return Ok(()),
            State::Ended => self.buffer_copy_done()?,
            State::Streaming => {
                self.buffer_copy_done()?;
                self.conn.flush().await?;
                let drain = async {
                    loop {
                        match self.conn.receive().await? {
                            Incoming::Message(Message::CopyDone) => {
                                return Ok::<(), ReplicationError>(())
                            }
                            Incoming::Message(Message::ErrorResponse(body)) => {
                                return Err(ServerError::from_fields(body.fields())?.into())
                            }
                            _ => {}
                        }
                    }
                };
                match tokio::time::timeout(FINISH_TIMEOUT, drain).await {
                    Ok(result) => result?,
                    Err(_) => {
                        tracing::debug!("no CopyDone from the server in time; closing anyway")
                    }
                }
            }
        }
        tracing::debug!("closing the replication connection");
        self.conn.buffer(|buf| {
            frontend::terminate(buf);
            Ok(())
        })?;
        self.conn.shutdown().await
    }

    fn buffer_copy_done(&mut self) -> Result<(), ReplicationError> {
        self.conn.buffer(|buf| {
            frontend::copy_done(buf);
            Ok(())
        })
    }
}

/// Parses the CopyData payload of a replication stream: `w` XLogData or `k` keepalive.
fn parse_copy_data(mut payload: Bytes) -> Result<ReplicationEvent, ReplicationError> {
    let short = |what: &str| ReplicationError::Protocol(format!("{what} message too short"));
    if payload.is_empty() {
        return Err(short("CopyData"));
    }
    match payload.get_u8() {
        b'w' => {
            if payload.len() < 24 {
                return Err(short("XLogData"));
            }
            let wal_start = Lsn(payload.get_u64());
            let wal_end = Lsn(payload.get_u64());
            let server_clock = payload.get_i64();
            Ok(ReplicationEvent::XLogData {
                wal_start,
                wal_end,
                server_clock,
                data: payload,
            })
        }
        b'k' => {
            if payload.len() < 17 {
                return Err(short("Primary keepalive"));
            }
            let wal_end = Lsn(payload.get_u64());
            let server_clock = payload.get_i64();
            let reply_requested = payload.get_u8() != 0;
            tracing::trace!(%wal_end, reply_requested, "keepalive");
            Ok(ReplicationEvent::Keepalive {
                wal_end,
                server_clock,
                reply_requested,
            })
        }
        other => Err(ReplicationError::Protocol(format!(
            "unknown replication message type {:?}",
            char::from(other)
        ))),
    }
}

/// The Standby Status Update message (`r`), 34 bytes.
fn status_update(written: Lsn, flushed: Lsn, applied: Lsn, clock: i64, reply: bool) -> [u8; 34] {
    let mut out = [0u8; 34];
    let mut buf = &mut out[..];
    buf.put_u8(b'r');
    buf.put_u64(written.0);
    buf.put_u64(flushed.0);
    buf.put_u64(applied.0);
    buf.put_i64(clock);
    buf.put_u8(u8::from(reply));
    out
}

/// Now, in microseconds since 2000-01-01 UTC (the protocol's clock).
fn now_postgres_micros() -> i64 {
    let unix_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix_micros - POSTGRES_EPOCH_UNIX_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&2u64.to_be_bytes());
        w.extend_from_slice(&3i64.to_be_bytes());
        w.extend_from_slice(b"I...");
        assert_eq!(
            parse_copy_data(Bytes::from(w)).unwrap(),
            ReplicationEvent::XLogData {
                wal_start: Lsn(1),
                wal_end: Lsn(2),
                server_clock: 3,
                data: Bytes::from_static(b"I...")
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&9u64.to_be_bytes());
        k.extend_from_slice(&(-1i64).to_be_bytes());
        k.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(k)).unwrap(),
            ReplicationEvent::Keepalive {
                wal_end: Lsn(9),
                server_clock: -1,
                reply_requested: true
            }
        );
        for bad in [&b""[..], b"w123", b"k", b"x"] {
            assert!(parse_copy_data(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn status_update_layout() {
        let msg = status_update(Lsn(1), Lsn(2), Lsn(3), 4, true);
        assert_eq!(msg[0], b'r');
        assert_eq!(&msg[1..9], &1u64.to_be_bytes());
        assert_eq!(&msg[9..17], &2u64.to_be_bytes());
        assert_eq!(&msg[17..25], &3u64.to_be_bytes());
        assert_eq!(&msg[25..33], &4i64.to_be_bytes());
        assert_eq!(msg[33], 1);
        assert!(now_postgres_micros() > 800_000_000_000_000);
    }
}
