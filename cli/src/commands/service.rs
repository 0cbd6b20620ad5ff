//! `nself-realtime start|stop|restart|logs`: `up` as a background service (DESIGN.md, seed 004),
//! for a laptop or a small server without a process manager.
//!
//! * `start [--timeout 60] [-- <up arguments>]` runs this same binary's `up` in a new session
//!   (`setsid`: no terminal, so closing one or pressing Ctrl-C does not reach it), with the
//!   caller's environment, `NSELF_REALTIME_DIR` set to `--dir`, stdin from /dev/null and
//!   stdout/stderr appended to `<dir>/realtime.log` (`NO_COLOR=1` unless set: no colour codes
//!   in a file). Its pid goes to `<dir>/realtime.pid`. It
//!   returns once the gateway's `/health` answers 200 and prints `up`'s banner (URLs, keys);
//!   if `up` exits first or is not healthy in time, it prints the end of the log, stops what
//!   it started and exits 1. A service already running is exit 2, naming `stop`/`restart`.
//! * `stop [--timeout 15]` sends SIGTERM (`up` then closes its sockets, stops the CDC and its
//!   local Postgres), waits, and after the timeout sends SIGKILL to the process group. When
//!   nothing runs it says so and exits 0: the wanted state is reached either way, which keeps
//!   `stop` safe in scripts. The pid file is removed.
//! * `restart` is `stop` then `start` with the same arguments.
//! * `logs [-n 100] [--follow]` prints the end of the log; `--follow` then prints what is
//!   appended until Ctrl-C (starting over if the file is truncated).
//!
//! A pid file whose process is gone, is a zombie, or is no longer `nself-realtime up` (a reused
//! pid) counts as not running and is replaced.

use super::http::{self, BaseUrl};
use crate::exit::CliError;
use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The log file `start` writes, in `--dir`.
pub const LOG_FILE: &str = "realtime.log";
/// The pid file `start` writes, in `--dir`.
pub const PID_FILE: &str = "realtime.pid";
/// The last line of `up`'s text banner.
const BANNER_END: &str = "Ctrl-C stops everything.";
/// Log lines printed when `start` fails.
const FAILURE_TAIL: usize = 30;

/// Where the service keeps its files.
#[derive(clap::Args, Debug, Clone)]
pub struct Place {
    /// The directory of the pid file, the log and `up`'s local cluster.
    #[arg(long, env = "NSELF_REALTIME_DIR", default_value = ".nself-realtime")]
    dir: PathBuf,
}

impl Place {
    fn pid_file(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct StartArgs {
    /// Seconds to wait for the gateway's /health.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The gateway's listen address, for the health check (0.0.0.0 means 127.0.0.1).
    #[arg(long = "realtime-host", env = "REALTIME_HOST")]
    host: Option<String>,
    /// The gateway's port (passed on to `up`).
    #[arg(long = "realtime-port", env = "REALTIME_PORT", default_value_t = nself_realtime_gateway::config::DEFAULT_PORT)]
    port: u16,
    #[command(flatten)]
    place: Place,
    /// Arguments for `up`, after `--` (e.g. -- --realtime-port 4100).
    #[arg(last = true)]
    up_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
    #[command(flatten)]
    place: Place,
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 15)]
    stop_timeout: u64,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// How many of the last lines to print.
    #[arg(short = 'n', long = "lines", default_value_t = 100)]
    lines: usize,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    #[command(flatten)]
    place: Place,
}

/// The pid of `nself-realtime up` running in the background from `dir`, if it runs.
pub fn running(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_our_process(pid).then_some(pid)
}

/// Whether `pid` is a live (not zombie) `nself-realtime up`.
fn is_our_process(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid_t <= 0 {
        return false;
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if proc.exists() {
        // The state is the field after the parenthesised command name.
        let zombie = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        let is_up = std::fs::read(proc.join("cmdline"))
            .map(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"up"))
            .unwrap_or(false);
        return !zombie && is_up;
    }
    if Path::new("/proc/self").exists() {
        return false;
    }
    // No procfs: whether the process exists at all.
    // SAFETY: kill with signal 0 only checks for the process; it has no memory effects.
    let result = unsafe { libc::kill(pid_t, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory effects; a wrong pid only yields an error, ignored here.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The value of `--name value` or `--name=value` in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            return iter.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(value.to_string());
        }
    }
    None
}

/// The last `n` lines of `path` (without their newlines) and the file's length.
fn tail(path: &Path, n: usize) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let mut start = length;
    let mut buffer: Vec<u8> = Vec::new();
    const BLOCK: u64 = 64 * 1024;
    // Read backwards until the buffer holds more than n line breaks (or the whole file).
    while start > 0 {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buffer);
        buffer = block;
        start = from;
        let body = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        if body.iter().filter(|&&b| b == b'\n').count() >= n {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buffer);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok((
        lines[skip..].iter().map(|l| l.to_string()).collect(),
        length,
    ))
}

/// The log from `offset` on, as lines.
fn log_since(path: &Path, offset: u64) -> Vec<String> {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text.lines().map(str::to_string).collect()
}

/// What `start` reports.
struct Started {
    pid: u32,
    url: String,
    /// `up`'s banner: text lines, or its JSON document.
    banner: Result<Value, Vec<String>>,
}

async fn start_service(args: &StartArgs, json_output: bool) -> Result<Started, CliError> {
    let place = &args.place;
    if let Some(pid) = running(&place.dir) {
        return Err(CliError::usage(anyhow!(
            "nself-realtime is already running in the background (pid {pid}); stop it with `nself-realtime stop` or use `nself-realtime restart`"
        )));
    }
    std::fs::create_dir_all(&place.dir)
        .with_context(|| {
            format!(
                "cannot create {}; use a writable --dir",
                place.dir.display()
            )
        })
        .map_err(CliError::usage)?;
    let _ = std::fs::remove_file(place.pid_file());

    // Where the gateway will answer: `up`'s own flags win over ours.
    let port = match flag_value(&args.up_args, "--realtime-port") {
        Some(port) => port.parse::<u16>().map_err(|_| {
            CliError::usage(anyhow!(
                "--realtime-port {port:?} is not a port; use a number from 1 to 65535"
            ))
        })?,
        None => args.port,
    };
    let host = flag_value(&args.up_args, "--realtime-host").or_else(|| args.host.clone());
    let probe_host = match host.as_deref().map(str::trim) {
        None | Some("" | "0.0.0.0" | "::" | "[::]") => "127.0.0.1".to_string(),
        Some(host) => host.trim_matches(|c| c == '[' || c == ']').to_string(),
    };
    let url = BaseUrl {
        host: probe_host,
        port,
        base: String::new(),
    };

    let log_path = place.log_file();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}; use a writable --dir", log_path.display()))
        .map_err(CliError::usage)?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    writeln!(log, "=== nself-realtime start at {now} ===")
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let offset_after_header = log.metadata().map(|m| m.len()).unwrap_or(offset);

    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut command = Command::new(exe);
    command.arg("up");
    if json_output {
        command.arg("--json");
    }
    command
        .args(&args.up_args)
        .env("NSELF_REALTIME_DIR", &place.dir)
        .env("REALTIME_PORT", args.port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    if let Some(host) = &args.host {
        command.env("REALTIME_HOST", host);
    }
    if std::env::var_os("NO_COLOR").is_none() {
        // A log file, not a terminal: no colour codes.
        command.env("NO_COLOR", "1");
    }
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .context("cannot start `nself-realtime up`")?;
    let pid = child.id();
    std::fs::write(place.pid_file(), format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", place.pid_file().display()))?;

    let failed = |child: &mut std::process::Child, why: String| -> CliError {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(place.pid_file());
        let lines = log_since(&log_path, offset_after_header);
        let skip = lines.len().saturating_sub(FAILURE_TAIL);
        eprintln!("--- the end of {} ---", log_path.display());
        for line in &lines[skip..] {
            eprintln!("{line}");
        }
        eprintln!("---");
        CliError::runtime(anyhow!("{why}; the log is {}", log_path.display()))
    };

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(
                &mut child,
                format!("`nself-realtime up` exited ({status}) before it was healthy"),
            ));
        }
        if let Ok(response) =
            http::request(&url, "GET", "/health", None, None, Duration::from_secs(2)).await
        {
            let gateway = response
                .json()
                .map(|body| body["role"] == "gateway")
                .unwrap_or(false);
            if response.status == 200 && gateway {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(failed(
                &mut child,
                format!(
                    "`nself-realtime up` was not healthy at {}/health within {}s (raise --timeout if the first start is slow)",
                    url.display(),
                    args.timeout
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The banner is printed right after the gateway starts listening.
    let banner_deadline = Instant::now() + Duration::from_secs(3);
    let banner = loop {
        let lines = log_since(&log_path, offset_after_header);
        if json_output {
            if let Some(value) = lines
                .iter()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v.get("url").is_some())
            {
                break Ok(value);
            }
        } else if let Some(end) = lines.iter().position(|l| l == BANNER_END) {
            let start = lines[..end]
                .iter()
                .rposition(|l| l.starts_with("nself-realtime is up"))
                .unwrap_or(end);
            break Err(lines[start..end].to_vec());
        }
        if Instant::now() >= banner_deadline {
            break if json_output {
                Ok(Value::Null)
            } else {
                Err(Vec::new())
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(Started {
        pid,
        url: url.display(),
        banner,
    })
}

fn print_started(started: &Started, place: &Place) {
    match &started.banner {
        Err(lines) if !lines.is_empty() => {
            for line in lines {
                println!("{line}");
            }
        }
        _ => println!("nself-realtime is up at {}", started.url),
    }
    println!(
        "✓ Running in the background (pid {}); logs: {} (`nself-realtime logs`); stop: `nself-realtime stop`",
        started.pid,
        place.log_file().display()
    );
}

fn started_json(started: &Started, place: &Place) -> Value {
    json!({
        "pid": started.pid,
        "url": started.url,
        "log": place.log_file(),
        "pid_file": place.pid_file(),
        "up": started.banner.as_ref().ok(),
    })
}

pub async fn start(args: StartArgs, json_output: bool) -> Result<(), CliError> {
    let started = start_service(&args, json_output).await?;
    if json_output {
        println!("{}", started_json(&started, &args.place));
    } else {
        print_started(&started, &args.place);
    }
    Ok(())
}

/// What `stop` did.
struct Stopped {
    pid: Option<u32>,
    forced: bool,
}

async fn stop_service(place: &Place, timeout: u64) -> Result<Stopped, CliError> {
    let Some(pid) = running(&place.dir) else {
        let _ = std::fs::remove_file(place.pid_file());
        return Ok(Stopped {
            pid: None,
            forced: false,
        });
    };
    let pid_t = pid as i32;
    signal(pid_t, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut forced = false;
    while is_our_process(pid) {
        if Instant::now() >= deadline {
            // `up` leads its own session and process group (see `start`).
            signal(-pid_t, libc::SIGKILL);
            signal(pid_t, libc::SIGKILL);
            forced = true;
            let killed = Instant::now() + Duration::from_secs(5);
            while is_our_process(pid) && Instant::now() < killed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if is_our_process(pid) {
                return Err(CliError::runtime(anyhow!(
                    "process {pid} survived SIGKILL; check it with `ps -p {pid}`"
                )));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(place.pid_file());
    Ok(Stopped {
        pid: Some(pid),
        forced,
    })
}

fn print_stopped(stopped: &Stopped, timeout: u64) {
    match stopped.pid {
        None => println!("nself-realtime is not running"),
        Some(pid) if stopped.forced => println!(
            "✓ Stopped nself-realtime (pid {pid}) with SIGKILL after {timeout}s; a local Postgres it ran may still run until the next start stops it"
        ),
        Some(pid) => println!("✓ Stopped nself-realtime (pid {pid})"),
    }
}

fn stopped_json(stopped: &Stopped) -> Value {
    json!({ "was_running": stopped.pid.is_some(), "pid": stopped.pid, "forced": stopped.forced })
}

pub async fn stop(args: StopArgs, json_output: bool) -> Result<(), CliError> {
    let stopped = stop_service(&args.place, args.timeout).await?;
    if json_output {
        println!("{}", stopped_json(&stopped));
    } else {
        print_stopped(&stopped, args.timeout);
    }
    Ok(())
}

pub async fn restart(args: RestartArgs, json_output: bool) -> Result<(), CliError> {
    let stopped = stop_service(&args.start.place, args.stop_timeout).await?;
    if !json_output {
        print_stopped(&stopped, args.stop_timeout);
    }
    let started = start_service(&args.start, json_output).await?;
    if json_output {
        println!(
            "{}",
            json!({
                "stopped": stopped_json(&stopped),
                "started": started_json(&started, &args.start.place),
            })
        );
    } else {
        print_started(&started, &args.start.place);
    }
    Ok(())
}

pub async fn logs(args: LogsArgs, json_output: bool) -> Result<(), CliError> {
    let path = args.place.log_file();
    let (lines, mut offset) = tail(&path, args.lines).map_err(|e| {
        CliError::runtime(anyhow!(
            "cannot read {} ({e}); it is written by `nself-realtime start`",
            path.display()
        ))
    })?;
    if json_output && !args.follow {
        println!("{}", json!({ "log": path, "lines": lines }));
        return Ok(());
    }
    let emit = |line: &str| {
        if json_output {
            println!("{}", json!(line));
        } else {
            println!("{line}");
        }
    };
    for line in &lines {
        emit(line);
    }
    if !args.follow {
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    let mut partial: Vec<u8> = Vec::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let length = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(_) => continue,
        };
        if length < offset {
            // Truncated or replaced: start over.
            offset = 0;
            partial.clear();
        }
        if length == offset {
            continue;
        }
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            continue;
        }
        offset += bytes.len() as u64;
        partial.extend_from_slice(&bytes);
        while let Some(at) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=at).collect();
            emit(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'));
        }
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_flags_are_found_in_both_spellings() {
        let args: Vec<String> = ["--realtime-port", "4100", "--x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            flag_value(&args, "--realtime-port").as_deref(),
            Some("4100")
        );
        let args = vec!["--realtime-port=4200".to_string()];
        assert_eq!(
            flag_value(&args, "--realtime-port").as_deref(),
            Some("4200")
        );
        assert_eq!(flag_value(&args, "--realtime-host"), None);
    }

    #[test]
    fn tail_reads_the_last_lines_across_blocks() {
        let dir = std::env::temp_dir().join(format!("nself-realtime-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let (lines, length) = tail(&path, 3).unwrap();
        assert_eq!(lines, ["line 19997", "line 19998", "line 19999"]);
        assert_eq!(length, text.len() as u64);
        let (lines, _) = tail(&path, 100_000).unwrap();
        assert_eq!(lines.len(), 20_000);
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(tail(&path, 1).unwrap().0, ["b"]);
        assert_eq!(tail(&path, 0).unwrap().0, Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
