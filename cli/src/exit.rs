//! How a command fails: the exit code (1 runtime failure, 2 bad usage or configuration) and the
//! one line printed to stderr, which names the fix.

use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl CliError {
    /// Bad usage or configuration: exit 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: 2,
            error: error.into(),
        }
    }

    /// Something failed while running: exit 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: 1,
            error: error.into(),
        }
    }

    /// Prints `error: <message>: <causes>` on one line and returns the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {:#}", self.error);
        ExitCode::from(self.code)
    }
}

/// Anything unclassified is a runtime failure.
impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> CliError {
        CliError::runtime(error)
    }
}
