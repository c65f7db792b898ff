//! `ferrofab`: the administrator's command-line client.
//!
//! This file is the binary edge: it parses arguments, sets up logging, runs
//! the command, and turns any error into one line on stderr and an exit
//! status: 1, or 3 when the object does not exist (clap uses 2 for usage
//! errors).

mod args;
mod client;
mod cmd;
mod config;
mod dev;
mod layout;
mod output;
mod render;
mod resource;
mod wide;
mod yaml;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Packaging only: `--generate-docs DIR` writes man pages and completions.
    if let Some(code) = ferrofab_docgen::intercept::<args::Cli>() {
        return code;
    }
    let cli = args::Cli::parse();
    init_tracing(cli.verbose);
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrofab: {}", error_line(&e));
            ExitCode::from(client::exit_code(&e))
        }
    }
}

/// The whole context chain, joined, on a single line, each cause's text
/// once (see [`ferrofab_buildinfo::error_line`]).
fn error_line(e: &anyhow::Error) -> String {
    ferrofab_buildinfo::error_line(e.as_ref())
}

/// Warnings by default (e.g. a world-readable key); `-v` info, `-vv`
/// debug; `RUST_LOG` overrides both.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        let e = anyhow::anyhow!("inner\nsecond").context("outer");
        assert_eq!(error_line(&e), "outer: inner; second");
    }
}
