//! libFuzzer target: arbitrary bytes through the pgoutput decoder and the event builder.
//!
//! The input is read twice: once as one whole message, then as a sequence of messages each
//! prefixed by a big-endian u16 length, so the fuzzer can build streams (a Relation that
//! redefines the table, then rows in the new shape, Truncates, Commits...). The builder starts
//! with a relation registered and a transaction open, so mutated row messages reach the event
//! code instead of stopping at "unknown relation". Nothing may panic; every event must
//! serialize.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nself_realtime_cdc::pgoutput::messages::{Begin, Relation, RelationColumn, ReplicaIdentity};
use nself_realtime_cdc::pgoutput::{EventBuilder, Message};
use nself_realtime_shared::lsn::Lsn;

fn relation() -> Relation {
    let columns = [
        ("id", 23),
        ("flag", 16),
        ("amount", 1700),
        ("doc", 3802),
        ("at", 1184),
        ("tags", 1009),
    ];
    Relation {
        id: 16390,
        namespace: "public".into(),
        name: "fuzz".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, &(name, type_oid))| RelationColumn {
                flags: u8::from(i == 0),
                name: name.into(),
                type_oid,
                type_modifier: -1,
            })
            .collect(),
    }
}

fn feed(builder: &mut EventBuilder, bytes: &[u8]) {
    let mut events = Vec::new();
    if let Ok(message) = Message::decode_slice(bytes) {
        let _ = builder.handle(message, &mut events);
    }
    for event in events {
        serde_json::to_vec(&event).expect("events serialize");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut builder = EventBuilder::new();
    let mut events = Vec::new();
    builder
        .handle(Message::Relation(relation()), &mut events)
        .expect("relation");
    builder
        .handle(
            Message::Begin(Begin {
                final_lsn: Lsn(0x16B3748),
                timestamp: 0,
                xid: 1,
            }),
            &mut events,
        )
        .expect("begin");
    feed(&mut builder, data);
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (message, tail) = tail.split_at(len);
        feed(&mut builder, message);
        rest = tail;
    }
});
