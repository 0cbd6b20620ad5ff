//! Logging setup from `LOG_LEVEL` and `LOG_FORMAT` (`pretty` for people, `json` for machines).

use crate::exit::CliError;
use tracing_subscriber::EnvFilter;

/// async-nats logs every (re)connection at info; that is noise for a one-shot admin command and
/// for a service whose own logs say when NATS is lost or back. A bare level keeps it at warn; a
/// filter that names async_nats decides for itself.
fn with_quiet_nats(level: &str) -> String {
    let bare = ["error", "warn", "info", "debug", "trace"].contains(&level.trim());
    if bare && level.trim() != "debug" && level.trim() != "trace" {
        format!("{},async_nats=warn", level.trim())
    } else {
        level.to_string()
    }
}

pub fn init(level: &str, format: &str) -> Result<(), CliError> {
    let filter = EnvFilter::try_new(with_quiet_nats(level)).map_err(|e| {
        CliError::usage(anyhow::anyhow!(
            "LOG_LEVEL={level:?} is not a level or filter ({e}); use error, warn, info, debug or trace"
        ))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "pretty" => builder.init(),
        "json" => builder.json().init(),
        other => {
            return Err(CliError::usage(anyhow::anyhow!(
                "LOG_FORMAT={other:?} is unknown; use pretty or json"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_levels_quiet_async_nats_and_filters_stay() {
        assert_eq!(with_quiet_nats("info"), "info,async_nats=warn");
        assert_eq!(with_quiet_nats("debug"), "debug");
        assert_eq!(
            with_quiet_nats("info,async_nats=debug"),
            "info,async_nats=debug"
        );
    }
}
