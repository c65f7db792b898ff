//! The holder process: owns the FUSE mount and the initiator controllers
//! of a workstation and serves the agent's requests on a Unix socket.
//!
//! It runs the agent's [`WorkstationReconciler`] over the built-in
//! initiator ([`BuiltinInitiator`]), as the agent does in its own process
//! with `holder.enabled = false`, one request at a time, so the data path behaves
//! exactly as before (reconnects within ctrl-loss, digests, flush on
//! fsync); only its owner changed.

use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ferrofab_nvmeof_host::HostIdentity;
use tracing::{info, info_span, warn};

use super::proto::{self, ExposureStatus, Hello, LineError, Op, Response, PROTOCOL_VERSION};
use super::{holder_version, HolderPaths};
use crate::driver::initiator::{self, BuiltinInitiator};
use crate::reconcile::workstation::WorkstationReconciler;

/// How long the holder waits for a client's request line (and for its
/// answer to be taken). One client at a time is served, so a client that
/// connects and says nothing must not hold the others up for long.
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `ferrofab-agent holder run` needs.
#[derive(Debug, Clone)]
pub struct HolderArgs {
    pub state_dir: PathBuf,
    pub expose_dir: PathBuf,
    /// `holder.raise_fuse_max_pages_limit`.
    pub raise_fuse_max_pages_limit: bool,
}

/// Runs the holder until a `shutdown` request (blocking).
pub fn run(args: &HolderArgs) -> anyhow::Result<()> {
    let paths = HolderPaths::new(&args.state_dir);
    let identity = initiator::host_identity(&args.state_dir)?;
    let listener = bind(&paths.socket)?;
    let mut h = Holder {
        reconciler: WorkstationReconciler::new(Box::new(
            BuiltinInitiator::new(args.expose_dir.clone(), identity.clone())
                .raising_fuse_max_pages_limit(args.raise_fuse_max_pages_limit),
        )),
        identity,
        expose_dir: args.expose_dir.clone(),
    };
    info!(pid = std::process::id(), socket = %paths.socket.display(),
        version = %holder_version(), protocol = PROTOCOL_VERSION, "data-path holder ready");
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if h.serve(stream) == Flow::Stop {
            break;
        }
    }
    // Only our own socket goes; a newer holder may have bound the path.
    let _ = std::fs::remove_file(&paths.socket);
    info!("data-path holder stopped");
    Ok(())
}

/// Binds the socket (0600). A socket file nobody answers on is a leftover
/// of a holder that died and is replaced; a live one means another holder
/// serves this state directory, and this one must not start.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            anyhow::bail!(
                "another data-path holder already answers on {}",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    let l = UnixListener::bind(socket)
        .with_context(|| format!("binding the holder socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok(l)
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Holder {
    reconciler: WorkstationReconciler<BuiltinInitiator>,
    identity: HostIdentity,
    expose_dir: PathBuf,
}

impl Holder {
    /// One connection: one request line, one answer line.
    fn serve(&mut self, stream: UnixStream) -> Flow {
        let _ = stream.set_read_timeout(Some(CLIENT_IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT));
        let Ok(write_half) = stream.try_clone() else {
            return Flow::Continue;
        };
        let mut reader = BufReader::new(stream);
        let (resp, flow) = match proto::read_line(&mut reader) {
            Ok(line) => match proto::parse_request(&line) {
                Ok(op) => self.handle(op),
                Err(e) => {
                    warn!(code = e.code(), error = %e, "refused a request");
                    (Response::err(e.code(), e.to_string()), Flow::Continue)
                }
            },
            Err(LineError::TooLong) => {
                let e = proto::ProtoError::TooLong;
                warn!(error = %e, "refused a request");
                (Response::err(e.code(), e.to_string()), Flow::Continue)
            }
            Err(LineError::Eof) => return Flow::Continue,
            Err(LineError::Io(e)) => {
                warn!(error = %e, "reading a request");
                return Flow::Continue;
            }
        };
        answer(write_half, &resp);
        flow
    }

    fn handle(&mut self, op: Op) -> (Response, Flow) {
        match op {
            Op::Hello => (
                Response {
                    hello: Some(self.hello()),
                    ..Response::ok()
                },
                Flow::Continue,
            ),
            Op::List => (
                Response {
                    exposures: Some(self.list()),
                    ..Response::ok()
                },
                Flow::Continue,
            ),
            Op::Ensure { spec } => {
                let _s = info_span!("ensure", attachment = %spec.attachment).entered();
                if spec.hostnqn != self.identity.hostnqn {
                    let msg = format!(
                        "the holder connects as {} but the agent asked for {}; \
                         restart the holder (`ferrofab-agent holder stop`) after changing the host identity",
                        self.identity.hostnqn, spec.hostnqn
                    );
                    return (Response::err("IdentityMismatch", msg), Flow::Continue);
                }
                let resp = match self.reconciler.ensure_one(&spec.to_connection()) {
                    Ok(changed) => Response {
                        changed: Some(changed),
                        ..Response::ok()
                    },
                    Err(p) => Response::err(p.reason.as_str(), p.message),
                };
                (resp, Flow::Continue)
            }
            Op::Remove { attachment } => {
                let _s = info_span!("remove", attachment = %attachment).entered();
                let changed = self.reconciler.remove_one(&attachment);
                (
                    Response {
                        changed: Some(changed),
                        ..Response::ok()
                    },
                    Flow::Continue,
                )
            }
            Op::Shutdown => {
                info!("shutdown requested: detaching everything");
                self.reconciler.shutdown();
                (Response::ok(), Flow::Stop)
            }
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            version: holder_version(),
            pid: std::process::id(),
            expose_dir: self.expose_dir.display().to_string(),
            hostnqn: self.identity.hostnqn.clone(),
            exposures: self.reconciler.driver().exposures().len(),
            dhchap_keys: true,
        }
    }

    fn list(&self) -> Vec<ExposureStatus> {
        self.reconciler
            .driver()
            .exposures()
            .into_iter()
            .map(|e| ExposureStatus {
                // `holder status` prints this: keys by generation only.
                spec: proto::ExposureSpec::from_connection(&e.conn, &self.identity.hostnqn)
                    .redacted(),
                state: proto::state_word(e.state).into(),
                exposed: e.exposed,
                path: e.path,
                size_bytes: e.size_bytes,
            })
            .collect()
    }
}

fn answer(mut w: UnixStream, resp: &Response) {
    let mut line = match serde_json::to_vec(resp) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "encoding an answer");
            return;
        }
    };
    line.push(b'\n');
    if let Err(e) = w.write_all(&line) {
        warn!(error = %e, "sending an answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(dir: &Path) -> Holder {
        let identity = HostIdentity::ephemeral();
        Holder {
            reconciler: WorkstationReconciler::new(Box::new(BuiltinInitiator::new(
                dir.join("volumes"),
                identity.clone(),
            ))),
            identity,
            expose_dir: dir.join("volumes"),
        }
    }

    /// Sends `input` raw on one connection and returns the answer.
    fn exchange(h: &mut Holder, input: &[u8]) -> (Option<Response>, Flow) {
        let (a, b) = UnixStream::pair().unwrap();
        // The writer runs beside the holder: a long line fills the socket
        // buffer before the holder reads (and stops reading) it.
        let mut w = a.try_clone().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&input);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let flow = h.serve(b);
        // One line, not to EOF: after refusing a long line the holder
        // closes with input unread, and the next read is a reset.
        let mut out = String::new();
        let _ = std::io::BufRead::read_line(&mut BufReader::new(a), &mut out);
        writer.join().unwrap();
        let resp = (!out.is_empty()).then(|| serde_json::from_str(out.trim_end()).unwrap());
        (resp, flow)
    }

    #[test]
    fn bad_requests_get_a_clear_answer_and_the_holder_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = holder(dir.path());
        let mut big = vec![b'{'; proto::MAX_LINE_BYTES + 10];
        big.push(b'\n');
        for (input, code) in [
            (&b"garbage\n"[..], "BadJson"),
            (&b"{\"v\":7,\"op\":\"list\"}\n"[..], "UnsupportedVersion"),
            (&b"{\"v\":1,\"op\":\"teleport\"}\n"[..], "BadRequest"),
            (&big[..], "LineTooLong"),
        ] {
            let (r, flow) = exchange(&mut h, input);
            let r = r.expect("an answer");
            assert!(!r.ok);
            assert_eq!(r.error.unwrap().code, code);
            assert_eq!(flow, Flow::Continue);
        }
        // A half line then EOF: no answer, no harm.
        assert_eq!(exchange(&mut h, b"{\"v\":1").1, Flow::Continue);
        let (r, _) = exchange(&mut h, b"{\"v\":1,\"op\":\"hello\"}\n");
        let hello = r.unwrap().hello.unwrap();
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        assert_eq!(hello.pid, std::process::id());
        assert_eq!(hello.exposures, 0);
    }

    #[test]
    fn ensure_for_another_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = holder(dir.path());
        let req = proto::Request {
            v: PROTOCOL_VERSION,
            op: Op::Ensure {
                spec: Box::new(proto::ExposureSpec {
                    attachment: "a".into(),
                    exposure_name: "v".into(),
                    hostnqn: "nqn.2014-08.org.nvmexpress:uuid:other".into(),
                    ..Default::default()
                }),
            },
        };
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        let (r, _) = exchange(&mut h, &line);
        assert_eq!(r.unwrap().error.unwrap().code, "IdentityMismatch");
    }

    #[test]
    fn a_second_holder_on_the_same_socket_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("holder.sock");
        let _l = bind(&sock).unwrap();
        let e = bind(&sock).unwrap_err();
        assert!(e.to_string().contains("already answers"), "{e}");
        drop(_l);
        // The leftover file of a dead holder is replaced.
        let _l2 = bind(&sock).unwrap();
    }
}
