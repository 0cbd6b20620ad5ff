//! A postgres_changes binding: what a channel asked for (`{event, schema, table, filter}`), its
//! id, and the table feed it needs.
//!
//! realtime-js sends the bindings in `config.postgres_changes` of the join and expects them back
//! in the join reply, in the same order, with the same `event`, `schema`, `table` and `filter`
//! values and an `id` each; every change it receives names the ids it matches. Ids are a stable
//! hash of the binding, so identical bindings on different connections have the same id and the
//! fanout can encode a change once for all of them.

use super::filter::{self, Filter};
use nself_realtime_shared::event::EventType;
use nself_realtime_shared::subject::{self, DB_PREFIX};
use serde_json::{Map, Value};

/// Most bindings one channel may have.
pub const MAX_BINDINGS_PER_CHANNEL: usize = 100;
/// Most columns one binding's `select` may list (Postgres' own limit on a table's columns).
pub const MAX_SELECT_COLUMNS: usize = 1_600;

/// Which operations a binding wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    All,
    Only(EventType),
}

impl Events {
    pub fn includes(self, event: EventType) -> bool {
        match self {
            Events::All => true,
            Events::Only(wanted) => wanted == event,
        }
    }
}

/// One validated binding.
#[derive(Debug, Clone)]
pub struct Binding {
    pub id: u32,
    pub events: Events,
    /// `None` for every schema (`*`).
    pub schema: Option<String>,
    /// `None` for every table of the schema (`*` or absent).
    pub table: Option<String>,
    pub filter: Option<Filter>,
    /// `select`: the only columns its changes carry (`None`: the whole row).
    pub select: Option<Vec<String>>,
    /// The binding as the client sent it, echoed in the join reply with `id` added.
    pub echo: Map<String, Value>,
}

/// A binding the gateway refuses; the message goes back to the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BindingError {
    #[error("postgres_changes must be a list of {{event, schema, table, filter}} objects")]
    NotAList,
    #[error(
        "too many postgres_changes bindings ({0}); at most {MAX_BINDINGS_PER_CHANNEL} per channel"
    )]
    TooMany(usize),
    #[error("postgres_changes binding {0}: {1}")]
    Invalid(usize, String),
}

impl Binding {
    /// Parses `config.postgres_changes` of a join.
    pub fn parse_all(value: Option<&Value>) -> Result<Vec<Binding>, BindingError> {
        let list = match value {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(BindingError::NotAList),
        };
        if list.len() > MAX_BINDINGS_PER_CHANNEL {
            return Err(BindingError::TooMany(list.len()));
        }
        let mut bindings: Vec<Binding> = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            let mut binding = Binding::parse(item).map_err(|e| BindingError::Invalid(index, e))?;
            // Keep ids unique within the channel, should two bindings ever hash alike.
            while bindings.iter().any(|b| b.id == binding.id) {
                binding.id = binding.id.wrapping_add(1);
            }
            bindings.push(binding);
        }
        Ok(bindings)
    }

    fn parse(item: &Value) -> Result<Binding, String> {
        let object = item.as_object().ok_or("expected an object")?;
        let text = |key: &str| -> Result<Option<&str>, String> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("`{key}` must be a string")),
            }
        };
        let event = text("event")?.ok_or("`event` is required (*, INSERT, UPDATE or DELETE)")?;
        let events = match event.to_ascii_uppercase().as_str() {
            "*" => Events::All,
            "INSERT" => Events::Only(EventType::Insert),
            "UPDATE" => Events::Only(EventType::Update),
            "DELETE" => Events::Only(EventType::Delete),
            _ => {
                return Err(format!(
                    "unknown event {event:?}; use *, INSERT, UPDATE or DELETE"
                ))
            }
        };
        let name = |key: &str| -> Result<Option<String>, String> {
            match text(key)? {
                None | Some("*") => Ok(None),
                Some("") => Err(format!("`{key}` must not be empty")),
                Some(n) if n.len() > 63 * 4 => Err(format!("`{key}` is too long")),
                Some(n) => Ok(Some(n.to_string())),
            }
        };
        let schema = match text("schema")? {
            None => return Err("`schema` is required (a schema name or *)".into()),
            Some(_) => name("schema")?,
        };
        let table = name("table")?;
        if schema.is_none() && table.is_some() {
            return Err(
                "a table needs its schema: use schema \"public\" (or another) with a table".into(),
            );
        }
        let filter = match text("filter")? {
            None | Some("") => None,
            Some(f) => {
                if table.is_none() {
                    return Err("a filter needs a table".into());
                }
                Some(filter::parse(f).map_err(|e| format!("filter {f:?}: {e}"))?)
            }
        };
        let select = parse_select(object.get("select"), table.is_some())?;
        let mut echo = Map::new();
        for key in ["event", "schema", "table", "filter", "select"] {
            if let Some(v) = object.get(key) {
                echo.insert(key.to_string(), v.clone());
            }
        }
        let id = stable_id(&[
            event,
            text("schema")?.unwrap_or(""),
            text("table")?.unwrap_or(""),
            text("filter")?.unwrap_or(""),
            &select.as_deref().unwrap_or_default().join(","),
        ]);
        Ok(Binding {
            id,
            events,
            schema,
            table,
            filter,
            select,
            echo,
        })
    }

    /// The change-log subject filter this binding reads: one table, a schema, or everything.
    pub fn subject_filter(&self) -> Result<String, subject::SubjectError> {
        match (&self.schema, &self.table) {
            (Some(schema), Some(table)) => subject::table_changes(schema, table),
            (Some(schema), None) => subject::schema_changes(schema),
            (None, _) => Ok(format!("{DB_PREFIX}.*.*.*")),
        }
    }

    /// The binding as echoed in the join reply.
    pub fn reply_json(&self) -> Value {
        let mut echo = self.echo.clone();
        echo.insert("id".into(), Value::from(self.id));
        Value::Object(echo)
    }
}

/// `select`: absent (or null) for the whole row, else a list of distinct column names of the
/// binding's table.
fn parse_select(value: Option<&Value>, has_table: bool) -> Result<Option<Vec<String>>, String> {
    let list = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("`select` must be a list of column names".into()),
    };
    if !has_table {
        return Err("`select` needs a table".into());
    }
    if list.is_empty() || list.len() > MAX_SELECT_COLUMNS {
        return Err(format!(
            "`select` must list 1 to {MAX_SELECT_COLUMNS} columns, not {}",
            list.len()
        ));
    }
    let mut columns: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        match item.as_str() {
            Some(name) if !name.is_empty() && name.len() <= 63 * 4 => {
                if !columns.iter().any(|c| c == name) {
                    columns.push(name.to_string());
                }
            }
            _ => return Err(format!("`select` holds {item}, which is not a column name")),
        }
    }
    Ok(Some(columns))
}

/// FNV-1a over the parts, folded into 31 bits (a positive JS number).
fn stable_id(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_parse_echo_and_get_stable_ids() {
        let config = json!([
            {"event": "*", "schema": "public", "table": "todos", "filter": "id=eq.1"},
            {"event": "INSERT", "schema": "public"},
            {"event": "*", "schema": "*"},
        ]);
        let bindings = Binding::parse_all(Some(&config)).unwrap();
        assert_eq!(bindings.len(), 3);
        assert_eq!(
            bindings[0].subject_filter().unwrap(),
            "realtime.db.public.todos.*"
        );
        assert_eq!(
            bindings[1].subject_filter().unwrap(),
            "realtime.db.public.*.*"
        );
        assert_eq!(bindings[2].subject_filter().unwrap(), "realtime.db.*.*.*");
        let reply = bindings[0].reply_json();
        assert_eq!(reply["filter"], "id=eq.1");
        assert_eq!(reply["id"], bindings[0].id);
        let again = Binding::parse_all(Some(&config)).unwrap();
        assert_eq!(again[0].id, bindings[0].id);
        assert_ne!(bindings[0].id, bindings[1].id);
    }

    #[test]
    fn select_lists_columns_and_changes_the_id() {
        let whole = json!({"event": "*", "schema": "public", "table": "todos"});
        let mut some = whole.clone();
        some["select"] = json!(["id", "title", "id"]);
        let bindings = Binding::parse_all(Some(&json!([whole, some]))).unwrap();
        assert_eq!(bindings[0].select, None);
        assert_eq!(
            bindings[1].select.as_deref(),
            Some(&["id".to_string(), "title".to_string()][..])
        );
        assert_ne!(bindings[0].id, bindings[1].id);
        assert_eq!(
            bindings[1].reply_json()["select"],
            json!(["id", "title", "id"])
        );
    }

    #[test]
    fn bad_bindings_say_why() {
        for bad in [
            json!([{"schema": "public"}]),
            json!([{"event": "UPSERT", "schema": "public"}]),
            json!([{"event": "*"}]),
            json!([{"event": "*", "schema": "public", "filter": "id=eq.1"}]),
            json!([{"event": "*", "schema": "public", "table": "t", "filter": "id=fts.1"}]),
            json!([{"event": "*", "schema": "", "table": "t"}]),
            json!([{"event": 1, "schema": "public"}]),
            json!(["x"]),
            json!([{"event": "*", "schema": "public", "select": ["id"]}]),
            json!([{"event": "*", "schema": "public", "table": "t", "select": []}]),
            json!([{"event": "*", "schema": "public", "table": "t", "select": "id"}]),
            json!([{"event": "*", "schema": "public", "table": "t", "select": ["id", 1]}]),
            json!([{"event": "*", "schema": "public", "table": "t", "select": [""]}]),
        ] {
            assert!(Binding::parse_all(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(
            Binding::parse_all(Some(&json!({}))).unwrap_err(),
            BindingError::NotAList
        );
        assert!(Binding::parse_all(None).unwrap().is_empty());
    }
}
