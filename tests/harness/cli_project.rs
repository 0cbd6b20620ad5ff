//! Where the CLI's tests run the `nself-realtime` binary as a user would: in a directory of its
//! own (a user's project, removed afterwards), with the test process' variables that would
//! change what the CLI reaches ([`CLI_VARIABLES`]) cleared, so that only what a test sets
//! reaches it.

use crate::process::free_port;
use std::path::PathBuf;

/// Variables of the test process that would change what the CLI reaches.
pub const CLI_VARIABLES: [&str; 14] = [
    "DATABASE_URL",
    "NATS_URL",
    "REALTIME_URL",
    "REALTIME_HOST",
    "REALTIME_PORT",
    "REALTIME_JWT_SECRET",
    "REALTIME_JWT_JWKS",
    "REALTIME_DB_ROLES",
    "REALTIME_SERVICE_KEY",
    "REALTIME_CDC_PORT",
    "REALTIME_CDC_HTTP_PORT",
    "REALTIME_PUBLICATION",
    "NSELF_REALTIME_DIR",
    "LOG_FORMAT",
];

/// A temporary directory, removed on drop: the user's project directory.
pub struct ProjectDir(pub PathBuf);

impl ProjectDir {
    /// A new empty directory under the system's temp dir, named after `test` and `name`.
    pub fn new(test: &str, name: &str) -> ProjectDir {
        let path = std::env::temp_dir().join(format!(
            "nself-realtime-{test}-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        // Under root, `up`'s local Postgres runs as `postgres` and must reach the directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ProjectDir(path)
    }
}

impl Drop for ProjectDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
