//! The live connections of this gateway, for the operators' views (`nself-realtime connections`,
//! `stats`, `status`) and the connection audit of the event log.
//!
//! Connections register when they open and leave when they end; their rooms are updated on
//! join and leave. Nothing on the message path reads it.

use crate::outbox::ConnId;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

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
    connections: Mutex<HashMap<ConnId, ConnectionInfo>>,
    peak: Mutex<usize>,
}

impl Registry {
    pub fn open(&self, conn: ConnId, info: ConnectionInfo) {
        let mut connections = self.connections.lock().expect("registry lock");
        connections.insert(conn, info);
        let mut peak = self.peak.lock().expect("peak lock");
        *peak = (*peak).max(connections.len());
    }

    pub fn close(&self, conn: ConnId) -> Option<ConnectionInfo> {
        self.connections
            .lock()
            .expect("registry lock")
            .remove(&conn)
    }

    /// Sets who the connection acts for (after a later `auth`).
    pub fn set_user(&self, conn: ConnId, user_id: Option<String>) {
        if let Some(info) = self
            .connections
            .lock()
            .expect("registry lock")
            .get_mut(&conn)
        {
            info.user_id = user_id;
        }
    }

    pub fn joined(&self, conn: ConnId, room: &str) {
        if let Some(info) = self
            .connections
            .lock()
            .expect("registry lock")
            .get_mut(&conn)
        {
            info.rooms.insert(room.to_string());
        }
    }

    pub fn left(&self, conn: ConnId, room: &str) {
        if let Some(info) = self
            .connections
            .lock()
            .expect("registry lock")
            .get_mut(&conn)
        {
            info.rooms.remove(room);
        }
    }

    /// Every live connection, oldest first.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .connections
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        list
    }

    /// Live connections by protocol.
    pub fn count_by_protocol(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for info in self.connections.lock().expect("registry lock").values() {
            *counts.entry(info.protocol).or_insert(0) += 1;
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

    fn info(id: &str) -> ConnectionInfo {
        ConnectionInfo {
            id: id.into(),
            protocol: "socketio",
            user_id: Some("u1".into()),
            remote_addr: None,
            connected_at: "2026-01-30T10:00:00.000Z".into(),
            rooms: BTreeSet::new(),
        }
    }

    #[test]
    fn tracks_rooms_and_the_peak() {
        let registry = Registry::default();
        registry.open(1, info("a"));
        registry.open(2, info("b"));
        registry.joined(1, "general");
        registry.joined(1, "random");
        registry.left(1, "random");
        assert_eq!(
            registry.list()[0].rooms.iter().collect::<Vec<_>>(),
            ["general"]
        );
        assert!(registry.close(2).is_some());
        assert_eq!(registry.list().len(), 1);
        assert_eq!(registry.peak(), 2);
        assert_eq!(registry.count_by_protocol()["socketio"], 1);
    }
}
