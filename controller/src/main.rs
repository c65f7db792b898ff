//! `ferrofab-controller --config controller.toml`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrofab_controller::config::{Config, LogFormat};
use ferrofab_controller::server::{self, Flags};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "ferrofab-controller",
    version = ferrofab_buildinfo::VERSION_LINE,
    about = "ferrofab control plane"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Load and validate the configuration and the files it names (TLS
    /// files in pki.dir, the CA key when enrollment is on, the store's
    /// directory), print "config OK: PATH" and exit; opens no store and
    /// binds no socket.
    #[arg(long)]
    check_config: bool,
    /// Test-only: serve DebugService (needs clock = "manual"). Never in production.
    #[arg(long, hide = true)]
    enable_debug_service: bool,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FERROFAB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

fn check_config(cli: &Cli) -> anyhow::Result<()> {
    // Warnings only (a world-readable key); the verdict is the exit status.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let flags = Flags {
        enable_debug_service: cli.enable_debug_service,
    };
    ferrofab_controller::check::check_config(&cli.config, &flags)
        .with_context(|| format!("config {}", cli.config.display()))?;
    println!("config OK: {}", cli.config.display());
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.check_config {
        return check_config(&cli);
    }
    let cfg = Config::load(&cli.config)?;
    init_logging(cfg.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let flags = Flags {
        enable_debug_service: cli.enable_debug_service,
    };
    rt.block_on(server::run(cfg, flags))?;
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "ferrofab-controller: {}",
                ferrofab_buildinfo::error_line(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}
