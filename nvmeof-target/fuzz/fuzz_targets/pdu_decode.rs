#![no_main]
//! Any byte string, with any digest settings, must decode to PDUs that lie
//! inside the buffer, or to an error — never a panic.

use ferrofab_nvmeof_wire::wire::pdu::decode;
use ferrofab_nvmeof_wire::wire::{DecodeStatus, Digests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let digests = Digests::from_bits(first);
    let mut at = 0;
    while at < rest.len() {
        match decode(&rest[at..], digests, 1 << 20) {
            Ok(DecodeStatus::Complete(d)) => {
                assert!(d.len > 0 && at + d.len <= rest.len());
                at += d.len;
            }
            _ => break,
        }
    }
});
