//! `nself-realtime`: one binary for every role (CDC sidecar, gateway, all-in-one `up`) and the
//! admin commands of seed 002.
//!
//! This file only parses the command line and maps outcomes to exit codes: 0 ok, 1 runtime
//! failure, 2 bad usage or bad configuration (always one line that names the fix). Each
//! subcommand lives in `commands/` and calls into the libraries.

mod commands;
mod env_check;
mod exit;
mod logging;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use exit::CliError;

/// mimalloc instead of glibc's allocator: profiling the CDC at full speed showed about a third of
/// its CPU time in glibc malloc/free (each event allocates its JSON, headers and ack future).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod tests {
    use super::{help_of, one_line_usage_error};

    #[test]
    fn a_group_without_its_subcommand_gets_its_help() {
        let help = help_of("nself-realtime channel").unwrap();
        assert!(
            help.contains("Usage: nself-realtime channel [OPTIONS] <COMMAND>"),
            "{help}"
        );
        assert!(help.contains("\n  create "), "{help}");
        assert!(help_of("nself-realtime nosuch").is_none());
        assert!(help_of("nself-realtime").unwrap().contains("Commands:"));
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <USER>\n  <CHANNEL>\n\nUsage: nself-realtime presence track <USER> <CHANNEL> [STATUS]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered),
            "error: the following required arguments were not provided: <USER> <CHANNEL>; usage: nself-realtime presence track <USER> <CHANNEL> [STATUS] (see --help)"
        );
    }
}

#[derive(Parser)]
#[command(
    name = "nself-realtime",
    version,
    about = "Realtime for Postgres apps: database changes, broadcast and presence over WebSockets"
)]
pub(crate) struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log level (error, warn, info, debug, trace, off) or a tracing filter such as
    /// info,nself_realtime_gateway=debug.
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: pretty or json.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "pretty")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update the realtime schema, roles and publications (idempotent).
    Init(commands::init::Args),
    /// Run everything in one process: local Postgres (when DATABASE_URL is unset), CDC, gateway.
    Up(commands::up::Args),
    /// Run the CDC service: replication and NOTIFY into NATS, health, the SUBSCRIBE endpoint.
    Cdc(commands::cdc::Args),
    /// Run a WebSocket gateway (Phoenix/Supabase, Socket.IO and /ws JSON) on NATS.
    Gateway(commands::gateway::Args),
    /// Publish a table's changes: subscribe public.users [INSERT,UPDATE,DELETE,TRUNCATE].
    Subscribe(commands::subscriptions::SubscribeArgs),
    /// Stop publishing a table's changes.
    Unsubscribe(commands::subscriptions::UnsubscribeArgs),
    /// List the tables whose changes are published.
    Subscriptions(commands::subscriptions::ListArgs),
    /// Print a table's changes as they happen, for [seconds] (default 60).
    Listen(commands::listen::Args),
    /// Mint a JWT for testing: token --sub <id> [--role authenticated] [--exp 24h].
    Token(commands::token::Args),
    /// Manage channels and their members: create, list, get, delete, members, join, leave.
    Channel(commands::channel::Args),
    /// Print a channel's newest messages: messages <channel> [limit] (default 50, max 1000).
    Messages(commands::messages::MessagesArgs),
    /// Print a channel's messages since a time: replay <channel> <ISO 8601 timestamp>.
    Replay(commands::messages::ReplayArgs),
    /// Count a channel's logged events by type: events <channel> [hours] (default 24).
    Events(commands::events::Args),
    /// Close stale connections; delete expired broadcasts and old messages and events.
    Cleanup(commands::cleanup::Args),
    /// Whether the gateways run: connections, channels, subscriptions, presence.
    Status(commands::status::Args),
    /// Figures of the running system: connections, channels, messages, subscriptions, presence.
    Stats(commands::stats::Args),
    /// The live WebSocket connections of every gateway.
    Connections(commands::connections::Args),
    /// Presence: track, get, online, count, offline, stats.
    Presence(commands::presence::Args),
    /// Send a message to a channel's subscribers: broadcast <channel> <event> <payload JSON>.
    Broadcast(commands::broadcast::Args),
    /// Run `up` in the background (pid and log in ./.nself-realtime/); -- passes arguments to up.
    Start(commands::service::StartArgs),
    /// Stop what `start` runs (SIGTERM, then SIGKILL after --timeout).
    Stop(commands::service::StopArgs),
    /// Stop, then start again with the given arguments.
    Restart(commands::service::RestartArgs),
    /// Print the background service's log: logs [-n 100] [--follow].
    Logs(commands::service::LogsArgs),
}

/// Clap's usage error on one line, like every other error of the binary: what is wrong (with
/// its tip), then the usage that fixes it. `error: the following required arguments were not
/// provided: <USER> <CHANNEL>; usage: nself-realtime presence track <USER> <CHANNEL> [STATUS]`
fn one_line_usage_error(rendered: &str) -> String {
    let mut problem = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Usage:") {
            usage = Some(rest.trim().to_string());
        } else if !line.starts_with("For more information") {
            problem.push(line.strip_prefix("error:").unwrap_or(line).trim());
        }
    }
    let mut line = format!("error: {}", problem.join(" ").replace(" tip: ", "; tip: "));
    if let Some(usage) = usage {
        line.push_str(&format!("; usage: {usage} (see --help)"));
    }
    line
}

/// The help of the command `path` names (`nself-realtime channel`), as `--help` prints it.
fn help_of(path: &str) -> Option<String> {
    let mut command = Cli::command();
    command.build();
    let mut current = &command;
    for name in path.split_whitespace().skip(1) {
        current = current.find_subcommand(name)?;
    }
    Some(current.clone().render_help().to_string())
}

/// What a command line clap refused gets: a group named without its subcommand (`channel`)
/// its help on stderr, as clap prints it for `arg_required_else_help`; any other misuse the
/// one-line error; both exit 2. `--help` and `--version` print and exit 0.
fn parse_failure(e: clap::Error) -> std::process::ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    let help = match (e.kind(), e.get(ContextKind::InvalidSubcommand)) {
        (ErrorKind::MissingSubcommand, Some(ContextValue::String(path))) => help_of(path),
        (ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, _) => Some(e.render().to_string()),
        _ => None,
    };
    match help {
        Some(help) => eprint!("{help}"),
        None => eprintln!("{}", one_line_usage_error(&e.render().to_string())),
    }
    std::process::ExitCode::from(2)
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_failure(e),
    };
    if let Err(e) = logging::init(&cli.log_level, &cli.log_format) {
        return e.report();
    }
    if matches!(
        cli.command,
        Command::Up(_) | Command::Gateway(_) | Command::Cdc(_)
    ) {
        env_check::warn_unknown(&Cli::command());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return CliError::runtime(anyhow::anyhow!("cannot start the async runtime: {e}"))
                .report()
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(args) => commands::init::run(args, json).await,
            Command::Up(args) => commands::up::run(args, json).await,
            Command::Cdc(args) => commands::cdc::run(args).await,
            Command::Gateway(args) => commands::gateway::run(args).await,
            Command::Subscribe(args) => commands::subscriptions::subscribe(args, json).await,
            Command::Unsubscribe(args) => commands::subscriptions::unsubscribe(args, json).await,
            Command::Subscriptions(args) => commands::subscriptions::list(args, json).await,
            Command::Listen(args) => commands::listen::run(args, json).await,
            Command::Token(args) => commands::token::run(args, json),
            Command::Channel(args) => commands::channel::run(args, json).await,
            Command::Messages(args) => commands::messages::messages(args, json).await,
            Command::Replay(args) => commands::messages::replay(args, json).await,
            Command::Events(args) => commands::events::run(args, json).await,
            Command::Cleanup(args) => commands::cleanup::run(args, json).await,
            Command::Status(args) => commands::status::run(args, json).await,
            Command::Stats(args) => commands::stats::run(args, json).await,
            Command::Connections(args) => commands::connections::run(args, json).await,
            Command::Presence(args) => commands::presence::run(args, json).await,
            Command::Broadcast(args) => commands::broadcast::run(args, json).await,
            Command::Start(args) => commands::service::start(args, json).await,
            Command::Stop(args) => commands::service::stop(args, json).await,
            Command::Restart(args) => commands::service::restart(args, json).await,
            Command::Logs(args) => commands::service::logs(args, json).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
