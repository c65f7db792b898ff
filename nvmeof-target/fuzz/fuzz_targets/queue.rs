#![no_main]
//! Bytes from a host, fed to one target connection: the queue state machine
//! must answer or terminate, never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrofab_nvmeof_target::fuzzing::run_connection(data);
});
