//! The WebSocket plumbing every protocol shares.
//!
//! [`serve`] runs one connection: a writer task drains the connection's [`Outbox`] onto the
//! socket (a burst of frames, one flush; a kick closes with its code and reason), and the
//! reader hands each client message to the protocol's [`Session`], which owns the connection's
//! protocol state, so nothing in it is shared or locked. The reader also wakes the session at
//! its next deadline (token expiry, a Socket.IO ping), closes idle sockets, and on shutdown
//! closes with 1001. Other tasks reach the client only through the outbox.

use crate::outbox::OutFrame;
use crate::outbox::{Disconnect, Kick, Outbox, OutboxReceiver};
use crate::state::{ConnectionSlot, Gateway};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A protocol's per-connection state machine.
pub trait Session: Send {
    /// The protocol's name, for logs.
    const PROTOCOL: &'static str;

    /// A socket with no client message for this long is closed.
    fn idle_timeout(&self) -> Duration;

    /// Handles one text or binary message from the client.
    fn handle(&mut self, message: Message) -> impl Future<Output = ()> + Send;

    /// When [`Session::wake`] should next run, if ever.
    fn next_deadline(&self) -> Option<tokio::time::Instant>;

    /// Runs at the deadline.
    fn wake(&mut self) -> impl Future<Output = ()> + Send;

    /// The connection is ending: leave everything.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// Who is at the other end of a socket, as the upgrade request said.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote_addr: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    /// The user the upgrade's token named, if any.
    pub user_id: Option<String>,
}

/// Runs a connection (see the module docs) until the client leaves, goes idle, is kicked, or
/// the gateway shuts down. `start` builds the session around the connection's outbox. The
/// connection is in the gateway's [`crate::registry`] and event log meanwhile.
///
/// The connection ends as soon as its writer does (a write past its deadline, a dead peer) or
/// anything kicks it; then the session leaves its channels, and the socket and the connection
/// slot are released. Every write has a deadline, so that takes a bounded time however
/// silent the peer is.
///
/// Not an `async fn`: the setup runs now, and the returned future holds only what the
/// connection needs while it lives (an async fn would keep its arguments, the whole socket
/// among them, for the connection's life; that memory is paid per connection).
pub fn serve<S: Session + 'static>(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    slot: ConnectionSlot,
    peer: Peer,
    start: impl FnOnce(Arc<Outbox>) -> S,
) -> impl Future<Output = ()> + Send {
    let (outbox, receiver) = Outbox::new(gateway.config.send_queue);
    let span = tracing::info_span!("connection", conn = outbox.id, protocol = S::PROTOCOL);
    gateway.registry.open(
        outbox.id,
        S::PROTOCOL,
        peer.user_id.as_deref(),
        peer.remote_addr,
    );
    gateway.events.opened(
        &gateway.connection_id(outbox.id),
        S::PROTOCOL,
        peer.user_id.as_deref(),
        peer.remote_addr.map(|ip| ip.to_string()).as_deref(),
        peer.user_agent.as_deref(),
    );
    drop(peer);
    let (sink, mut stream) = socket.split();
    let deadlines = WriteDeadlines::new(gateway.config.write_timeout);
    let mut writer = tokio::spawn(write(sink, receiver, deadlines).instrument(span.clone()));
    let mut session = start(outbox.clone());
    async move {
        let mut shutdown = gateway.shutdown_signal();
        let idle = session.idle_timeout();
        let mut writer_done = false;
        // The client's side is over: it sent its close frame, or its stream ended.
        let mut peer_done = false;
        // Reading failed (an oversized or malformed frame): the stream can no longer be read.
        let mut read_failed = false;
        loop {
            let deadline = session.next_deadline();
            tokio::select! {
                message = tokio::time::timeout(idle, stream.next()) => {
                    let message = match message {
                        Err(_) => {
                            outbox.kick(Kick::new(Disconnect::Idle, 1000, format!("no message for {} s (send heartbeats)", idle.as_secs())));
                            break;
                        }
                        Ok(None) => {
                            peer_done = true;
                            break;
                        }
                        Ok(Some(Err(e))) => {
                            tracing::debug!(error = %e, "connection read failed");
                            outbox.kick(read_error_kick(&e));
                            read_failed = true;
                            break;
                        }
                        Ok(Some(Ok(message))) => message,
                    };
                    match message {
                        Message::Close(_) => {
                            outbox.kick(Kick::new(Disconnect::ClientClosed, 1000, "closed by the client"));
                            peer_done = true;
                            break;
                        }
                        Message::Ping(_) | Message::Pong(_) => continue,
                        // Boxed: the handlers' futures are large, and inlined they would make
                        // every idle connection's task as large as the largest of them.
                        message => Box::pin(session.handle(message)).await,
                    }
                    if outbox.is_kicked() {
                        break;
                    }
                }
                _ = until(deadline) => {
                    Box::pin(session.wake()).await;
                    if outbox.is_kicked() {
                        break;
                    }
                }
                // The writer ended: kicked from anywhere (it says goodbye, then ends), a write past
                // its deadline, or a dead socket.
                _ = &mut writer => {
                    writer_done = true;
                    break;
                }
                _ = shutdown.changed() => {
                    outbox.kick(Kick::new(Disconnect::Shutdown, 1001, "the server is shutting down"));
                    break;
                }
            }
        }
        Box::pin(session.finish()).await;
        // Make sure the writer ends even if nothing kicked it (the client's stream ended).
        outbox.kick(Kick::new(Disconnect::ClientClosed, 1000, "the connection ended"));
        if !writer_done {
            let _ = writer.await;
        }
        let kick = outbox.kick_of();
        let stuck = kick.as_ref().is_some_and(|k| k.cause.client_stuck());
        Box::pin(release_socket(stream, peer_done || stuck, read_failed)).await;
        record_disconnect(&gateway, kick.as_ref());
        let user = gateway.registry.close(outbox.id);
        gateway
            .events
            .closed(&gateway.connection_id(outbox.id), user.as_deref());
        drop(slot);
    }
    .instrument(span)
}

/// Lets go of the socket's read half (the writer has dropped the other) so that the client
/// reads the close frame: unless the client is done (its close frame came, or it is not
/// reading anyway), what it still sends is drained first ([`linger`]); a stream that can no
/// longer be read is held open [`CLOSE_DEADLINE`] in the background instead, since closing
/// with unread data resets the connection.
async fn release_socket(
    mut stream: futures::stream::SplitStream<WebSocket>,
    client_done: bool,
    mut unreadable: bool,
) {
    if !client_done && !unreadable {
        unreadable = !linger(&mut stream).await;
    }
    if unreadable {
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_DEADLINE).await;
            drop(stream);
        });
    }
}

/// After a close the server started: reads (and drops) what the client still sends until its
/// close frame, for at most [`CLOSE_DEADLINE`]. Closing the socket with client data unread
/// would reset the connection, and the client could lose the close frame and its reason (a
/// browser then reports 1006).
/// Returns false when reading failed on the way (the stream cannot be drained).
async fn linger(stream: &mut futures::stream::SplitStream<WebSocket>) -> bool {
    let until_closed = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(_))) | None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(CLOSE_DEADLINE, until_closed)
        .await
        .unwrap_or(true)
}

/// Counts (and, when the server ended it, logs) how a connection ended.
fn record_disconnect(gateway: &Gateway, kick: Option<&Kick>) {
    let cause = kick.map_or(Disconnect::ClientClosed, |k| k.cause);
    gateway
        .metrics
        .disconnections_total
        .with_label_values(&[cause.label()])
        .inc();
    match (cause, kick) {
        (Disconnect::ClientClosed | Disconnect::Shutdown, _) | (_, None) => {}
        (
            Disconnect::SlowConsumer | Disconnect::WriteTimeout | Disconnect::WriteFailed,
            Some(kick),
        ) => {
            tracing::warn!(reason = cause.label(), code = kick.code, detail = %kick.reason, "client dropped");
        }
        (_, Some(kick)) => {
            tracing::info!(reason = cause.label(), code = kick.code, detail = %kick.reason, "connection closed by the server");
        }
    }
}

/// Accepts the socket only to close it at once with a reason (the browser cannot read the body
/// of a refused upgrade, but it sees the close reason).
pub async fn refuse(mut socket: WebSocket, code: u16, reason: String) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Waits until `deadline`, or forever.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Tungstenite's read errors that deserve a specific close code.
fn read_error_kick(e: &axum::Error) -> Kick {
    let text = e.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
    {
        Kick::new(
            Disconnect::TooBig,
            1009,
            "message too big (REALTIME_MAX_FRAME_BYTES)",
        )
    } else {
        Kick::new(Disconnect::ReadFailed, 1002, "protocol error")
    }
}

/// How long the writer may wait on the socket.
#[derive(Debug, Clone, Copy)]
struct WriteDeadlines {
    /// One burst of frames written and flushed (`REALTIME_WRITE_TIMEOUT`).
    burst: Duration,
    /// The goodbye: what is still queued, the close frame and the TCP shutdown, all together.
    /// Short, so a stuck peer cannot hold a closing connection (or a graceful stop) for long.
    close: Duration,
}

/// Longest the goodbye of a closing connection may take.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

impl WriteDeadlines {
    fn new(burst: Duration) -> WriteDeadlines {
        WriteDeadlines {
            burst,
            close: CLOSE_DEADLINE.min(burst),
        }
    }
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// Drains the outbox onto the socket until the connection is kicked, a write misses its
/// deadline, or the socket fails; the last two kick the connection themselves, so its reader
/// ends too.
async fn write(mut sink: Sink, mut receiver: OutboxReceiver, deadlines: WriteDeadlines) {
    let outbox = receiver.outbox();
    // The rarely taken paths (a burst under its deadline, the goodbye) are boxed: this future
    // is allocated for every connection, and its size is its largest state.
    loop {
        tokio::select! {
            biased;
            kick = outbox.kicked() => {
                Box::pin(goodbye(&mut sink, &mut receiver, kick, deadlines.close)).await;
                return;
            }
            frame = receiver.recv() => {
                // A kick arriving while a write is stuck stops waiting for it.
                let written = tokio::select! {
                    biased;
                    kick = outbox.kicked() => {
                        Box::pin(goodbye(&mut sink, &mut receiver, kick, deadlines.close)).await;
                        return;
                    }
                    written = Box::pin(tokio::time::timeout(deadlines.burst, write_burst(&mut sink, &mut receiver, frame))) => written,
                };
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // The client's close frame arrived first (a write after it is refused):
                        // the closing handshake still needs our reply, which closing sends.
                        let cause = if e.to_string().contains("after closing") {
                            Disconnect::ClientClosed
                        } else {
                            Disconnect::WriteFailed
                        };
                        outbox.kick(Kick::new(cause, 1000, "the connection is closing"));
                        let _ = Box::pin(tokio::time::timeout(deadlines.close, sink.close())).await;
                        return;
                    }
                    Err(_) => {
                        outbox.kick(Kick::new(
                            Disconnect::WriteTimeout,
                            1008,
                            format!(
                                "too slow: a write took more than {} ms (REALTIME_WRITE_TIMEOUT)",
                                deadlines.burst.as_millis()
                            ),
                        ));
                        // The peer is not reading; a close frame would not get through either.
                        return;
                    }
                }
            }
        }
    }
}

/// Writes `first` and whatever else is queued (up to 64 frames), then flushes: one write for a
/// burst.
async fn write_burst(
    sink: &mut Sink,
    receiver: &mut OutboxReceiver,
    first: OutFrame,
) -> Result<(), axum::Error> {
    sink.feed(to_message(first)).await?;
    let mut batch = 1;
    while batch < 64 {
        match receiver.try_recv() {
            Some(frame) => {
                sink.feed(to_message(frame)).await?;
                batch += 1;
            }
            None => break,
        }
    }
    sink.flush().await
}

/// The end of a kicked connection, within `deadline`: what is already queued (unless the
/// client is not reading anyway), then the close frame with the kick's code and reason.
///
/// Each step is tried whatever the one before did: after the client's own close frame, frames
/// and our close frame are refused, but closing the sink still sends the reply the closing
/// handshake needs.
async fn goodbye(sink: &mut Sink, receiver: &mut OutboxReceiver, kick: Kick, deadline: Duration) {
    let close = async {
        if !kick.cause.client_stuck() {
            while let Some(frame) = receiver.try_recv() {
                if sink.feed(to_message(frame)).await.is_err() {
                    break;
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: kick.code,
                reason: kick.reason.into(),
            })))
            .await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(deadline, close).await;
}

fn to_message(frame: OutFrame) -> Message {
    match frame {
        OutFrame::Text(bytes) => Message::Text(
            axum::extract::ws::Utf8Bytes::try_from(bytes).expect("text frames are UTF-8"),
        ),
        OutFrame::Binary(bytes) => Message::Binary(bytes),
    }
}
