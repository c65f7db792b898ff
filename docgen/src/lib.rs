//! Man pages and static shell completions for the Debian packages,
//! generated from a binary's own clap definition.
//!
//! Every ferrofab binary with a clap parser calls [`intercept`] first thing
//! in `main`. `BINARY --generate-docs DIR` then writes, and nothing else
//! runs:
//!
//! * `DIR/man/NAME.1` and one page per subcommand (`NAME-SUB.1`, ...),
//! * `DIR/completions/NAME.bash`, `DIR/completions/_NAME` (zsh) and
//!   `DIR/completions/NAME.fish`.
//!
//! Why inside each binary rather than in an xtask crate: the parsers live in
//! the binaries' `main.rs` (not in their libraries), and a generator that
//! runs the shipped binary documents exactly the options it parses. The
//! argument is handled before clap sees the command line, so it never shows
//! up in `--help`, in the man pages or in the completions.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The hidden argument that asks for generation.
pub const FLAG: &str = "--generate-docs";

/// If the command line is exactly `BINARY --generate-docs DIR`, writes the
/// man pages and completions of `T` under DIR and returns the exit code;
/// otherwise returns None and the binary goes on as usual.
pub fn intercept<T: CommandFactory>() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [flag, dir] = args.as_slice() else {
        return None;
    };
    if flag != FLAG {
        return None;
    }
    let cmd = T::command();
    let name = cmd.get_name().to_owned();
    Some(match generate(cmd, Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {FLAG} {}: {e}", Path::new(dir).display());
            ExitCode::from(1)
        }
    })
}

/// Writes the man pages and the bash, zsh and fish completions of `cmd`
/// into `dir/man` and `dir/completions`, creating both.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    cmd.build();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo", version = "1.0", about = "a demo")]
    struct Demo {
        #[arg(long)]
        config: Option<String>,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Run it.
        Run,
    }

    #[test]
    fn writes_pages_for_every_subcommand_and_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        generate(Demo::command(), dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man/demo.1")).unwrap();
        assert!(page.contains(".TH demo 1"), "{page}");
        assert!(page.contains("config"), "{page}");
        assert!(dir.path().join("man/demo-run.1").exists());
        for f in ["demo.bash", "_demo", "demo.fish"] {
            let c = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(c.contains("config"), "{f}: {c}");
        }
    }
}
