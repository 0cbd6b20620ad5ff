//! Socket.IO v4 at `/socket.io/`, with the nself plugin's events (seeds 000, 001, 003).
//!
//! Only the websocket transport is served: every gateway can then take any client with no
//! sticky sessions, since a Socket.IO session is one WebSocket. (HTTP long-polling spreads one
//! session over many requests, so behind a load balancer it needs every request of a session
//! routed to the gateway holding it: sticky sessions by `sid` cookie or hash. Clients connect
//! with `io(url, { transports: ["websocket"] })`.) [`packet`] reads and writes the packets;
//! [`connection`] runs a socket and hands its events to [`crate::rooms`].

pub mod connection;
pub mod packet;
