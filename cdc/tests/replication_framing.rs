//! The framing layer against a scripted fake server, for what a real Postgres will not do on
//! demand: deliver a message a few bytes at a time (cancel safety of `next`), announce an
//! oversized message, hang up mid-message, stall during startup, or ask for an unsupported
//! authentication method. The real-server behaviour is covered by `replication_stream.rs`.

use nself_realtime_cdc::replication::{
    ConnectOptions, ReplicationClient, ReplicationError, ReplicationEvent, ReplicationStream,
};
use nself_realtime_shared::lsn::Lsn;
use nself_realtime_shared::postgres_tls::Database;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn xlogdata(start: u64, data: &[u8]) -> Vec<u8> {
    let mut body = vec![b'w'];
    body.extend_from_slice(&start.to_be_bytes());
    body.extend_from_slice(&(start + data.len() as u64).to_be_bytes());
    body.extend_from_slice(&42i64.to_be_bytes());
    body.extend_from_slice(data);
    message(b'd', &body)
}

fn keepalive(wal_end: u64) -> Vec<u8> {
    let mut body = vec![b'k'];
    body.extend_from_slice(&wal_end.to_be_bytes());
    body.extend_from_slice(&7i64.to_be_bytes());
    body.push(1);
    message(b'd', &body)
}

/// Reads one frontend message (the startup message has no tag).
async fn read_frontend(socket: &mut TcpStream, tagged: bool) -> Vec<u8> {
    if tagged {
        socket.read_u8().await.unwrap();
    }
    let len = socket.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    socket.read_exact(&mut body).await.unwrap();
    body
}

/// Trust authentication and an idle session.
async fn accept_session(socket: &mut TcpStream) {
    read_frontend(socket, false).await;
    let mut out = message(b'R', &0i32.to_be_bytes());
    out.extend(message(b'K', &[0, 0, 0, 9, 0, 0, 0, 1]));
    out.extend(message(b'Z', b"I"));
    socket.write_all(&out).await.unwrap();
}

/// Answers START_REPLICATION with CopyBothResponse.
async fn accept_start(socket: &mut TcpStream) -> String {
    let query = read_frontend(socket, true).await;
    socket.write_all(&message(b'W', &[0, 0, 0])).await.unwrap();
    String::from_utf8_lossy(&query).into_owned()
}

/// A fake server running `script` on its first connection; the config points at it (without
/// TLS: the scripts start at the startup message).
async fn fake_server<F, Fut>(script: F) -> Database
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        script(socket).await;
    });
    format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable")
        .parse()
        .unwrap()
}

async fn stream_from(config: &Database, options: &ConnectOptions) -> ReplicationStream {
    ReplicationClient::connect(config, options)
        .await
        .unwrap()
        .start_replication("s", Lsn(0x10), &["p"])
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_dribbled_byte_by_byte_survive_a_cancelling_select() {
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let config = fake_server(move |mut socket| async move {
        accept_session(&mut socket).await;
        let query = accept_start(&mut socket).await;
        assert!(query.starts_with("START_REPLICATION SLOT \"s\" LOGICAL 0/10"));
        let mut bytes = xlogdata(100, &payload);
        bytes.extend(keepalive(200));
        bytes.extend(xlogdata(300, b"tail"));
        let mut chunk = 1;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = chunk.min(rest.len());
            socket.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
            chunk = chunk % 13 + 1;
            tokio::task::yield_now().await;
        }
        // Stay connected until the client is done.
        let _ = socket.read_u8().await;
    })
    .await;
    let mut stream = stream_from(&config, &ConnectOptions::default()).await;

    let mut events = Vec::new();
    let mut cancelled = 0u64;
    tokio::time::timeout(LIMIT, async {
        while events.len() < 3 {
            tokio::select! {
                event = stream.next() => events.push(event.unwrap().unwrap()),
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
    })
    .await
    .expect("all events within the limit");
    assert!(
        cancelled > 100,
        "next() was cancelled mid-message ({cancelled} times)"
    );
    assert_eq!(
        events,
        vec![
            ReplicationEvent::XLogData {
                wal_start: Lsn(100),
                wal_end: Lsn(100 + expected.len() as u64),
                server_clock: 42,
                data: expected.into(),
            },
            ReplicationEvent::Keepalive {
                wal_end: Lsn(200),
                server_clock: 7,
                reply_requested: true,
            },
            ReplicationEvent::XLogData {
                wal_start: Lsn(300),
                wal_end: Lsn(304),
                server_clock: 42,
                data: bytes::Bytes::from_static(b"tail"),
            },
        ]
    );
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_buffered() {
    let config = fake_server(|mut socket| async move {
        accept_session(&mut socket).await;
        accept_start(&mut socket).await;
        // Announce a 2 GiB CopyData and send only its first bytes.
        let mut header = vec![b'd'];
        header.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        header.extend_from_slice(b"wxxxx");
        socket.write_all(&header).await.unwrap();
        let _ = socket.read_u8().await;
    })
    .await;
    let mut stream = stream_from(&config, &ConnectOptions::default()).await;
    let err = tokio::time::timeout(LIMIT, stream.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ReplicationError::MessageTooLarge { len: 0x7FFF_FFFB, limit } if limit == 1 << 30),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_message_cap_is_configurable() {
    let config = fake_server(|mut socket| async move {
        accept_session(&mut socket).await;
        accept_start(&mut socket).await;
        socket.write_all(&xlogdata(1, &[0; 2000])).await.unwrap();
        let _ = socket.read_u8().await;
    })
    .await;
    let options = ConnectOptions {
        max_message_size: 1024,
        ..ConnectOptions::default()
    };
    let mut stream = stream_from(&config, &options).await;
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(err, ReplicationError::MessageTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_hang_up_mid_message_is_connection_closed() {
    let config = fake_server(|mut socket| async move {
        accept_session(&mut socket).await;
        accept_start(&mut socket).await;
        let frame = xlogdata(1, b"0123456789");
        socket.write_all(&frame[..frame.len() / 2]).await.unwrap();
        // Dropping the socket closes the connection.
    })
    .await;
    let mut stream = stream_from(&config, &ConnectOptions::default()).await;
    let err = tokio::time::timeout(LIMIT, stream.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ReplicationError::ConnectionClosed), "{err:?}");
}

#[tokio::test]
async fn a_garbled_length_is_a_protocol_error() {
    let config = fake_server(|mut socket| async move {
        read_frontend(&mut socket, false).await;
        socket.write_all(&[b'R', 0, 0, 0, 2]).await.unwrap();
        let _ = socket.read_u8().await;
    })
    .await;
    let err = ReplicationClient::connect(&config, &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ReplicationError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_silent_server_hits_the_connect_timeout() {
    let config = fake_server(|mut socket| async move {
        let _ = socket.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let options = ConnectOptions {
        connect_timeout: Duration::from_millis(200),
        ..ConnectOptions::default()
    };
    let err = ReplicationClient::connect(&config, &options)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ReplicationError::ConnectTimeout { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unsupported_authentication_method_is_named() {
    let config = fake_server(|mut socket| async move {
        read_frontend(&mut socket, false).await;
        // AuthenticationGSS
        socket
            .write_all(&message(b'R', &7i32.to_be_bytes()))
            .await
            .unwrap();
        let _ = socket.read_u8().await;
    })
    .await;
    let err = ReplicationClient::connect(&config, &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ReplicationError::UnsupportedAuthentication(m) if m == "GSSAPI"),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_updates_are_well_formed_copydata() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = fake_server(|mut socket| async move {
        accept_session(&mut socket).await;
        accept_start(&mut socket).await;
        let body = read_frontend(&mut socket, true).await;
        let _ = tx.send(body);
        let _ = socket.read_u8().await;
    })
    .await;
    let mut stream = stream_from(&config, &ConnectOptions::default()).await;
    stream
        .send_status(Lsn(1), Lsn(2), Lsn(3), true)
        .await
        .unwrap();
    let body = tokio::time::timeout(LIMIT, rx).await.unwrap().unwrap();
    assert_eq!(body.len(), 34);
    assert_eq!(body[0], b'r');
    assert_eq!(&body[1..9], &1u64.to_be_bytes());
    assert_eq!(&body[9..17], &2u64.to_be_bytes());
    assert_eq!(&body[17..25], &3u64.to_be_bytes());
    assert_eq!(body[33], 1);
}
