//! The mandatory admin features and log pages SPDK's `identify` asks for
//! (issue 12, item 4), over a real connection.

use ferrofab_testkit::nvme::mini_host;

use ferrofab_nvmeof_wire::spec::identify::IdentifyController;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, feature, log};
use ferrofab_nvmeof_wire::wire::Digests;
use mini_host::*;

fn get(h: &mut MiniHost, fid: u8, cdw11: u32) -> (Status, u64) {
    let r = h.admin(admin::GET_FEATURES, 0, u32::from(fid), cdw11, 0);
    (r.status(), r.cqe.map(|c| c.result).unwrap_or_default())
}

fn set(h: &mut MiniHost, fid: u8, cdw11: u32) -> Status {
    h.admin(admin::SET_FEATURES, 0, u32::from(fid), cdw11, 0)
        .status()
}

#[test]
fn get_features_answers_the_mandatory_features() {
    let f = fixture();
    let (mut h, _) = admin_queue(f.addr, Digests::default());
    assert_eq!(
        get(&mut h, feature::ARBITRATION, 0),
        (Status::SUCCESS, 0b111)
    );
    assert_eq!(
        get(&mut h, feature::POWER_MANAGEMENT, 0),
        (Status::SUCCESS, 0)
    );
    assert_eq!(
        get(&mut h, feature::TEMPERATURE_THRESHOLD, 0),
        (Status::SUCCESS, 343)
    );
    assert_eq!(
        get(&mut h, feature::ERROR_RECOVERY, 0),
        (Status::SUCCESS, 0)
    );
    let id = IdentifyController::decode(&h.admin(admin::IDENTIFY, 0, 1, 0, 4096).data);
    assert_eq!(id.wctemp, 343, "the default over threshold is WCTEMP");
    assert!(id.cctemp > id.wctemp);
    assert_eq!(id.npss, 0);
    assert_eq!(id.frmw, 0b11, "one read-only slot");
    assert_eq!(id.ctratt & 1, 1, "128-bit host identifier");
}

#[test]
fn set_features_round_trip() {
    let f = fixture();
    let (mut h, _) = admin_queue(f.addr, Digests::default());
    assert_eq!(
        set(&mut h, feature::ARBITRATION, 0x0403_0203),
        Status::SUCCESS
    );
    assert_eq!(
        get(&mut h, feature::ARBITRATION, 0),
        (Status::SUCCESS, 0x0403_0203)
    );
    assert_eq!(
        set(&mut h, feature::POWER_MANAGEMENT, 1 << 5),
        Status::SUCCESS
    );
    assert_eq!(
        get(&mut h, feature::POWER_MANAGEMENT, 0),
        (Status::SUCCESS, 1 << 5)
    );
    assert_eq!(
        set(&mut h, feature::POWER_MANAGEMENT, 3),
        Status::INVALID_FIELD,
        "power state 3 does not exist"
    );
    assert_eq!(set(&mut h, feature::ERROR_RECOVERY, 30), Status::SUCCESS);
    assert_eq!(
        get(&mut h, feature::ERROR_RECOVERY, 0),
        (Status::SUCCESS, 30)
    );
    assert_eq!(
        set(&mut h, feature::ERROR_RECOVERY, 1 << 16),
        Status::INVALID_FIELD,
        "DULBE is not supported"
    );

    // Temperature: over and under thresholds, and the SMART warning bit.
    let smart = |h: &mut MiniHost| {
        h.admin(admin::GET_LOG_PAGE, 0xFFFF_FFFF, 0x02 | (127 << 16), 0, 512)
            .data
    };
    assert_eq!(smart(&mut h)[0] & 2, 0);
    assert_eq!(
        set(&mut h, feature::TEMPERATURE_THRESHOLD, 280),
        Status::SUCCESS
    );
    let under = 1 << 20;
    assert_eq!(
        set(&mut h, feature::TEMPERATURE_THRESHOLD, under | 250),
        Status::SUCCESS
    );
    assert_eq!(
        get(&mut h, feature::TEMPERATURE_THRESHOLD, 0),
        (Status::SUCCESS, 280)
    );
    assert_eq!(
        get(&mut h, feature::TEMPERATURE_THRESHOLD, under),
        (Status::SUCCESS, u64::from(under | 250))
    );
    let page = smart(&mut h);
    assert_eq!(page[0] & 2, 2, "300 K is over the 280 K threshold");
    assert_eq!(u16::from_le_bytes([page[1], page[2]]), 300);
    assert_eq!(
        set(&mut h, feature::TEMPERATURE_THRESHOLD, (1 << 16) | 280),
        Status::INVALID_FIELD,
        "sensor 1 is not reported"
    );

    // A controller reset brings the defaults back.
    let cc = (6 << 16) | (4 << 20);
    assert_eq!(
        h.prop_set(ferrofab_nvmeof_wire::spec::prop::CC, cc)
            .status(),
        Status::SUCCESS
    );
    h.enable();
    assert_eq!(
        get(&mut h, feature::TEMPERATURE_THRESHOLD, 0),
        (Status::SUCCESS, 343)
    );
    assert_eq!(
        get(&mut h, feature::ARBITRATION, 0),
        (Status::SUCCESS, 0b111)
    );
}

/// The host identifier is the one given at Connect (MiniHost sends
/// 07h x 16), in its 128-bit form only; a fabrics host cannot set it.
#[test]
fn host_identifier_is_the_one_from_connect() {
    let f = fixture();
    let (mut h, _) = admin_queue(f.addr, Digests::default());
    let r = h.admin(
        admin::GET_FEATURES,
        0,
        u32::from(feature::HOST_IDENTIFIER),
        feature::HOST_ID_EXHID,
        16,
    );
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.data, vec![7u8; 16]);
    // The 64-bit form does not exist on fabrics.
    let r = h.admin(
        admin::GET_FEATURES,
        0,
        u32::from(feature::HOST_IDENTIFIER),
        0,
        8,
    );
    assert_eq!(r.status(), Status::INVALID_FIELD);
    assert!(r.data.is_empty());
    assert_eq!(
        set(&mut h, feature::HOST_IDENTIFIER, feature::HOST_ID_EXHID),
        Status::COMMAND_SEQUENCE_ERROR
    );
}

#[test]
fn firmware_slot_log_page() {
    let f = fixture();
    let (mut h, _) = admin_queue(f.addr, Digests::default());
    let r = h.admin(
        admin::GET_LOG_PAGE,
        0xFFFF_FFFF,
        u32::from(log::FIRMWARE_SLOT) | (127 << 16),
        0,
        512,
    );
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.data.len(), 512);
    assert_eq!(r.data[0], 1, "slot 1 active");
    let id = IdentifyController::decode(&h.admin(admin::IDENTIFY, 0, 1, 0, 4096).data);
    assert_eq!(
        String::from_utf8_lossy(&r.data[8..16]).trim_end(),
        id.firmware,
        "slot 1 holds the running firmware"
    );
}

/// Identify with the NSIDs the specification reserves: Invalid Namespace
/// or Format, as Linux nvmet answers too.
#[test]
fn identify_reserved_nsids() {
    let f = fixture();
    let (mut h, _) = admin_queue(f.addr, Digests::default());
    for (cns, nsid) in [(0u32, 0xFFFF_FFFFu32), (2, 0xFFFF_FFFE), (2, 0xFFFF_FFFF)] {
        assert_eq!(
            h.admin(admin::IDENTIFY, nsid, cns, 0, 4096).status(),
            Status::INVALID_NAMESPACE,
            "CNS {cns} NSID {nsid:#x}"
        );
    }
    // An inactive NSID still reads as zeroes.
    let r = h.admin(admin::IDENTIFY, 7, 0, 0, 4096);
    assert_eq!(r.status(), Status::SUCCESS);
    assert!(r.data.iter().all(|&b| b == 0));
}
