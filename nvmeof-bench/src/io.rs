//! Block I/O devices the benchmark engine runs on (the FUSE exposure's tests
//! use them too).
//!
//! `BlockIo` and `DynBlockIo` are the initiator's
//! (`ferrofab_nvmeof_host::BlockIo`), re-exported here with the in-memory
//! and backend implementations the tests and the "local ceiling"
//! measurement use.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use ferrofab_nvmeof_target::backend::{open_backend, BackendError, BlockBackend, FileOptions};

/// A connected namespace seen as a flat array of bytes, and the same
/// shareable across threads: the initiator's trait, implemented by
/// `ferrofab_nvmeof_host::Namespace`.
pub use ferrofab_nvmeof_host::{BlockIo, DynBlockIo};

/// Reject requests that a real namespace would reject, so tests written
/// against the in-memory device catch alignment bugs in the callers.
fn check_range(len: usize, offset: u64, size: u64, block_size: u32) -> io::Result<()> {
    let bs = u64::from(block_size);
    let len = len as u64;
    if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unaligned I/O: offset {offset} length {len} block size {bs}"),
        ));
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("I/O past end: offset {offset} length {len} size {size}"),
        )),
    }
}

/// RAM-backed namespace for tests and for benchmarking the engine itself.
///
/// It enforces block alignment like a real namespace and can grow, which
/// is how tests simulate a namespace resize followed by a rescan.
#[derive(Debug)]
pub struct MemBlockIo {
    data: RwLock<Vec<u8>>,
    block_size: u32,
}

impl MemBlockIo {
    /// A zero-filled device of `size` bytes (rounded down to whole blocks).
    pub fn new(size: u64, block_size: u32) -> Self {
        let bs = u64::from(block_size.max(1));
        let size = size - size % bs;
        Self {
            data: RwLock::new(vec![0; size as usize]),
            block_size: block_size.max(1),
        }
    }

    /// Change the capacity, as a target-side resize would; new space reads
    /// as zeros.
    pub fn resize(&self, size: u64) {
        let bs = u64::from(self.block_size);
        let size = size - size % bs;
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        data.resize(size as usize, 0);
    }
}

impl BlockIo for MemBlockIo {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range(buf.len(), offset, data.len() as u64, self.block_size)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(buf.len(), offset, data.len() as u64, self.block_size)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The target's own storage backend used directly: the "local ceiling".
/// Measuring through the very backend a namespace is served from (same
/// O_DIRECT choice, same bounce buffers) means the remote/local ratio
/// isolates the cost of the network path.
#[derive(Debug, Clone)]
pub struct BackendBlockIo(pub Arc<dyn BlockBackend>);

impl BackendBlockIo {
    /// Open (and with `opts.create`, create) a file or block device the way
    /// the target does.
    pub fn open(path: &Path, opts: &FileOptions) -> io::Result<Self> {
        open_backend(path, opts).map(Self).map_err(backend_err)
    }
}

/// Keep the errno (the FUSE layer reports it) and the backend's message.
fn backend_err(e: BackendError) -> io::Error {
    let kind = e
        .raw_os_error()
        .map(|c| io::Error::from_raw_os_error(c).kind())
        .unwrap_or(io::ErrorKind::Other);
    match e.raw_os_error() {
        Some(code) if kind == io::ErrorKind::Other => io::Error::from_raw_os_error(code),
        _ => io::Error::new(kind, e),
    }
}

impl BlockIo for BackendBlockIo {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn block_size(&self) -> u32 {
        self.0.logical_block_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset).map_err(backend_err)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset).map_err(backend_err)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush().map_err(backend_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_round_trip_and_alignment() {
        let dev = MemBlockIo::new(8192 + 100, 512);
        assert_eq!(dev.size(), 8192);
        dev.write_at(&[7u8; 512], 1024).expect("aligned write");
        let mut buf = [0u8; 1024];
        dev.read_at(&mut buf, 512).expect("aligned read");
        assert!(buf[..512].iter().all(|&b| b == 0));
        assert!(buf[512..].iter().all(|&b| b == 7));
        assert!(dev.write_at(&[0u8; 100], 0).is_err());
        assert!(dev.read_at(&mut [0u8; 512], 8192).is_err());
    }

    #[test]
    fn mem_resize_grows_with_zeros() {
        let dev = MemBlockIo::new(4096, 4096);
        dev.resize(3 * 4096);
        assert_eq!(dev.size(), 3 * 4096);
        let mut buf = vec![1u8; 4096];
        dev.read_at(&mut buf, 8192).expect("read new space");
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn backend_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = FileOptions {
            create: true,
            size: Some(1 << 20),
            block_size: 4096,
            ..Default::default()
        };
        let dev = BackendBlockIo::open(&tmp.path().join("ns.img"), &opts).expect("open");
        assert_eq!(dev.size(), 1 << 20);
        assert_eq!(dev.block_size(), 4096);
        let e = dev.read_at(&mut [0u8; 512], 0).expect_err("misaligned");
        assert!(!e.to_string().is_empty());
        dev.write_at(&[9u8; 4096], 4096).expect("write");
        dev.flush().expect("flush");
        let mut buf = vec![0u8; 4096];
        dev.read_at(&mut buf, 4096).expect("read");
        assert!(buf.iter().all(|&b| b == 9));
    }
}
