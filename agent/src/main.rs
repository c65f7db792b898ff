//! `ferrofab-agent`: run the node agent, enroll the node, or talk to the
//! running agent through its local API.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrofab_agent::config::{LogFormat, DEFAULT_CONFIG_PATH};
use ferrofab_agent::local_api::{self, ApiError, ErrorCode, Request};
use ferrofab_agent::{Agent, AgentConfig, Role, StartOptions};
use tracing_subscriber::{reload, EnvFilter};

#[derive(Parser, Debug)]
#[command(
    name = "ferrofab-agent",
    version = ferrofab_buildinfo::VERSION_LINE,
    about = "ferrofab node agent"
)]
struct Cli {
    /// Agent configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Local API socket (default: the config's api_socket).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Load and validate the configuration and the files it names (TLS
    /// files, pool paths), print "config OK: PATH" and exit; starts nothing.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent (the daemon).
    Run,
    /// Enroll this node with a bootstrap token and write its config.
    ///
    /// `--token T --controller ADDR` is enough: the CA is learned from the
    /// controller and checked against the pin the token carries, the node
    /// name comes from the token, and the roles from the declared Node.
    Enroll {
        #[arg(long)]
        token: String,
        /// Controller address, HOST:PORT or https://HOST:PORT.
        #[arg(long)]
        controller: String,
        /// CA certificate (PEM) of the controller. Default: the certificate
        /// the controller presents that matches the token's CA pin
        /// (required for a token without a pin).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Node name; default: the node the token was minted for.
        #[arg(long)]
        node: Option<String>,
        /// Roles, comma separated: storage, workstation. Default: the
        /// config's, or else the roles the Node is declared with.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Data address registered for the node (storage), HOST:PORT; repeatable.
        #[arg(long = "data-address")]
        data_addresses: Vec<String>,
        /// State directory (host NQN, cache); default from the config.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Use the existing --config file as it is and only write the key,
        /// certificate and CA (for a config managed by Puppet).
        #[arg(long, conflicts_with = "state_dir")]
        keep_config: bool,
    },
    /// Show the agent's status.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List local attachments.
    Attachments {
        #[arg(long)]
        json: bool,
    },
    /// Attach a volume to this workstation and wait until its file exists.
    Attach {
        volume: String,
        #[arg(long)]
        read_only: bool,
        /// read-write (rw, the default), read-only (ro) or read-write-many
        /// (rwx: several writers, clustered filesystems only).
        #[arg(long, value_parser = ["read-write", "rw", "read-only", "ro", "read-write-many", "rwx"])]
        access_mode: Option<String>,
        /// How long to wait, e.g. 60s or 5m.
        #[arg(long, default_value = "60s")]
        timeout: String,
        #[arg(long)]
        json: bool,
    },
    /// The workstation data-path holder (status, stop).
    Holder {
        #[command(subcommand)]
        cmd: ferrofab_agent::holder::cli::HolderCmd,
    },
    /// Detach a volume from this workstation and wait until its file is gone.
    Detach {
        volume: String,
        #[arg(long, default_value = "60s")]
        timeout: String,
        #[arg(long)]
        json: bool,
    },
}

/// Exit codes: 0 success, 1 error, 2 usage (clap), 3 timeout.
const EXIT_ERROR: u8 = 1;
const EXIT_TIMEOUT: u8 = 3;

/// Logging on stderr; colours only on a terminal (a journal or a log file
/// would keep the escape codes), JSON lines with `log_format = "json"`.
fn init_logging(level: &str, format: LogFormat) -> Option<ferrofab_agent::LogReload> {
    let filter = EnvFilter::try_from_env("FERROFAB_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let (layer, handle) = reload::Layer::new(filter);
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(layer);
    let ok = match format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        LogFormat::Human => registry.with(fmt).try_init(),
    }
    .is_ok();
    ok.then(|| {
        let f: ferrofab_agent::LogReload = Arc::new(move |lvl: &str| {
            let f = EnvFilter::try_new(lvl).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        });
        f
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_daemon(path: PathBuf) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(&path)?;
    let log_reload = init_logging(&cfg.log_level, cfg.log_format);
    let rt = runtime()?;
    rt.block_on(async move {
        let opts = StartOptions {
            config_path: Some(path),
            log_reload,
        };
        let agent = Agent::start_with(cfg, opts).await?;
        println!("ferrofab-agent ready");
        notify_systemd_ready();
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        agent.shutdown().await;
        Ok(())
    })
}

/// The units are `Type=notify`: `systemctl start` returns once the local
/// API answers. A failed notification is logged, not fatal (systemd then
/// fails the start on its own timeout, naming the unit).
fn notify_systemd_ready() {
    if let Err(e) = ferrofab_buildinfo::sdnotify::notify_ready() {
        tracing::warn!(error = %e, "cannot notify systemd that the agent is ready");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `--socket`, else the config's `api_socket`. A missing or broken config
/// is an error, never a fall-back to the default socket: that socket may
/// belong to another agent, whose status would then be shown as this one's.
fn socket_path(cli: &Cli) -> Result<PathBuf, ApiError> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    match AgentConfig::load(&cli.config) {
        Ok(c) => Ok(c.api_socket),
        Err(_) if !cli.config.exists() => Err(ApiError::new(
            ErrorCode::ConfigMissing,
            format!(
                "config {} does not exist (it names the agent's socket); pass --config FILE or --socket PATH",
                cli.config.display()
            ),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::ConfigInvalid,
            ferrofab_buildinfo::error_line(&e),
        )),
    }
}

/// The agent clamps longer waits to its maximum, so the client does too
/// (and never waits for an answer that cannot come later).
fn parse_timeout(s: &str) -> anyhow::Result<Duration> {
    let t = ferrofab_pki::parse_duration(s).with_context(|| format!("--timeout {s:?}"))?;
    Ok(t.min(local_api::clamp_timeout(u64::MAX)))
}

/// Sends one local API request and prints the answer; returns the exit code.
fn api_command(
    socket: Result<PathBuf, ApiError>,
    req: Request,
    wait: Duration,
    json: bool,
) -> anyhow::Result<u8> {
    let socket = match socket {
        Ok(s) => s,
        Err(err) => return print_api_error(err, json),
    };
    let rt = runtime()?;
    let resp = rt
        .block_on(local_api::call(
            &socket,
            req,
            wait.saturating_add(Duration::from_secs(30)),
        ))
        .map_err(|e| ApiError::new(ErrorCode::AgentUnreachable, e.to_string()));
    let resp = match resp {
        Ok(r) => r,
        Err(err) => return print_api_error(err, json),
    };
    if let Some(err) = resp.error {
        return print_api_error(err, json);
    }
    let result = resp.result.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_human(&result);
    }
    Ok(0)
}

/// Prints an error: with `--json` also as `{schema_version, error: {code,
/// message}}` on stdout, so scripts (the Puppet provider) get the reason
/// and its class in one stable shape; always the message on stderr.
fn print_api_error(err: ApiError, json: bool) -> anyhow::Result<u8> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"schema_version": 1, "error": err}))?
        );
    }
    eprintln!("ferrofab-agent: {}", err.message);
    Ok(if err.code == ErrorCode::Timeout {
        EXIT_TIMEOUT
    } else {
        EXIT_ERROR
    })
}

fn print_human(v: &serde_json::Value) {
    if let Some(list) = v.get("attachments").and_then(|a| a.as_array()) {
        if v.get("exports").is_some() {
            println!(
                "node {} ({}), controller {}, revision {}",
                v["node"].as_str().unwrap_or(""),
                v["version"].as_str().unwrap_or(""),
                if v["controller_connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "unreachable"
                },
                v["desired_revision"]
            );
            for e in v["exports"].as_array().into_iter().flatten() {
                println!(
                    "export {} ready={} {}",
                    e["volume"].as_str().unwrap_or(""),
                    e["ready"],
                    e["message"].as_str().unwrap_or("")
                );
            }
        }
        for a in list {
            println!(
                "{}\t{}\t{}\t{}{}",
                a["attachment"].as_str().unwrap_or(""),
                a["volume"].as_str().unwrap_or(""),
                a["state"].as_str().unwrap_or(""),
                a["path"].as_str().unwrap_or(""),
                expiry_note(a)
            );
        }
    } else if let Some(p) = v.get("path").and_then(|p| p.as_str()) {
        println!("{p}");
    } else if let Some(vol) = v.get("volume").and_then(|p| p.as_str()) {
        println!("{vol} detached");
    }
}

/// `\texpires 2026-12-01T00:00:00Z (in 13h)`, with a warning mark inside
/// the agent's `expiry_warning` window; empty without an expiry.
fn expiry_note(a: &serde_json::Value) -> String {
    let (Some(at), Some(rel)) = (a["expires_at"].as_str(), a["expires_in"].as_str()) else {
        return String::new();
    };
    let mark = if a["expiry_warning"].as_bool() == Some(true) {
        "  WARNING: expires soon"
    } else {
        ""
    };
    format!("\texpires {at} ({rel}){mark}")
}

fn parse_roles(roles: &[String]) -> anyhow::Result<Vec<Role>> {
    roles
        .iter()
        .map(|r| match r.trim() {
            "storage" => Ok(Role::Storage),
            "workstation" => Ok(Role::Workstation),
            other => anyhow::bail!("--roles: unknown role {other:?} (storage, workstation)"),
        })
        .collect()
}

fn enroll(cli: &Cli, cmd: &Cmd) -> anyhow::Result<u8> {
    let Cmd::Enroll {
        token,
        controller,
        ca,
        node,
        roles,
        data_addresses,
        state_dir,
        keep_config,
    } = cmd
    else {
        return Ok(EXIT_ERROR);
    };
    init_logging("warn", LogFormat::Human);
    let args = ferrofab_agent::enroll::EnrollArgs {
        token: token.clone(),
        controller: controller.clone(),
        ca: ca.clone(),
        node: node.clone(),
        roles: parse_roles(roles)?,
        config: cli.config.clone(),
        data_addresses: data_addresses.clone(),
        state_dir: state_dir.clone(),
        keep_config: *keep_config,
    };
    let out = runtime()?.block_on(ferrofab_agent::enroll::enroll(&args))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"schema_version": 1, "enrolled": out}))?
    );
    Ok(0)
}

/// `--check-config`: exit 0 with "config OK: PATH", else 1 naming the fault.
fn check_config(cli: &Cli) -> anyhow::Result<u8> {
    init_logging("warn", LogFormat::Human);
    ferrofab_agent::check::check_config(&cli.config).map_err(|e| {
        anyhow::anyhow!(ferrofab_buildinfo::naming_config_file(
            &cli.config,
            &e.to_string()
        ))
    })?;
    println!("config OK: {}", cli.config.display());
    Ok(0)
}

fn main_inner(cli: Cli) -> anyhow::Result<u8> {
    if cli.check_config {
        return check_config(&cli);
    }
    let Some(cmd) = &cli.cmd else {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required (or --check-config)",
            )
            .exit();
    };
    if let Cmd::Holder { cmd } = cmd {
        return ferrofab_agent::holder::cli::run(cmd, &cli.config);
    }
    let socket = socket_path(&cli);
    let short = Duration::from_secs(10);
    match cmd {
        Cmd::Run => run_daemon(cli.config.clone()).map(|()| 0),
        Cmd::Enroll { .. } => enroll(&cli, cmd),
        Cmd::Holder { .. } => Ok(EXIT_ERROR),
        Cmd::Status { json } => api_command(socket, Request::Status, short, *json),
        Cmd::Attachments { json } => api_command(socket, Request::Attachments, short, *json),
        Cmd::Attach {
            volume,
            read_only,
            access_mode,
            timeout,
            json,
        } => {
            let t = parse_timeout(timeout)?;
            let req = Request::Attach {
                volume: volume.clone(),
                read_only: *read_only,
                access_mode: access_mode.clone(),
                timeout_seconds: t.as_secs(),
            };
            api_command(socket, req, t, *json)
        }
        Cmd::Detach {
            volume,
            timeout,
            json,
        } => {
            let t = parse_timeout(timeout)?;
            let req = Request::Detach {
                volume: volume.clone(),
                timeout_seconds: t.as_secs(),
            };
            api_command(socket, req, t, *json)
        }
    }
}

fn main() -> ExitCode {
    // Packaging only: `--generate-docs DIR` writes man pages and completions.
    if let Some(code) = ferrofab_docgen::intercept::<Cli>() {
        return code;
    }
    match main_inner(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!(
                "ferrofab-agent: {}",
                ferrofab_buildinfo::error_line(e.as_ref())
            );
            ExitCode::from(EXIT_ERROR)
        }
    }
}
