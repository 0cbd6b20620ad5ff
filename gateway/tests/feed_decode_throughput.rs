//! What a table feed pays to read one change before routing it: the slim header (the header
//! fields, then only the columns routing needs from one row; `changes::header`) against parsing
//! the whole change event, as the feed did before its stages. Ignored by default (timing is
//! noisy on shared CI); run
//! `cargo test --release -p nself-realtime-gateway --test feed_decode_throughput -- --ignored --nocapture`
//! to see changes per second on one core.

use nself_realtime_gateway::changes::header::{ChangeHeader, ColumnNames};
use nself_realtime_shared::event::ChangeEvent;
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

/// A 10-column row change as the CDC publishes it (an UPDATE of a chat-like table).
fn event() -> Vec<u8> {
    let row = json!({
        "id": 123456789, "user_id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "title": "A reasonably short title",
        "body": "Some body text of a typical chat message, not too long.",
        "score": 2.75, "price": "1234.56", "active": true,
        "meta": {"k": "v", "n": 1, "nested": [1, 2, {"deep": "value"}]},
        "tags": ["a", "b", "c"], "created_at": "2026-01-30T10:15:23.123456+00:00"
    });
    let types = [
        ("id", "int8"),
        ("user_id", "uuid"),
        ("title", "text"),
        ("body", "text"),
        ("score", "float8"),
        ("price", "numeric"),
        ("active", "bool"),
        ("meta", "jsonb"),
        ("tags", "_text"),
        ("created_at", "timestamptz"),
    ];
    serde_json::to_vec(&json!({
        "id": "00000000016B3748-00000003", "lsn": "0/16B3748",
        "commit_timestamp": "2026-01-30T10:15:23.123456Z", "schema": "public", "table": "messages",
        "type": "UPDATE",
        "columns": types.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "record": row, "old_record": {"id": 123456789}, "primary_key": ["id"], "errors": []
    }))
    .unwrap()
}

fn rate(label: &str, rounds: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..rounds / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        f();
    }
    let per_second = rounds as f64 / started.elapsed().as_secs_f64();
    println!("{label}: {per_second:.0} changes/s");
    per_second
}

#[test]
#[ignore = "a measurement, not a check"]
fn changes_read_per_second() {
    let bytes = event();
    let rounds = 200_000;
    let whole = rate("whole ChangeEvent", rounds, || {
        black_box(serde_json::from_slice::<ChangeEvent>(black_box(&bytes)).unwrap());
    });
    let nothing = ColumnNames::new();
    let bare = rate("slim header, no columns wanted", rounds, || {
        let header = ChangeHeader::read(black_box(&bytes)).unwrap();
        black_box(header.routing_row(&nothing));
    });
    // An RLS table (its key) under a filter on user_id: two columns of ten.
    let wanted: ColumnNames = ["id", "user_id"].into_iter().collect();
    let routed = rate("slim header, key + one filtered column", rounds, || {
        let header = ChangeHeader::read(black_box(&bytes)).unwrap();
        black_box(header.routing_row(&wanted));
        black_box(header.columns(&wanted));
    });
    println!(
        "slim header: {:.1}× (no columns) and {:.1}× (two columns) the whole-event rate",
        bare / whole,
        routed / whole
    );
}
