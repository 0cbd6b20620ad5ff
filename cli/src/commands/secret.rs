//! The JWT secret of the running system, in one place for the commands that sign tokens:
//! `REALTIME_JWT_SECRET`, else the secret `up` generated and keeps in `<dir>/jwt_secret`
//! (`NSELF_REALTIME_DIR`, default `./.nself-realtime`, mode 0600).
//!
//! Only `up` generates one ([`kept_secret`]); `token` and the live commands only look for it
//! ([`find_secret`]), since a token signed with a secret no gateway knows is refused by every
//! gateway.

use crate::exit::CliError;
use anyhow::{anyhow, Context};
use nself_realtime_shared::jwt;
use serde_json::Value;
use std::path::Path;

/// The running system's JWT secret and where it was found.
pub struct Secret {
    pub value: String,
    /// `REALTIME_JWT_SECRET`, or the path of the kept secret.
    pub source: String,
}

/// The running system's secret: the configured one, else the one `up` keeps in `dir`. Never
/// generated here.
pub fn find_secret(configured: Option<&str>, dir: &Path) -> Option<Secret> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Some(Secret {
            value: secret.to_string(),
            source: "REALTIME_JWT_SECRET".into(),
        });
    }
    let path = dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => Some(Secret {
            value: secret.trim().to_string(),
            source: path.display().to_string(),
        }),
        _ => None,
    }
}

/// For `up`: the JWT secret [`find_secret`] finds, else a new one saved in `dir`.
pub fn kept_secret(configured: Option<String>, dir: &Path) -> Result<String, CliError> {
    if let Some(secret) = find_secret(configured.as_deref(), dir) {
        return Ok(secret.value);
    }
    let path = dir.join("jwt_secret");
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

/// No secret was found: the fix, for `token` and `token --check`.
pub fn no_secret(dir: &Path) -> CliError {
    CliError::usage(anyhow!(
        "no JWT secret: REALTIME_JWT_SECRET is unset and {} does not exist; set REALTIME_JWT_SECRET to the gateways' secret, or run this where `nself-realtime up` keeps it (or set NSELF_REALTIME_DIR to that directory). `token` makes up no secret: no gateway would accept its tokens",
        dir.join("jwt_secret").display()
    ))
}

/// Signs `claims` (an object) with `secret`.
pub fn mint(secret: &str, claims: Value) -> String {
    let Value::Object(claims) = claims else {
        unreachable!("claims are objects")
    };
    jwt::mint_hs256(secret, &claims)
}
