//! Logging setup from `LOG_LEVEL` and `LOG_FORMAT` (`pretty` for people, `json` for machines).

use crate::exit::CliError;
use tracing_subscriber::EnvFilter;

pub fn init(level: &str, format: &str) -> Result<(), CliError> {
    let filter = EnvFilter::try_new(level).map_err(|e| {
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
