//! Authentication and authorization: JWT claims into Postgres sessions, and channel access.
