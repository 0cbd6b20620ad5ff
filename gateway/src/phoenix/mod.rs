//! The Phoenix channels protocol as Supabase Realtime speaks it (realtime-js 2.x): the wire
//! format ([`frame`]), one connection's read and write loops ([`connection`]), and the
//! channels a connection joins ([`channel`]).

pub mod channel;
pub mod connection;
pub mod frame;
