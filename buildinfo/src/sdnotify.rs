//! systemd's readiness notification (`sd_notify(3)`), written directly:
//! one datagram `READY=1` to the Unix socket named by `$NOTIFY_SOCKET`.
//! The daemons' units are `Type=notify`, so `systemctl start` returns once
//! the daemon serves, without a polling `ExecStartPost` and without
//! linking libsystemd. Outside systemd (no `NOTIFY_SOCKET`) nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the service manager that the daemon is ready, when it was started
/// as a `Type=notify` service. Returns whether a notification was sent
/// (`false`: not started by systemd, nothing to do).
pub fn notify_ready() -> io::Result<bool> {
    notify_to(std::env::var_os(NOTIFY_SOCKET).as_deref(), "READY=1")
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `socket`, a path
/// or, with a leading `@`, an abstract socket name, as systemd documents
/// for `$NOTIFY_SOCKET`. `None` or an empty value sends nothing.
pub fn notify_to(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    match socket.as_bytes() {
        [b'@', name @ ..] => {
            let addr = SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        [b'/', ..] => {
            sock.send_to(state.as_bytes(), Path::new(socket))?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={} is neither an absolute path nor an abstract name (@...)",
                    socket.to_string_lossy()
                ),
            ))
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        format!("ferrofab-sdnotify-{tag}-{}", std::process::id())
    }

    #[test]
    fn sends_ready_to_a_path_socket() {
        let path = std::env::temp_dir().join(unique("path"));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn sends_ready_to_an_abstract_socket() {
        let name = unique("abstract");
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let var = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&var)), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn nothing_without_a_socket() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn a_relative_name_is_an_error_naming_the_variable() {
        let e = notify_to(Some(OsStr::new("relative/sock")), "READY=1").unwrap_err();
        assert!(e.to_string().contains("NOTIFY_SOCKET=relative/sock"), "{e}");
    }
}
