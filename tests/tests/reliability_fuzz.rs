//! Reliability: a bounded frame fuzzer for each protocol the gateway speaks.
//!
//! Thousands of mutated frames per protocol (Phoenix vsn 1.0.0 and 2.0.0, Socket.IO, the `/ws`
//! JSON protocol), built from valid frames by flipping, cutting, repeating and splicing in
//! hostile pieces (huge numbers, deep nesting, NUL, lone surrogates, wrong types), sent over
//! connections that are reopened whenever the server closes one. What must hold: the gateway
//! never crashes, answers `/health` afterwards, and every connection it closes carries a close
//! code and a reason (never a bare TCP drop, which a browser reports as 1006).
//!
//! The mutations come from a fixed seed, so a failure reproduces.

use futures::{SinkExt, StreamExt};
use realtime_tests::{http_get_json, token, GatewayProcess, Stack, WsMessage};
use serde_json::json;
use std::time::Duration;

/// Frames per protocol.
const FRAMES: usize = 3000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces spliced into frames.
const HOSTILE: &[&str] = &[
    "\\u0000",
    "\\ud800",
    "\\udfff",
    "\u{0}",
    "99999999999999999999999999",
    "-1e999999",
    "1e999999",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"realtime:*\"",
    "\"a.b.>\"",
    "\"' OR 1=1 --\"",
    "\"id;drop table x=eq.1\"",
    "\"phx_join\"",
    "\"broadcast\"",
    "\"presence\"",
    "\"access_token\"",
    "\"postgres_changes\"",
    "{\"postgres_changes\":[{\"event\":\"*\",\"schema\":\"*\",\"table\":\"*\",\"filter\":\"id=eq.\"}]}",
    "\"ü€😀\"",
    ",",
    ":",
    "\"",
    "\\",
    "]]]]",
    "{{{{",
];

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// One mutation of `seed` (a valid frame's text).
fn mutate(rng: &mut Rng, seed: &str) -> String {
    let chars: Vec<char> = seed.chars().collect();
    let at = |rng: &mut Rng| rng.below(chars.len() + 1);
    let cut = |i: usize| -> String { chars[..i.min(chars.len())].iter().collect() };
    let rest = |i: usize| -> String { chars[i.min(chars.len())..].iter().collect() };
    match rng.below(9) {
        0 => cut(at(rng)),
        1 => {
            let i = at(rng);
            format!("{}{}{}", cut(i), rng.pick(HOSTILE), rest(i))
        }
        2 => {
            let (i, j) = (at(rng), at(rng));
            let (i, j) = (i.min(j), i.max(j));
            format!("{}{}{}", cut(i), rng.pick(HOSTILE), rest(j))
        }
        3 => {
            let i = at(rng);
            format!("{}{}{}", cut(i), deep(100 + rng.below(400)), rest(i))
        }
        4 => {
            let mut out: Vec<char> = chars.clone();
            for _ in 0..1 + rng.below(4) {
                if !out.is_empty() {
                    let i = rng.below(out.len());
                    out[i] = char::from(b' ' + (rng.below(95) as u8));
                }
            }
            out.into_iter().collect()
        }
        5 => seed.repeat(1 + rng.below(3)),
        6 => {
            let i = at(rng);
            format!("{}{}", cut(i), rest(i + 1 + rng.below(8)))
        }
        7 => rng.pick(HOSTILE).to_string(),
        _ => seed.to_string(),
    }
}

/// How a fuzzed connection ended.
#[derive(Debug, Default)]
struct Ends {
    /// Close frames received: (code, reason).
    closes: Vec<(u16, String)>,
    /// Connections that ended without a close frame, or with one that has no code or reason.
    abnormal: Vec<String>,
    frames_sent: usize,
}

/// Sends `frames` mutated frames of `seeds` to `url`, reconnecting after each close; `hello`
/// runs first on every connection (the protocol's handshake, if any).
async fn fuzz(url: &str, seeds: &[String], hello: &[String], seed: u64) -> Ends {
    let mut rng = Rng(seed);
    let mut ends = Ends::default();
    while ends.frames_sent < FRAMES {
        let (mut sink, mut stream) = realtime_tests::ws_connect(url)
            .await
            .expect("the gateway accepts connections")
            .split();
        // The reader records how the connection ended.
        let reader = tokio::spawn(async move {
            let mut last: Option<Result<(u16, String), String>> = None;
            while let Some(message) = stream.next().await {
                match message {
                    Ok(WsMessage::Close(Some(frame))) => {
                        last = Some(Ok((u16::from(frame.code), frame.reason.to_string())));
                    }
                    Ok(WsMessage::Close(None)) => {
                        last = Some(Err("a close frame without a code".into()))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if last.is_none() {
                            last = Some(Err(format!("dropped without a close frame: {e}")));
                        }
                        break;
                    }
                }
            }
            last.unwrap_or_else(|| Err("the stream ended without a close frame".into()))
        });
        let mut sent_here = 0;
        for frame in hello {
            if sink
                .send(WsMessage::Text(frame.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        while ends.frames_sent < FRAMES && sent_here < 500 {
            let seed = rng.pick(seeds).clone();
            let mut text = mutate(&mut rng, &seed);
            if rng.below(400) == 0 {
                // Past REALTIME_MAX_FRAME_BYTES: the server closes with 1009 mid-stream.
                text = format!("{text}{}", "x".repeat(70_000));
            }
            let message = if rng.below(20) == 0 {
                // Now and then the same bytes as a binary message, or raw random bytes.
                let mut bytes = text.into_bytes();
                if rng.below(2) == 0 {
                    for _ in 0..rng.below(16) {
                        bytes.push(rng.next() as u8);
                    }
                }
                WsMessage::Binary(bytes.into())
            } else {
                WsMessage::Text(text.into())
            };
            if sink.send(message).await.is_err() {
                break;
            }
            ends.frames_sent += 1;
            sent_here += 1;
        }
        // Leave politely; the server echoes the close frame (RFC 6455, 5.5.1).
        let bye = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "the fuzzer is done".into(),
        };
        let _ = sink.send(WsMessage::Close(Some(bye))).await;
        match tokio::time::timeout(Duration::from_secs(10), reader).await {
            Ok(Ok(Ok((code, reason)))) => {
                if code == 1006 || (code != 1000 && reason.is_empty()) {
                    ends.abnormal.push(format!("close {code} {reason:?}"));
                }
                ends.closes.push((code, reason));
            }
            Ok(Ok(Err(why))) => ends.abnormal.push(why),
            Ok(Err(e)) => panic!("reader task: {e}"),
            Err(_) => ends.abnormal.push("no close within 10 s".into()),
        }
    }
    ends
}

async fn assert_healthy(gateway: &GatewayProcess, protocol: &str, ends: &Ends) {
    let (status, body) = http_get_json(gateway.port, "/health")
        .await
        .unwrap_or_else(|| panic!("no /health after fuzzing {protocol}:\n{}", gateway.log()));
    assert_eq!(status, 200, "{body}");
    assert!(gateway.running(), "{protocol} fuzzing killed the gateway");
    let log = gateway.log();
    assert!(
        !log.contains("panicked"),
        "a panic while fuzzing {protocol}:\n{log}"
    );
    println!(
        "RELIABILITY fuzz {protocol}: {} frames over {} connections; closes by code: {:?}; abnormal: {}",
        ends.frames_sent,
        ends.closes.len() + ends.abnormal.len(),
        {
            let mut codes: Vec<u16> = ends.closes.iter().map(|(c, _)| *c).collect();
            codes.sort_unstable();
            codes.dedup();
            codes
        },
        ends.abnormal.len()
    );
    assert!(
        ends.abnormal.is_empty(),
        "{protocol}: connections ended abnormally: {:?}",
        ends.abnormal
    );
}

async fn fuzz_stack() -> Stack {
    let stack = Stack::start(
        1,
        &[
            ("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "0"),
            ("REALTIME_MAX_FRAME_BYTES", "65536"),
        ],
    )
    .await;
    stack
        .sql(
            "CREATE TABLE public.items (id bigserial PRIMARY KEY, note text, at timestamptz);
             GRANT SELECT ON public.items TO anon, authenticated;",
        )
        .await;
    stack.publish("public.items").await;
    stack
}

fn user() -> String {
    token(json!({"role": "authenticated", "sub": "fuzzer"}))
}

#[tokio::test]
async fn phoenix_frames() {
    let stack = fuzz_stack().await;
    let gateway = &stack.gateways[0];
    let v1 = [
        json!({"topic": "realtime:room", "event": "phx_join", "ref": "1", "join_ref": "1",
               "payload": {"config": {"broadcast": {"self": true, "ack": true},
                                      "presence": {"key": "k", "enabled": true},
                                      "postgres_changes": [{"event": "*", "schema": "public", "table": "items", "filter": "id=eq.1"}],
                                      "private": false}, "access_token": user()}}),
        json!({"topic": "realtime:room", "event": "broadcast", "ref": "2", "join_ref": "1",
               "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}}),
        json!({"topic": "realtime:room", "event": "presence", "ref": "3", "join_ref": "1",
               "payload": {"type": "presence", "event": "track", "payload": {"online_at": 1}}}),
        json!({"topic": "realtime:room", "event": "access_token", "ref": "4", "join_ref": "1",
               "payload": {"access_token": user()}}),
        json!({"topic": "phoenix", "event": "heartbeat", "ref": "5", "payload": {}}),
        json!({"topic": "realtime:room", "event": "phx_leave", "ref": "6", "join_ref": "1", "payload": {}}),
    ]
    .map(|f| f.to_string());
    let url = gateway.websocket_url(&user(), "1.0.0");
    let ends = fuzz(&url, &v1, &[], 0x5eed_0001).await;
    assert_healthy(gateway, "phoenix vsn 1.0.0", &ends).await;

    let v2 = [
        json!(["1", "1", "realtime:room", "phx_join",
               {"config": {"broadcast": {"self": true}, "presence": {"enabled": true},
                           "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items"}]}}]),
        json!(["1", "2", "realtime:room", "broadcast", {"type": "broadcast", "event": "e", "payload": [1, 2]}]),
        json!(["1", "3", "realtime:room", "presence", {"type": "presence", "event": "untrack"}]),
        json!([null, "4", "phoenix", "heartbeat", {}]),
    ]
    .map(|f| f.to_string());
    let url = gateway.websocket_url(&user(), "2.0.0");
    let ends = fuzz(&url, &v2, &[], 0x5eed_0002).await;
    assert_healthy(gateway, "phoenix vsn 2.0.0", &ends).await;
}

#[tokio::test]
async fn socketio_packets() {
    let stack = fuzz_stack().await;
    let gateway = &stack.gateways[0];
    let connect = format!("40{}", json!({"token": user()}));
    let seeds = [
        connect.clone(),
        format!("42{}", json!(["room:join", {"roomName": "general"}])),
        format!(
            "421{}",
            json!(["message:send", {"roomName": "general", "content": "hi"}])
        ),
        format!("42{}", json!(["typing:start", {"roomName": "general"}])),
        format!("42{}", json!(["presence:update", {"status": "away"}])),
        format!("42{}", json!(["subscribe", "general"])),
        format!(
            "42{}",
            json!(["broadcast", {"roomName": "general", "event": "e", "payload": {}}])
        ),
        "2".to_string(),
        "3".to_string(),
        "41".to_string(),
    ];
    let url = format!(
        "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
        gateway.port
    );
    let ends = fuzz(&url, &seeds, &[connect], 0x5eed_0003).await;
    assert_healthy(gateway, "socket.io", &ends).await;
}

#[tokio::test]
async fn plain_websocket_messages() {
    let stack = fuzz_stack().await;
    let gateway = &stack.gateways[0];
    let seeds = [
        json!({"type": "auth", "token": user()}),
        json!({"type": "subscribe", "channel": "general", "id": 1}),
        json!({"type": "message", "channel": "general", "content": "hi", "id": 2}),
        json!({"type": "presence", "status": "online"}),
        json!({"type": "typing", "channel": "general", "typing": true}),
        json!({"type": "broadcast", "channel": "general", "event": "e", "payload": {"a": 1}}),
        json!({"type": "unsubscribe", "channel": "general"}),
        json!({"type": "ping"}),
    ]
    .map(|f| f.to_string());
    let url = format!("ws://127.0.0.1:{}/ws?token={}", gateway.port, user());
    let ends = fuzz(&url, &seeds, &[], 0x5eed_0004).await;
    assert_healthy(gateway, "/ws", &ends).await;
}
