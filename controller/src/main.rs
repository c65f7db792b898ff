//! `ferrofab-controller --config controller.toml`
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrofab_controller::backup;
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
    /// Without a command the controller serves.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Write an encrypted, consistent backup of the store's objects and the
    /// PKI directory (CA, server and issued keys). With redb, stop the
    /// controller first (the file is locked); with etcd it may run.
    Backup {
        /// The backup file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        key: BackupKey,
    },
    /// Restore a backup into the configured store and PKI directory. A store
    /// holding any object, or PKI files that differ, are refused unless
    /// --force. Backing up from a redb configuration and restoring with an
    /// etcd one (or back) migrates between stores.
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// Replace a non-empty store's content and differing PKI files.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        key: BackupKey,
    },
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct BackupKey {
    /// File whose first line is the passphrase (Argon2id-derived key).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// File holding a 32-byte key, raw or as 64 hex digits.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl BackupKey {
    fn source(&self) -> backup::KeySource {
        match (&self.passphrase_file, &self.key_file) {
            (Some(p), _) => backup::KeySource::PassphraseFile(p.clone()),
            (None, Some(k)) => backup::KeySource::KeyFile(k.clone()),
            // clap's required group makes this unreachable; a key file
            // that does not exist then fails with its name.
            (None, None) => backup::KeySource::KeyFile(PathBuf::from("--key-file")),
        }
    }
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
    ferrofab_controller::check::check_config(&cli.config, &flags).map_err(|e| {
        anyhow::anyhow!(ferrofab_buildinfo::naming_config_file(
            &cli.config,
            &e.to_string()
        ))
    })?;
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
    match cli.command {
        Some(Command::Backup { out, key }) => {
            let s = rt.block_on(backup::backup(&cfg, &key.source(), &out))?;
            println!(
                "backup written to {}: {} objects at store revision {}, {} PKI files",
                out.display(),
                s.objects,
                s.revision,
                s.files
            );
        }
        Some(Command::Restore { from, force, key }) => {
            let s = rt.block_on(backup::restore(&cfg, &key.source(), &from, force))?;
            println!(
                "restored {} objects and {} PKI files from {}",
                s.objects,
                s.files,
                from.display()
            );
        }
        None => {
            let flags = Flags {
                enable_debug_service: cli.enable_debug_service,
            };
            rt.block_on(server::run(cfg, flags))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Packaging only: `--generate-docs DIR` writes man pages and completions.
    if let Some(code) = ferrofab_docgen::intercept::<Cli>() {
        return code;
    }
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
