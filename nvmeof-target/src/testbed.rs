//! A target to poke at without a host: what the unit tests (`fuzz`,
//! `limits_tests`, `conn`) and the cargo-fuzz entry points (`fuzzing`)
//! all need, written once. Compiled only for those (`cfg(test)` or the
//! `fuzzing` feature), never into the product.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use super::conn::Conn;
use super::{derive_uuid, NamespaceConfig, SubsystemConfig, Target};
use crate::backend::{open_backend, DirectIo, FileOptions};

/// Adds subsystem `nqn` that admits only `host`.
pub(crate) fn add_subsystem(target: &Target, nqn: &str, host: &str) {
    target
        .add_subsystem(SubsystemConfig {
            nqn: nqn.into(),
            serial: String::new(),
            model: String::new(),
            allow_any_host: false,
            allowed_hosts: vec![host.into()],
        })
        .expect("subsystem");
}

/// Adds namespace 1 of `nqn`: a sparse file of `size` bytes at `path`,
/// 512-byte blocks, buffered I/O, the UUID the agent would derive.
pub(crate) fn add_file_namespace(target: &Target, nqn: &str, path: &Path, size: u64) {
    let backend = open_backend(
        path,
        &FileOptions {
            create: true,
            size: Some(size),
            direct_io: DirectIo::Off,
            block_size: 512,
            preallocate: false,
        },
    )
    .expect("backend");
    let uuid = derive_uuid(nqn, 1);
    target
        .add_namespace(
            nqn,
            NamespaceConfig {
                nsid: 1,
                backend,
                block_size: 512,
                uuid,
                nguid: *uuid.as_bytes(),
                read_only: false,
            },
        )
        .expect("namespace");
}

/// A connection on a real loopback socket whose peer end is drained by a
/// thread, so the target can always write what it answers.
pub(crate) fn drained_conn(target: &Target) -> io::Result<Conn> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(l.local_addr()?)?;
    let (server, peer) = l.accept()?;
    server.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let mut c = client;
        let mut buf = vec![0u8; 1 << 16];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    let local = server.local_addr()?;
    Ok(Conn::new(target.inner.clone(), server, peer, local))
}
