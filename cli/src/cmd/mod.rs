//! Command implementations and the dispatcher.

mod apitoken;
mod apply;
mod complete;
mod describe;
mod events;
mod moving;
mod pki;
mod resources;
mod status;
mod token;
mod version;
mod wait;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::args::{Cli, Command, Format};
use crate::client::{self, Admin};
use crate::config;

/// What every command may need: where the controller is and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    config: Option<PathBuf>,
    endpoint: Option<String>,
    /// Output format, with `wide` and `name` read as `table`: the
    /// commands that do not print objects have no other columns or names.
    pub format: Format,
    /// The output format as given, for the commands that print objects.
    pub output: Format,
}

impl Ctx {
    /// Loads the client configuration and connects.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        let cfg = config::load(self.config.as_deref(), self.endpoint.as_deref())?;
        client::connect(&cfg).await
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        config: cli.config,
        endpoint: cli.endpoint,
        format: match cli.output {
            Format::Wide | Format::Name => Format::Table,
            f => f,
        },
        output: cli.output,
    };
    match cli.command {
        Command::Pki(c) => pki::run(&ctx, c),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ferrofab", &mut std::io::stdout());
            crate::output::print(complete::dynamic_script(shell))?;
            Ok(())
        }
        Command::Complete { words } => {
            let named = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(complete::run(&words, &ctx));
            if named {
                Ok(())
            } else {
                // Not a name: the script falls back to static completion.
                std::process::exit(1)
            }
        }
        Command::Node(c) => block_on(resources::node(&ctx, c)),
        Command::Pool(c) => block_on(resources::pool(&ctx, c)),
        Command::Volume(c) => block_on(resources::volume(&ctx, c)),
        Command::Attachment(c) => block_on(resources::attachment(&ctx, c)),
        Command::Tenant(c) => block_on(resources::tenant(&ctx, c)),
        Command::Token(c) => block_on(apitoken::run(&ctx, c)),
        Command::Apply(a) => block_on(apply::run(&ctx, a)),
        Command::Wait(a) => block_on(wait::run(&ctx, a)),
        Command::Dev(a) => crate::dev::run(&a),
        Command::Holder(h) => {
            let config = std::path::Path::new(ferrofab_agent::config::DEFAULT_CONFIG_PATH);
            match ferrofab_agent::holder::cli::run(&h, config)? {
                0 => Ok(()),
                code => anyhow::bail!("holder command failed (exit {code})"),
            }
        }
        Command::Status => block_on(status::run(&ctx)),
        Command::Describe { kind, name } => block_on(describe::run(&ctx, kind, &name)),
        Command::Events {
            kind,
            name,
            watch,
            limit,
        } => block_on(events::run(&ctx, kind, name, watch, limit)),
        Command::Version { client } => block_on(version::run(&ctx, client)),
    }
}

/// A single-threaded runtime: the CLI makes one request at a time, and
/// local commands (pki, completions) should not pay for a runtime at all.
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}
