//! Hostile lengths over a real TCP connection: the target in this process
//! must answer them with a status and stay small and alive.

use ferrofab_testkit::nvme::mini_host;

use ferrofab_nvmeof_wire::spec::admin;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::{Digests, Sgl, Sqe};
use mini_host::*;

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Get Log Page with NUMD = FFFFFFFFh (2^32 dwords, 16 GiB) and the
/// largest SGL a host can write. Main sized a buffer by NUMD before
/// anything else; now it is Invalid Field (over MDTS), the process's peak
/// memory does not move by more than a few MiB, and the same connection
/// goes on serving.
#[test]
fn get_log_page_numd_all_ones_over_tcp() {
    let f = fixture();
    let (mut h, _cntlid) = admin_queue(f.addr, Digests::default());
    let before = peak_rss_kib();
    for lid in [0x01u32, 0x02, 0x03, 0x04, 0x70, 0xFF] {
        let sqe = Sqe {
            opcode: admin::GET_LOG_PAGE,
            nsid: 0xFFFF_FFFF,
            cdw10: lid | (0xFFFF << 16),
            cdw11: 0xFFFF,
            sgl: Sgl {
                address: 0,
                length: u32::MAX,
                id: 0x5A,
            },
            ..Default::default()
        };
        let r = h.command(sqe, &[], false);
        assert_eq!(r.status(), Status::INVALID_FIELD, "log {lid:#x}");
        assert!(r.data.is_empty(), "no data for a refused command");
    }
    assert_eq!(
        f.target.status().commands_refused_length,
        6,
        "each refusal is counted for the metrics"
    );
    let grown_kib = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {grown_kib} KiB over six NUMD=FFFFFFFFh commands");
    let grown_mib = grown_kib / 1024;
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    assert_eq!(
        h.admin(admin::KEEP_ALIVE, 0, 0, 0, 0).status(),
        Status::SUCCESS,
        "the connection still serves"
    );
    let r = h.admin(admin::GET_LOG_PAGE, 0xFFFF_FFFF, 0x02 | (127 << 16), 0, 512);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.data.len(), 512);
}

/// NUMD and the SGL length disagreeing: Data SGL Length Invalid (what
/// Linux nvmet answers on fabrics), with no data sent.
#[test]
fn get_log_page_numd_and_sgl_mismatch_over_tcp() {
    let f = fixture();
    let (mut h, _cntlid) = admin_queue(f.addr, Digests::default());
    let r = h.admin(
        admin::GET_LOG_PAGE,
        0xFFFF_FFFF,
        0x02 | (127 << 16),
        0,
        4096,
    );
    assert_eq!(r.status(), Status::DATA_SGL_LENGTH_INVALID);
    assert!(r.data.is_empty());
}
