//! `holder` subcommands, shared by `ferrofab-agent` and the `ferrofab`
//! CLI (whose `dev` command runs agents in process and so starts holders
//! from its own executable).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::proto::Op;
use super::{HolderClient, HolderError, HolderPaths};

/// `holder ...`
#[derive(Subcommand, Debug, Clone)]
pub enum HolderCmd {
    /// Run the data-path holder (started by the agent; not for humans).
    #[command(hide = true)]
    Run {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        expose_dir: PathBuf,
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Leave the sysctl fs.fuse.max_pages_limit alone
        /// (`holder.raise_fuse_max_pages_limit = false`).
        #[arg(long)]
        keep_fuse_max_pages_limit: bool,
    },
    /// Show the running holder (version, pid) and its exposures as JSON.
    Status {
        /// The agent's state directory; default: the config's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Detach every exposure, unmount and stop the holder. Files in use
    /// (a mounted loop device) lose their volume: for uninstall, or to
    /// replace an outdated holder once nothing uses it.
    Stop {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// How long to wait for the holder to finish, e.g. 60s.
        #[arg(long, default_value = "60s")]
        timeout: String,
    },
}

/// Runs `cmd`; `config` is the agent config file (for the default state
/// directory). Returns the exit code.
pub fn run(cmd: &HolderCmd, config: &Path) -> anyhow::Result<u8> {
    match cmd {
        HolderCmd::Run {
            state_dir,
            expose_dir,
            log_level,
            keep_fuse_max_pages_limit,
        } => {
            init_logging(log_level);
            super::server::run(&super::server::HolderArgs {
                state_dir: state_dir.clone(),
                expose_dir: expose_dir.clone(),
                raise_fuse_max_pages_limit: !keep_fuse_max_pages_limit,
            })?;
            Ok(0)
        }
        HolderCmd::Status { state_dir } => {
            let client = client(state_dir.as_deref(), config, Duration::from_secs(10));
            let hello = client.hello()?;
            let exposures = client.call(Op::List)?.exposures.unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "schema_version": 1,
                    "holder": hello,
                    "exposures": exposures,
                }))?
            );
            Ok(0)
        }
        HolderCmd::Stop { state_dir, timeout } => {
            let t = ferrofab_pki::parse_duration(timeout)?;
            let dir = state_dir_of(state_dir.as_deref(), config);
            match stop(&dir, t) {
                Ok(Some(pid)) => {
                    eprintln!("data-path holder {pid} stopped");
                    Ok(0)
                }
                Ok(None) => {
                    eprintln!("no data-path holder running");
                    Ok(0)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Stops the holder of `state_dir` and waits until its socket is gone;
/// the pid it had, or `None` if none was running.
pub fn stop(state_dir: &Path, timeout: Duration) -> Result<Option<u32>, HolderError> {
    let paths = HolderPaths::new(state_dir);
    let client = HolderClient::new(paths.socket.clone(), timeout);
    let hello = match client.hello() {
        Ok(h) => h,
        Err(HolderError::Unreachable(..)) => return Ok(None),
        Err(e) => return Err(e),
    };
    client.call_raw(Op::Shutdown)?;
    let deadline = Instant::now() + timeout;
    while paths.socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(hello.pid))
}

fn state_dir_of(state_dir: Option<&Path>, config: &Path) -> PathBuf {
    state_dir.map(Path::to_path_buf).unwrap_or_else(|| {
        crate::AgentConfig::load(config)
            .map(|c| c.state_dir)
            .unwrap_or_else(|_| PathBuf::from(crate::config::DEFAULT_STATE_DIR))
    })
}

fn client(state_dir: Option<&Path>, config: &Path, timeout: Duration) -> HolderClient {
    HolderClient::new(
        HolderPaths::new(&state_dir_of(state_dir, config)).socket,
        timeout,
    )
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERROFAB_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
