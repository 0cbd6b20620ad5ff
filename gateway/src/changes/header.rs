//! What routing reads of a change event: its slim header.
//!
//! A table feed routes each change by schema, table, operation and commit time, and by a few
//! columns of one row: those the bindings' filters, the tables' owner rules and the Row Level
//! Security check (the primary key) name. [`ChangeHeader::read`] takes the header fields from
//! the event's JSON bytes, borrowing its strings where the JSON has no escapes, and leaves the
//! rows as raw JSON text; [`ChangeHeader::routing_row`] then reads only the wanted columns of
//! the one row routing looks at, skipping the others without building them. The event bytes
//! themselves go to clients untouched, so no change is ever parsed whole on the hot path.

use nself_realtime_shared::event::{Column, EventType, Row};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;

/// Column names: the ones routing needs from a table's rows.
pub type ColumnNames<'n> = HashSet<&'n str>;

/// The fields of a change event that routing reads.
#[derive(Debug, Deserialize)]
pub struct ChangeHeader<'a> {
    #[serde(borrow)]
    pub schema: Cow<'a, str>,
    #[serde(borrow)]
    pub table: Cow<'a, str>,
    #[serde(rename = "type")]
    pub operation: EventType,
    #[serde(borrow)]
    pub commit_timestamp: Cow<'a, str>,
    #[serde(borrow, default)]
    columns: Vec<ColumnRef<'a>>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_record: Option<&'a RawValue>,
}

/// A column of the event's `columns`, borrowed.
#[derive(Debug, Deserialize)]
struct ColumnRef<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    type_name: Cow<'a, str>,
}

impl<'a> ChangeHeader<'a> {
    /// Reads the header of a change event's JSON.
    pub fn read(event: &'a [u8]) -> Result<ChangeHeader<'a>, serde_json::Error> {
        serde_json::from_slice(event)
    }

    /// Whether the change was committed at or after `since` (a time that does not parse counts
    /// as after: the change is kept).
    pub fn committed_at_or_after(&self, since: time::OffsetDateTime) -> bool {
        time::OffsetDateTime::parse(
            &self.commit_timestamp,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t >= since)
        .unwrap_or(true)
    }

    /// The row routing looks at: a DELETE's `old_record`, else the `record`, with only the
    /// `wanted` columns; empty when nothing is wanted or the event has no such row.
    pub fn routing_row(&self, wanted: &ColumnNames) -> Row {
        let raw = match self.operation {
            EventType::Delete => self.old_record,
            _ => self.record,
        };
        match raw {
            Some(raw) if !wanted.is_empty() => {
                let mut reader = serde_json::Deserializer::from_str(raw.get());
                WantedColumns(wanted)
                    .deserialize(&mut reader)
                    .unwrap_or_default()
            }
            _ => Row::new(),
        }
    }

    /// The `wanted` columns with their type names, for typed filter comparisons.
    pub fn columns(&self, wanted: &ColumnNames) -> Vec<Column> {
        self.columns
            .iter()
            .filter(|c| wanted.contains(c.name.as_ref()))
            .map(|c| Column {
                name: c.name.to_string(),
                type_name: c.type_name.to_string(),
            })
            .collect()
    }
}

/// Reads a JSON object into a [`Row`] of the wanted keys, skipping the other values unbuilt.
struct WantedColumns<'w, 'n>(&'w ColumnNames<'n>);

/// An object key, borrowed where it has no escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> DeserializeSeed<'de> for WantedColumns<'_, '_> {
    type Value = Row;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Row, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WantedColumns<'_, '_> {
    type Value = Row;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut row = Row::new();
        while let Some(Key(name)) = map.next_key()? {
            if self.0.contains(name.as_ref()) {
                row.insert(name.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nself_realtime_shared::event::ChangeEvent;
    use serde_json::json;

    fn event(operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "00000000016B3748-00000000",
            "lsn": "0/16B3748",
            "commit_timestamp": "2026-12-06T10:00:00.000001Z",
            "schema": "pub\"lic",
            "table": "todos",
            "type": operation,
            "columns": [{"name": "id", "type": "int8"}, {"name": "owner", "type": "uuid"},
                        {"name": "body", "type": "jsonb"}],
            "record": {"id": 7, "owner": "u1", "body": {"deep": [1, 2, {"x": "y"}]}},
            "old_record": {"id": 6},
            "primary_key": ["id"],
            "errors": []
        }))
        .unwrap()
    }

    #[test]
    fn reads_the_header_and_only_the_wanted_columns() {
        let bytes = event("UPDATE");
        // The fixture is a real change event.
        serde_json::from_slice::<ChangeEvent>(&bytes).unwrap();
        let header = ChangeHeader::read(&bytes).unwrap();
        assert_eq!(header.schema, "pub\"lic");
        assert_eq!(header.table, "todos");
        assert!(matches!(header.table, Cow::Borrowed(_)));
        assert_eq!(header.operation, EventType::Update);
        let wanted: ColumnNames = ["owner", "id", "absent"].into_iter().collect();
        let row = header.routing_row(&wanted);
        assert_eq!(
            serde_json::Value::Object(row),
            json!({"id": 7, "owner": "u1"})
        );
        let names: Vec<String> = header
            .columns(&wanted)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["id", "owner"]);
        assert!(header.routing_row(&ColumnNames::new()).is_empty());
    }

    #[test]
    fn a_delete_is_routed_on_its_old_record() {
        let bytes = event("DELETE");
        let header = ChangeHeader::read(&bytes).unwrap();
        let wanted: ColumnNames = ["id", "owner"].into_iter().collect();
        assert_eq!(
            serde_json::Value::Object(header.routing_row(&wanted)),
            json!({"id": 6})
        );
    }

    #[test]
    fn a_truncate_has_no_row_and_bad_json_is_an_error() {
        let bytes = serde_json::to_vec(&json!({
            "schema": "public", "table": "t", "type": "TRUNCATE",
            "commit_timestamp": "2026-12-06T10:00:00Z", "record": null, "old_record": null
        }))
        .unwrap();
        let header = ChangeHeader::read(&bytes).unwrap();
        assert!(header.routing_row(&["id"].into_iter().collect()).is_empty());
        assert!(ChangeHeader::read(b"{\"schema\": 1}").is_err());
        assert!(ChangeHeader::read(b"not json").is_err());
    }

    #[test]
    fn commit_times_compare_as_instants() {
        let bytes = event("INSERT");
        let header = ChangeHeader::read(&bytes).unwrap();
        let at = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert!(header.committed_at_or_after(at("2026-12-06T10:00:00Z")));
        assert!(header.committed_at_or_after(at("2026-12-06T11:00:00.000001+01:00")));
        assert!(!header.committed_at_or_after(at("2026-12-06T10:00:01Z")));
    }
}
