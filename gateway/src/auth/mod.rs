//! Authentication and authorization: who a connection acts as ([`identity`]), those claims as
//! the Postgres session of every authorization query ([`session`]), and channel access under
//! Row Level Security ([`channel_access`]).

pub mod channel_access;
pub mod identity;
pub mod session;
