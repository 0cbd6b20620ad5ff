//! `realtime-bench`: benchmark scenarios for nself-realtime. Each scenario starts its own
//! private Postgres and NATS (the test harness), drives a workload, and prints its figures with
//! the machine they were measured on; BENCHMARKS.md records them with the command.

mod cdc;
mod machine;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!("{}", machine::describe());
    match cli.scenario {
        Scenario::Cdc(args) => cdc::run(args).await,
    }
}
