//! A deterministic, bounded fuzz run of the pgoutput decoder and the event builder, on stable
//! Rust, so every CI run exercises them with hostile input (the libFuzzer target in `fuzz/`
//! explores further but needs nightly and cargo-fuzz).
//!
//! Inputs are valid messages mutated the way coverage-guided fuzzers do (bit flips, interesting
//! bytes and lengths, truncation, extension, splicing) plus pure noise. Each must decode to a
//! message or a typed error and, when it decodes, be handled by an [`EventBuilder`] that knows a
//! relation and has a transaction open, without a panic; any event built must serialize.

use nself_realtime_cdc::pgoutput::{EventBuilder, Message};

/// SplitMix64: a tiny deterministic generator (the same inputs every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

fn text(b: &mut Vec<u8>, value: &str) {
    b.push(b't');
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value.as_bytes());
}

/// The relation every seed row belongs to: one column per interesting conversion.
const COLUMNS: &[(&str, u32)] = &[
    ("id", 23),
    ("flag", 16),
    ("amount", 1700),
    ("ratio", 701),
    ("doc", 3802),
    ("at", 1184),
    ("raw", 17),
    ("tags", 1009),
    ("grid", 1007),
];

const VALUES: &[&str] = &[
    "42",
    "t",
    "12.50",
    "-Infinity",
    r#"{"a": [1, {"b": null}], "c": "ü"}"#,
    "2026-01-30 10:15:23.123456+00",
    "\\xdeadbeef",
    r#"{a,"b c",NULL,"d\"e"}"#,
    "[0:1][1:2]={{1,2},{3,NULL}}",
];

fn relation() -> Vec<u8> {
    let mut b = vec![b'R'];
    b.extend_from_slice(&16390u32.to_be_bytes());
    string(&mut b, "public");
    string(&mut b, "fuzz");
    b.push(b'd');
    b.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
    for (i, (name, oid)) in COLUMNS.iter().enumerate() {
        b.push(u8::from(i == 0));
        string(&mut b, name);
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
    }
    b
}

fn tuple(b: &mut Vec<u8>, unchanged: bool) {
    b.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
    for (i, value) in VALUES.iter().enumerate() {
        match i {
            2 if unchanged => b.push(b'u'),
            3 => b.push(b'n'),
            _ => text(b, value),
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![relation()];
    let mut begin = vec![b'B'];
    begin.extend_from_slice(&0x16B3748u64.to_be_bytes());
    begin.extend_from_slice(&823_602_923_123_456i64.to_be_bytes());
    begin.extend_from_slice(&7u32.to_be_bytes());
    seeds.push(begin);
    let mut commit = vec![b'C', 0];
    commit.extend_from_slice(&0x16B3748u64.to_be_bytes());
    commit.extend_from_slice(&0x16B3780u64.to_be_bytes());
    commit.extend_from_slice(&823_602_923_123_456i64.to_be_bytes());
    seeds.push(commit);
    let mut insert = vec![b'I', 0, 0, 0x40, 0x06, b'N'];
    tuple(&mut insert, false);
    seeds.push(insert);
    let mut update = vec![b'U', 0, 0, 0x40, 0x06, b'O'];
    tuple(&mut update, false);
    update.push(b'N');
    tuple(&mut update, true);
    seeds.push(update);
    let mut delete = vec![b'D', 0, 0, 0x40, 0x06, b'K'];
    tuple(&mut delete, false);
    seeds.push(delete);
    seeds.push(vec![b'T', 0, 0, 0, 1, 3, 0, 0, 0x40, 0x06]);
    let mut type_message = vec![b'Y', 0, 0, 0x40, 0x10];
    string(&mut type_message, "public");
    string(&mut type_message, "mood");
    seeds.push(type_message);
    let mut logical = vec![b'M', 1];
    logical.extend_from_slice(&5u64.to_be_bytes());
    string(&mut logical, "app");
    logical.extend_from_slice(&2i32.to_be_bytes());
    logical.extend_from_slice(b"hi");
    seeds.push(logical);
    let mut origin = vec![b'O'];
    origin.extend_from_slice(&5u64.to_be_bytes());
    string(&mut origin, "upstream");
    seeds.push(origin);
    seeds
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'n', b'u', b't', b'b', b'N', b'K', b'O', b'{', b'"', b'\\',
];
const INTERESTING_LENGTHS: &[i32] = &[-1, 0, 1, 2, 255, 0x7fff, 0x7fff_ffff, i32::MIN];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = INTERESTING_LENGTHS[rng.below(INTERESTING_LENGTHS.len())];
                input[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            3 => input.truncate(rng.below(len + 1)),
            4 => {
                for _ in 0..rng.below(16) {
                    input.push(rng.next() as u8);
                }
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            6 if len > 1 => {
                let at = rng.below(len);
                input.remove(at);
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
    }
    input
}

fn noise(rng: &mut Rng) -> Vec<u8> {
    let tags = b"BCORYIUDTMSEcA";
    let mut input = vec![tags[rng.below(tags.len())]];
    for _ in 0..rng.below(64) {
        input.push(rng.next() as u8);
    }
    input
}

#[test]
fn two_hundred_thousand_hostile_messages_never_panic() {
    let seeds = seeds();
    for seed in &seeds {
        Message::decode_slice(seed).expect("the seeds are valid messages");
    }
    let mut rng = Rng(0x5EED);
    let relation = Message::decode_slice(&relation()).unwrap();
    let begin = Message::decode_slice(&seeds[1]).unwrap();
    let mut builder = EventBuilder::new();
    let mut events = Vec::new();
    let (mut decoded, mut built) = (0usize, 0usize);
    for i in 0..200_000 {
        if i % 1000 == 0 {
            // A fresh stream now and then, as after a reconnect.
            builder.reset_stream();
        }
        if builder.relations().is_empty() {
            builder.handle(relation.clone(), &mut events).unwrap();
        }
        if !builder.in_transaction() {
            builder.handle(begin.clone(), &mut events).unwrap();
        }
        let input = if i % 4 == 0 {
            noise(&mut rng)
        } else {
            mutate(&mut rng, &seeds)
        };
        let Ok(message) = Message::decode_slice(&input) else {
            continue;
        };
        decoded += 1;
        // Decoding is a function of the bytes.
        assert_eq!(Message::decode_slice(&input).as_ref(), Ok(&message));
        if builder.handle(message, &mut events).is_ok() {
            built += 1;
        }
        for event in events.drain(..) {
            serde_json::to_vec(&event).unwrap();
        }
    }
    // The mutations keep enough structure to reach the builder often.
    assert!(decoded > 20_000, "only {decoded} inputs decoded");
    assert!(built > 10_000, "only {built} messages handled");
}
