//! The nself API's rooms, chat messages, typing and presence, shared by its two protocols
//! ([`crate::socketio`] and [`crate::native`]): [`request`] reads a request and names its
//! errors, [`session`] carries it out for one connection.

pub mod request;
pub mod session;
