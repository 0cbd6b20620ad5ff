//! The change event: one JSON object per changed row (or per truncated table), built once by the
//! CDC and published to JetStream; every consumer reads this shape.
//!
//! ```json
//! { "id": "00000000016B3748-00000000", "lsn": "0/16B3748",
//!   "commit_timestamp": "2026-01-30T10:15:23.123456Z", "schema": "public", "table": "users",
//!   "type": "UPDATE", "columns": [{"name": "id", "type": "int4"}, ...],
//!   "record": {...}, "old_record": {...}, "primary_key": ["id"] }
//! ```
//!
//! `record` is `null` for DELETE and TRUNCATE, `old_record` is `null` for INSERT and TRUNCATE and,
//! for UPDATE, when the table's replica identity sends no old values. Unchanged TOASTed values that
//! Postgres did not send are left out of `record` and named in `unchanged_toast`, never sent as a
//! fake `null`. A row too large for NATS' `max_payload` is sent reduced to its primary key, with
//! the reason in `errors`.

use crate::lsn::Lsn;
use crate::subject::Operation;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A row as column name → typed JSON value.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// A column of the changed table: its name and its Postgres type name (`int4`, `text`, `_int4`,
/// or the user type's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// One change of one row, or the truncation of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub id: EventId,
    /// Commit LSN of the transaction, in Postgres' `X/X` form.
    pub lsn: String,
    /// Commit time, RFC 3339 in UTC with microseconds.
    pub commit_timestamp: String,
    pub schema: String,
    pub table: String,
    #[serde(rename = "type")]
    pub operation: EventType,
    pub columns: Vec<Column>,
    pub record: Option<Row>,
    pub old_record: Option<Row>,
    pub primary_key: Vec<String>,
    /// Columns whose new value is an unchanged TOASTed value that Postgres did not send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_toast: Vec<String>,
    /// Why the event is incomplete, when it is (for instance a row too large for NATS, sent
    /// with its primary key only). Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The `type` field: `INSERT`, `UPDATE`, `DELETE` or `TRUNCATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl From<EventType> for Operation {
    fn from(t: EventType) -> Operation {
        match t {
            EventType::Insert => Operation::Insert,
            EventType::Update => Operation::Update,
            EventType::Delete => Operation::Delete,
            EventType::Truncate => Operation::Truncate,
        }
    }
}

/// The deterministic identity of an event: the commit LSN of its transaction and its position
/// among the transaction's events. Replaying the same WAL yields the same ids, which is what lets
/// JetStream (`Nats-Msg-Id`) and the CDC drop re-published events after a crash.
///
/// Its text form, `<commit LSN as 16 hex digits>-<position as 8 hex digits>`, sorts as the events
/// were committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub commit_lsn: Lsn,
    pub position: u32,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}-{:08X}", self.commit_lsn.0, self.position)
    }
}

/// The text was not an event id.
#[derive(Debug, thiserror::Error)]
#[error("invalid event id {0:?}: expected 16 hex digits, '-', 8 hex digits")]
pub struct InvalidEventId(pub String);

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidEventId(s.to_string());
        let (lsn, pos) = s.split_once('-').ok_or_else(bad)?;
        if lsn.len() != 16 || pos.len() != 8 {
            return Err(bad());
        }
        Ok(EventId {
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| bad())?),
            position: u32::from_str_radix(pos, 16).map_err(|_| bad())?,
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Formats a Postgres timestamp (microseconds since 2000-01-01 UTC, as pgoutput sends commit
/// times) as RFC 3339 in UTC with microseconds: `2026-01-30T10:15:23.123456Z`.
pub fn postgres_micros_to_rfc3339(micros: i64) -> String {
    let unix_nanos = (i128::from(micros) + i128::from(POSTGRES_EPOCH_UNIX_MICROS)) * 1000;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("invalid timestamp ({micros} µs since 2000-01-01)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_in_commit_order_and_round_trip() {
        let a = EventId {
            commit_lsn: Lsn(0x16B3748),
            position: 2,
        };
        let b = EventId {
            commit_lsn: Lsn(0x16B3748),
            position: 10,
        };
        let c = EventId {
            commit_lsn: Lsn(0x1_0000_0000),
            position: 0,
        };
        assert_eq!(a.to_string(), "00000000016B3748-00000002");
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        for id in [a, b, c] {
            assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
        assert!("16B3748-2".parse::<EventId>().is_err());
    }

    #[test]
    fn commit_timestamps_are_rfc3339_utc() {
        assert_eq!(postgres_micros_to_rfc3339(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(
            postgres_micros_to_rfc3339(823_602_923_123_456),
            "2026-02-05T10:35:23.123456Z"
        );
        assert_eq!(
            postgres_micros_to_rfc3339(-1),
            "1999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn event_json_has_the_contract_fields() {
        let event = ChangeEvent {
            id: EventId {
                commit_lsn: Lsn(1),
                position: 0,
            },
            lsn: Lsn(1).to_string(),
            commit_timestamp: postgres_micros_to_rfc3339(0),
            schema: "public".into(),
            table: "users".into(),
            operation: EventType::Insert,
            columns: vec![Column {
                name: "id".into(),
                type_name: "int4".into(),
            }],
            record: Some(serde_json::json!({"id": 1}).as_object().unwrap().clone()),
            old_record: None,
            primary_key: vec!["id".into()],
            unchanged_toast: vec![],
            errors: vec![],
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "0000000000000001-00000000", "lsn": "0/1",
                "commit_timestamp": "2000-01-01T00:00:00.000000Z",
                "schema": "public", "table": "users", "type": "INSERT",
                "columns": [{"name": "id", "type": "int4"}],
                "record": {"id": 1}, "old_record": null, "primary_key": ["id"]
            })
        );
        let back: ChangeEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
