//! Reliability: clients that stop reading give their connection back.
//!
//! A paused client (its process stopped, its network gone) leaves the gateway's writes stuck
//! once the TCP buffers between them are full. Every write has a deadline
//! (`REALTIME_WRITE_TIMEOUT`): past it the client is dropped, its socket closed and its slot,
//! presence and subscriptions released, so a gateway full of paused clients
//! (`REALTIME_MAX_CONNECTIONS`) accepts new ones again within the deadline. A graceful stop
//! does not wait on stuck sockets either.
//!
//! A paused reader here is a real WebSocket client with a 4 KiB receive buffer that joins a
//! channel and then never reads again; a flood of broadcasts on that channel fills its buffers.

use futures::{SinkExt, StreamExt};
use realtime_tests::{http_post, token, GatewayProcess, Stack, WsMessage};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::WebSocketStream;

type Paused = WebSocketStream<tokio::net::TcpStream>;

/// A client that joins `topic` and then stops reading.
async fn paused_reader(gateway: &GatewayProcess, topic: &str) -> Paused {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(([127, 0, 0, 1], gateway.port).into())
        .await
        .unwrap();
    let url = gateway.websocket_url(&token(json!({"role": "anon"})), "1.0.0");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let join = json!({"topic": topic, "event": "phx_join", "payload": {"config": {}},
                      "ref": "1", "join_ref": "1"});
    ws.send(WsMessage::Text(join.to_string().into()))
        .await
        .unwrap();
    loop {
        let message = ws.next().await.expect("open").expect("readable");
        if let WsMessage::Text(text) = message {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
            if frame["event"] == "phx_reply" {
                assert_eq!(frame["payload"]["status"], "ok", "{frame}");
                return ws;
            }
        }
    }
}

/// Broadcasts `count` messages of about 60 KB each to `topic` through the REST endpoint.
async fn flood(gateway: &GatewayProcess, topic: &str, count: usize) {
    let service = token(json!({"role": "service_role"}));
    let filler = "x".repeat(60_000);
    for chunk in (0..count).collect::<Vec<_>>().chunks(15) {
        let messages: Vec<_> = chunk
            .iter()
            .map(|i| json!({"topic": topic, "event": "flood", "payload": {"i": i, "filler": filler}}))
            .collect();
        let (status, body) = http_post(
            gateway.port,
            "/api/broadcast",
            &service,
            &json!({ "messages": messages }).to_string(),
        )
        .await
        .expect("the gateway answers");
        assert_eq!(status, 202, "{body}");
    }
}

/// Whether a new client is admitted: its heartbeat is answered, where a full gateway closes
/// the socket at once with 1013.
async fn admitted(gateway: &GatewayProcess) -> bool {
    let url = gateway.websocket_url(&token(json!({"role": "anon"})), "1.0.0");
    let Ok(mut ws) = realtime_tests::ws_connect(&url).await else {
        return false;
    };
    let heartbeat = json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"});
    if ws
        .send(WsMessage::Text(heartbeat.to_string().into()))
        .await
        .is_err()
    {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
        Ok(Some(Ok(WsMessage::Text(_))))
    )
}

async fn metric(gateway: &GatewayProcess, reason: &str) -> f64 {
    gateway
        .metric(&format!(
            "realtime_disconnections_total{{reason=\"{reason}\"}}"
        ))
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn paused_readers_are_dropped_and_their_slots_freed() {
    const SLOTS: usize = 20;
    let stack = Stack::start(
        1,
        &[
            ("REALTIME_MAX_CONNECTIONS", &SLOTS.to_string()),
            ("REALTIME_WRITE_TIMEOUT", "2s"),
            ("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "0"),
        ],
    )
    .await;
    let gateway = &stack.gateways[0];
    let mut paused = Vec::new();
    for _ in 0..SLOTS {
        paused.push(paused_reader(gateway, "realtime:flood").await);
    }
    assert!(!admitted(gateway).await, "the gateway should be full");

    // ~7 MB per paused client: far more than its TCP buffers hold, far less than its queue.
    flood(gateway, "flood", 120).await;
    let flooded = Instant::now();
    let limit = Duration::from_secs(30);
    loop {
        if admitted(gateway).await {
            break;
        }
        assert!(
            flooded.elapsed() < limit,
            "no slot freed {limit:?} after the flood"
        );
        // Polling admission (nothing announces a freed slot to an outsider): pace it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = flooded.elapsed();
    // Every paused client was dropped, for not reading.
    let deadline = Instant::now() + limit;
    let dropped = loop {
        let dropped =
            metric(gateway, "write_timeout").await + metric(gateway, "slow_consumer").await;
        if dropped >= SLOTS as f64 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dropped, SLOTS as f64, "{}", gateway.log());
    assert!(
        gateway.log().contains("client dropped"),
        "{}",
        gateway.log()
    );
    println!(
        "RELIABILITY slow-readers: {SLOTS} paused clients, REALTIME_WRITE_TIMEOUT=2s: a new client admitted {:.2} s after the flood",
        recovered.as_secs_f64()
    );

    // The server closed its side: a paused client that reads again gets what was in flight,
    // then the end of the stream.
    let mut client = paused.pop().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the dropped client's TCP connection is still open"
    );

    // Every slot is free again: SLOTS new clients fit.
    let mut fresh = Vec::new();
    for _ in 0..SLOTS {
        let url = gateway.websocket_url(&token(json!({"role": "anon"})), "1.0.0");
        let mut client = realtime_tests::PhoenixClient::connect(&url).await.unwrap();
        let (_, reply) = client.join("realtime:after", json!({})).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        fresh.push(client);
    }
}

#[tokio::test]
async fn a_graceful_stop_does_not_wait_on_stuck_sockets() {
    let mut stack = Stack::start(1, &[("REALTIME_MAX_CONNECTIONS_PER_IP_PER_MINUTE", "0")]).await;
    let mut paused = Vec::new();
    for _ in 0..10 {
        paused.push(paused_reader(&stack.gateways[0], "realtime:stuck").await);
    }
    // Enough to leave every writer stuck, not enough to reach the (default, 10 s) deadline.
    flood(&stack.gateways[0], "stuck", 120).await;
    let started = Instant::now();
    let status = stack.gateways[0].terminate();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    println!(
        "RELIABILITY shutdown: SIGTERM with 10 stuck sockets exited in {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(6),
        "SIGTERM took {took:?} with stuck sockets"
    );
    drop(paused);
}
