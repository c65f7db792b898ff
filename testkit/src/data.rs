//! Deterministic test data and its checksums.

use std::path::Path;

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Hex sha256 of `b`.
pub fn sha256_of_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Hex sha256 of the first `len` bytes of `path`.
pub fn sha256_of(path: &Path, len: usize) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read");
    sha256_of_bytes(&buf)
}

/// Writes `data` at offset 0 of `path` and fsyncs.
pub fn write_sync(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open rw");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}
