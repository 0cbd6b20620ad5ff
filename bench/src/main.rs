//! `realtime-bench`: benchmark scenarios for nself-realtime. Each scenario starts its own
//! private Postgres and NATS (the test harness), drives a workload, and prints its figures with
//! the machine they were measured on; BENCHMARKS.md records them with the command.

mod broadcast_db;
mod cdc;
mod changes_rls;
mod connections;
mod fanout;
mod joins;
mod load_client;
mod machine;
mod measure;
mod messages;
mod presence;
mod replay;
mod rooms_policies;
mod socketio_client;
mod socketio_fanout;
mod stack;
mod stack_report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "realtime-bench", about = "nself-realtime benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// CDC throughput (commit → JetStream) beside pg_recvlogical's ceiling, and latency at a
    /// steady rate.
    Cdc(cdc::Args),
    /// One topic, many subscribers over two gateways, one publisher: deliveries/s and latency.
    Fanout(fanout::Args),
    /// Gateway memory per idle joined socket.
    Connections(connections::Args),
    /// postgres_changes under RLS, one user per subscriber: delivery, latency, queries issued.
    ChangesRls(changes_rls::Args),
    /// Presence tracks on one gateway seen on the other: latency.
    Presence(presence::Args),
    /// Channel joins per second, with and without RLS authorization.
    Joins(joins::Args),
    /// The fanout workload over Socket.IO: one gateway beside a plain Node.js Socket.IO server.
    SocketioFanout(socketio_fanout::Args),
    /// Persisted chat messages over Socket.IO through Postgres and the CDC to two gateways'
    /// subscribers: acks, deliveries (exactly once), latency and where it goes.
    Messages(messages::Args),
    /// Broadcast from Database: realtime.send into private topics, many subscribers over two
    /// gateways: sends/s, exactly once, latency.
    BroadcastDb(broadcast_db::Args),
    /// Broadcast replay at join on private channels: join → last replayed message, joins/s.
    Replay(replay::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Start the scenarios' shared clock, so that no measured event is at time zero (which the
    // presence scenario reads as "not sent yet").
    measure::now_micros();
    println!("{}", machine::describe());
    match cli.scenario {
        Scenario::Cdc(args) => cdc::run(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Connections(args) => connections::run(args).await,
        Scenario::ChangesRls(args) => changes_rls::run(args).await,
        Scenario::Presence(args) => presence::run(args).await,
        Scenario::Joins(args) => joins::run(args).await,
        Scenario::SocketioFanout(args) => socketio_fanout::run(args).await,
        Scenario::Messages(args) => messages::run(args).await,
        Scenario::BroadcastDb(args) => broadcast_db::run(args).await,
        Scenario::Replay(args) => replay::run(args).await,
    }
}
