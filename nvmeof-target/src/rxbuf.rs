//! The receive buffer of one connection.
//!
//! It must hold a whole PDU, so it grows up to the largest PDU the target
//! allows (capsule or H2CData plus headers and digests). Kept at that size,
//! a few thousand connections that each once sent one large PDU would pin
//! gigabytes, so once a large PDU has been handled and nothing is left in
//! the buffer, it goes back to its small starting size.

/// Starting size, enough for a burst of small capsules.
pub(crate) const RX_MIN: usize = 64 * 1024;
/// Buffers up to this size are kept after use: it covers the default
/// MAXH2CDATA (128 KiB) and MDTS-sized in-capsule data, so a host doing
/// ordinary I/O never reallocates. Larger ones shrink when drained.
pub(crate) const RX_KEEP: usize = 1024 * 1024;

/// Bytes received but not yet handled are `data[start..end]`.
#[derive(Debug)]
pub(crate) struct RxBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for RxBuf {
    fn default() -> Self {
        RxBuf {
            data: vec![0; RX_MIN],
            start: 0,
            end: 0,
        }
    }
}

impl RxBuf {
    /// A placeholder with no allocation.
    pub fn empty() -> RxBuf {
        RxBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Allocated size.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Received bytes not yet handled.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Mark `n` bytes at the front as handled.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// The free space after the received bytes, to read into.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    /// Record that `n` bytes were read into [`RxBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Before a read: make sure there is free space, compacting first and
    /// growing (doubling, up to `limit`) only when the buffer is full.
    pub fn make_room(&mut self, limit: usize) {
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.data.len() && self.start > 0 {
            self.compact();
        }
        if self.end == self.data.len() {
            let grown = (self.data.len() * 2).min(limit.max(RX_MIN));
            if grown > self.data.len() {
                self.data.resize(grown, 0);
            }
        }
    }

    /// After handling: make sure a PDU of `need` bytes fits from the
    /// current start on. `need` was bounded by the decoder against the
    /// largest PDU allowed, so this never grows past that.
    pub fn ensure(&mut self, need: usize) {
        if self.start + need <= self.data.len() {
            return;
        }
        self.compact();
        if need > self.data.len() {
            self.data.resize(need.next_power_of_two(), 0);
        }
    }

    /// Give back a large buffer once it is drained (see the module doc).
    /// Returns whether it shrank.
    pub fn shrink_if_drained(&mut self) -> bool {
        if !self.is_empty() || self.data.len() <= RX_KEEP {
            return false;
        }
        // A fresh allocation, not `truncate` + `shrink_to_fit`: the old
        // block is freed whole, which returns it to the OS when it was
        // mapped on its own.
        *self = RxBuf::default();
        true
    }

    fn compact(&mut self) {
        self.data.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(b: &mut RxBuf, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            b.make_room(64 << 20);
            let spare = b.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            b.filled(n);
            rest = &rest[n..];
        }
    }

    #[test]
    fn grows_for_a_large_pdu_and_shrinks_back_when_drained() {
        let mut b = RxBuf::default();
        assert_eq!(b.capacity(), RX_MIN);
        let big = vec![7u8; 8 << 20];
        b.ensure(big.len());
        push(&mut b, &big);
        assert!(b.capacity() >= 8 << 20);
        assert_eq!(b.pending().len(), big.len());
        // Not drained yet: keep it.
        b.consume(big.len() - 1);
        assert!(!b.shrink_if_drained());
        assert!(b.capacity() >= 8 << 20);
        b.consume(1);
        assert!(b.shrink_if_drained());
        assert_eq!(b.capacity(), RX_MIN);
        assert!(b.is_empty());
    }

    #[test]
    fn keeps_buffers_of_ordinary_size() {
        let mut b = RxBuf::default();
        b.ensure(256 * 1024);
        push(&mut b, &vec![1u8; 256 * 1024]);
        b.consume(256 * 1024);
        assert!(!b.shrink_if_drained());
        assert_eq!(b.capacity(), 256 * 1024);
    }

    #[test]
    fn compacts_before_growing() {
        let mut b = RxBuf::default();
        push(&mut b, &vec![1u8; RX_MIN]);
        b.consume(RX_MIN - 10);
        b.make_room(1 << 20);
        assert_eq!(b.capacity(), RX_MIN);
        assert_eq!(b.pending(), &[1u8; 10][..]);
        assert_eq!(b.spare().len(), RX_MIN - 10);
    }
}
