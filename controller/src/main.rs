//! `ferrofab-controller --config controller.toml`

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
    /// Test-only: serve DebugService (needs clock = "manual"). Never in production.
    #[arg(long, hide = true)]
    enable_debug_service: bool,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FERROFAB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
            eprintln!("ferrofab-controller: {e:#}");
            ExitCode::from(1)
        }
    }
}
