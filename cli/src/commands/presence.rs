//! `nself-realtime presence track|get|online|count|offline|stats` (seed 002): who is present
//! where, read from and written to the gateways' shared presence store through their control
//! API ([`super::live`]).
//!
//! What the store holds: one entry per (channel, connection), keyed by the user (the Phoenix
//! presence key, or the nself user id) with the tracked metadata. A user's status in a channel
//! is the `status` of its entries (online, away, busy or offline; an entry without one, such as
//! a Phoenix client tracking other fields, counts as online, since it is present), the most
//! present one winning when a user has several connections: online, then busy, away, offline.
//! Users are counted once: across channels, by their most present status. "Last seen" is how
//! long ago the store last heard of the entry (connections refresh theirs every heartbeat / 2;
//! the in-process store of `up` keeps no times, and its entries exist only while their owner is
//! live, so they read "now").
//!
//! `presence online` lists the users who are present (online, busy or away; not offline), with
//! their status. Seed 002 also shows display names, which this schema does not have.
//!
//! `presence track` makes one gateway own the entry (the lowest gateway id, so that tracking a
//! user again changes the same entry) until `presence offline` or until that gateway stops;
//! it first removes any entry another gateway owns for the same user and channel. `presence
//! offline` asks every gateway to remove the entries it owns for the user: what clients track
//! over their own connections stays until they leave, and the command says so.

use super::live::{self, Answer, Gateways, LiveArgs};
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::control::Command;
use nself_realtime_gateway::presence::STATUSES;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Subcommand,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Track a user in a channel: presence track <user> <channel> [online|away|busy|offline].
    Track(TrackArgs),
    /// A user's presence in every channel, or in one: presence get <user> [channel].
    Get(UserArgs),
    /// The users present (not offline), everywhere or in one channel: presence online [channel].
    Online(ChannelArgs),
    /// Users by status, everywhere or in one channel: presence count [channel].
    Count(ChannelArgs),
    /// Remove what `presence track` set, in every channel or one: presence offline <user> [channel].
    Offline(UserArgs),
    /// Users by status and channels with presence.
    Stats(StatsArgs),
}

#[derive(clap::Args)]
struct TrackArgs {
    /// User id (the presence key).
    user: String,
    /// Channel (topic) name.
    channel: String,
    /// Status: online, away, busy or offline.
    #[arg(default_value = "online")]
    status: String,
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(clap::Args)]
struct UserArgs {
    /// User id (the presence key).
    user: String,
    /// Only this channel.
    channel: Option<String>,
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(clap::Args)]
struct ChannelArgs {
    /// Only this channel.
    channel: Option<String>,
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(clap::Args)]
struct StatsArgs {
    #[command(flatten)]
    live: LiveArgs,
}

/// One entry of the presence store.
#[derive(Debug, Clone)]
pub struct Entry {
    pub channel: String,
    pub user: String,
    pub status: &'static str,
    /// Seconds since the store last heard of it, when the store keeps times.
    pub age: Option<f64>,
    pub meta: Value,
}

/// How present a status is: lower is more present.
fn rank(status: &str) -> usize {
    match status {
        "online" => 0,
        "busy" => 1,
        "away" => 2,
        _ => 3,
    }
}

/// The status of a stored meta (see the module documentation).
fn status_of(meta: &Value) -> &'static str {
    match meta["status"].as_str() {
        Some("away") => "away",
        Some("busy") => "busy",
        Some("offline") => "offline",
        _ => "online",
    }
}

/// The entries of a `presence` answer.
fn entries(result: &Value) -> Vec<Entry> {
    result
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|record| {
            Some(Entry {
                channel: record["channel"].as_str()?.to_string(),
                user: record["key"].as_str()?.to_string(),
                status: status_of(&record["meta"]),
                age: record["age_seconds"].as_f64(),
                meta: record["meta"].clone(),
            })
        })
        .collect()
}

/// The presence store's entries, optionally of one channel and/or user. Any gateway's answer
/// covers them all (the store is shared); the first good one is used.
pub async fn snapshot(
    gateways: &Gateways,
    channel: Option<&str>,
    user: Option<&str>,
) -> Result<Vec<Entry>, CliError> {
    let command = Command::Presence {
        channel: channel.map(str::to_string),
        user: user.map(str::to_string),
    };
    let answers = gateways.ask_all(&command).await?;
    first_result(&answers, "read presence").map(|result| entries(&result))
}

/// The first successful result, else a runtime error with the gateways' errors.
fn first_result(answers: &[Answer], what: &str) -> Result<Value, CliError> {
    if let Some(result) = answers.iter().find_map(|a| a.outcome.as_ref().ok()) {
        return Ok(result.clone());
    }
    let errors: Vec<String> = answers
        .iter()
        .filter_map(|a| a.outcome.as_ref().err().map(|e| e.to_string()))
        .collect();
    Err(CliError::runtime(anyhow!(
        "the gateways could not {what}: {}",
        errors.join("; ")
    )))
}

/// One user in one channel: the most present of their entries, and the most recent time.
#[derive(Debug, Clone)]
pub struct Seen {
    pub channel: String,
    pub user: String,
    pub status: &'static str,
    pub age: Option<f64>,
    pub connections: usize,
}

/// Entries merged per (channel, user), sorted by channel then user.
pub fn per_channel(entries: &[Entry]) -> Vec<Seen> {
    let mut merged: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for entry in entries {
        merged
            .entry((entry.channel.clone(), entry.user.clone()))
            .and_modify(|seen| {
                if rank(entry.status) < rank(seen.status) {
                    seen.status = entry.status;
                }
                seen.age = match (seen.age, entry.age) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                seen.connections += 1;
            })
            .or_insert_with(|| Seen {
                channel: entry.channel.clone(),
                user: entry.user.clone(),
                status: entry.status,
                age: entry.age,
                connections: 1,
            });
    }
    merged.into_values().collect()
}

/// One user across channels: their most present status, most recent time and channels.
#[derive(Debug, Clone)]
pub struct User {
    pub user: String,
    pub status: &'static str,
    pub age: Option<f64>,
    pub channels: BTreeSet<String>,
}

/// Entries merged per user, sorted by user.
pub fn per_user(entries: &[Entry]) -> Vec<User> {
    let mut merged: BTreeMap<String, User> = BTreeMap::new();
    for seen in per_channel(entries) {
        let user = merged.entry(seen.user.clone()).or_insert_with(|| User {
            user: seen.user.clone(),
            status: seen.status,
            age: seen.age,
            channels: BTreeSet::new(),
        });
        if rank(seen.status) < rank(user.status) {
            user.status = seen.status;
        }
        user.age = match (user.age, seen.age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        user.channels.insert(seen.channel);
    }
    merged.into_values().collect()
}

/// Users counted once by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub online: usize,
    pub away: usize,
    pub busy: usize,
    pub offline: usize,
}

impl Tally {
    pub fn of(users: &[User]) -> Tally {
        let mut tally = Tally::default();
        for user in users {
            match user.status {
                "online" => tally.online += 1,
                "away" => tally.away += 1,
                "busy" => tally.busy += 1,
                _ => tally.offline += 1,
            }
        }
        tally
    }

    pub fn total(&self) -> usize {
        self.online + self.away + self.busy + self.offline
    }

    fn to_json(self) -> Value {
        json!({
            "online": self.online,
            "away": self.away,
            "busy": self.busy,
            "offline": self.offline,
            "total": self.total(),
        })
    }
}

fn number(n: usize) -> String {
    super::thousands(n as i64)
}

fn last_seen(age: Option<f64>) -> String {
    live::ago(age.unwrap_or(0.0))
}

/// A user or channel argument must not be empty.
fn named(what: &str, value: &str, usage: &str) -> Result<String, CliError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CliError::usage(anyhow!("name a {what}: {usage}")));
    }
    Ok(value.to_string())
}

/// A status argument: online, away, busy or offline.
fn parse_status(status: &str) -> Result<String, CliError> {
    let status = status.trim().to_ascii_lowercase();
    if STATUSES.contains(&status.as_str()) {
        Ok(status)
    } else {
        Err(CliError::usage(anyhow!(
            "unknown status {status:?}: use online, away, busy or offline (e.g. presence track user-123 general away)"
        )))
    }
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    match args.command {
        Subcommand::Track(args) => track(args, json).await,
        Subcommand::Get(args) => get(args, json).await,
        Subcommand::Online(args) => online(args, json).await,
        Subcommand::Count(args) => count(args, json).await,
        Subcommand::Offline(args) => offline(args, json).await,
        Subcommand::Stats(args) => stats(args, json).await,
    }
}

async fn track(args: TrackArgs, json: bool) -> Result<(), CliError> {
    let usage = "presence track <user> <channel> [online|away|busy|offline]";
    let user = named("user", &args.user, usage)?;
    let channel = named("channel", &args.channel, usage)?;
    let status = parse_status(&args.status)?;
    let gateways = Gateways::connect(&args.live).await?;
    let owner = if gateways.sees_all() {
        // The lowest id among the gateways that answer owns it; the others drop theirs.
        let answers = gateways.ask_all(&Command::Stats).await?;
        let owner = answers[0].gateway.clone();
        let drop_earlier = Command::Offline {
            user: user.clone(),
            channel: Some(channel.clone()),
        };
        let others = answers
            .iter()
            .skip(1)
            .map(|a| gateways.ask_one(&a.gateway, &drop_earlier));
        for outcome in futures::future::join_all(others).await {
            if let Ok(Answer {
                outcome: Err(e),
                gateway,
            }) = outcome
            {
                tracing::warn!(gateway, error = e, "could not drop an earlier entry");
            }
        }
        owner
    } else {
        String::new()
    };
    let command = Command::Track {
        user: user.clone(),
        channel: channel.clone(),
        status: status.clone(),
    };
    let answer = gateways.ask_one(&owner, &command).await?;
    let result = match answer.outcome {
        Ok(result) => result,
        Err(e) => {
            return Err(CliError::runtime(anyhow!(
                "the gateway did not track {user} in {channel}: {e}"
            )))
        }
    };
    if json {
        println!("{result}");
    } else {
        let gateway = result["gateway"].as_str().unwrap_or(&answer.gateway);
        println!("✓ Tracking {user} in {channel} as {status} (gateway {gateway})");
    }
    Ok(())
}

async fn get(args: UserArgs, json: bool) -> Result<(), CliError> {
    let user = named("user", &args.user, "presence get <user> [channel]")?;
    let gateways = Gateways::connect(&args.live).await?;
    let entries = snapshot(&gateways, args.channel.as_deref(), Some(&user)).await?;
    let seen = per_channel(&entries);
    if json {
        let presence: Vec<Value> = seen
            .iter()
            .map(|s| {
                json!({
                    "channel": s.channel,
                    "status": s.status,
                    "last_seen_seconds": s.age,
                    "connections": s.connections,
                    "metas": entries
                        .iter()
                        .filter(|e| e.channel == s.channel)
                        .map(|e| e.meta.clone())
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "user": user, "presence": presence }));
        return Ok(());
    }
    println!("Presence: {user}");
    println!();
    if seen.is_empty() {
        match &args.channel {
            Some(channel) => println!("  (not present in {channel})"),
            None => println!("  (not present in any channel)"),
        }
    }
    let width = live::column(17, 1, seen.iter().map(|s| s.channel.as_str()));
    for s in &seen {
        println!(
            "  {}{}Last seen: {}",
            live::pad(&s.channel, width),
            live::pad(s.status, 11),
            last_seen(s.age)
        );
    }
    Ok(())
}

async fn online(args: ChannelArgs, json: bool) -> Result<(), CliError> {
    let gateways = Gateways::connect(&args.live).await?;
    let entries = snapshot(&gateways, args.channel.as_deref(), None).await?;
    let users: Vec<User> = per_user(&entries)
        .into_iter()
        .filter(|u| u.status != "offline")
        .collect();
    if json {
        let list: Vec<Value> = users
            .iter()
            .map(|u| {
                json!({
                    "user": u.user,
                    "status": u.status,
                    "last_seen_seconds": u.age,
                    "channels": u.channels,
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "channel": args.channel, "count": users.len(), "users": list })
        );
        return Ok(());
    }
    match &args.channel {
        Some(channel) => println!("Online Users ({channel}): {}", number(users.len())),
        None => println!("Online Users: {}", number(users.len())),
    }
    println!();
    let width = live::column(12, 4, users.iter().map(|u| u.user.as_str()));
    for u in &users {
        let seen = last_seen(u.age);
        let line = match &args.channel {
            Some(_) => format!(
                "  {}{}{seen}",
                live::pad(&u.user, width),
                live::pad(u.status, 10)
            ),
            // Everywhere: the user's channels follow, in one column whatever the time's width.
            None => {
                let channels: Vec<&str> = u.channels.iter().map(String::as_str).collect();
                format!(
                    "  {}{}{}{}",
                    live::pad(&u.user, width),
                    live::pad(u.status, 10),
                    live::pad(&seen, 12),
                    channels.join(", ")
                )
            }
        };
        println!("{line}");
    }
    Ok(())
}

async fn count(args: ChannelArgs, json: bool) -> Result<(), CliError> {
    let gateways = Gateways::connect(&args.live).await?;
    let entries = snapshot(&gateways, args.channel.as_deref(), None).await?;
    let tally = Tally::of(&per_user(&entries));
    if json {
        let mut value = tally.to_json();
        value["channel"] = json!(args.channel);
        println!("{value}");
        return Ok(());
    }
    println!("Online: {}", number(tally.online));
    println!("Away: {}", number(tally.away));
    println!("Busy: {}", number(tally.busy));
    println!("Offline: {}", number(tally.offline));
    println!("Total: {}", number(tally.total()));
    Ok(())
}

async fn offline(args: UserArgs, json: bool) -> Result<(), CliError> {
    let user = named("user", &args.user, "presence offline <user> [channel]")?;
    let channel = match &args.channel {
        Some(channel) => Some(named(
            "channel",
            channel,
            "presence offline <user> [channel]",
        )?),
        None => None,
    };
    let gateways = Gateways::connect(&args.live).await?;
    let answers = gateways
        .ask_all(&Command::Offline {
            user: user.clone(),
            channel: channel.clone(),
        })
        .await?;
    let mut errors = Vec::new();
    for answer in &answers {
        if let Err(e) = &answer.outcome {
            errors.push(e.clone());
        }
    }
    if errors.len() == answers.len() {
        return Err(CliError::runtime(anyhow!(
            "the gateways could not set {user} offline: {}",
            errors.join("; ")
        )));
    }
    // What is left is owned by live connections (or by a gateway that did not answer).
    let remaining: BTreeSet<String> = snapshot(&gateways, channel.as_deref(), Some(&user))
        .await?
        .into_iter()
        .map(|e| e.channel)
        .collect();
    if json {
        println!(
            "{}",
            json!({ "user": user, "channel": channel, "still_present": remaining })
        );
        return Ok(());
    }
    match &channel {
        Some(channel) => println!("✓ {user} is offline in {channel}"),
        None => println!("✓ {user} is offline in every channel"),
    }
    if !remaining.is_empty() {
        let list: Vec<&str> = remaining.iter().map(String::as_str).collect();
        println!(
            "  still present through live connections in: {} (they leave when those connections do)",
            list.join(", ")
        );
    }
    Ok(())
}

async fn stats(args: StatsArgs, json: bool) -> Result<(), CliError> {
    let gateways = Gateways::connect(&args.live).await?;
    let entries = snapshot(&gateways, None, None).await?;
    let users = per_user(&entries);
    let tally = Tally::of(&users);
    let per_channel = per_channel(&entries);
    let channels: BTreeSet<&str> = per_channel.iter().map(|s| s.channel.as_str()).collect();
    // Users present per channel, averaged over the channels with presence, rounded.
    let average = if channels.is_empty() {
        0
    } else {
        (per_channel.len() + channels.len() / 2) / channels.len()
    };
    if json {
        let mut value = tally.to_json();
        value["channels"] = json!(channels.len());
        value["average_per_channel"] = json!(average);
        value["entries"] = json!(entries.len());
        println!("{value}");
        return Ok(());
    }
    println!("Presence Statistics:");
    println!();
    let line = |label: &str, value: usize| println!("  {label:<24} {}", number(value));
    line("Total users tracked:", tally.total());
    line("Currently online:", tally.online);
    line("Currently away:", tally.away);
    line("Currently busy:", tally.busy);
    line("Currently offline:", tally.offline);
    println!();
    line("Channels with presence:", channels.len());
    line("Average presence/channel:", average);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channel: &str, user: &str, status: Option<&str>, age: f64) -> Value {
        let mut meta = json!({"userId": user});
        if let Some(status) = status {
            meta["status"] = json!(status);
        }
        json!({"channel": channel, "key": user, "member": "m", "meta": meta, "age_seconds": age})
    }

    #[test]
    fn users_count_once_by_their_most_present_status() {
        let result = json!([
            entry("general", "ann", Some("away"), 10.0),
            entry("general", "ann", Some("online"), 20.0),
            entry("support", "ann", Some("offline"), 1.0),
            entry("general", "bob", Some("busy"), 3.0),
            entry("lobby", "cyd", None, 4.0),
            entry("lobby", "dee", Some("offline"), 5.0),
        ]);
        let entries = entries(&result);
        let seen = per_channel(&entries);
        assert_eq!(seen.len(), 5);
        assert_eq!(
            (
                seen[0].user.as_str(),
                seen[0].status,
                seen[0].age,
                seen[0].connections
            ),
            ("ann", "online", Some(10.0), 2)
        );
        let users = per_user(&entries);
        assert_eq!(users.len(), 4);
        assert_eq!(users[0].channels.len(), 2);
        assert_eq!(
            Tally::of(&users),
            Tally {
                online: 2,
                away: 0,
                busy: 1,
                offline: 1
            }
        );
    }

    #[test]
    fn statuses_are_the_four_of_the_seed() {
        assert_eq!(parse_status("Away").unwrap(), "away");
        assert!(parse_status("idle").is_err());
    }
}
