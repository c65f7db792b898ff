//! A small scripted NVMe/TCP target for the initiator's tests.
//!
//! It serves one subsystem with one RAM namespace and a discovery
//! controller, and has knobs the real target lacks: small MAXH2CDATA and
//! R2T chunks (so writes take several R2Ts and H2CData PDUs), C2H data in
//! several PDUs, dropping every connection, refusing new ones, resizing
//! with an asynchronous event, answering I/O slowly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use ferrofab_nvmeof_wire::spec::identify::{
    encode_discovery_log, encode_ns_descriptors, encode_ns_list, DiscoveryEntry,
    IdentifyController, IdentifyNamespace,
};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{get_str_nul, DISCOVERY_NQN};
use ferrofab_nvmeof_wire::wire::pdu::{
    self, decode, encode_capsule_resp, encode_data_pdu, encode_ic_resp, encode_r2t, flags, pdu_type,
};
use ferrofab_nvmeof_wire::wire::{Cqe, DecodeStatus, Digests, IcResp, Pdu, R2t, Sqe};

pub const SUBNQN: &str = "nqn.2026-11.io.ferrofab:fake";
pub const BS: usize = 512;

pub struct Knobs {
    pub maxh2cdata: u32,
    /// Largest R2T; longer writes get several.
    pub r2t_chunk: usize,
    /// Largest C2HData PDU.
    pub c2h_chunk: usize,
    /// Use the SUCCESS flag instead of a CapsuleResp for reads.
    pub c2h_success: bool,
    pub ioccsz: u32,
    pub mdts: u8,
    pub allowed_host: Option<String>,
    /// Sleep this long before executing each I/O command (a slow device).
    pub io_delay: std::time::Duration,
    /// Write each read's PDUs in pieces of this many bytes with a short
    /// pause between (0: in one write), so the host finds PDUs cut in the
    /// middle of their header or data.
    pub c2h_trickle: usize,
    /// Write each PDU of a read in two pieces cut this many bytes after
    /// its start, with a short pause after each (0: off), so the host
    /// finds a common header without the rest of the PDU header.
    pub c2h_cut_at: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            maxh2cdata: 8192,
            r2t_chunk: 32 * 1024,
            c2h_chunk: 16 * 1024,
            c2h_success: false,
            ioccsz: 260, // 4096 bytes in capsule
            mdts: 5,     // 128 KiB
            allowed_host: None,
            io_delay: std::time::Duration::ZERO,
            c2h_trickle: 0,
            c2h_cut_at: 0,
        }
    }
}

#[derive(Default)]
struct CtrlState {
    cc: u32,
    aer: Option<(u16, Arc<Mutex<TcpStream>>, Digests)>,
    event_pending: bool,
}

pub struct FakeTarget {
    pub addr: String,
    pub data: Arc<Mutex<Vec<u8>>>,
    knobs: Arc<Knobs>,
    ctrls: Arc<Mutex<HashMap<u16, CtrlState>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    next_cntlid: Arc<AtomicU16>,
    pub writes: Arc<AtomicU64>,
    pub commands: Arc<AtomicU64>,
    /// Drop the connection instead of answering the Nth I/O command.
    pub drop_at_command: Arc<AtomicU64>,
    /// Never answer the Nth I/O command (a hung target).
    pub swallow_at_command: Arc<AtomicU64>,
    /// Damage the data digest of the next C2HData PDU on an I/O queue.
    pub corrupt_next_c2h: Arc<AtomicBool>,
    /// In the next read sent as several C2HData PDUs, give the second PDU
    /// the first one's DATAO (a range sent twice and one never sent, the
    /// byte count still right): a broken target.
    pub repeat_next_datao: Arc<AtomicBool>,
}

impl FakeTarget {
    pub fn start(blocks: usize, knobs: Knobs) -> FakeTarget {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = FakeTarget {
            addr: l.local_addr().unwrap().to_string(),
            data: Arc::new(Mutex::new(vec![0u8; blocks * BS])),
            knobs: Arc::new(knobs),
            ctrls: Arc::default(),
            conns: Arc::default(),
            refusing: Arc::default(),
            next_cntlid: Arc::new(AtomicU16::new(1)),
            writes: Arc::default(),
            commands: Arc::default(),
            drop_at_command: Arc::new(AtomicU64::new(u64::MAX)),
            swallow_at_command: Arc::new(AtomicU64::new(u64::MAX)),
            corrupt_next_c2h: Arc::default(),
            repeat_next_datao: Arc::default(),
        };
        let srv = t.clone_handles();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                if srv.refusing.load(Ordering::SeqCst) {
                    let _ = s.shutdown(Shutdown::Both);
                    continue;
                }
                srv.conns.lock().unwrap().push(s.try_clone().unwrap());
                let c = srv.clone_handles();
                thread::spawn(move || {
                    let _ = c.serve(s);
                });
            }
        });
        t
    }

    fn clone_handles(&self) -> FakeTarget {
        FakeTarget {
            addr: self.addr.clone(),
            data: self.data.clone(),
            knobs: self.knobs.clone(),
            ctrls: self.ctrls.clone(),
            conns: self.conns.clone(),
            refusing: self.refusing.clone(),
            next_cntlid: self.next_cntlid.clone(),
            writes: self.writes.clone(),
            commands: self.commands.clone(),
            drop_at_command: self.drop_at_command.clone(),
            swallow_at_command: self.swallow_at_command.clone(),
            corrupt_next_c2h: self.corrupt_next_c2h.clone(),
            repeat_next_datao: self.repeat_next_datao.clone(),
        }
    }

    /// Reset every connection (a target crash or network cut).
    pub fn drop_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.ctrls.lock().unwrap().clear();
    }

    pub fn set_refusing(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Grow or shrink the namespace and raise a namespace-attribute event.
    pub fn resize(&self, blocks: usize) {
        self.data.lock().unwrap().resize(blocks * BS, 0);
        let mut ctrls = self.ctrls.lock().unwrap();
        for c in ctrls.values_mut() {
            match c.aer.take() {
                Some((cid, w, d)) => {
                    let cqe = Cqe {
                        cid,
                        result: 0x0004_0002,
                        ..Default::default()
                    };
                    let mut out = Vec::new();
                    encode_capsule_resp(&mut out, &cqe, d);
                    let _ = w.lock().unwrap().write_all(&out);
                }
                None => c.event_pending = true,
            }
        }
    }

    fn serve(&self, mut s: TcpStream) -> std::io::Result<()> {
        s.set_nodelay(true)?;
        let writer = Arc::new(Mutex::new(s.try_clone()?));
        let mut buf = Vec::new();
        let mut digests = Digests::default();
        let mut qid = 0u16;
        let mut cntlid = 0u16;
        // Writes waiting for their data: cid -> (sqe, received data).
        let mut writes: HashMap<u16, (Sqe, Vec<u8>)> = HashMap::new();
        let mut chunk = [0u8; 65536];
        loop {
            let (len, action) = match decode(&buf, digests, 1 << 22) {
                Ok(DecodeStatus::Need(_)) => {
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Ok(DecodeStatus::Complete(d)) => (d.len, self.classify(d.pdu)),
                Err(e) => panic!("fake target: bad PDU from the host: {e}"),
            };
            buf.drain(..len);
            let send = |out: &[u8]| writer.lock().unwrap().write_all(out);
            match action {
                Action::IcReq(d) => {
                    digests = d;
                    let mut out = Vec::new();
                    encode_ic_resp(
                        &mut out,
                        &IcResp {
                            pfv: 0,
                            cpda: 0,
                            digests: d,
                            maxh2cdata: self.knobs.maxh2cdata,
                        },
                    );
                    send(&out)?;
                }
                Action::Cmd(sqe, data) => {
                    if sqe.opcode == 0x7F && sqe.fctype() == 1 {
                        qid = (sqe.cdw10 >> 16) as u16;
                        let (st, id) = self.connect(&sqe, &data);
                        cntlid = id;
                        self.respond(&send, digests, sqe.cid, qid, st, u64::from(id))?;
                        continue;
                    }
                    if qid > 0 {
                        let n = self.commands.fetch_add(1, Ordering::SeqCst) + 1;
                        if n == self.drop_at_command.load(Ordering::SeqCst) {
                            let _ = s.shutdown(Shutdown::Both);
                            return Ok(());
                        }
                        if n == self.swallow_at_command.load(Ordering::SeqCst) {
                            continue;
                        }
                    }
                    if sqe.opcode == 0x01 && qid > 0 && sqe.sgl.id == 0x5A {
                        let len = sqe.sgl.length as usize;
                        writes.insert(sqe.cid, (sqe, Vec::with_capacity(len)));
                        self.send_r2t(&send, digests, sqe.cid, 0, len)?;
                        continue;
                    }
                    self.command(&send, &writer, digests, qid, cntlid, sqe, &data)?;
                }
                Action::H2c(cid, off, data) => {
                    let Some((sqe, got)) = writes.get_mut(&cid) else {
                        panic!("H2CData for unknown cid {cid}")
                    };
                    assert_eq!(off as usize, got.len(), "H2C offsets are sequential");
                    got.extend_from_slice(&data);
                    let total = sqe.sgl.length as usize;
                    let chunk = self.knobs.r2t_chunk;
                    if got.len() == total {
                        let (sqe, got) = writes.remove(&cid).unwrap();
                        self.command(&send, &writer, digests, qid, cntlid, sqe, &got)?;
                    } else if got.len() % chunk == 0 {
                        self.send_r2t(&send, digests, cid, got.len(), total)?;
                    }
                }
            }
        }
    }

    fn send_r2t(
        &self,
        send: &dyn Fn(&[u8]) -> std::io::Result<()>,
        d: Digests,
        cid: u16,
        off: usize,
        total: usize,
    ) -> std::io::Result<()> {
        let mut out = Vec::new();
        let r = R2t {
            cccid: cid,
            ttag: cid,
            r2to: off as u32,
            r2tl: (total - off).min(self.knobs.r2t_chunk) as u32,
        };
        encode_r2t(&mut out, &r, d);
        send(&out)
    }

    fn classify(&self, p: Pdu<'_>) -> Action {
        match p {
            Pdu::IcReq(r) => Action::IcReq(r.digests),
            Pdu::CapsuleCmd { sqe, data } => Action::Cmd(sqe, data.to_vec()),
            Pdu::H2cData { hdr, data, .. } => Action::H2c(hdr.cccid, hdr.datao, data.to_vec()),
            other => panic!("fake target: unexpected {other:?}"),
        }
    }

    fn connect(&self, sqe: &Sqe, data: &[u8]) -> (Status, u16) {
        let subnqn = get_str_nul(&data[256..512]);
        let hostnqn = get_str_nul(&data[512..768]);
        if subnqn != SUBNQN && subnqn != DISCOVERY_NQN {
            return (Status::CONNECT_INVALID_PARAMETERS, 0);
        }
        if let Some(h) = &self.knobs.allowed_host {
            if *h != hostnqn && subnqn == SUBNQN {
                return (Status::CONNECT_INVALID_HOST, 0);
            }
        }
        let qid = sqe.cdw10 >> 16;
        if qid == 0 {
            let id = self.next_cntlid.fetch_add(1, Ordering::SeqCst);
            self.ctrls.lock().unwrap().insert(id, CtrlState::default());
            (Status::SUCCESS, id)
        } else {
            let id = u16::from_le_bytes([data[16], data[17]]);
            if self.ctrls.lock().unwrap().contains_key(&id) {
                (Status::SUCCESS, id)
            } else {
                (Status::CONNECT_INVALID_PARAMETERS, 0)
            }
        }
    }

    fn respond(
        &self,
        send: &dyn Fn(&[u8]) -> std::io::Result<()>,
        d: Digests,
        cid: u16,
        qid: u16,
        st: Status,
        result: u64,
    ) -> std::io::Result<()> {
        let mut out = Vec::new();
        let mut cqe = Cqe {
            cid,
            sqid: qid,
            result,
            status: st.to_field(),
            ..Default::default()
        };
        if st == Status::CONNECT_INVALID_PARAMETERS {
            cqe.result = (1 << 16) | 256;
        }
        encode_capsule_resp(&mut out, &cqe, d);
        send(&out)
    }

    /// Send `data` as C2HData PDUs, then a CapsuleResp unless SUCCESS is used.
    fn send_data(
        &self,
        send: &dyn Fn(&[u8]) -> std::io::Result<()>,
        d: Digests,
        cid: u16,
        qid: u16,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut out = Vec::new();
        // Where each PDU starts in `out`.
        let mut starts = Vec::new();
        let chunks: Vec<&[u8]> = data.chunks(self.knobs.c2h_chunk).collect();
        let success = self.knobs.c2h_success && qid > 0;
        let repeat =
            qid > 0 && chunks.len() > 1 && self.repeat_next_datao.swap(false, Ordering::SeqCst);
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut fl = if last { flags::LAST_PDU } else { 0 };
            if last && success {
                fl |= flags::SUCCESS;
            }
            let hdr = pdu::DataHeader {
                cccid: cid,
                ttag: 0,
                datao: (if repeat && i == 1 {
                    0
                } else {
                    i * self.knobs.c2h_chunk
                }) as u32,
                datal: 0,
            };
            starts.push(out.len());
            encode_data_pdu(&mut out, pdu_type::C2H_DATA, &hdr, fl, c, d);
            if d.data && qid > 0 && self.corrupt_next_c2h.swap(false, Ordering::SeqCst) {
                let n = out.len();
                out[n - 1] ^= 0xFF;
            }
        }
        if !success {
            let cqe = Cqe {
                cid,
                sqid: qid,
                ..Default::default()
            };
            starts.push(out.len());
            encode_capsule_resp(&mut out, &cqe, d);
        }
        let cut = self.knobs.c2h_cut_at;
        if cut > 0 && qid > 0 {
            starts.push(out.len());
            for w in starts.windows(2) {
                let mid = (w[0] + cut).min(w[1]);
                for piece in [&out[w[0]..mid], &out[mid..w[1]]] {
                    send(piece)?;
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            }
            return Ok(());
        }
        if self.knobs.c2h_trickle > 0 && qid > 0 {
            for piece in out.chunks(self.knobs.c2h_trickle) {
                send(piece)?;
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            return Ok(());
        }
        send(&out)
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &self,
        send: &dyn Fn(&[u8]) -> std::io::Result<()>,
        writer: &Arc<Mutex<TcpStream>>,
        d: Digests,
        qid: u16,
        cntlid: u16,
        sqe: Sqe,
        data: &[u8],
    ) -> std::io::Result<()> {
        let ok = |r: u64| self.respond(send, d, sqe.cid, qid, Status::SUCCESS, r);
        if qid > 0 {
            if !self.knobs.io_delay.is_zero() {
                thread::sleep(self.knobs.io_delay);
            }
            let bytes = |nlb: u32| nlb as usize * BS;
            let off = sqe.slba() as usize * BS;
            let size = self.data.lock().unwrap().len();
            match sqe.opcode {
                0x02 => {
                    let n = bytes(sqe.nlb());
                    if off + n > size {
                        return self.respond(send, d, sqe.cid, qid, Status::LBA_OUT_OF_RANGE, 0);
                    }
                    let v = self.data.lock().unwrap()[off..off + n].to_vec();
                    return self.send_data(send, d, sqe.cid, qid, &v);
                }
                0x01 => {
                    assert_eq!(data.len(), bytes(sqe.nlb()), "write data length");
                    self.data.lock().unwrap()[off..off + data.len()].copy_from_slice(data);
                    self.writes.fetch_add(1, Ordering::SeqCst);
                    return ok(0);
                }
                0x08 => {
                    let n = bytes(sqe.nlb());
                    self.data.lock().unwrap()[off..off + n].fill(0);
                    return ok(0);
                }
                0x09 => {
                    for r in data.chunks_exact(16) {
                        let nlb = u32::from_le_bytes(r[4..8].try_into().unwrap()) as usize;
                        let lba = u64::from_le_bytes(r[8..16].try_into().unwrap()) as usize;
                        self.data.lock().unwrap()[lba * BS..(lba + nlb) * BS].fill(0xDD);
                    }
                    return ok(0);
                }
                0x00 => return ok(0),
                _ => return self.respond(send, d, sqe.cid, qid, Status::INVALID_OPCODE, 0),
            }
        }
        match (sqe.opcode, sqe.fctype()) {
            (0x7F, 0x04) => {
                let v = match sqe.cdw11 {
                    0x00 => (1u64 << 37) | (15 << 24) | 127,
                    0x08 => 0x0001_0400,
                    0x14 => u64::from(self.ctrl(cntlid, |c| c.cc)),
                    0x1C => {
                        let cc = self.ctrl(cntlid, |c| c.cc);
                        let mut v = u64::from(cc & 1);
                        if (cc >> 14) & 3 == 1 {
                            v |= 0b10 << 2;
                        }
                        v
                    }
                    _ => 0,
                };
                ok(v)
            }
            (0x7F, 0x00) => {
                self.ctrl_mut(cntlid, |c| c.cc = sqe.cdw12);
                ok(0)
            }
            (0x06, _) => {
                let page = match sqe.cdw10 & 0xFF {
                    1 => IdentifyController {
                        cntlid,
                        ver: 0x10400,
                        oaes: 1 << 8,
                        aerl: 3,
                        kas: 10,
                        sqes: 0x66,
                        cqes: 0x44,
                        maxcmd: 128,
                        nn: 1,
                        oncs: 0xC,
                        sgls: 0x10_0001,
                        subnqn: SUBNQN.into(),
                        ioccsz: self.knobs.ioccsz,
                        iorcsz: 1,
                        mdts: self.knobs.mdts,
                        ..Default::default()
                    }
                    .encode(),
                    2 => encode_ns_list([1], sqe.nsid),
                    0 => {
                        let blocks = (self.data.lock().unwrap().len() / BS) as u64;
                        IdentifyNamespace {
                            nsze: blocks,
                            ncap: blocks,
                            nuse: blocks,
                            nguid: [0x42; 16],
                            lbads: 9,
                            ..Default::default()
                        }
                        .encode()
                    }
                    3 => encode_ns_descriptors(&[0x42; 16], &[0x43; 16]),
                    _ => return self.respond(send, d, sqe.cid, qid, Status::INVALID_FIELD, 0),
                };
                self.send_data(send, d, sqe.cid, qid, &page)
            }
            (0x09, _) => ok(if sqe.cdw10 & 0xFF == 7 {
                0x0003_0003
            } else {
                0
            }),
            (0x18, _) => ok(0),
            (0x0C, _) => {
                let fire = self.ctrl_mut(cntlid, |c| {
                    if c.event_pending {
                        c.event_pending = false;
                        true
                    } else {
                        c.aer = Some((sqe.cid, writer.clone(), d));
                        false
                    }
                });
                if fire {
                    ok(0x0004_0002)
                } else {
                    Ok(())
                }
            }
            (0x02, _) => {
                let lid = sqe.cdw10 & 0xFF;
                let len = (((sqe.cdw10 >> 16) | (sqe.cdw11 << 16)) as usize + 1) * 4;
                let off = (u64::from(sqe.cdw12) | (u64::from(sqe.cdw13) << 32)) as usize;
                let log = match lid {
                    0x70 => {
                        let (host, port) = self.addr.rsplit_once(':').unwrap();
                        let e = DiscoveryEntry {
                            trtype: 3,
                            adrfam: 1,
                            subtype: 2,
                            treq: 0,
                            portid: 1,
                            cntlid: 0xFFFF,
                            asqsz: 32,
                            trsvcid: port.into(),
                            subnqn: SUBNQN.into(),
                            traddr: host.into(),
                        };
                        let entries: Vec<_> = (0..5)
                            .map(|i| DiscoveryEntry {
                                portid: i,
                                ..e.clone()
                            })
                            .collect();
                        encode_discovery_log(7, &entries)
                    }
                    _ => {
                        let mut v = vec![0u8; 4096];
                        v[0..4].copy_from_slice(&1u32.to_le_bytes());
                        v
                    }
                };
                let mut page = vec![0u8; len];
                if off < log.len() {
                    let n = len.min(log.len() - off);
                    page[..n].copy_from_slice(&log[off..off + n]);
                }
                self.send_data(send, d, sqe.cid, qid, &page)
            }
            _ => self.respond(send, d, sqe.cid, qid, Status::INVALID_OPCODE, 0),
        }
    }

    fn ctrl<T>(&self, id: u16, f: impl FnOnce(&CtrlState) -> T) -> T {
        let m = self.ctrls.lock().unwrap();
        f(m.get(&id).unwrap_or(&CtrlState::default()))
    }

    fn ctrl_mut<T: Default>(&self, id: u16, f: impl FnOnce(&mut CtrlState) -> T) -> T {
        let mut m = self.ctrls.lock().unwrap();
        m.get_mut(&id).map(f).unwrap_or_default()
    }
}

enum Action {
    IcReq(Digests),
    Cmd(Sqe, Vec<u8>),
    H2c(u16, u32, Vec<u8>),
}
