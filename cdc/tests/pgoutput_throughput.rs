//! Throughput of the decoding hot path: one 10-column Insert message → decoded → change event →
//! JSON bytes, as the pipeline does per row. Ignored by default (timing is noisy on shared CI);
//! run `cargo test --release -p nself-realtime-cdc --test pgoutput_throughput -- --ignored
//! --nocapture` to see rows per second on one core.

use bytes::Bytes;
use nself_realtime_cdc::pgoutput::{EventBuilder, Message};
use std::time::Instant;

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

#[test]
#[ignore = "a measurement, not a check"]
fn rows_per_second() {
    let columns: &[(&str, u32, &str)] = &[
        ("id", 20, "123456789"),
        ("user_id", 2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("title", 25, "A reasonably short title"),
        (
            "body",
            25,
            "Some body text of a typical chat message, not too long.",
        ),
        ("score", 701, "3.14159"),
        ("price", 1700, "1234.56"),
        ("active", 16, "t"),
        ("meta", 3802, r#"{"k": "v", "n": 1}"#),
        ("tags", 1009, "{a,b,c}"),
        ("created_at", 1184, "2026-01-30 10:15:23.123456+00"),
    ];
    let mut relation = vec![b'R', 0, 0, 0x40, 0x06];
    string(&mut relation, "public");
    string(&mut relation, "messages");
    relation.push(b'd');
    relation.extend_from_slice(&(columns.len() as i16).to_be_bytes());
    let mut insert = vec![b'I', 0, 0, 0x40, 0x06, b'N'];
    insert.extend_from_slice(&(columns.len() as i16).to_be_bytes());
    for (i, (name, oid, value)) in columns.iter().enumerate() {
        relation.push(u8::from(i == 0));
        string(&mut relation, name);
        relation.extend_from_slice(&oid.to_be_bytes());
        relation.extend_from_slice(&(-1i32).to_be_bytes());
        insert.push(b't');
        insert.extend_from_slice(&(value.len() as i32).to_be_bytes());
        insert.extend_from_slice(value.as_bytes());
    }
    let mut begin = vec![b'B'];
    begin.extend_from_slice(&[0; 16]);
    begin.extend_from_slice(&[0, 0, 0, 1]);

    let mut builder = EventBuilder::new();
    let mut out = Vec::new();
    for setup in [relation, begin] {
        builder
            .handle(Message::decode(Bytes::from(setup)).unwrap(), &mut out)
            .unwrap();
    }
    let insert = Bytes::from(insert);
    let rows = 200_000;
    let mut bytes = 0;
    let started = Instant::now();
    for _ in 0..rows {
        let message = Message::decode(insert.clone()).unwrap();
        builder.handle(message, &mut out).unwrap();
        for event in out.drain(..) {
            bytes += serde_json::to_vec(&event).unwrap().len();
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{rows} rows in {elapsed:?}: {:.0} rows/s on one core, {} JSON bytes per event",
        rows as f64 / elapsed.as_secs_f64(),
        bytes / rows
    );
}
