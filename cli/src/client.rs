//! Connecting to the controller and turning gRPC failures into one-line
//! messages.

use ferrofab_proto::client::TlsPem;
use tonic::{Code, Status};

use crate::config::ClientConfig;

/// The admin API client.
pub type Admin = ferrofab_proto::client::Admin;

/// Connects to the first reachable endpoint, in configuration order.
///
/// TLS files are loaded and checked by `ferrofab-pki` first, so a wrong
/// path or an expired certificate is reported by file name rather than as
/// a handshake failure.
pub async fn connect(cfg: &ClientConfig) -> anyhow::Result<Admin> {
    let tls = match &cfg.tls {
        Some(files) => {
            let pem = ferrofab_pki::load_client_tls(&files.ca, &files.cert, &files.key)?;
            tracing::debug!(identity = %pem.identity, "loaded client certificate");
            Some(TlsPem {
                ca: pem.ca,
                cert: pem.cert,
                key: pem.key,
                server_name: files.server_name.clone(),
            })
        }
        None => None,
    };
    Ok(ferrofab_proto::client::connect(&cfg.endpoints, tls.as_ref(), None).await?)
}

/// Converts a gRPC status into an error whose message is one line, prefixed
/// by what the request was about (e.g. `volume "scratch-1"`).
///
/// The prefix is left out when the server's message already names the
/// object, so the line never reads `volume "a": volume "a" not found`.
pub fn status_error(what: &str, status: Status) -> anyhow::Error {
    let msg = describe(&status);
    let message = if msg.contains(what) {
        msg
    } else {
        format!("{what}: {msg}")
    };
    anyhow::Error::new(RpcError {
        code: status.code(),
        message,
    })
}

/// A refused or failed request, keeping the gRPC code so `main` can pick
/// the exit status (not found is 3, see [`exit_code`]).
#[derive(Debug)]
pub struct RpcError {
    pub code: Code,
    message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

/// Exit status for usage by scripts: 0 ok, 1 error, 2 usage (clap), 3 the
/// object (or one it refers to) does not exist — or, for a tenant, is not
/// visible, which the controller answers identically.
pub const EXIT_ERROR: u8 = 1;
/// See [`EXIT_ERROR`].
pub const EXIT_NOT_FOUND: u8 = 3;

/// The exit status for an error: [`EXIT_NOT_FOUND`] when any layer of it
/// is a NOT_FOUND answer, else [`EXIT_ERROR`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<RpcError>()
            .is_some_and(|r| r.code == Code::NotFound)
    });
    if not_found {
        EXIT_NOT_FOUND
    } else {
        EXIT_ERROR
    }
}

/// The message for a status: the server's own words when it gave some (it
/// names fields and quotas), else a description of the code.
pub fn describe(status: &Status) -> String {
    let msg = ferrofab_buildinfo::one_line(status.message());
    let fallback = ferrofab_proto::client::code_text(status.code());
    match (msg.is_empty(), status.code()) {
        (true, _) => fallback.to_owned(),
        (false, Code::Unavailable) => format!("controller unavailable: {msg}"),
        (false, _) => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_one_line_and_prefixed() {
        let s = Status::resource_exhausted(
            "over quota: tenant \"neuro\" has 3.9TiB of 4TiB left\n  pool a: full",
        );
        let e = status_error("volume \"scratch-1\"", s);
        assert_eq!(
            e.to_string(),
            "volume \"scratch-1\": over quota: tenant \"neuro\" has 3.9TiB of 4TiB left; pool a: full"
        );
        assert_eq!(describe(&Status::not_found("")), "not found");
        let e = status_error("volume \"a\"", Status::not_found("volume \"a\" not found"));
        assert_eq!(e.to_string(), "volume \"a\" not found");
    }

    #[test]
    fn not_found_has_its_own_exit_code_through_context() {
        let e = status_error("volume \"a\"", Status::not_found("")).context("describing");
        assert_eq!(exit_code(&e), EXIT_NOT_FOUND);
        let e = status_error("volume \"a\"", Status::permission_denied("no"));
        assert_eq!(exit_code(&e), EXIT_ERROR);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), EXIT_ERROR);
    }
}
