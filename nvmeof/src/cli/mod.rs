//! Command-line front end of the `ferrofab-nvmeof` binary. Each subcommand
//! lives in its own module; this module only parses arguments and sets up
//! logging. `anyhow` is used here because this is the binary's edge.

pub mod bench;
pub mod host;
pub mod serve;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ferrofab-nvmeof",
    version = ferrofab_buildinfo::VERSION_LINE,
    about = "NVMe/TCP target, discovery controller and initiator"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve subsystems and a discovery controller from a TOML file.
    Serve(serve::ServeArgs),
    /// Read a discovery controller's log page.
    Discover(host::DiscoverArgs),
    /// Connect to a subsystem and expose its namespaces as files.
    Connect(host::ConnectArgs),
    /// Disconnect a connection made by `connect`.
    Disconnect(host::DisconnectArgs),
    /// Measure a target (or, with --baseline, raw loopback TCP).
    Bench(bench::BenchArgs),
}

/// Set up `tracing` on stderr so stdout stays free for machine output.
pub fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
