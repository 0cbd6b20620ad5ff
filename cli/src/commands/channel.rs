//! `nself-realtime channel create|list|get|delete|members|join|leave` (seed 002): channels and
//! their members in `realtime.channels` and `realtime.channel_members`, over SQL as the schema
//! owner.
//!
//! A channel is named on the command line by its slug or its id; [`find`] and [`resolve`] are the
//! one place that turns such a name into a channel row, for these commands and for `messages`,
//! `replay` and `events`.
//!
//! Seed 002 shows members with a display name and a presence status. Neither is stored here:
//! there are no user profiles in this schema, and presence lives in the gateways (NATS KV), so
//! `channel members` shows each member's role and whether they may send instead, and `channel
//! list` counts members rather than inventing online figures.

use super::{counted, query_failed, thousands, utc_rfc3339, utc_seconds, Database};
use crate::exit::CliError;
use anyhow::anyhow;
use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

/// The channel types of `realtime.channels.type`.
pub const TYPES: [&str; 4] = ["public", "private", "presence", "direct"];

/// The member roles of `realtime.channel_members.role`, most privileged first.
pub const ROLES: [&str; 5] = ["owner", "admin", "moderator", "member", "guest"];

/// Longest slug `realtime.channels` accepts.
const MAX_SLUG_BYTES: usize = 255;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a channel: channel create <name> [public|private|presence|direct].
    Create(CreateArgs),
    /// List channels: channel list [all|public|private|presence|direct].
    List(ListArgs),
    /// Show one channel: its type, members, creation time and messages of the last 24 hours.
    Get(ChannelArgs),
    /// Delete a channel with all its messages and memberships.
    Delete(ChannelArgs),
    /// List a channel's members with their role and whether they may send.
    Members(ChannelArgs),
    /// Add a user to a channel (or change their role): channel join <channel> <user>.
    Join(JoinArgs),
    /// Remove a user from a channel: channel leave <channel> <user>.
    Leave(LeaveArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Channel name; its slug (the name clients join) is the name in lower case with every run
    /// of characters other than a-z, 0-9, _ and - replaced by a dash.
    name: String,
    /// Channel type: public, private, presence or direct.
    #[arg(default_value = "public")]
    kind: String,
    /// The slug to use instead of one derived from the name.
    #[arg(long)]
    slug: Option<String>,
    /// Most members the channel may have.
    #[arg(long)]
    max_members: Option<String>,
    /// Do not store the channel's chat messages: they reach its subscribers and are gone
    /// (persist_messages = false). By default messages are stored, as the seeds say.
    #[arg(long, conflicts_with = "persist")]
    ephemeral: bool,
    /// Store the channel's chat messages (the default; kept for older scripts).
    #[arg(long, hide = true)]
    persist: bool,
    /// Custom metadata: a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    #[command(flatten)]
    database: Database,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only channels of this type: all, public, private, presence or direct.
    #[arg(default_value = "all")]
    kind: String,
    #[command(flatten)]
    database: Database,
}

#[derive(clap::Args)]
struct ChannelArgs {
    /// Channel slug or id.
    channel: String,
    #[command(flatten)]
    database: Database,
}

#[derive(clap::Args)]
struct JoinArgs {
    /// Channel slug or id.
    channel: String,
    /// User id (the `sub` of the user's tokens).
    user: String,
    /// Role: owner, admin, moderator, member or guest (default: member for a new member, the
    /// current role for an existing one).
    #[arg(long)]
    role: Option<String>,
    /// The user may read but not send messages.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    database: Database,
}

#[derive(clap::Args)]
struct LeaveArgs {
    /// Channel slug or id.
    channel: String,
    /// User id.
    user: String,
    #[command(flatten)]
    database: Database,
}

/// One row of `realtime.channels`.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub kind: String,
    pub max_members: Option<i32>,
    pub persist_messages: bool,
    pub metadata: Value,
    /// `2026-01-30 10:15:23` (UTC).
    pub created: String,
    /// RFC 3339 (UTC).
    pub created_at: String,
}

impl Channel {
    fn columns() -> String {
        format!(
            "id::text, slug, name, type, max_members, persist_messages, metadata::text, {}, {}",
            utc_seconds("created_at"),
            utc_rfc3339("created_at")
        )
    }

    fn from_row(row: &tokio_postgres::Row) -> Channel {
        let metadata: String = row.get(6);
        Channel {
            id: row.get(0),
            slug: row.get(1),
            name: row.get(2),
            kind: row.get(3),
            max_members: row.get(4),
            persist_messages: row.get(5),
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            created: row.get(7),
            created_at: row.get(8),
        }
    }

    fn to_json(&self, members: i64, messages_24h: Option<i64>) -> Value {
        let mut value = json!({
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "type": self.kind,
            "max_members": self.max_members,
            "persist_messages": self.persist_messages,
            "metadata": self.metadata,
            "members": members,
            "created_at": self.created_at,
        });
        if let Some(count) = messages_24h {
            value["messages_24h"] = json!(count);
        }
        value
    }
}

/// The channel `spec` names: the one with that slug, else the one with that id, else the one
/// whose slug is `spec` made into a slug (`channel get "Team Chat"` finds `team-chat`).
pub async fn find(client: &impl GenericClient, spec: &str) -> Result<Option<Channel>, CliError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM realtime.channels
                  WHERE slug = $1 OR id::text = lower($1) OR slug = $2
                  ORDER BY slug = $1 DESC, id::text = lower($1) DESC
                  LIMIT 1",
                Channel::columns()
            ),
            &[&spec, &slugify(spec)],
        )
        .await
        .map_err(query_failed)?;
    Ok(row.as_ref().map(Channel::from_row))
}

/// Like [`find`], but a channel that does not exist is a usage error naming the fix.
pub async fn resolve(client: &impl GenericClient, spec: &str) -> Result<Channel, CliError> {
    find(client, spec).await?.ok_or_else(|| {
        CliError::usage(anyhow!(
            "channel {spec} does not exist; `nself-realtime channel list` shows the channels"
        ))
    })
}

/// `Team Chat!` → `team-chat`: lower case, each run of characters other than a-z, 0-9, `_` and
/// `-` replaced by one `-`, dashes trimmed from both ends.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut pending_dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            if pending_dash {
                slug.push('-');
                pending_dash = false;
            }
            slug.push(c);
        } else {
            pending_dash = true;
        }
    }
    slug.trim_matches('-').to_string()
}

/// A channel type argument; `all` is allowed where `allow_all` (the list filter).
fn parse_kind(kind: &str, allow_all: bool) -> Result<String, CliError> {
    let kind = kind.trim().to_ascii_lowercase();
    if TYPES.contains(&kind.as_str()) || (allow_all && kind == "all") {
        return Ok(kind);
    }
    let choices = if allow_all {
        "all, public, private, presence or direct"
    } else {
        "public, private, presence or direct"
    };
    Err(CliError::usage(anyhow!(
        "unknown channel type {kind:?}: use {choices}"
    )))
}

fn parse_role(role: &str) -> Result<String, CliError> {
    let role = role.trim().to_ascii_lowercase();
    if ROLES.contains(&role.as_str()) {
        Ok(role)
    } else {
        Err(CliError::usage(anyhow!(
            "unknown role {role:?}: use owner, admin, moderator, member or guest"
        )))
    }
}

/// The slug of a new channel: `--slug` as given (any printable text without white space, so
/// topics like `room:42` work), else derived from the name.
fn new_slug(name: &str, slug: Option<&str>) -> Result<String, CliError> {
    let slug = match slug {
        Some(slug) => {
            if slug.is_empty() || slug.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CliError::usage(anyhow!(
                    "--slug {slug:?} must be non-empty and without spaces, as in team-alpha"
                )));
            }
            slug.to_string()
        }
        None => {
            let slug = slugify(name);
            if slug.is_empty() {
                return Err(CliError::usage(anyhow!(
                    "channel name {name:?} has no letters or digits to make a slug from; pass one with --slug"
                )));
            }
            slug
        }
    };
    if slug.len() > MAX_SLUG_BYTES {
        return Err(CliError::usage(anyhow!(
            "the slug is longer than {MAX_SLUG_BYTES} bytes; pass a shorter one with --slug"
        )));
    }
    Ok(slug)
}

fn parse_max_members(text: &str) -> Result<i32, CliError> {
    match text.trim().parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(CliError::usage(anyhow!(
            "--max-members {text:?} must be a whole number from 1 to {}",
            i32::MAX
        ))),
    }
}

fn parse_metadata(text: &str) -> Result<Value, CliError> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(CliError::usage(anyhow!(
            r#"--metadata must be a JSON object, as in '{{"topic":"releases"}}'"#
        ))),
    }
}

/// A user id argument: the `sub` of the user's tokens, so any non-empty text.
fn parse_user(user: &str) -> Result<&str, CliError> {
    if user.trim().is_empty() {
        return Err(CliError::usage(anyhow!(
            "the user id is empty; pass the user's id (their token's sub), as in user-123"
        )));
    }
    Ok(user)
}

pub async fn run(args: Args, json: bool) -> Result<(), CliError> {
    match args.command {
        Command::Create(args) => create(args, json).await,
        Command::List(args) => list(args, json).await,
        Command::Get(args) => get(args, json).await,
        Command::Delete(args) => delete(args, json).await,
        Command::Members(args) => members(args, json).await,
        Command::Join(args) => join(args, json).await,
        Command::Leave(args) => leave(args, json).await,
    }
}

async fn create(args: CreateArgs, json: bool) -> Result<(), CliError> {
    let kind = parse_kind(&args.kind, false)?;
    let slug = new_slug(&args.name, args.slug.as_deref())?;
    let max_members = args
        .max_members
        .as_deref()
        .map(parse_max_members)
        .transpose()?;
    let metadata = match &args.metadata {
        Some(text) => parse_metadata(text)?,
        None => json!({}),
    };
    let client = args.database.connect().await?;
    let row = client
        .query_one(
            &format!(
                "INSERT INTO realtime.channels (name, slug, type, max_members, persist_messages, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
                 RETURNING {}",
                Channel::columns()
            ),
            &[
                &args.name,
                &slug,
                &kind,
                &max_members,
                &!args.ephemeral,
                &metadata.to_string(),
            ],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                CliError::usage(anyhow!(
                    "channel {slug} already exists; pick another name or use --slug"
                ))
            } else {
                query_failed(e)
            }
        })?;
    let channel = Channel::from_row(&row);
    if json {
        println!("{}", channel.to_json(0, Some(0)));
    } else {
        println!("✓ Channel created: {} (ID: {})", channel.slug, channel.id);
    }
    Ok(())
}

async fn list(args: ListArgs, json: bool) -> Result<(), CliError> {
    let kind = parse_kind(&args.kind, true)?;
    let filter = (kind != "all").then_some(kind);
    let client = args.database.connect().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {}, (SELECT count(*) FROM realtime.channel_members m WHERE m.channel_id = c.id)
                   FROM realtime.channels c
                  WHERE $1::text IS NULL OR type = $1::text
                  ORDER BY created_at, slug",
                Channel::columns()
            ),
            &[&filter],
        )
        .await
        .map_err(query_failed)?;
    let channels: Vec<(Channel, i64)> = rows
        .iter()
        .map(|row| (Channel::from_row(row), row.get(9)))
        .collect();
    if json {
        let list: Vec<Value> = channels
            .iter()
            .map(|(channel, members)| channel.to_json(*members, None))
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    println!("Channels:");
    println!();
    if channels.is_empty() {
        match &filter {
            Some(kind) => println!("  (no {kind} channels)"),
            None => println!("  (none: create one with `nself-realtime channel create general`)"),
        }
    }
    let width = channels
        .iter()
        .map(|(c, _)| c.slug.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    for (channel, members) in &channels {
        println!(
            "  {:<width$} {:<11} {}",
            channel.slug,
            channel.kind,
            counted(*members, "member", "members")
        );
    }
    Ok(())
}

async fn get(args: ChannelArgs, json: bool) -> Result<(), CliError> {
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    let row = client
        .query_one(
            "SELECT member_count, messages_24h FROM realtime.channel_stats WHERE id = $1::text::uuid",
            &[&channel.id],
        )
        .await
        .map_err(query_failed)?;
    let (members, messages_24h): (i64, i64) = (row.get(0), row.get(1));
    if json {
        println!("{}", channel.to_json(members, Some(messages_24h)));
        return Ok(());
    }
    println!("Channel: {}", channel.slug);
    if channel.name != channel.slug {
        println!("Name: {}", channel.name);
    }
    println!("ID: {}", channel.id);
    println!("Type: {}", channel.kind);
    match channel.max_members {
        Some(max) => println!(
            "Members: {} (max {})",
            thousands(members),
            thousands(max.into())
        ),
        None => println!("Members: {}", thousands(members)),
    }
    println!("Created: {}", channel.created);
    println!("Messages (24h): {}", thousands(messages_24h));
    // Messages persist by default (seed 002's shape has no line for it); an opt-out shows.
    if !channel.persist_messages {
        println!("Persist messages: no (ephemeral)");
    }
    if channel.metadata.as_object().is_some_and(|m| !m.is_empty()) {
        println!("Metadata: {}", channel.metadata);
    }
    Ok(())
}

async fn delete(args: ChannelArgs, json: bool) -> Result<(), CliError> {
    let mut client = args.database.connect().await?;
    let tx = client.transaction().await.map_err(query_failed)?;
    let channel = resolve(&tx, &args.channel).await?;
    // Counted before the cascade removes them, in the same transaction as the delete.
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM realtime.messages WHERE channel_id = $1::text::uuid),
                    (SELECT count(*) FROM realtime.channel_members WHERE channel_id = $1::text::uuid)",
            &[&channel.id],
        )
        .await
        .map_err(query_failed)?;
    let (messages, members): (i64, i64) = (row.get(0), row.get(1));
    tx.execute(
        "DELETE FROM realtime.channels WHERE id = $1::text::uuid",
        &[&channel.id],
    )
    .await
    .map_err(query_failed)?;
    tx.commit().await.map_err(query_failed)?;
    if json {
        println!(
            "{}",
            json!({
                "id": channel.id,
                "slug": channel.slug,
                "deleted": true,
                "messages_deleted": messages,
                "members_removed": members,
            })
        );
    } else {
        println!(
            "✓ Channel deleted: {} ({}, {})",
            channel.slug,
            counted(messages, "message", "messages"),
            counted(members, "member", "members")
        );
    }
    Ok(())
}

async fn members(args: ChannelArgs, json: bool) -> Result<(), CliError> {
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    let rows = client
        .query(
            &format!(
                "SELECT user_id, role, can_send, {}
                   FROM realtime.channel_members
                  WHERE channel_id = $1::text::uuid
                  ORDER BY array_position($2::text[], role), joined_at, user_id",
                utc_rfc3339("joined_at")
            ),
            &[&channel.id, &ROLES.as_slice()],
        )
        .await
        .map_err(query_failed)?;
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "user_id": row.get::<_, String>(0),
                    "role": row.get::<_, String>(1),
                    "can_send": row.get::<_, bool>(2),
                    "joined_at": row.get::<_, String>(3),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "channel": channel.slug, "id": channel.id, "members": list })
        );
        return Ok(());
    }
    println!(
        "Members of #{} ({}):",
        channel.slug,
        thousands(rows.len() as i64)
    );
    println!();
    if rows.is_empty() {
        println!(
            "  (none: add one with `nself-realtime channel join {} <user>`)",
            channel.slug
        );
    }
    let width = rows
        .iter()
        .map(|row| row.get::<_, &str>(0).chars().count())
        .max()
        .unwrap_or(0)
        .max(11);
    for row in &rows {
        let (user, role, can_send): (&str, &str, bool) = (row.get(0), row.get(1), row.get(2));
        println!(
            "  {user:<width$} {role:<10} {}",
            if can_send { "can send" } else { "read-only" }
        );
    }
    Ok(())
}

async fn join(args: JoinArgs, json: bool) -> Result<(), CliError> {
    let user = parse_user(&args.user)?;
    let role = args.role.as_deref().map(parse_role).transpose()?;
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    let row = client
        .query_one(
            "INSERT INTO realtime.channel_members (channel_id, user_id, role, can_send)
             VALUES ($1::text::uuid, $2, coalesce($3::text, 'member'), $4)
             ON CONFLICT (channel_id, user_id) DO UPDATE
                SET role = coalesce($3::text, realtime.channel_members.role),
                    can_send = EXCLUDED.can_send
             RETURNING role, can_send, xmax = 0",
            &[&channel.id, &user, &role, &!args.read_only],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            // The max_members trigger's message names the channel and the fix.
            Some(db) if *db.code() == SqlState::CHECK_VIOLATION => {
                CliError::usage(anyhow!("{}", db.message()))
            }
            _ => query_failed(e),
        })?;
    let (role, can_send, added): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if json {
        println!(
            "{}",
            json!({
                "channel": channel.slug,
                "user_id": user,
                "role": role,
                "can_send": can_send,
                "added": added,
            })
        );
    } else {
        let sending = if can_send { "can send" } else { "read-only" };
        if added {
            println!("✓ Added {user} to {} ({role}, {sending})", channel.slug);
        } else {
            println!("✓ Updated {user} in {} ({role}, {sending})", channel.slug);
        }
    }
    Ok(())
}

async fn leave(args: LeaveArgs, json: bool) -> Result<(), CliError> {
    let user = parse_user(&args.user)?;
    let client = args.database.connect().await?;
    let channel = resolve(&client, &args.channel).await?;
    let removed = client
        .execute(
            "DELETE FROM realtime.channel_members WHERE channel_id = $1::text::uuid AND user_id = $2",
            &[&channel.id, &user],
        )
        .await
        .map_err(query_failed)?;
    if removed == 0 {
        return Err(CliError::usage(anyhow!(
            "{user} is not a member of {}; `nself-realtime channel members {}` lists them",
            channel.slug,
            channel.slug
        )));
    }
    if json {
        println!(
            "{}",
            json!({ "channel": channel.slug, "user_id": user, "removed": true })
        );
    } else {
        println!("✓ Removed {user} from {}", channel.slug);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lower_case_with_dashes() {
        assert_eq!(slugify("general"), "general");
        assert_eq!(slugify("Team Chat"), "team-chat");
        assert_eq!(slugify("  Project: Alpha!! "), "project-alpha");
        assert_eq!(slugify("dm_alice-bob"), "dm_alice-bob");
        assert_eq!(slugify("Café crème"), "caf-cr-me");
        assert_eq!(slugify("--x--"), "x");
        assert_eq!(slugify("!!!"), "");
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(parse_kind("Private", false).unwrap(), "private");
        assert!(parse_kind("all", false).is_err());
        assert_eq!(parse_kind("all", true).unwrap(), "all");
        assert!(parse_kind("publik", true).is_err());
        assert_eq!(parse_role("Admin").unwrap(), "admin");
        assert!(parse_role("king").is_err());
        assert_eq!(parse_max_members("10").unwrap(), 10);
        assert!(parse_max_members("0").is_err());
        assert!(parse_max_members("ten").is_err());
        assert!(parse_metadata(r#"{"a":1}"#).is_ok());
        assert!(parse_metadata("[1]").is_err());
        assert_eq!(new_slug("Team Chat", None).unwrap(), "team-chat");
        assert_eq!(new_slug("x", Some("room:42")).unwrap(), "room:42");
        assert!(new_slug("x", Some("a b")).is_err());
        assert!(new_slug("!!!", None).is_err());
        assert!(new_slug(&"a".repeat(256), None).is_err());
    }
}
