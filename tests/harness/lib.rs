//! The test harness: private PostgreSQL and NATS servers for tests and benchmarks.
//!
//! Every test talks to real servers. Each test binary starts one Postgres cluster and one
//! `nats-server -js` the first time a test asks for them ([`Postgres::shared`],
//! [`Nats::shared`]); tests that stop or restart a server start their own ([`Postgres::start`],
//! [`Nats::start`]). Isolation inside a shared server:
//!
//! * Postgres: each test gets a fresh database ([`Postgres::fresh_database`]) and its own
//!   replication slot and publication names (slots are cluster-wide).
//! * NATS: the server is configured with many accounts, each with JetStream; each test gets its
//!   own account ([`Nats::fresh_account`]), so streams like `REALTIME_DB` never collide.
//!
//! Servers live in temporary directories. A watchdog shell, started with each server, waits on a
//! pipe that only this process holds open: when the test process exits, whether it passed,
//! panicked or was killed, the pipe closes and the watchdog stops the server and deletes its
//! directory. Postgres refuses to run as root, so under uid 0 its files belong to, and its
//! processes run as, the `postgres` OS user.

mod cdc;
pub mod cli_output;
pub mod cli_project;
mod gateway;
mod http;
mod nats;
pub mod node_runs;
mod phoenix_client;
mod postgres;
mod process;
mod service;
mod socketio_client;

pub use cdc::{init, read_change_stream, stream_message_count, try_read_change_stream, CdcProcess};
pub use gateway::{token, GatewayProcess, Stack, TEST_JWT_SECRET};
pub use http::{http_get, http_get_json, http_post, http_request};
pub use nats::{Nats, NatsAccount};
pub use phoenix_client::{Closed, Frame, PhoenixClient};
pub use postgres::{connect as connect_url, Postgres, TestDb, TlsFiles};
pub use process::free_port;
pub use service::{binary, run_cli, ServiceProcess};
pub use socketio_client::SocketIoClient;
/// WebSocket messages, for tests that send raw frames through [`PhoenixClient::send_raw`].
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A raw WebSocket client, for tests of protocols other than Phoenix.
pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a raw WebSocket to `url`.
pub async fn ws_connect(url: &str) -> Result<WsStream, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(stream, _)| stream)
}
