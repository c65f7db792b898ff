//! The data-path holder: a small long-lived process per workstation that
//! owns the FUSE mount and the NVMe/TCP initiator connections of the
//! built-in driver, so that an agent restart, crash or upgrade never
//! touches the data path (docs/architecture.md, "Workstation data-path
//! holder").
//!
//! * [`server`]: the holder itself (`ferrofab-agent holder run`).
//! * [`proto`]: its line-JSON protocol on `STATE_DIR/holder.sock`.
//! * [`HolderClient`]: one request per connection, with a timeout.
//! * [`spawn`]: starts a holder detached from the agent (own session,
//!   stdio to `STATE_DIR/holder.log`).
//! * [`driver::HolderWorkstation`]: the agent's workstation driver that
//!   reconciles through the holder.

pub mod cli;
pub mod driver;
pub mod proto;
pub mod server;

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::{Hello, LineError, Op, Request, Response, PROTOCOL_VERSION};

/// Overrides the version string a holder and an agent report (tests use
/// it to make two builds of the same source tell themselves apart).
pub const VERSION_ENV: &str = "FERROFAB_AGENT_VERSION_OVERRIDE";

/// This build's version string, e.g. `ferrofab-agent 0.1.0`.
pub fn holder_version() -> String {
    std::env::var(VERSION_ENV).unwrap_or_else(|_| crate::status::AGENT_VERSION.to_string())
}

/// Files of the holder inside the agent's state directory.
#[derive(Debug, Clone)]
pub struct HolderPaths {
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl HolderPaths {
    pub fn new(state_dir: &Path) -> Self {
        HolderPaths {
            socket: state_dir.join("holder.sock"),
            log: state_dir.join("holder.log"),
        }
    }
}

/// Errors talking to a holder.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("no data-path holder answers on {0}: {1}")]
    Unreachable(PathBuf, #[source] std::io::Error),
    #[error("talking to the data-path holder on {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("the data-path holder on {0} sent no answer (it may have exited)")]
    NoAnswer(PathBuf),
    #[error("the data-path holder on {0} sent an unreadable answer: {1}")]
    BadAnswer(PathBuf, String),
    #[error("the data-path holder refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("starting the data-path holder {binary}: {message}")]
    Spawn { binary: PathBuf, message: String },
}

/// A client of one holder socket: each call is one connection.
#[derive(Debug, Clone)]
pub struct HolderClient {
    socket: PathBuf,
    timeout: Duration,
}

impl HolderClient {
    /// `timeout` bounds each answer (an `ensure` includes a connect).
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        HolderClient { socket, timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `op`; an answer with `ok: false` is [`HolderError::Refused`].
    pub fn call(&self, op: Op) -> Result<Response, HolderError> {
        let resp = self.call_raw(op)?;
        if resp.ok {
            return Ok(resp);
        }
        let e = resp.error.unwrap_or_default();
        Err(HolderError::Refused {
            code: e.code,
            message: e.message,
        })
    }

    /// Sends `op` and returns the answer as it came.
    pub fn call_raw(&self, op: Op) -> Result<Response, HolderError> {
        let s = &self.socket;
        let mut stream =
            UnixStream::connect(s).map_err(|e| HolderError::Unreachable(s.clone(), e))?;
        let io = |e| HolderError::Io(s.clone(), e);
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream
            .set_write_timeout(Some(server::CLIENT_IO_TIMEOUT))
            .map_err(io)?;
        let mut line = serde_json::to_vec(&Request {
            v: PROTOCOL_VERSION,
            op,
        })
        .map_err(|e| HolderError::BadAnswer(s.clone(), e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        let mut r = BufReader::new(stream);
        let answer = match proto::read_line(&mut r) {
            Ok(a) => a,
            Err(LineError::Eof) => return Err(HolderError::NoAnswer(s.clone())),
            Err(LineError::TooLong) => {
                return Err(HolderError::BadAnswer(s.clone(), "answer too long".into()))
            }
            Err(LineError::Io(e)) => return Err(io(e)),
        };
        serde_json::from_slice(&answer)
            .map_err(|e| HolderError::BadAnswer(s.clone(), e.to_string()))
    }

    /// The holder's `hello`.
    pub fn hello(&self) -> Result<Hello, HolderError> {
        self.call(Op::Hello)?.hello.ok_or_else(|| {
            HolderError::BadAnswer(self.socket.clone(), "hello without hello".into())
        })
    }
}

/// How to start a holder.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// A binary with the `holder run` subcommand (`ferrofab-agent`, or
    /// the `ferrofab` CLI for `ferrofab dev`).
    pub binary: PathBuf,
    pub state_dir: PathBuf,
    pub expose_dir: PathBuf,
    pub log_level: String,
    /// `holder.raise_fuse_max_pages_limit`: false passes
    /// `--keep-fuse-max-pages-limit`.
    pub raise_fuse_max_pages_limit: bool,
}

/// The arguments of `BINARY holder run ...` for `spec`.
pub(crate) fn run_args(spec: &SpawnSpec) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "holder".into(),
        "run".into(),
        "--state-dir".into(),
        spec.state_dir.clone().into(),
        "--expose-dir".into(),
        spec.expose_dir.clone().into(),
        "--log-level".into(),
        spec.log_level.clone().into(),
    ];
    if !spec.raise_fuse_max_pages_limit {
        args.push("--keep-fuse-max-pages-limit".into());
    }
    args
}

/// Starts a holder in its own session (so a signal to the agent's process
/// group or terminal never reaches it) with stdin from /dev/null and
/// stdout/stderr appended to `STATE_DIR/holder.log`, then waits up to
/// `start_timeout` for it to answer `hello`. The child is reaped by a
/// thread of this process; if the agent exits first, init adopts it.
pub fn spawn(spec: &SpawnSpec, start_timeout: Duration) -> Result<Hello, HolderError> {
    let paths = HolderPaths::new(&spec.state_dir);
    let fail = |message: String| HolderError::Spawn {
        binary: spec.binary.clone(),
        message,
    };
    crate::cache::ensure_dir(&spec.state_dir).map_err(|e| fail(e.to_string()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| fail(format!("log file {}: {e}", paths.log.display())))?;
    let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
    let mut cmd = Command::new(&spec.binary);
    cmd.args(run_args(spec))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of
    // the parent; it is all that runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    let pid = child.id();
    tracing::info!(pid, binary = %spec.binary.display(), "data-path holder started");
    let client = HolderClient::new(paths.socket.clone(), Duration::from_secs(2));
    let deadline = Instant::now() + start_timeout;
    loop {
        if let Ok(h) = client.hello() {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(h);
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(fail(format!(
                "it exited ({st}) before answering; see {}",
                paths.log.display()
            )));
        }
        if Instant::now() >= deadline {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Err(fail(format!(
                "no answer on {} within {start_timeout:?}; see {}",
                paths.socket.display(),
                paths.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
