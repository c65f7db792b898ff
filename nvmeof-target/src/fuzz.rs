//! Bounded fuzzing of the queue state machine, run with the unit tests.
//!
//! A connection is fed byte streams built from mostly well-formed PDUs
//! with random fields, random corruption and random split points, the way
//! a confused or hostile host would send them. The properties checked:
//! nothing panics, every byte the target sends back is a well-formed PDU,
//! buffers stay bounded, and no data outside the namespace the host is
//! connected to changes.
//!
//! The run lasts `FERROFAB_FUZZ_SECS` seconds (default 12) and prints its
//! seed, so a failure can be replayed with `FERROFAB_FUZZ_SEED`.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::conn::Conn;
use super::testbed;
use super::{ListenerKind, Target, TargetOptions};
use ferrofab_nvmeof_wire::spec::{admin, fctype, nvm};
use ferrofab_nvmeof_wire::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use ferrofab_nvmeof_wire::wire::pdu::{self, flags, pdu_type};
use ferrofab_nvmeof_wire::wire::{DataHeader, DecodeStatus, Digests, IcReq, Sgl, Sqe};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000f022";
const NQN_A: &str = "nqn.2026-11.io.ferrofab:fuzz-a";
const NQN_B: &str = "nqn.2026-11.io.ferrofab:fuzz-b";
const NS_BLOCKS: u64 = 2048;

struct Bed {
    target: Target,
    dir: tempfile::TempDir,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::new(TargetOptions {
        // Every answer is checked in the send buffer, so read data must
        // go through it rather than straight from the file.
        sendfile_min_bytes: 0,
        ..TargetOptions::default()
    })
    .expect("target");
    for (nqn, file) in [(NQN_A, "a.img"), (NQN_B, "b.img")] {
        testbed::add_subsystem(&target, nqn, HOST);
        testbed::add_file_namespace(&target, nqn, &dir.path().join(file), NS_BLOCKS * 512);
    }
    // Known content in B, which the fuzzed host never connects to.
    let b = dir.path().join("b.img");
    std::fs::write(&b, vec![0x5Au8; (NS_BLOCKS * 512) as usize]).expect("fill b");
    let _ = target.add_listener("127.0.0.1:0".parse().expect("addr"), ListenerKind::Io, None);
    Bed { target, dir }
}

/// A connection whose peer end is drained by a thread, so the target can
/// always write.
fn connection(bed: &Bed) -> Conn {
    testbed::drained_conn(&bed.target).expect("connection")
}

/// What the generated commands aim at.
#[derive(Debug, Clone)]
struct Spec {
    /// Namespace size in 512-byte blocks.
    blocks: u64,
    /// Generated writes stay inside these LBAs (mutations may still move
    /// them; see [`confine`] for runs that must not write elsewhere).
    write: std::ops::Range<u64>,
}

impl Spec {
    fn local() -> Spec {
        Spec {
            blocks: NS_BLOCKS,
            write: 0..NS_BLOCKS,
        }
    }
}

/// A stream of PDUs a host might send, with random fields.
fn random_stream(rng: &mut StdRng, digests: Digests, spec: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode_ic_req(
        &mut out,
        &IcReq {
            pfv: if rng.gen_ratio(1, 20) { rng.gen() } else { 0 },
            hpda: if rng.gen_ratio(1, 20) { rng.gen() } else { 0 },
            digests,
            maxr2t: 0,
        },
    );
    if rng.gen_ratio(9, 10) {
        out.extend(connect_pdu(rng, 0, digests));
        out.extend(enable_pdu(digests));
    }
    out.extend(commands(rng, digests, spec));
    if rng.gen_ratio(1, 4) {
        corrupt(rng, &mut out);
    }
    out
}

/// Commands, data and garbage, as a connected queue might receive them.
fn commands(rng: &mut StdRng, digests: Digests, spec: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..40) {
        let piece = match rng.gen_range(0..10) {
            0 => {
                let qid = rng.gen_range(0..4);
                connect_pdu(rng, qid, digests)
            }
            1..=4 => io_pdu(rng, digests, spec),
            5..=6 => admin_pdu(rng, digests),
            7 => h2c_pdu(rng, digests),
            8 => {
                let mut p = io_pdu(rng, digests, spec);
                corrupt(rng, &mut p);
                p
            }
            _ => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        };
        out.extend(piece);
    }
    out
}

fn corrupt(rng: &mut StdRng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..rng.gen_range(1..4) {
        let i = rng.gen_range(0..bytes.len());
        bytes[i] = rng.gen();
    }
}

fn capsule(sqe: &Sqe, data: &[u8], digests: Digests) -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode_capsule_cmd(&mut out, sqe, data, digests);
    out
}

fn connect_pdu(rng: &mut StdRng, qid: u16, digests: Digests) -> Vec<u8> {
    let mut data = vec![0u8; 1024];
    let cntlid: u16 = if qid == 0 {
        0xFFFF
    } else {
        rng.gen_range(1..4)
    };
    data[16..18].copy_from_slice(&cntlid.to_le_bytes());
    let nqn = if rng.gen_ratio(1, 10) { NQN_B } else { NQN_A };
    data[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
    data[512..512 + HOST.len()].copy_from_slice(HOST.as_bytes());
    let sqe = Sqe {
        opcode: admin::FABRICS,
        cid: rng.gen(),
        nsid: u32::from(fctype::CONNECT),
        cdw10: u32::from(qid) << 16,
        cdw11: rng.gen_range(0..200),
        cdw12: rng.gen_range(0..3) * 5000,
        sgl: Sgl {
            address: 0,
            length: 1024,
            id: SGL_DATA_BLOCK_OFFSET,
        },
        ..Default::default()
    };
    // Sometimes the NQN names the subsystem the host must never touch:
    // it is allowed there too, so this checks isolation by namespace.
    capsule(&sqe, &data, digests)
}

fn enable_pdu(digests: Digests) -> Vec<u8> {
    let sqe = Sqe {
        opcode: admin::FABRICS,
        cid: 2,
        nsid: u32::from(fctype::PROPERTY_SET),
        cdw11: ferrofab_nvmeof_wire::spec::prop::CC,
        cdw12: (6 << 16) | (4 << 20) | 1,
        sgl: Sgl {
            id: SGL_TRANSPORT_DATA_BLOCK,
            ..Default::default()
        },
        ..Default::default()
    };
    capsule(&sqe, &[], digests)
}

fn io_pdu(rng: &mut StdRng, digests: Digests, spec: &Spec) -> Vec<u8> {
    let opcode = [
        nvm::READ,
        nvm::WRITE,
        nvm::FLUSH,
        nvm::WRITE_ZEROES,
        nvm::DATASET_MANAGEMENT,
        rng.gen(),
    ][rng.gen_range(0..6)];
    let nlb: u32 = rng.gen_range(0..64);
    // Now and then an LBA anywhere, for the out-of-range paths.
    let wild = rng.gen_ratio(1, 8);
    let slba: u64 = if matches!(opcode, nvm::WRITE | nvm::WRITE_ZEROES) && !wild {
        in_window(rng, &spec.write, u64::from(nlb) + 1)
    } else {
        match rng.gen_range(0..4) {
            0 => rng.gen(),
            1 => spec.blocks - rng.gen_range(0..8),
            _ => rng.gen_range(0..spec.blocks),
        }
    };
    let len = (nlb + 1) * 512;
    let in_capsule = rng.gen_bool(0.5) && len <= 16384;
    let data: Vec<u8> = if opcode == nvm::WRITE && in_capsule {
        vec![0xA5; len as usize]
    } else if opcode == nvm::DATASET_MANAGEMENT {
        let mut r = vec![0u8; 16];
        let (count, start) = if wild {
            (
                rng.gen_range(0..4096u32),
                rng.gen_range(0..spec.blocks + 100),
            )
        } else {
            let count = rng.gen_range(0..64u32);
            (count, in_window(rng, &spec.write, u64::from(count)))
        };
        r[4..8].copy_from_slice(&count.to_le_bytes());
        r[8..16].copy_from_slice(&start.to_le_bytes());
        r
    } else {
        Vec::new()
    };
    let sqe = Sqe {
        opcode,
        cid: rng.gen(),
        nsid: if rng.gen_ratio(1, 10) { rng.gen() } else { 1 },
        cdw10: slba as u32,
        cdw11: if opcode == nvm::DATASET_MANAGEMENT {
            1 << 2
        } else {
            (slba >> 32) as u32
        },
        cdw12: nlb | if rng.gen_ratio(1, 4) { 1 << 30 } else { 0 },
        sgl: Sgl {
            address: 0,
            length: if rng.gen_ratio(1, 10) {
                rng.gen()
            } else if data.is_empty() {
                len
            } else {
                data.len() as u32
            },
            id: if data.is_empty() {
                SGL_TRANSPORT_DATA_BLOCK
            } else {
                SGL_DATA_BLOCK_OFFSET
            },
        },
        ..Default::default()
    };
    capsule(&sqe, &data, digests)
}

/// A start LBA such that `len` blocks from it stay in `w`.
fn in_window(rng: &mut StdRng, w: &std::ops::Range<u64>, len: u64) -> u64 {
    let last = w.end.saturating_sub(len).max(w.start);
    rng.gen_range(w.start..=last)
}

fn admin_pdu(rng: &mut StdRng, digests: Digests) -> Vec<u8> {
    let opcode = [
        admin::IDENTIFY,
        admin::GET_LOG_PAGE,
        admin::SET_FEATURES,
        admin::GET_FEATURES,
        admin::ASYNC_EVENT_REQUEST,
        admin::KEEP_ALIVE,
        admin::FABRICS,
        rng.gen(),
    ][rng.gen_range(0..8)];
    let sqe = Sqe {
        opcode,
        cid: rng.gen(),
        nsid: rng.gen_range(0..3),
        cdw10: rng.gen(),
        cdw11: rng.gen(),
        cdw12: if rng.gen_bool(0.5) { 0 } else { rng.gen() },
        sgl: Sgl {
            address: 0,
            length: rng.gen_range(0..8192),
            id: SGL_TRANSPORT_DATA_BLOCK,
        },
        ..Default::default()
    };
    capsule(&sqe, &[], digests)
}

fn h2c_pdu(rng: &mut StdRng, digests: Digests) -> Vec<u8> {
    let n = rng.gen_range(0..4) * 512;
    let hdr = DataHeader {
        cccid: rng.gen(),
        ttag: rng.gen_range(0..4),
        datao: rng.gen_range(0..4) * 512,
        datal: 0,
    };
    let mut out = Vec::new();
    let last = if rng.gen_bool(0.5) {
        flags::LAST_PDU
    } else {
        0
    };
    pdu::encode_data_pdu(
        &mut out,
        pdu_type::H2C_DATA,
        &hdr,
        last,
        &vec![0xC3; n],
        digests,
    );
    out
}

/// Everything the target sent must decode cleanly from the host's side.
fn check_output(tx: &[u8], digests: Digests) {
    let mut at = 0;
    let d = digests;
    while at < tx.len() {
        match pdu::decode(&tx[at..], d, 16 << 20) {
            Ok(DecodeStatus::Complete(x)) => {
                assert!(x.data_digest_ok, "target sent a bad data digest");
                at += x.len;
            }
            other => panic!("target sent an undecodable PDU at {at}: {other:?}"),
        }
    }
}

/// A number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("FERROFAB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed}");
    seed
}

/// What must not change while the state machine is fuzzed: subsystem B,
/// which the fuzzed host never connects to, and the size of A's file.
struct Isolation {
    b_before: Vec<u8>,
    a_len: u64,
}

impl Isolation {
    fn take(bed: &Bed) -> Isolation {
        Isolation {
            b_before: std::fs::read(bed.dir.path().join("b.img")).expect("read b"),
            a_len: std::fs::metadata(bed.dir.path().join("a.img"))
                .expect("meta")
                .len(),
        }
    }

    fn check(&self, bed: &Bed) {
        let b_after = std::fs::read(bed.dir.path().join("b.img")).expect("read b");
        assert!(
            self.b_before == b_after,
            "data of a subsystem the host never connected to changed"
        );
        let a_len_after = std::fs::metadata(bed.dir.path().join("a.img"))
            .expect("meta")
            .len();
        assert_eq!(
            self.a_len, a_len_after,
            "namespace backing file changed size"
        );
    }
}

/// One fuzzed connection: a random stream fed in random pieces, every
/// answer checked. Returns how many PDUs the state machine handled.
fn queue_session(bed: &Bed, rng: &mut StdRng) -> u64 {
    let digests = Digests {
        header: rng.gen_bool(0.3),
        data: rng.gen_bool(0.3),
    };
    let stream = random_stream(rng, digests, &Spec::local());
    let mut conn = connection(bed);
    let mut captured = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let result = conn.feed(piece);
        captured.extend_from_slice(&conn.tx);
        conn.tx.clear();
        assert!(
            conn.rx_capacity() <= 4 << 20,
            "receive buffer grew to {}",
            conn.rx_capacity()
        );
        if result.is_err() {
            break;
        }
    }
    // ICResp was flushed straight to the socket, so skip checking the
    // digest state change: decode what was captured with the
    // negotiated digests once an ICResp has been seen.
    check_output_after_icresp(&captured, digests, &conn);
    let handled = conn.pdus_handled;
    conn.close_for_test();
    handled
}

/// One mutated stream through the decoder, PDU by PDU, plus every PDU
/// boundary cut short. Returns how many inputs were decoded.
fn decoder_round(rng: &mut StdRng) -> u64 {
    let digests = Digests {
        header: rng.gen(),
        data: rng.gen(),
    };
    let mut bytes = random_stream(rng, digests, &Spec::local());
    corrupt(rng, &mut bytes);
    let mut inputs = 0;
    let mut at = 0;
    while at < bytes.len() {
        inputs += 1;
        match pdu::decode(&bytes[at..], digests, 1 << 20) {
            Ok(DecodeStatus::Complete(x)) => {
                assert!(x.len > 0 && at + x.len <= bytes.len());
                // The same PDU cut short must ask for more, never decode.
                let cut = rng.gen_range(0..x.len);
                inputs += 1;
                if let Ok(DecodeStatus::Complete(y)) =
                    pdu::decode(&bytes[at..at + cut], digests, 1 << 20)
                {
                    panic!("a PDU cut to {cut} of {} bytes decoded: {y:?}", x.len);
                }
                at += x.len;
            }
            _ => break,
        }
    }
    inputs
}

#[test]
fn fuzz_queue_state_machine() {
    let secs = env_u64("FERROFAB_FUZZ_SECS", 12);
    let mut rng = StdRng::seed_from_u64(seed("fuzz_queue_state_machine"));
    let bed = bed();
    let isolation = Isolation::take(&bed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        queue_session(&bed, &mut rng);
        runs += 1;
    }
    isolation.check(&bed);
    eprintln!("fuzz_queue_state_machine: {runs} connections");
    assert!(runs > 10);
}

/// The ICResp went straight to the socket, so what was captured uses the
/// digests the connection actually negotiated (a corrupted ICReq may have
/// asked for different ones than the generator meant).
fn check_output_after_icresp(captured: &[u8], _intended: Digests, conn: &Conn) {
    if conn.link_established() {
        check_output(captured, conn.digests);
    } else {
        check_output(captured, Digests::default());
    }
}

#[test]
fn fuzz_pdu_decoder_with_mutations() {
    let secs = env_u64("FERROFAB_FUZZ_SECS", 12) / 2;
    let mut rng = StdRng::seed_from_u64(seed("fuzz_pdu_decoder_with_mutations"));
    let deadline = Instant::now() + Duration::from_secs(secs.max(1));
    let mut n = 0u64;
    while Instant::now() < deadline {
        decoder_round(&mut rng);
        n += 1;
    }
    assert!(n > 100);
}

/// The long decoder run of `./tests/run bench`: at least
/// `FERROFAB_FUZZ_DECODER_INPUTS` (default 10 million) inputs.
#[test]
#[ignore = "long run: tests/suites/bench_fuzz.sh"]
fn fuzz_long_decoder() {
    let want = env_u64("FERROFAB_FUZZ_DECODER_INPUTS", 10_000_000);
    let mut rng = StdRng::seed_from_u64(seed("fuzz_long_decoder"));
    let start = Instant::now();
    let mut inputs = 0u64;
    while inputs < want {
        inputs += decoder_round(&mut rng);
    }
    report("decoder", inputs, start.elapsed());
}

/// The long state-machine run of `./tests/run bench`: at least
/// `FERROFAB_FUZZ_QUEUE_INPUTS` (default 1 million) PDUs handled by
/// fuzzed connections.
#[test]
#[ignore = "long run: tests/suites/bench_fuzz.sh"]
fn fuzz_long_queue() {
    let want = env_u64("FERROFAB_FUZZ_QUEUE_INPUTS", 1_000_000);
    let mut rng = StdRng::seed_from_u64(seed("fuzz_long_queue"));
    let bed = bed();
    let isolation = Isolation::take(&bed);
    let start = Instant::now();
    let (mut pdus, mut conns) = (0u64, 0u64);
    while pdus < want {
        pdus += queue_session(&bed, &mut rng);
        conns += 1;
    }
    isolation.check(&bed);
    report("queue", pdus, start.elapsed());
    eprintln!("fuzz_long_queue: {conns} connections");
}

/// One machine-readable line for the bench script.
fn report(what: &str, inputs: u64, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "FUZZ-FIGURES {what} inputs={inputs} secs={secs:.1} per_s={:.0}",
        inputs as f64 / secs.max(1e-9)
    );
}

/// Cut `stream` before the first command that could change data outside
/// `window`, so a run against a live target can check that nothing else
/// changed. The walk decodes exactly as the target does (digests from the
/// leading ICReq), so what it lets through is what the target will see;
/// past the first undecodable byte the target closes the connection, so
/// the rest is sent as it is. Returns the bytes to send and how many
/// complete PDUs they hold.
fn confine(stream: &[u8], window: &std::ops::Range<u64>) -> (Vec<u8>, u64) {
    let mut at = 0;
    let mut pdus = 0;
    let mut digests = Digests::default();
    loop {
        let d = match pdu::decode(&stream[at..], digests, 64 << 20) {
            Ok(DecodeStatus::Complete(d)) => d,
            _ => return (stream.to_vec(), pdus),
        };
        match &d.pdu {
            ferrofab_nvmeof_wire::wire::Pdu::IcReq(req) if pdus == 0 => digests = req.digests,
            ferrofab_nvmeof_wire::wire::Pdu::CapsuleCmd { sqe, data }
                if !stays_inside(sqe, data, window) =>
            {
                return (stream[..at].to_vec(), pdus);
            }
            _ => {}
        }
        at += d.len;
        pdus += 1;
    }
}

/// Whether a capsule, taken as an NVM command on namespace 1, writes only
/// inside `window`. Conservative: anything that might write elsewhere
/// (including admin opcodes that share a number with a write) is refused.
fn stays_inside(sqe: &Sqe, data: &[u8], window: &std::ops::Range<u64>) -> bool {
    let inside = |slba: u64, nlb: u64| {
        slba >= window.start && slba.checked_add(nlb).is_some_and(|e| e <= window.end)
    };
    match sqe.opcode {
        nvm::WRITE | nvm::WRITE_ZEROES => inside(sqe.slba(), u64::from(sqe.nlb())),
        nvm::DATASET_MANAGEMENT if sqe.cdw11 & (1 << 2) == 0 => true,
        nvm::DATASET_MANAGEMENT => {
            let ranges = (sqe.cdw10 & 0xFF) as usize + 1;
            data.len() >= ranges * 16
                && data.chunks_exact(16).take(ranges).all(|r| {
                    let nlb = u64::from(ferrofab_nvmeof_wire::wire::get_u32(r, 4));
                    nlb == 0 || inside(ferrofab_nvmeof_wire::wire::get_u64(r, 8), nlb)
                })
        }
        _ => true,
    }
}

/// Totals of the live run.
#[derive(Default)]
struct RemoteTotals {
    connections: std::sync::atomic::AtomicU64,
    pdus: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    idle: std::sync::atomic::AtomicU64,
    io_sessions: std::sync::atomic::AtomicU64,
}

/// One fuzzing connection against a live target: a random, mutated and
/// confined stream, sent in random pieces with now and then a pause, while
/// a second thread reads whatever comes back.
fn remote_session(
    addr: std::net::SocketAddr,
    rng: &mut StdRng,
    spec: &Spec,
    totals: &RemoteTotals,
) {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let digests = Digests {
        header: rng.gen_bool(0.3),
        data: rng.gen_bool(0.3),
    };
    let (stream, pdus) = confine(&random_stream(rng, digests, spec), &spec.write);
    let Ok(mut sock) = TcpStream::connect(addr) else {
        totals.refused.fetch_add(1, Relaxed);
        return;
    };
    totals.connections.fetch_add(1, Relaxed);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    let reader = sock.try_clone().ok().map(|mut r| {
        std::thread::spawn(move || {
            let _ = r.set_read_timeout(Some(Duration::from_secs(15)));
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        })
    });
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len());
        let (piece, tail) = rest.split_at(n);
        if sock.write_all(piece).is_err() {
            break;
        }
        totals.bytes.fetch_add(piece.len() as u64, Relaxed);
        rest = tail;
        if rng.gen_ratio(1, 50) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(1..50)));
        }
    }
    totals.pdus.fetch_add(pdus, Relaxed);
    // Give the target a moment to answer, then hang up.
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
    let _ = sock.shutdown(std::net::Shutdown::Both);
    if let Some(r) = reader {
        let _ = r.join();
    }
}

/// Read PDUs from a blocking socket until one decodes; returns it
/// summarised: `Some(None)` for an ICResp, `Some(Some(cqe))` for a
/// CapsuleResp, `None` when the connection ended or sent anything else.
fn read_reply(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<Option<ferrofab_nvmeof_wire::wire::Cqe>> {
    loop {
        match pdu::decode(buf, Digests::default(), 1 << 20) {
            Ok(DecodeStatus::Complete(d)) => {
                let len = d.len;
                let reply = match d.pdu {
                    ferrofab_nvmeof_wire::wire::Pdu::IcResp(_) => Some(None),
                    ferrofab_nvmeof_wire::wire::Pdu::CapsuleResp(c) => Some(Some(c)),
                    _ => None,
                };
                buf.drain(..len);
                return reply;
            }
            Ok(DecodeStatus::Need(_)) => {}
            Err(_) => return None,
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Set up a queue the way a host does: ICReq, Connect (and for the admin
/// queue, CC.EN). Returns the socket and the controller ID.
fn remote_queue(addr: std::net::SocketAddr, qid: u16, cntlid: u16) -> Option<(TcpStream, u16)> {
    use std::io::Write;
    let mut sock = TcpStream::connect(addr).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let none = Digests::default();
    pdu::encode_ic_req(
        &mut out,
        &IcReq {
            pfv: 0,
            hpda: 0,
            digests: none,
            maxr2t: 0,
        },
    );
    sock.write_all(&out).ok()?;
    read_reply(&mut sock, &mut buf)?;
    let mut data = vec![0u8; 1024];
    data[16..18].copy_from_slice(&cntlid.to_le_bytes());
    data[256..256 + NQN_A.len()].copy_from_slice(NQN_A.as_bytes());
    data[512..512 + HOST.len()].copy_from_slice(HOST.as_bytes());
    let connect = Sqe {
        opcode: admin::FABRICS,
        cid: 1,
        nsid: u32::from(fctype::CONNECT),
        cdw10: u32::from(qid) << 16,
        cdw11: 31,
        cdw12: if qid == 0 { 30_000 } else { 0 },
        sgl: Sgl {
            address: 0,
            length: 1024,
            id: SGL_DATA_BLOCK_OFFSET,
        },
        ..Default::default()
    };
    sock.write_all(&capsule(&connect, &data, none)).ok()?;
    let cqe = read_reply(&mut sock, &mut buf)??;
    if cqe.status >> 1 != 0 {
        return None;
    }
    if qid == 0 {
        sock.write_all(&enable_pdu(none)).ok()?;
        read_reply(&mut sock, &mut buf)??;
    }
    Some((sock, cqe.result as u16))
}

/// An I/O queue of a real controller fed random, mutated and confined
/// commands: the only way generated writes reach the namespace.
fn remote_io_session(
    addr: std::net::SocketAddr,
    cntlid: u16,
    qid: u16,
    rng: &mut StdRng,
    spec: &Spec,
    totals: &RemoteTotals,
) -> bool {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let Some((mut sock, _)) = remote_queue(addr, qid, cntlid) else {
        return false;
    };
    totals.connections.fetch_add(1, Relaxed);
    let mut cmds = commands(rng, Digests::default(), spec);
    if rng.gen_ratio(1, 4) {
        corrupt(rng, &mut cmds);
    }
    let (stream, pdus) = confine(&cmds, &spec.write);
    let reader = sock.try_clone().ok().map(|mut r| {
        std::thread::spawn(move || {
            let _ = r.set_read_timeout(Some(Duration::from_secs(15)));
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        })
    });
    if sock.write_all(&stream).is_ok() {
        totals.bytes.fetch_add(stream.len() as u64, Relaxed);
        totals.pdus.fetch_add(pdus, Relaxed);
        totals.io_sessions.fetch_add(1, Relaxed);
    }
    std::thread::sleep(Duration::from_millis(rng.gen_range(1..10)));
    let _ = sock.shutdown(std::net::Shutdown::Both);
    if let Some(r) = reader {
        let _ = r.join();
    }
    true
}

/// One worker of the live run: alternately raw fuzzed connections and
/// I/O queues of its own controller, until `deadline`.
fn remote_worker(
    addr: std::net::SocketAddr,
    rng: &mut StdRng,
    spec: &Spec,
    totals: &RemoteTotals,
    deadline: Instant,
) {
    let mut admin: Option<(TcpStream, u16)> = None;
    let mut qid = 0u16;
    while Instant::now() < deadline {
        if rng.gen_bool(0.5) {
            remote_session(addr, rng, spec, totals);
            continue;
        }
        if admin.is_none() {
            admin = remote_queue(addr, 0, 0xFFFF);
        }
        let Some((_, cntlid)) = &admin else {
            continue;
        };
        qid = qid % 8 + 1;
        if !remote_io_session(addr, *cntlid, qid, rng, spec, totals) {
            // The controller is gone (or busy): start a new one.
            admin = None;
        }
    }
}

/// The live multi-connection run of `./tests/run bench` against a
/// `ferrofab-nvmeof serve` process (tests/suites/bench_fuzz.sh starts it
/// and checks its health and the namespace afterwards).
///
/// Knobs: FERROFAB_FUZZ_REMOTE (address, required), FERROFAB_FUZZ_SECS
/// (default 180), FERROFAB_FUZZ_CONNS (parallel connections, default 8),
/// FERROFAB_FUZZ_NS_BLOCKS (namespace size in 512-byte blocks),
/// FERROFAB_FUZZ_WRITE_LBAS (`START..END`, the only blocks written),
/// FERROFAB_FUZZ_FLOOD (idle connections opened every 10 s, default 300).
#[test]
#[ignore = "long run against a live target: tests/suites/bench_fuzz.sh"]
fn fuzz_remote_serve() {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(addr) = std::env::var("FERROFAB_FUZZ_REMOTE")
        .ok()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        panic!("set FERROFAB_FUZZ_REMOTE to the target's address");
    };
    let secs = env_u64("FERROFAB_FUZZ_SECS", 180);
    let conns = env_u64("FERROFAB_FUZZ_CONNS", 8);
    let flood = env_u64("FERROFAB_FUZZ_FLOOD", 300) as usize;
    let blocks = env_u64("FERROFAB_FUZZ_NS_BLOCKS", 8192);
    let write = std::env::var("FERROFAB_FUZZ_WRITE_LBAS")
        .ok()
        .and_then(|w| {
            let (a, b) = w.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(blocks / 4..blocks / 2);
    let spec = Spec { blocks, write };
    let seed = seed("fuzz_remote_serve");
    let totals = std::sync::Arc::new(RemoteTotals::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..conns {
        let (spec, totals) = (spec.clone(), totals.clone());
        workers.push(std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            remote_worker(addr, &mut rng, &spec, &totals, deadline);
        }));
    }
    // Idle connections in bursts: they must be capped and timed out
    // without disturbing the fuzzing connections.
    let flooder = {
        let totals = totals.clone();
        std::thread::spawn(move || {
            while Instant::now() + Duration::from_secs(10) < deadline {
                let held: Vec<TcpStream> = (0..flood)
                    .filter_map(|_| TcpStream::connect(addr).ok())
                    .collect();
                totals.idle.fetch_add(held.len() as u64, Relaxed);
                std::thread::sleep(Duration::from_secs(10));
                drop(held);
            }
        })
    };
    for w in workers {
        w.join().expect("fuzz worker");
    }
    flooder.join().expect("flooder");
    let took = start.elapsed();
    report("remote", totals.pdus.load(Relaxed), took);
    println!(
        "FUZZ-FIGURES remote-connections inputs={} secs={:.1} per_s={:.0}",
        totals.connections.load(Relaxed),
        took.as_secs_f64(),
        totals.connections.load(Relaxed) as f64 / took.as_secs_f64()
    );
    eprintln!(
        "fuzz_remote_serve: {} bytes sent, {} I/O queue sessions, {} idle connections, {} connects refused",
        totals.bytes.load(Relaxed),
        totals.io_sessions.load(Relaxed),
        totals.idle.load(Relaxed),
        totals.refused.load(Relaxed)
    );
    assert!(totals.connections.load(Relaxed) > 0);
    assert!(
        totals.io_sessions.load(Relaxed) > 0,
        "no I/O queue could be set up"
    );
    check_remote_serves(addr, &spec);
}

/// After the run a well-behaved host still connects and reads the whole
/// namespace.
fn check_remote_serves(addr: std::net::SocketAddr, spec: &Spec) {
    use ferrofab_nvmeof_host::{BlockIo, ConnectOptions, Controller, HostIdentity};
    let id = HostIdentity::new(HOST, uuid::Uuid::new_v4()).expect("host identity");
    let mut o = ConnectOptions::new(addr.to_string(), NQN_A, id);
    o.nr_io_queues = 1;
    let ctrl = Controller::connect(o).expect("a real host connects after the run");
    let ns = ctrl.namespace(1).expect("namespace 1");
    let mut buf = vec![0u8; (spec.blocks * 512) as usize];
    ns.read_at(&mut buf, 0)
        .expect("reading the namespace after the run");
    let _ = ctrl.disconnect();
}

#[test]
fn confine_cuts_at_the_first_write_outside_the_window() {
    let d = Digests::default();
    let mut stream = Vec::new();
    pdu::encode_ic_req(
        &mut stream,
        &IcReq {
            pfv: 0,
            hpda: 0,
            digests: d,
            maxr2t: 0,
        },
    );
    let write = |slba: u64, nlb: u32| Sqe {
        opcode: nvm::WRITE,
        nsid: 1,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: nlb - 1,
        sgl: Sgl {
            address: 0,
            length: nlb * 512,
            id: SGL_TRANSPORT_DATA_BLOCK,
        },
        ..Default::default()
    };
    stream.extend(capsule(&write(100, 8), &[], d));
    let inside = stream.len();
    stream.extend(capsule(&write(107, 2), &[], d));
    stream.extend(capsule(&write(0, 1), &[], d));
    let (kept, pdus) = confine(&stream, &(100..108));
    assert_eq!((kept.len(), pdus), (inside, 2));
    // Deallocate needs its ranges in the capsule to be judged.
    let dsm = Sqe {
        opcode: nvm::DATASET_MANAGEMENT,
        cdw11: 1 << 2,
        ..Default::default()
    };
    assert!(!stays_inside(&dsm, &[], &(100..108)));
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&8u32.to_le_bytes());
    range[8..16].copy_from_slice(&100u64.to_le_bytes());
    assert!(stays_inside(&dsm, &range, &(100..108)));
    range[8..16].copy_from_slice(&101u64.to_le_bytes());
    assert!(!stays_inside(&dsm, &range, &(100..108)));
}
