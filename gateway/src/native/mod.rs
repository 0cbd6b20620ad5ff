//! The plain WebSocket JSON protocol at `/ws` (seed 004): one JSON object per message, named by
//! its `type`. [`connection`] runs a socket and hands its requests to [`crate::rooms`]; the
//! server's frames are built by [`crate::wire`] (events) and here (replies).

pub mod connection;
