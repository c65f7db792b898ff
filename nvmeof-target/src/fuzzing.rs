//! Entry points for the cargo-fuzz targets in `nvmeof-target/fuzz/` (feature
//! `fuzzing`). They are thin: the interesting checks are the ones the state
//! machine makes on every input, and the fuzzer looks for panics.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;

use super::conn::Conn;
use super::{derive_uuid, ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetOptions};
use crate::backend::{open_backend, DirectIo, FileOptions};

/// The host NQN the fuzz corpus connects as.
pub const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000f022";
/// The subsystem it is allowed on.
pub const SUBNQN: &str = "nqn.2026-11.io.ferrofab:fuzz";

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferrofab-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let target = Target::new(TargetOptions::default()).expect("fuzz target");
        target
            .add_subsystem(SubsystemConfig {
                nqn: SUBNQN.into(),
                serial: String::new(),
                model: String::new(),
                allow_any_host: false,
                allowed_hosts: vec![HOST.into()],
            })
            .expect("fuzz subsystem");
        let opts = FileOptions {
            create: true,
            size: Some(1 << 20),
            direct_io: DirectIo::Off,
            block_size: 512,
            preallocate: false,
        };
        let backend = open_backend(dir.join("ns1.img"), &opts).expect("fuzz backend");
        let uuid = derive_uuid(SUBNQN, 1);
        let ns = NamespaceConfig {
            nsid: 1,
            backend,
            block_size: 512,
            uuid,
            nguid: *uuid.as_bytes(),
            read_only: false,
        };
        target.add_namespace(SUBNQN, ns).expect("fuzz namespace");
        let _ = target.add_listener("127.0.0.1:0".parse().expect("addr"), ListenerKind::Io, None);
        target
    })
}

/// Feed `data` to a fresh connection as if a host had sent it.
pub fn run_connection(data: &[u8]) {
    let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(addr) = l.local_addr() else { return };
    let Ok(client) = TcpStream::connect(addr) else {
        return;
    };
    let Ok((server, peer)) = l.accept() else {
        return;
    };
    let _ = server.set_nonblocking(true);
    std::thread::spawn(move || {
        let mut c = client;
        let mut buf = [0u8; 65536];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    let Ok(local) = server.local_addr() else {
        return;
    };
    let mut conn = Conn::new(target().inner.clone(), server, peer, local);
    let _ = conn.feed(data);
    conn.close_for_test();
}
