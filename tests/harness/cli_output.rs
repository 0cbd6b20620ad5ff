//! Reading what a run of the `nself-realtime` binary printed, for the CLI's golden tests: its
//! stdout and stderr as text, success, and the one-line usage error (exit 2) every misuse gets.

use std::process::Output;

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts exit code 2 with one `error:` line on stderr containing `needle`, and nothing on
/// stdout.
pub fn usage_error(output: Output, needle: &str) {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{}{err}", stdout(&output));
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(stdout(&output), "");
}
