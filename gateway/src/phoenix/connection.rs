//! One Phoenix WebSocket connection: a reader that decodes client frames and dispatches them,
//! and a writer that drains the connection's [`Outbox`] onto the socket.
//!
//! The reader owns the connection's protocol state (its joined [`Channels`]), so nothing in it
//! is shared or locked; it also waits for the first joined token to expire. Other tasks reach
//! the client only through the outbox.

use super::channel::Channels;
use super::frame::{self, OutFrame, Vsn};
use crate::auth::identity::Identity;
use crate::outbox::{Kick, Outbox, OutboxReceiver};
use crate::state::{ConnectionSlot, Gateway};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tracing::Instrument;

/// Runs a connection until the client leaves, goes idle, is kicked, or the gateway shuts down.
pub async fn run(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    slot: ConnectionSlot,
    vsn: Vsn,
    identity: Option<Arc<Identity>>,
) {
    let (outbox, receiver) = Outbox::new(gateway.config.send_queue);
    let span = tracing::info_span!("connection", conn = outbox.id);
    async move {
        let (sink, stream) = socket.split();
        let writer = tokio::spawn(write(sink, receiver).in_current_span());
        read(stream, &gateway, &outbox, vsn, identity).await;
        // Make sure the writer ends even if nothing kicked it.
        outbox.kick(Kick {
            code: 1000,
            reason: String::new(),
        });
        let _ = writer.await;
        drop(slot);
    }
    .instrument(span)
    .await
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

async fn read(
    mut stream: futures::stream::SplitStream<WebSocket>,
    gateway: &Arc<Gateway>,
    outbox: &Arc<Outbox>,
    vsn: Vsn,
    identity: Option<Arc<Identity>>,
) {
    let mut channels = Channels::new(gateway.clone(), outbox.clone(), vsn, identity);
    let mut shutdown = gateway.shutdown_signal();
    let idle = gateway.config.idle_timeout();
    loop {
        let expiry = channels.next_expiry();
        tokio::select! {
            message = tokio::time::timeout(idle, stream.next()) => {
                let message = match message {
                    Err(_) => {
                        outbox.kick(Kick { code: 1000, reason: format!("no message for {} s (send heartbeats)", idle.as_secs()) });
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        let kick = read_error_kick(&e);
                        tracing::debug!(error = %e, "connection read failed");
                        outbox.kick(kick);
                        break;
                    }
                    Ok(Some(Ok(message))) => message,
                };
                let decoded = match message {
                    Message::Text(text) => frame::decode_text(vsn, text.as_str()),
                    Message::Binary(bytes) => frame::decode_binary(vsn, &bytes),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                match decoded {
                    // Boxed: the handlers' futures are large, and inlined they would make every
                    // idle connection's task as large as the largest of them.
                    Ok(frame) => Box::pin(channels.handle(frame)).await,
                    Err(e) => {
                        gateway.metrics.frames_rejected.inc();
                        outbox.send(malformed_reply(vsn, &e.to_string()));
                    }
                }
                if outbox.is_kicked() {
                    break;
                }
            }
            _ = until(expiry) => Box::pin(channels.close_expired()).await,
            _ = shutdown.changed() => {
                outbox.kick(Kick { code: 1001, reason: "the server is shutting down".into() });
                break;
            }
        }
    }
    Box::pin(channels.leave_all()).await;
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

/// The reply to a frame that could not be decoded: on topic `phoenix`, with no ref (none could
/// be read), status `error` and the reason.
fn malformed_reply(vsn: Vsn, reason: &str) -> OutFrame {
    frame::reply(
        vsn,
        None,
        None,
        "phoenix",
        "error",
        &serde_json::json!({ "reason": format!("malformed message: {reason}") }),
    )
}

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
