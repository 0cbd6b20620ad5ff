//! `nself-realtime token --sub <id> [--role ...] [--exp ...] [--claim k=v]`: mints an HS256 JWT
//! for testing, signed with the secret the gateways verify; `token --check <jwt>` says whether
//! the running system accepts a token, and why not.
//!
//! The secret is the running system's ([`super::secret`]): `REALTIME_JWT_SECRET`, else the one
//! `up` generated and keeps in `NSELF_REALTIME_DIR/jwt_secret` (default `./.nself-realtime`).
//! Only `up` generates one; `token` never does, since a token signed with a secret no gateway
//! knows is refused by every gateway (in another directory it would otherwise mint such tokens
//! without a word): without one it stops with the fix.
//!
//! `--check` verifies with the gateways' own code ([`nself_realtime_shared::jwt::Verifier`]
//! with the same secret or `REALTIME_JWT_JWKS`, then the role against `REALTIME_DB_ROLES` as a
//! join does), like Centrifugo's `checktoken`: exit 0 and the claims that matter when
//! accepted; exit 1 with the reason and its fix when refused.

use super::secret::{find_secret, no_secret};
use crate::exit::CliError;
use anyhow::anyhow;
use nself_realtime_gateway::auth::session::{self, AllowedRoles, SessionError};
use nself_realtime_gateway::config::DEFAULT_DB_ROLES;
use nself_realtime_shared::jwt::{self, Claims, JwtError, Verifier};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The user id (`sub` claim); omit for a token without a user (anon, service_role).
    #[arg(long)]
    sub: Option<String>,
    /// The Postgres role the token acts as.
    #[arg(long, default_value = "authenticated")]
    role: String,
    /// Lifetime: seconds, or a number with s, m, h or d (`15m`, `24h`, `30d`).
    #[arg(long, default_value = "24h")]
    exp: String,
    /// An extra claim, `name=value`; the value is JSON when it parses as JSON, else a string.
    /// Repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Also write the Hasura claims (`https://hasura.io/jwt/claims`) for the same user and role.
    #[arg(long)]
    hasura: bool,
    /// Check this token instead of minting one: whether this system's gateways accept it, and
    /// why not (exit 1 when refused).
    #[arg(long, value_name = "JWT", conflicts_with_all = ["sub", "role", "exp", "claims", "hasura"])]
    check: Option<String>,
    /// Signing secret; unset: the one `up` keeps in --dir.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// With --check: the gateways' JWKS (a file path or the JSON) for RS256/ES256 tokens.
    #[arg(long = "jwks", env = "REALTIME_JWT_JWKS")]
    jwks: Option<String>,
    /// With --check: the roles a token's role claim may name, as the gateways are configured.
    #[arg(long = "db-roles", env = "REALTIME_DB_ROLES", default_value = DEFAULT_DB_ROLES)]
    db_roles: String,
    /// Where `up` keeps its generated secret.
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    dir: PathBuf,
}

/// `30`, `30s`, `15m`, `24h`, `30d` as seconds.
fn lifetime(text: &str) -> Result<i64, CliError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if n > 0 && scale > 0 => n.checked_mul(scale).ok_or(()),
        _ => Err(()),
    }
    .map_err(|()| {
        CliError::usage(anyhow!(
            "--exp {text:?} is not a lifetime; use seconds or a number with s, m, h or d (e.g. 24h)"
        ))
    })
}

/// The claims the arguments describe, `now` being the issue time.
fn claims(args: &Args, now: i64) -> Result<Map<String, Value>, CliError> {
    let mut claims = Map::new();
    claims.insert("role".into(), json!(args.role));
    claims.insert("iss".into(), json!("nself-realtime"));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime(&args.exp)?));
    if let Some(sub) = &args.sub {
        claims.insert("sub".into(), json!(sub));
    }
    if args.hasura {
        let mut hasura = json!({
            "x-hasura-default-role": args.role,
            "x-hasura-allowed-roles": [args.role],
        });
        if let Some(sub) = &args.sub {
            hasura["x-hasura-user-id"] = json!(sub);
        }
        claims.insert(jwt::HASURA_CLAIMS.into(), hasura);
    }
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(CliError::usage(anyhow!(
                "--claim {claim:?} must be NAME=VALUE (e.g. --claim tenant=acme)"
            )));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        claims.insert(name.to_string(), value);
    }
    Ok(claims)
}

pub fn run(args: Args, json_output: bool) -> Result<(), CliError> {
    if let Some(token) = &args.check {
        return check(&args, token, json_output);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = claims(&args, now)?;
    let secret =
        find_secret(args.secret.as_deref(), &args.dir).ok_or_else(|| no_secret(&args.dir))?;
    let token = jwt::mint_hs256(&secret.value, &claims);
    if json_output {
        println!("{}", json!({"token": token, "claims": claims}));
    } else {
        println!("{token}");
    }
    Ok(())
}

/// What `--check` found.
enum Verdict {
    /// Accepted, acting as `role`.
    Accepted { claims: Claims, role: String },
    /// Refused: a short code for scripts, and the reason with its fix.
    Refused {
        problem: &'static str,
        reason: String,
    },
}

/// `token --check <jwt>` (module docs).
fn check(args: &Args, token: &str, json_output: bool) -> Result<(), CliError> {
    let secret = find_secret(args.secret.as_deref(), &args.dir);
    let jwks = match args.jwks.as_deref().filter(|j| !j.trim().is_empty()) {
        Some(value) => Some(jwt::load_jwks(value).map_err(CliError::usage)?),
        None => None,
    };
    if secret.is_none() && jwks.is_none() {
        return Err(no_secret(&args.dir));
    }
    let verifier = Verifier::new(secret.as_ref().map(|s| s.value.as_str()), jwks.as_deref())
        .map_err(CliError::usage)?;
    let roles = AllowedRoles::parse(&args.db_roles).map_err(CliError::usage)?;
    let mut keys: Vec<String> = secret.iter().map(|s| s.source.clone()).collect();
    if jwks.is_some() {
        keys.push("REALTIME_JWT_JWKS".into());
    }
    let keys = keys.join(" and ");
    let verdict = judge(&verifier, &roles, token.trim(), &keys);
    report(verdict, &keys, json_output)
}

/// Verifies `token` as a gateway does, then its role as a join does.
fn judge(verifier: &Verifier, roles: &AllowedRoles, token: &str, keys: &str) -> Verdict {
    let claims = match verifier.verify(token) {
        Ok(claims) => claims,
        Err(e) => {
            let (problem, reason) = refusal(&e, keys);
            return Verdict::Refused { problem, reason };
        }
    };
    match session::role_of(&claims, roles) {
        Ok(role) => Verdict::Accepted {
            role: role.to_string(),
            claims,
        },
        Err(SessionError::RoleNotAllowed(role)) | Err(SessionError::Postgres { role, .. }) => {
            Verdict::Refused {
                problem: "role_not_allowed",
                reason: format!(
                    "its role {role:?} is not one of REALTIME_DB_ROLES ({}): the gateways accept the connection but refuse every channel it joins; mint it with one of those roles (--role), or add the role to REALTIME_DB_ROLES",
                    roles.names().join(",")
                ),
            }
        }
    }
}

/// `2026-01-30 10:15:23 UTC` for a Unix time.
fn utc(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// A refused token's problem code and reason, with the fix.
fn refusal(error: &JwtError, keys: &str) -> (&'static str, String) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match error {
        JwtError::Malformed(_) => (
            "malformed",
            format!("{error}; pass the whole token: three base64url parts joined by dots"),
        ),
        JwtError::Expired { ago_secs } => (
            "expired",
            format!(
                "{error} (exp {}); mint a new one (`nself-realtime token --exp 24h`)",
                utc(now - ago_secs)
            ),
        ),
        JwtError::NotYetValid { in_secs } => (
            "not_yet_valid",
            format!(
                "{error} (nbf {}); wait, or check the clock of the machine that minted it",
                utc(now + in_secs)
            ),
        ),
        JwtError::BadClaim { .. } => ("bad_claim", error.to_string()),
        JwtError::BadSignature => (
            "bad_signature",
            format!(
                "{error}: it was not signed with this system's key ({keys}); mint one with `nself-realtime token` where the system runs, or set REALTIME_JWT_SECRET to the secret it was signed with"
            ),
        ),
        JwtError::AlgorithmNotAllowed(_) => (
            "algorithm_not_allowed",
            format!("{error}; this system verifies with {keys}"),
        ),
        JwtError::UnknownKey(_) => (
            "unknown_key",
            format!("{error}; add the key to REALTIME_JWT_JWKS"),
        ),
    }
}

/// Prints the verdict: the claims that matter when accepted; the reason when refused (exit 1).
fn report(verdict: Verdict, keys: &str, json_output: bool) -> Result<(), CliError> {
    let (claims, role) = match verdict {
        Verdict::Accepted { claims, role } => (claims, role),
        Verdict::Refused { problem, reason } => {
            if json_output {
                println!(
                    "{}",
                    json!({"accepted": false, "problem": problem, "reason": reason, "checked_with": keys})
                );
            }
            return Err(CliError::runtime(anyhow!("token refused: {reason}")));
        }
    };
    let exp = claims.exp();
    if json_output {
        println!(
            "{}",
            json!({
                "accepted": true,
                "role": role,
                "sub": claims.sub(),
                "exp": exp,
                "claims": claims.to_json(),
                "checked_with": keys,
            })
        );
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    println!("✓ Token accepted (checked with {keys})");
    match claims.role() {
        Some(_) => println!("  role     {role}"),
        None => println!("  role     {role} (no role claim)"),
    }
    println!("  sub      {}", claims.sub().unwrap_or("(none)"));
    match exp {
        Some(exp) => println!(
            "  expires  {} (in {})",
            utc(exp),
            super::live::uptime((exp - now).max(0) as u64)
        ),
        None => println!("  expires  never (no exp claim)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_units_and_refuse_nonsense() {
        assert_eq!(lifetime("90").unwrap(), 90);
        assert_eq!(lifetime("15m").unwrap(), 900);
        assert_eq!(lifetime("24h").unwrap(), 86_400);
        assert_eq!(lifetime("2d").unwrap(), 172_800);
        for bad in ["", "0", "-5", "h", "10y", "1.5h", "99999999999999999d"] {
            assert!(lifetime(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(1_769_768_123), "2026-01-30 10:15:23 UTC");
    }
}
