//! How many rooms this gateway holds, by type: the figure behind seed 003's
//! `realtime_rooms_active{type}`.
//!
//! A room is a channel with at least one joined subscriber here (a topic's private room counts
//! apart from its public one, as the relays keep them apart). Its type is its
//! `realtime.channels` type (`public`, `private`, `presence`, `direct`), `private` for a
//! private join of a topic without a row (granted by the `realtime.messages` policies), and
//! `adhoc` for an open topic without a row. The join pipeline counts a room in when a channel
//! joins it and out when the last one leaves; the metrics read the totals when scraped, so
//! nothing here is on the message path.

use std::collections::HashMap;
use std::sync::Mutex;

/// The types every scrape reports, at 0 when no room has them, so alerts and dashboards always
/// find their series.
pub const ROOM_TYPES: [&str; 5] = ["public", "private", "presence", "direct", "adhoc"];

/// Rooms with subscribers here: room name → (type, joined channels).
#[derive(Default)]
pub struct RoomCensus {
    rooms: Mutex<HashMap<String, (String, usize)>>,
}

impl RoomCensus {
    /// A channel of type `room_type` joined `room`.
    pub fn joined(&self, room: &str, room_type: &str) {
        let mut rooms = self.rooms.lock().expect("census lock");
        match rooms.get_mut(room) {
            Some((_, members)) => *members += 1,
            None => {
                rooms.insert(room.to_string(), (room_type.to_string(), 1));
            }
        }
    }

    /// A channel left `room`; the last one out removes it.
    pub fn left(&self, room: &str) {
        let mut rooms = self.rooms.lock().expect("census lock");
        if let Some((_, members)) = rooms.get_mut(room) {
            *members -= 1;
            if *members == 0 {
                rooms.remove(room);
            }
        }
    }

    /// Rooms by type: every one of [`ROOM_TYPES`], and any other type a channel row has.
    pub fn by_type(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> =
            ROOM_TYPES.iter().map(|t| (t.to_string(), 0)).collect();
        for (room_type, _) in self.rooms.lock().expect("census lock").values() {
            match counts.iter_mut().find(|(t, _)| t == room_type) {
                Some((_, count)) => *count += 1,
                None => counts.push((room_type.clone(), 1)),
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(census: &RoomCensus, room_type: &str) -> usize {
        census
            .by_type()
            .into_iter()
            .find(|(t, _)| t == room_type)
            .map_or(0, |(_, n)| n)
    }

    #[test]
    fn a_room_counts_once_while_any_channel_is_in_it() {
        let census = RoomCensus::default();
        census.joined("general", "public");
        census.joined("general", "public");
        census.joined("dm", "direct");
        census.joined("lobby", "adhoc");
        assert_eq!(count(&census, "public"), 1);
        assert_eq!(count(&census, "direct"), 1);
        assert_eq!(count(&census, "presence"), 0);
        census.left("general");
        assert_eq!(count(&census, "public"), 1);
        census.left("general");
        census.left("dm");
        assert_eq!(count(&census, "public"), 0);
        assert_eq!(count(&census, "direct"), 0);
        assert_eq!(count(&census, "adhoc"), 1);
        census.left("nowhere");
        assert_eq!(census.by_type().len(), ROOM_TYPES.len());
    }
}
