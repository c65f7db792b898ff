//! Entry points for the cargo-fuzz targets in `nvmeof-target/fuzz/` (feature
//! `fuzzing`). They are thin: the interesting checks are the ones the state
//! machine makes on every input, and the fuzzer looks for panics.

use std::sync::OnceLock;

use super::testbed;
use super::{ListenerKind, Target, TargetOptions};

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
        testbed::add_subsystem(&target, SUBNQN, HOST);
        testbed::add_file_namespace(&target, SUBNQN, &dir.join("ns1.img"), 1 << 20);
        let _ = target.add_listener("127.0.0.1:0".parse().expect("addr"), ListenerKind::Io, None);
        target
    })
}

/// Feed `data` to a fresh connection as if a host had sent it.
pub fn run_connection(data: &[u8]) {
    let Ok(mut conn) = testbed::drained_conn(target()) else {
        return;
    };
    let _ = conn.feed(data);
    conn.close_for_test();
}
