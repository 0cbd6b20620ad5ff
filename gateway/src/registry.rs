//! The live connections of this gateway, for the operators' views (`nself-realtime connections`,
//! `stats`, `status`).
//!
//! Connections register when they open and leave when they end; `/metrics` counts them by
//! protocol and presence status at each scrape. An entry is kept small (it is
//! paid per connection, and a gateway holds tens of thousands): the channels a connection is
//! in are not copied here but read from the broadcast rooms when an operator asks
//! ([`Registry::list`]). Nothing on the message path reads it.

use crate::outbox::ConnId;
use crate::presence::STATUSES;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

/// What the registry keeps per connection.
struct Entry {
    protocol: &'static str,
    /// The presence status the connection set, an index of [`STATUSES`] (nself API: online,
    /// away, busy, offline; one byte, where the entry has padding to spare): every connection
    /// starts `online`, and Phoenix ones stay so.
    status: u8,
    user_id: Option<Box<str>>,
    remote_addr: Option<IpAddr>,
    /// Unix time in milliseconds.
    connected_at: i64,
}

/// One live connection as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub protocol: &'static str,
    pub user_id: Option<String>,
    pub remote_addr: Option<String>,
    /// RFC 3339 UTC.
    pub connected_at: String,
    pub rooms: BTreeSet<String>,
}

/// Every live connection of this gateway.
#[derive(Default)]
pub struct Registry {
    connections: Mutex<HashMap<ConnId, Entry>>,
    peak: Mutex<usize>,
}

impl Registry {
    pub fn open(
        &self,
        conn: ConnId,
        protocol: &'static str,
        user_id: Option<&str>,
        remote_addr: Option<IpAddr>,
    ) {
        let entry = Entry {
            protocol,
            status: 0,
            user_id: user_id.map(Into::into),
            remote_addr,
            connected_at: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                as i64,
        };
        let mut connections = self.connections.lock().expect("registry lock");
        connections.insert(conn, entry);
        let mut peak = self.peak.lock().expect("peak lock");
        *peak = (*peak).max(connections.len());
    }

    /// Removes a connection; returns the user it acted for.
    pub fn close(&self, conn: ConnId) -> Option<String> {
        self.connections
            .lock()
            .expect("registry lock")
            .remove(&conn)
            .and_then(|entry| entry.user_id.map(String::from))
    }

    /// Sets who the connection acts for (after a later `auth`).
    pub fn set_user(&self, conn: ConnId, user_id: &str) {
        if let Some(entry) = self
            .connections
            .lock()
            .expect("registry lock")
            .get_mut(&conn)
        {
            entry.user_id = Some(user_id.into());
        }
    }

    /// Sets the presence status the connection declared (one of [`STATUSES`]).
    pub fn set_status(&self, conn: ConnId, status: &str) {
        let Some(status) = STATUSES.iter().position(|s| *s == status) else {
            return;
        };
        if let Some(entry) = self
            .connections
            .lock()
            .expect("registry lock")
            .get_mut(&conn)
        {
            entry.status = status as u8;
        }
    }

    /// Live connections by (protocol, status): seed 003's `realtime_connections_active`.
    pub fn count_by_protocol_and_status(&self) -> HashMap<(&'static str, &'static str), usize> {
        let mut counts = HashMap::new();
        for entry in self.connections.lock().expect("registry lock").values() {
            let status = STATUSES[usize::from(entry.status)];
            *counts.entry((entry.protocol, status)).or_insert(0) += 1;
        }
        counts
    }

    /// Every live connection, oldest first; `id` names a connection, `rooms` lists the channels
    /// each is in.
    pub fn list(
        &self,
        id: impl Fn(ConnId) -> String,
        mut rooms: HashMap<ConnId, BTreeSet<String>>,
    ) -> Vec<ConnectionInfo> {
        let connections = self.connections.lock().expect("registry lock");
        let mut list: Vec<(i64, ConnId, ConnectionInfo)> = connections
            .iter()
            .map(|(&conn, entry)| {
                let connected_at = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(entry.connected_at) * 1_000_000,
                )
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
                let info = ConnectionInfo {
                    id: id(conn),
                    protocol: entry.protocol,
                    user_id: entry.user_id.as_deref().map(str::to_string),
                    remote_addr: entry.remote_addr.map(|ip| ip.to_string()),
                    connected_at,
                    rooms: rooms.remove(&conn).unwrap_or_default(),
                };
                (entry.connected_at, conn, info)
            })
            .collect();
        list.sort_by_key(|(at, conn, _)| (*at, *conn));
        list.into_iter().map(|(_, _, info)| info).collect()
    }

    /// Live connections by protocol.
    pub fn count_by_protocol(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for entry in self.connections.lock().expect("registry lock").values() {
            *counts.entry(entry.protocol).or_insert(0) += 1;
        }
        counts
    }

    /// The most connections open at once since the gateway started.
    pub fn peak(&self) -> usize {
        *self.peak.lock().expect("peak lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_connections_with_their_rooms_and_keeps_the_peak() {
        let registry = Registry::default();
        registry.open(1, "socketio", Some("u1"), None);
        registry.open(2, "phoenix", None, Some("127.0.0.1".parse().unwrap()));
        registry.set_user(2, "u2");
        let rooms = HashMap::from([(1, BTreeSet::from(["general".to_string()]))]);
        let list = registry.list(|conn| format!("g-{conn}"), rooms);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, "g-1");
        assert_eq!(list[0].rooms.iter().collect::<Vec<_>>(), ["general"]);
        assert_eq!(list[1].user_id.as_deref(), Some("u2"));
        assert_eq!(list[1].remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(registry.close(2).as_deref(), Some("u2"));
        assert_eq!(registry.peak(), 2);
        assert_eq!(registry.count_by_protocol()["socketio"], 1);
        registry.set_status(1, "away");
        registry.open(3, "socketio", None, None);
        let counts = registry.count_by_protocol_and_status();
        assert_eq!(counts[&("socketio", "away")], 1);
        assert_eq!(counts[&("socketio", "online")], 1);
    }
}
