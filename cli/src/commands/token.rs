//! `nself-realtime token --sub <id> [--role ...] [--exp ...] [--claim k=v]`: mints an HS256 JWT
//! for testing, signed with the secret the gateways verify.
//!
//! The secret is `REALTIME_JWT_SECRET`, else the one `up` keeps in `./.nself-realtime/jwt_secret`
//! (generated on first use, by `up` or by this command, so both agree without configuration).
//! This module owns that kept secret.

use crate::exit::CliError;
use anyhow::Context;
use nself_realtime_shared::jwt;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

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
    /// Signing secret; unset: the one kept in --dir.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Where `up` keeps its generated secret.
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    dir: PathBuf,
}

/// The JWT secret: the configured one, else the one kept in `dir`, else a new one saved there.
pub fn kept_secret(configured: Option<String>, dir: &Path) -> Result<String, CliError> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret);
    }
    let path = dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_string()),
        _ => {}
    }
    let secret: String = (0..48)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, format!("{secret}\n")))
        .with_context(|| format!("cannot save the generated JWT secret in {}; set REALTIME_JWT_SECRET or use a writable --dir", path.display()))
        .map_err(CliError::usage)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(secret)
}

/// Signs `claims` (an object) with `secret`.
pub fn mint(secret: &str, claims: Value) -> String {
    let Value::Object(claims) = claims else {
        unreachable!("claims are objects")
    };
    jwt::mint_hs256(secret, &claims)
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
        CliError::usage(anyhow::anyhow!(
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
            return Err(CliError::usage(anyhow::anyhow!(
                "--claim {claim:?} must be NAME=VALUE (e.g. --claim tenant=acme)"
            )));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        claims.insert(name.to_string(), value);
    }
    Ok(claims)
}

pub fn run(args: Args, json_output: bool) -> Result<(), CliError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = claims(&args, now)?;
    let secret = kept_secret(args.secret.clone(), &args.dir)?;
    let token = jwt::mint_hs256(&secret, &claims);
    if json_output {
        println!("{}", json!({"token": token, "claims": claims}));
    } else {
        println!("{token}");
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
}
