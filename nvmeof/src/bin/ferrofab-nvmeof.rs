//! The standalone `ferrofab-nvmeof` command: serve a target, or use one as
//! a host (discover, connect, disconnect, bench).
#![forbid(unsafe_code)]

use clap::Parser;
use ferrofab_nvmeof::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    ferrofab_nvmeof::cli::init_logging(cli.log_format, cli.verbose);
    let result = match cli.command {
        Command::Serve(args) => ferrofab_nvmeof::cli::serve::run(args),
        Command::Discover(args) => ferrofab_nvmeof::cli::host::discover(args),
        Command::Connect(args) => ferrofab_nvmeof::cli::host::connect(args),
        Command::Disconnect(args) => ferrofab_nvmeof::cli::host::disconnect(args),
        Command::Bench(args) => ferrofab_nvmeof::cli::bench::run(args),
    };
    if let Err(err) = result {
        eprintln!(
            "ferrofab-nvmeof: {}",
            ferrofab_buildinfo::error_line(err.as_ref())
        );
        std::process::exit(1);
    }
}
