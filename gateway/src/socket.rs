//! The WebSocket plumbing every protocol shares.
//!
//! [`serve`] runs one connection: a writer task drains the connection's [`Outbox`] onto the
//! socket (a burst of frames, one flush; a kick closes with its code and reason), and the
//! reader hands each client message to the protocol's [`Session`], which owns the connection's
//! protocol state, so nothing in it is shared or locked. The reader also wakes the session at
//! its next deadline (token expiry, a Socket.IO ping), closes idle sockets, and on shutdown
//! closes with 1001. Other tasks reach the client only through the outbox.

use crate::outbox::{Kick, Outbox, OutboxReceiver};
use crate::phoenix::frame::OutFrame;
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
    let writer = tokio::spawn(write(sink, receiver).instrument(span.clone()));
    let mut session = start(outbox.clone());
    async move {
        let mut shutdown = gateway.shutdown_signal();
        let idle = session.idle_timeout();
        loop {
            let deadline = session.next_deadline();
            tokio::select! {
                message = tokio::time::timeout(idle, stream.next()) => {
                    let message = match message {
                        Err(_) => {
                            outbox.kick(Kick { code: 1000, reason: format!("no message for {} s (send heartbeats)", idle.as_secs()) });
                            break;
                        }
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            tracing::debug!(error = %e, "connection read failed");
                            outbox.kick(read_error_kick(&e));
                            break;
                        }
                        Ok(Some(Ok(message))) => message,
                    };
                    match message {
                        Message::Close(_) => break,
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
                _ = shutdown.changed() => {
                    outbox.kick(Kick { code: 1001, reason: "the server is shutting down".into() });
                    break;
                }
            }
        }
        Box::pin(session.finish()).await;
        // Make sure the writer ends even if nothing kicked it.
        outbox.kick(Kick {
            code: 1000,
            reason: String::new(),
        });
        let _ = writer.await;
        let user = gateway.registry.close(outbox.id);
        gateway
            .events
            .closed(&gateway.connection_id(outbox.id), user.as_deref());
        drop(slot);
    }
    .instrument(span)
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
        Kick {
            code: 1009,
            reason: "message too big (REALTIME_MAX_FRAME_BYTES)".into(),
        }
    } else {
        Kick {
            code: 1002,
            reason: "protocol error".into(),
        }
    }
}

/// Drains the outbox onto the socket until the writer is kicked or the socket fails.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut receiver: OutboxReceiver,
) {
    let outbox = receiver.outbox();
    loop {
        tokio::select! {
            biased;
            frame = receiver.recv() => {
                if sink.feed(to_message(frame)).await.is_err() {
                    return;
                }
                // Take whatever else is queued before flushing: one write for a burst.
                let mut batch = 1;
                while batch < 64 {
                    match receiver.try_recv() {
                        Some(frame) => {
                            if sink.feed(to_message(frame)).await.is_err() {
                                return;
                            }
                            batch += 1;
                        }
                        None => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            kick = outbox.kicked() => {
                // Flush what is already queued, then close with the reason.
                while let Some(frame) = receiver.try_recv() {
                    if sink.feed(to_message(frame)).await.is_err() {
                        return;
                    }
                }
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: kick.code,
                        reason: kick.reason.into(),
                    })))
                    .await;
                let _ = sink.close().await;
                return;
            }
        }
    }
}

fn to_message(frame: OutFrame) -> Message {
    match frame {
        OutFrame::Text(bytes) => Message::Text(
            axum::extract::ws::Utf8Bytes::try_from(bytes).expect("text frames are UTF-8"),
        ),
        OutFrame::Binary(bytes) => Message::Binary(bytes),
    }
}
