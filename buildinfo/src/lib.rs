//! Build information every ferrofab binary prints with `--version` and
//! exports as `ferrofab_build_info`: the workspace version, the git commit
//! the binary was built from and the build date (see `build.rs`).
#![forbid(unsafe_code)]

pub mod process;
pub mod sdnotify;

/// The workspace version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Short git commit, or `unknown` when built outside a git checkout.
pub const COMMIT: &str = env!("FERROFAB_COMMIT");

/// Build date, `YYYY-MM-DD` (UTC; SOURCE_DATE_EPOCH when set).
pub const BUILD_DATE: &str = env!("FERROFAB_BUILD_DATE");

/// What follows the program name in `--version`:
/// `0.1.0 (commit 1a2b3c4d5e, built 2026-12-04)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERROFAB_COMMIT"),
    ", built ",
    env!("FERROFAB_BUILD_DATE"),
    ")"
);

/// An error and its causes on one line, `outer: inner: root`, each text
/// once.
///
/// Many errors both print their cause (`"reading {path}: {source}"`, for
/// logs that show only the top error) and return it from `source()`;
/// printing the whole chain would then repeat the I/O error's text. A
/// cause whose text the line already holds is left out. Multi-line
/// messages are joined with `; `, so stderr gets exactly one line.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    one_line(&line)
}

/// `s` on one line: its non-empty lines, trimmed, joined with `; ` (server
/// messages may span lines; an error on stderr is one line).
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The message of a config check's failure naming the config file once:
/// most errors already say "(in PATH)" or "reading config PATH"; the others
/// get "config PATH: " before (`--check-config` of the agent and the
/// controller).
pub fn naming_config_file(path: &std::path::Path, msg: &str) -> String {
    let shown = path.display().to_string();
    if msg.contains(&shown) {
        msg.to_string()
    } else {
        format!("config {shown}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, std::io::Error);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.0, self.1)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn the_config_file_is_named_once() {
        let p = std::path::Path::new("/etc/ferrofab/agent.toml");
        assert_eq!(
            naming_config_file(p, "key `node`: missing (in /etc/ferrofab/agent.toml)"),
            "key `node`: missing (in /etc/ferrofab/agent.toml)"
        );
        assert_eq!(
            naming_config_file(p, "tls: /x: not found"),
            "config /etc/ferrofab/agent.toml: tls: /x: not found"
        );
    }

    #[test]
    fn io_text_appears_once() {
        let e = Wrap(
            "reading config /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        );
        assert_eq!(error_line(&e), "reading config /x: No such file");
        let io = std::io::Error::other("inner\nsecond");
        assert_eq!(error_line(&io), "inner; second");
    }

    #[test]
    fn version_line_names_all_three() {
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(COMMIT));
        assert!(VERSION_LINE.contains(BUILD_DATE));
        // YYYY-MM-DD
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert_eq!(&BUILD_DATE[4..5], "-");
    }
}
