//! NVMe/TCP protocol data units: framing, validation and encoding.
//!
//! Every PDU starts with an 8-byte common header (type, flags, HLEN, PDO,
//! PLEN), followed by the type's PDU-specific header, an optional header
//! digest, padding up to PDO, optional data and an optional data digest.
//!
//! [`decode`] works on a receive buffer that may hold a partial PDU: it says
//! how many more bytes it needs, or hands back one validated PDU that borrows
//! its data from the buffer, so payloads are never copied here. Anything a
//! peer can get wrong is a [`PduError`] that says which termination code the
//! connection must be ended with; nothing here panics on input.

use super::command::{Cqe, Sqe, CQE_LEN, SQE_LEN};
use super::digest::{digest_bytes, DIGEST_LEN};
use super::{get_u16, get_u32};

/// Length of the common header.
pub const CH_LEN: usize = 8;

/// PDU types.
pub mod pdu_type {
    pub const IC_REQ: u8 = 0x00;
    pub const IC_RESP: u8 = 0x01;
    pub const H2C_TERM_REQ: u8 = 0x02;
    pub const C2H_TERM_REQ: u8 = 0x03;
    pub const CAPSULE_CMD: u8 = 0x04;
    pub const CAPSULE_RESP: u8 = 0x05;
    pub const H2C_DATA: u8 = 0x06;
    pub const C2H_DATA: u8 = 0x07;
    pub const R2T: u8 = 0x09;
}

/// Flag bits of the common header.
pub mod flags {
    /// A header digest follows the PDU header.
    pub const HDGSTF: u8 = 0x01;
    /// A data digest follows the data.
    pub const DDGSTF: u8 = 0x02;
    /// Last data PDU of a transfer (H2CData, C2HData).
    pub const LAST_PDU: u8 = 0x04;
    /// C2HData only: the command succeeded and no CapsuleResp follows.
    /// Allowed only when SQ flow control is disabled.
    pub const SUCCESS: u8 = 0x08;
}

/// Fatal error status values carried by a termination request.
pub mod fes {
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// HLEN of the connection-initialisation PDUs.
pub const IC_HLEN: usize = 128;
/// HLEN of a CapsuleCmd.
pub const CAPSULE_CMD_HLEN: usize = CH_LEN + SQE_LEN;
/// HLEN of a CapsuleResp.
pub const CAPSULE_RESP_HLEN: usize = CH_LEN + CQE_LEN;
/// HLEN of H2CData, C2HData, R2T and termination requests.
pub const SHORT_HLEN: usize = 24;
/// Largest termination request: the header plus up to 128 bytes of the
/// PDU header that caused it.
pub const TERM_REQ_MAX_PLEN: usize = 152;

/// The expected HLEN of each known PDU type.
fn expected_hlen(pdu_type: u8) -> Option<usize> {
    use pdu_type::*;
    match pdu_type {
        IC_REQ | IC_RESP => Some(IC_HLEN),
        H2C_TERM_REQ | C2H_TERM_REQ | H2C_DATA | C2H_DATA | R2T => Some(SHORT_HLEN),
        CAPSULE_CMD => Some(CAPSULE_CMD_HLEN),
        CAPSULE_RESP => Some(CAPSULE_RESP_HLEN),
        _ => None,
    }
}

/// Whether digests may be attached to PDUs of this type. The connection
/// set-up and termination PDUs never carry them.
fn digests_apply(pdu_type: u8) -> bool {
    use pdu_type::*;
    !matches!(pdu_type, IC_REQ | IC_RESP | H2C_TERM_REQ | C2H_TERM_REQ)
}

/// Whether PDUs of this type may carry data.
fn carries_data(pdu_type: u8) -> bool {
    use pdu_type::*;
    matches!(
        pdu_type,
        CAPSULE_CMD | H2C_DATA | C2H_DATA | H2C_TERM_REQ | C2H_TERM_REQ
    )
}

/// Digests negotiated on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

impl Digests {
    fn header_len(self) -> usize {
        if self.header {
            DIGEST_LEN
        } else {
            0
        }
    }

    fn data_len(self) -> usize {
        if self.data {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// The DGST byte of ICReq/ICResp.
    pub fn to_bits(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }

    pub fn from_bits(bits: u8) -> Digests {
        Digests {
            header: bits & 1 != 0,
            data: bits & 2 != 0,
        }
    }
}

/// The common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    pub fn parse(b: &[u8]) -> Option<CommonHeader> {
        if b.len() < CH_LEN {
            return None;
        }
        Some(CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: get_u32(b, 4),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.pdu_type, self.flags, self.hlen, self.pdo]);
        out.extend_from_slice(&self.plen.to_le_bytes());
    }
}

/// ICReq: the host opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    pub pfv: u16,
    /// Host PDU data alignment, in dwords minus one.
    pub hpda: u8,
    pub digests: Digests,
    /// Maximum outstanding R2Ts per command, minus one.
    pub maxr2t: u32,
}

/// ICResp: the controller accepts a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    pub pfv: u16,
    /// Controller PDU data alignment, in dwords minus one.
    pub cpda: u8,
    pub digests: Digests,
    /// Largest data payload of one H2CData PDU, in bytes.
    pub maxh2cdata: u32,
}

/// The PDU-specific header shared by H2CData and C2HData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataHeader {
    /// The command this data belongs to.
    pub cccid: u16,
    /// Transfer tag from the R2T (H2CData only; reserved in C2HData).
    pub ttag: u16,
    /// Offset of this PDU's data within the command's data.
    pub datao: u32,
    pub datal: u32,
}

/// Ready to Transfer: the controller asks for a range of a write's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct R2t {
    pub cccid: u16,
    pub ttag: u16,
    pub r2to: u32,
    pub r2tl: u32,
}

/// A termination request, host to controller or controller to host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq<'a> {
    pub fes: u16,
    /// Fatal error information: the byte offset of the offending field.
    pub fei: u32,
    /// The header of the PDU that caused the termination.
    pub header: &'a [u8],
}

/// One decoded PDU, borrowing its data from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu<'a> {
    IcReq(IcReq),
    IcResp(IcResp),
    H2cTermReq(TermReq<'a>),
    C2hTermReq(TermReq<'a>),
    CapsuleCmd {
        sqe: Sqe,
        data: &'a [u8],
    },
    CapsuleResp(Cqe),
    H2cData {
        hdr: DataHeader,
        last: bool,
        data: &'a [u8],
    },
    C2hData {
        hdr: DataHeader,
        flags: u8,
        data: &'a [u8],
    },
    R2t(R2t),
}

/// The result of decoding one complete PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub pdu: Pdu<'a>,
    /// Bytes of the buffer this PDU occupied.
    pub len: usize,
    /// False when the data digest did not match. The PDU is still framed
    /// correctly, so the connection can go on: the command fails with a
    /// transient transport error instead.
    pub data_digest_ok: bool,
}

/// What [`decode`] found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeStatus<'a> {
    /// At least this many bytes in total are needed before the next PDU can
    /// be decoded.
    Need(usize),
    Complete(Decoded<'a>),
}

/// A PDU that breaks the protocol. The connection must be terminated with
/// [`PduError::fes`] and [`PduError::fei`], then closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("unknown PDU type {0:#04x}")]
    UnknownType(u8),
    #[error("PDU type {pdu_type:#04x} has HLEN {hlen}, expected {expected}")]
    BadHlen {
        pdu_type: u8,
        hlen: u8,
        expected: usize,
    },
    #[error("PDU type {pdu_type:#04x} has PLEN {plen}, which is {why}")]
    BadPlen {
        pdu_type: u8,
        plen: u32,
        why: &'static str,
    },
    #[error("PDU type {pdu_type:#04x} has PDO {pdo}, which is {why}")]
    BadPdo {
        pdu_type: u8,
        pdo: u8,
        why: &'static str,
    },
    #[error("PDU type {pdu_type:#04x} has digest flags {flags:#04x} but the connection negotiated {negotiated:?}")]
    BadDigestFlags {
        pdu_type: u8,
        flags: u8,
        negotiated: Digests,
    },
    #[error("PDU type {pdu_type:#04x} is {plen} bytes, more than the limit of {limit}")]
    TooLarge {
        pdu_type: u8,
        plen: u32,
        limit: usize,
    },
    #[error("header digest mismatch on PDU type {pdu_type:#04x}")]
    HeaderDigest { pdu_type: u8 },
    #[error("PDU data length {datal} disagrees with the {framed} bytes framed by PLEN")]
    DataLength { datal: u32, framed: usize },
}

impl PduError {
    /// The fatal error status to put in the termination request.
    pub fn fes(&self) -> u16 {
        match self {
            PduError::HeaderDigest { .. } => fes::HEADER_DIGEST_ERROR,
            PduError::TooLarge { .. } => fes::DATA_LIMIT_EXCEEDED,
            _ => fes::INVALID_HEADER_FIELD,
        }
    }

    /// The byte offset of the offending field within the PDU header.
    pub fn fei(&self) -> u32 {
        match self {
            PduError::UnknownType(_) => 0,
            PduError::BadDigestFlags { .. } => 1,
            PduError::BadHlen { .. } => 2,
            PduError::BadPdo { .. } => 3,
            PduError::BadPlen { .. } | PduError::TooLarge { .. } => 4,
            PduError::HeaderDigest { .. } => 0,
            PduError::DataLength { .. } => 16,
        }
    }
}

/// Decode the next PDU at the start of `buf`.
///
/// `max_plen` bounds the size of any PDU this side will accept, so that a
/// peer cannot make us buffer unbounded data. Until the connection is
/// initialised `digests` must be the default (none).
pub fn decode(buf: &[u8], digests: Digests, max_plen: usize) -> Result<DecodeStatus<'_>, PduError> {
    let Some(ch) = CommonHeader::parse(buf) else {
        return Ok(DecodeStatus::Need(CH_LEN));
    };
    let frame = validate_frame(&ch, digests, max_plen)?;
    let plen = ch.plen as usize;
    if buf.len() < plen {
        return Ok(DecodeStatus::Need(plen));
    }
    let pdu_bytes = &buf[..plen];
    let hlen = ch.hlen as usize;
    if frame.hdgst_len > 0 && !digest_matches_at(pdu_bytes, hlen) {
        return Err(PduError::HeaderDigest {
            pdu_type: ch.pdu_type,
        });
    }
    let (data, data_digest_ok) = match frame.data_range {
        Some((start, end)) => {
            let data = &pdu_bytes[start..end];
            let ok = frame.ddgst_len == 0 || pdu_bytes[end..end + DIGEST_LEN] == digest_bytes(data);
            (data, ok)
        }
        None => (&pdu_bytes[0..0], true),
    };
    let pdu = parse_specific(&ch, &pdu_bytes[..hlen], data)?;
    Ok(DecodeStatus::Complete(Decoded {
        pdu,
        len: plen,
        data_digest_ok,
    }))
}

/// The framing of a data PDU (H2CData or C2HData) whose header has arrived,
/// validated as [`decode`] validates it, so that a receiver can read a
/// large payload straight into its destination instead of buffering the
/// whole PDU first (one copy less per byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPduHead {
    pub pdu_type: u8,
    pub flags: u8,
    pub hdr: DataHeader,
    /// Where the data starts within the PDU (PDO).
    pub data_start: usize,
    /// Length of the data digest after the data (0 or 4).
    pub ddgst_len: usize,
    /// The whole PDU's length (PLEN).
    pub plen: usize,
}

/// If `buf` starts with an H2CData or C2HData PDU that carries data and
/// whose bytes up to PDO have arrived, its framing (errors as [`decode`]
/// reports them); `None` for another type or while the header is
/// incomplete.
pub fn decode_data_head(
    buf: &[u8],
    digests: Digests,
    max_plen: usize,
) -> Result<Option<DataPduHead>, PduError> {
    let Some(ch) = CommonHeader::parse(buf) else {
        return Ok(None);
    };
    if !matches!(ch.pdu_type, pdu_type::H2C_DATA | pdu_type::C2H_DATA) {
        return Ok(None);
    }
    let frame = validate_frame(&ch, digests, max_plen)?;
    let Some((start, end)) = frame.data_range else {
        return Ok(None);
    };
    let hlen = ch.hlen as usize;
    if buf.len() < start.max(hlen + frame.hdgst_len) {
        return Ok(None);
    }
    if frame.hdgst_len > 0 && !digest_matches_at(buf, hlen) {
        return Err(PduError::HeaderDigest {
            pdu_type: ch.pdu_type,
        });
    }
    let hdr = DataHeader {
        cccid: get_u16(buf, 8),
        ttag: get_u16(buf, 10),
        datao: get_u32(buf, 12),
        datal: get_u32(buf, 16),
    };
    if hdr.datal as usize != end - start {
        return Err(PduError::DataLength {
            datal: hdr.datal,
            framed: end - start,
        });
    }
    Ok(Some(DataPduHead {
        pdu_type: ch.pdu_type,
        flags: ch.flags,
        hdr,
        data_start: start,
        ddgst_len: frame.ddgst_len,
        plen: ch.plen as usize,
    }))
}

/// Where the pieces of a PDU lie, worked out from its common header.
struct Frame {
    hdgst_len: usize,
    ddgst_len: usize,
    /// Start and end of the data, if the PDU carries any.
    data_range: Option<(usize, usize)>,
}

fn validate_frame(ch: &CommonHeader, digests: Digests, max_plen: usize) -> Result<Frame, PduError> {
    let pdu_type = ch.pdu_type;
    let expected = expected_hlen(pdu_type).ok_or(PduError::UnknownType(pdu_type))?;
    if ch.hlen as usize != expected {
        return Err(PduError::BadHlen {
            pdu_type,
            hlen: ch.hlen,
            expected,
        });
    }
    let plen = ch.plen as usize;
    let limit = if matches!(pdu_type, pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ) {
        TERM_REQ_MAX_PLEN
    } else {
        max_plen.max(IC_HLEN)
    };
    if plen > limit {
        return Err(PduError::TooLarge {
            pdu_type,
            plen: ch.plen,
            limit,
        });
    }
    let with_digests = digests_apply(pdu_type);
    let hdgst_len = if with_digests {
        digests.header_len()
    } else {
        0
    };
    check_digest_flags(ch, digests, with_digests)?;
    let header_end = expected + hdgst_len;
    if plen < header_end {
        return Err(PduError::BadPlen {
            pdu_type,
            plen: ch.plen,
            why: "shorter than its header",
        });
    }
    if plen == header_end {
        return Ok(Frame {
            hdgst_len,
            ddgst_len: 0,
            data_range: None,
        });
    }
    if !carries_data(pdu_type) {
        return Err(PduError::BadPlen {
            pdu_type,
            plen: ch.plen,
            why: "longer than a PDU of this type without data",
        });
    }
    data_frame(ch, digests, with_digests, hdgst_len, header_end)
}

/// Frame a PDU that carries data after its header.
fn data_frame(
    ch: &CommonHeader,
    digests: Digests,
    with_digests: bool,
    hdgst_len: usize,
    header_end: usize,
) -> Result<Frame, PduError> {
    let pdu_type = ch.pdu_type;
    let plen = ch.plen as usize;
    // Termination requests carry the offending header right after their
    // own, with no PDO.
    let start = if matches!(pdu_type, pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ) {
        header_end
    } else {
        let pdo = ch.pdo as usize;
        if pdo < header_end {
            return Err(PduError::BadPdo {
                pdu_type,
                pdo: ch.pdo,
                why: "inside the PDU header",
            });
        }
        pdo
    };
    let ddgst_len = if with_digests { digests.data_len() } else { 0 };
    if start + ddgst_len > plen {
        return Err(PduError::BadPdo {
            pdu_type,
            pdo: ch.pdo,
            why: "past the end of the PDU",
        });
    }
    let end = plen - ddgst_len;
    Ok(Frame {
        hdgst_len,
        ddgst_len,
        data_range: Some((start, end)),
    })
}

/// Digest flags must say exactly what was negotiated (data digest only when
/// the PDU carries data, which is checked once the frame is known).
fn check_digest_flags(
    ch: &CommonHeader,
    digests: Digests,
    with_digests: bool,
) -> Result<(), PduError> {
    let hd = ch.flags & flags::HDGSTF != 0;
    let dd = ch.flags & flags::DDGSTF != 0;
    let wrong = if with_digests {
        hd != digests.header || (dd && !digests.data)
    } else {
        hd || dd
    };
    let has_data = ch.plen as usize
        > expected_hlen(ch.pdu_type).unwrap_or(0)
            + if with_digests {
                digests.header_len()
            } else {
                0
            };
    let missing_dd = with_digests && digests.data && has_data && carries_data(ch.pdu_type) && !dd;
    if wrong || missing_dd {
        return Err(PduError::BadDigestFlags {
            pdu_type: ch.pdu_type,
            flags: ch.flags,
            negotiated: digests,
        });
    }
    Ok(())
}

/// Whether the 4 bytes at `at` are the digest of everything before `at`.
fn digest_matches_at(bytes: &[u8], at: usize) -> bool {
    bytes.len() >= at + DIGEST_LEN && bytes[at..at + DIGEST_LEN] == digest_bytes(&bytes[..at])
}

fn parse_specific<'a>(
    ch: &CommonHeader,
    hdr: &'a [u8],
    data: &'a [u8],
) -> Result<Pdu<'a>, PduError> {
    use pdu_type::*;
    let pdu = match ch.pdu_type {
        IC_REQ => Pdu::IcReq(IcReq {
            pfv: get_u16(hdr, 8),
            hpda: hdr[10],
            digests: Digests::from_bits(hdr[11]),
            maxr2t: get_u32(hdr, 12),
        }),
        IC_RESP => Pdu::IcResp(IcResp {
            pfv: get_u16(hdr, 8),
            cpda: hdr[10],
            digests: Digests::from_bits(hdr[11]),
            maxh2cdata: get_u32(hdr, 12),
        }),
        H2C_TERM_REQ => Pdu::H2cTermReq(parse_term(hdr, data)),
        C2H_TERM_REQ => Pdu::C2hTermReq(parse_term(hdr, data)),
        CAPSULE_CMD => {
            let mut raw = [0u8; SQE_LEN];
            raw.copy_from_slice(&hdr[CH_LEN..CH_LEN + SQE_LEN]);
            Pdu::CapsuleCmd {
                sqe: Sqe::decode(&raw),
                data,
            }
        }
        CAPSULE_RESP => {
            let mut raw = [0u8; CQE_LEN];
            raw.copy_from_slice(&hdr[CH_LEN..CH_LEN + CQE_LEN]);
            Pdu::CapsuleResp(Cqe::decode(&raw))
        }
        H2C_DATA => {
            let hdr = parse_data_header(hdr, data)?;
            Pdu::H2cData {
                hdr,
                last: ch.flags & flags::LAST_PDU != 0,
                data,
            }
        }
        C2H_DATA => {
            let hdr = parse_data_header(hdr, data)?;
            Pdu::C2hData {
                hdr,
                flags: ch.flags,
                data,
            }
        }
        R2T => Pdu::R2t(R2t {
            cccid: get_u16(hdr, 8),
            ttag: get_u16(hdr, 10),
            r2to: get_u32(hdr, 12),
            r2tl: get_u32(hdr, 16),
        }),
        other => return Err(PduError::UnknownType(other)),
    };
    Ok(pdu)
}

fn parse_term<'a>(hdr: &'a [u8], data: &'a [u8]) -> TermReq<'a> {
    TermReq {
        fes: get_u16(hdr, 8),
        fei: get_u32(hdr, 10),
        header: data,
    }
}

fn parse_data_header(hdr: &[u8], data: &[u8]) -> Result<DataHeader, PduError> {
    let h = DataHeader {
        cccid: get_u16(hdr, 8),
        ttag: get_u16(hdr, 10),
        datao: get_u32(hdr, 12),
        datal: get_u32(hdr, 16),
    };
    if h.datal as usize != data.len() {
        return Err(PduError::DataLength {
            datal: h.datal,
            framed: data.len(),
        });
    }
    Ok(h)
}

// ---------------------------------------------------------------------------
// Encoding. Every encoder appends one whole PDU to `out`, so a sender can
// batch several PDUs into one write.

/// Append the header digest over the last `hlen` bytes of `out`.
fn push_header_digest(out: &mut Vec<u8>, start: usize) {
    let d = digest_bytes(&out[start..]);
    out.extend_from_slice(&d);
}

fn digest_flags(digests: Digests, has_data: bool) -> u8 {
    let mut f = 0;
    if digests.header {
        f |= flags::HDGSTF;
    }
    if digests.data && has_data {
        f |= flags::DDGSTF;
    }
    f
}

pub fn encode_ic_req(out: &mut Vec<u8>, req: &IcReq) {
    let start = out.len();
    CommonHeader {
        pdu_type: pdu_type::IC_REQ,
        flags: 0,
        hlen: IC_HLEN as u8,
        pdo: 0,
        plen: IC_HLEN as u32,
    }
    .write(out);
    out.extend_from_slice(&req.pfv.to_le_bytes());
    out.push(req.hpda);
    out.push(req.digests.to_bits());
    out.extend_from_slice(&req.maxr2t.to_le_bytes());
    out.resize(start + IC_HLEN, 0);
}

pub fn encode_ic_resp(out: &mut Vec<u8>, resp: &IcResp) {
    let start = out.len();
    CommonHeader {
        pdu_type: pdu_type::IC_RESP,
        flags: 0,
        hlen: IC_HLEN as u8,
        pdo: 0,
        plen: IC_HLEN as u32,
    }
    .write(out);
    out.extend_from_slice(&resp.pfv.to_le_bytes());
    out.push(resp.cpda);
    out.push(resp.digests.to_bits());
    out.extend_from_slice(&resp.maxh2cdata.to_le_bytes());
    out.resize(start + IC_HLEN, 0);
}

/// A CapsuleCmd with optional in-capsule data placed right after the header
/// (and its digest), as a host with HPDA=0 and a target with CPDA=0 expect.
pub fn encode_capsule_cmd(out: &mut Vec<u8>, sqe: &Sqe, data: &[u8], digests: Digests) {
    let hd = digests.header_len();
    let dd = if data.is_empty() {
        0
    } else {
        digests.data_len()
    };
    let header_end = CAPSULE_CMD_HLEN + hd;
    let start = out.len();
    CommonHeader {
        pdu_type: pdu_type::CAPSULE_CMD,
        flags: digest_flags(digests, !data.is_empty()),
        hlen: CAPSULE_CMD_HLEN as u8,
        pdo: if data.is_empty() { 0 } else { header_end as u8 },
        plen: (header_end + data.len() + dd) as u32,
    }
    .write(out);
    out.extend_from_slice(&sqe.encode());
    if digests.header {
        push_header_digest(out, start);
    }
    push_data(out, data, digests);
}

fn push_data(out: &mut Vec<u8>, data: &[u8], digests: Digests) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(data);
    if digests.data {
        out.extend_from_slice(&digest_bytes(data));
    }
}

pub fn encode_capsule_resp(out: &mut Vec<u8>, cqe: &Cqe, digests: Digests) {
    let start = out.len();
    CommonHeader {
        pdu_type: pdu_type::CAPSULE_RESP,
        flags: digest_flags(digests, false),
        hlen: CAPSULE_RESP_HLEN as u8,
        pdo: 0,
        plen: (CAPSULE_RESP_HLEN + digests.header_len()) as u32,
    }
    .write(out);
    out.extend_from_slice(&cqe.encode());
    if digests.header {
        push_header_digest(out, start);
    }
}

pub fn encode_r2t(out: &mut Vec<u8>, r2t: &R2t, digests: Digests) {
    let start = out.len();
    CommonHeader {
        pdu_type: pdu_type::R2T,
        flags: digest_flags(digests, false),
        hlen: SHORT_HLEN as u8,
        pdo: 0,
        plen: (SHORT_HLEN + digests.header_len()) as u32,
    }
    .write(out);
    out.extend_from_slice(&r2t.cccid.to_le_bytes());
    out.extend_from_slice(&r2t.ttag.to_le_bytes());
    out.extend_from_slice(&r2t.r2to.to_le_bytes());
    out.extend_from_slice(&r2t.r2tl.to_le_bytes());
    out.resize(start + SHORT_HLEN, 0);
    if digests.header {
        push_header_digest(out, start);
    }
}

/// Append the header of an H2CData or C2HData PDU whose `hdr.datal` bytes
/// of data the caller appends next, followed by [`finish_data_pdu`]. This
/// lets a reader fill the data straight from storage into the send buffer.
///
/// `extra_flags` takes [`flags::LAST_PDU`] and [`flags::SUCCESS`].
/// Returns the offset in `out` where the data starts.
pub fn begin_data_pdu(
    out: &mut Vec<u8>,
    pdu_type: u8,
    hdr: &DataHeader,
    extra_flags: u8,
    digests: Digests,
) -> usize {
    let start = out.len();
    let has_data = hdr.datal > 0;
    let header_end = SHORT_HLEN + digests.header_len();
    let dd = if has_data { digests.data_len() } else { 0 };
    CommonHeader {
        pdu_type,
        flags: digest_flags(digests, has_data) | extra_flags,
        hlen: SHORT_HLEN as u8,
        pdo: if has_data { header_end as u8 } else { 0 },
        plen: (header_end + hdr.datal as usize + dd) as u32,
    }
    .write(out);
    out.extend_from_slice(&hdr.cccid.to_le_bytes());
    out.extend_from_slice(&hdr.ttag.to_le_bytes());
    out.extend_from_slice(&hdr.datao.to_le_bytes());
    out.extend_from_slice(&hdr.datal.to_le_bytes());
    out.resize(start + SHORT_HLEN, 0);
    if digests.header {
        push_header_digest(out, start);
    }
    out.len()
}

/// Close a data PDU begun with [`begin_data_pdu`] once its data, starting at
/// `data_start`, has been appended.
pub fn finish_data_pdu(out: &mut Vec<u8>, data_start: usize, digests: Digests) {
    if digests.data && out.len() > data_start {
        let d = digest_bytes(&out[data_start..]);
        out.extend_from_slice(&d);
    }
}

/// A whole data PDU with its data copied in.
pub fn encode_data_pdu(
    out: &mut Vec<u8>,
    pdu_type: u8,
    hdr: &DataHeader,
    extra_flags: u8,
    data: &[u8],
    digests: Digests,
) {
    let hdr = DataHeader {
        datal: data.len() as u32,
        ..*hdr
    };
    let at = begin_data_pdu(out, pdu_type, &hdr, extra_flags, digests);
    out.extend_from_slice(data);
    finish_data_pdu(out, at, digests);
}

/// A termination request quoting (up to 128 bytes of) the offending header.
pub fn encode_term_req(out: &mut Vec<u8>, pdu_type: u8, fes: u16, fei: u32, offending: &[u8]) {
    let quoted = &offending[..offending.len().min(TERM_REQ_MAX_PLEN - SHORT_HLEN)];
    let start = out.len();
    CommonHeader {
        pdu_type,
        flags: 0,
        hlen: SHORT_HLEN as u8,
        pdo: 0,
        plen: (SHORT_HLEN + quoted.len()) as u32,
    }
    .write(out);
    out.extend_from_slice(&fes.to_le_bytes());
    out.extend_from_slice(&fei.to_le_bytes());
    out.resize(start + SHORT_HLEN, 0);
    out.extend_from_slice(quoted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOTH: Digests = Digests {
        header: true,
        data: true,
    };

    fn complete(buf: &[u8], d: Digests) -> Decoded<'_> {
        match decode(buf, d, 1 << 20) {
            Ok(DecodeStatus::Complete(x)) => x,
            other => panic!("expected a PDU, got {other:?}"),
        }
    }

    #[test]
    fn ic_req_roundtrip() {
        let mut out = Vec::new();
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests: BOTH,
            maxr2t: 0,
        };
        encode_ic_req(&mut out, &req);
        assert_eq!(out.len(), 128);
        let d = complete(&out, Digests::default());
        assert_eq!(d.pdu, Pdu::IcReq(req));
        assert_eq!(d.len, 128);
    }

    #[test]
    fn capsule_with_data_and_digests() {
        let sqe = Sqe {
            opcode: 1,
            cid: 9,
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_capsule_cmd(&mut out, &sqe, b"hello world", BOTH);
        assert_eq!(
            out[3] as usize,
            72 + 4,
            "data right after the header digest"
        );
        let d = complete(&out, BOTH);
        assert!(d.data_digest_ok);
        assert_eq!(
            d.pdu,
            Pdu::CapsuleCmd {
                sqe,
                data: b"hello world"
            }
        );
    }

    #[test]
    fn partial_buffer_asks_for_more() {
        let mut out = Vec::new();
        encode_capsule_resp(&mut out, &Cqe::default(), Digests::default());
        assert_eq!(
            decode(&out[..3], Digests::default(), 4096),
            Ok(DecodeStatus::Need(8))
        );
        assert_eq!(
            decode(&out[..10], Digests::default(), 4096),
            Ok(DecodeStatus::Need(24))
        );
    }

    #[test]
    fn header_digest_mismatch_is_fatal() {
        let mut out = Vec::new();
        encode_capsule_resp(&mut out, &Cqe::default(), BOTH);
        out[12] ^= 1;
        let err = decode(&out, BOTH, 4096).unwrap_err();
        assert_eq!(err.fes(), fes::HEADER_DIGEST_ERROR);
    }

    #[test]
    fn data_digest_mismatch_is_reported_not_fatal() {
        let mut out = Vec::new();
        let hdr = DataHeader {
            cccid: 3,
            ttag: 1,
            datao: 0,
            datal: 0,
        };
        encode_data_pdu(
            &mut out,
            pdu_type::H2C_DATA,
            &hdr,
            flags::LAST_PDU,
            &[7u8; 100],
            BOTH,
        );
        let n = out.len();
        out[n - 5] ^= 0xFF;
        let d = complete(&out, BOTH);
        assert!(!d.data_digest_ok);
    }

    #[test]
    fn missing_digest_flag_is_rejected() {
        let mut out = Vec::new();
        encode_capsule_resp(&mut out, &Cqe::default(), Digests::default());
        let err = decode(&out, BOTH, 4096).unwrap_err();
        assert!(matches!(err, PduError::BadDigestFlags { .. }));
    }

    #[test]
    fn unknown_type_and_bad_hlen() {
        let mut b = [0u8; 24];
        b[0] = 0x08;
        b[2] = 24;
        b[4] = 24;
        assert_eq!(
            decode(&b, Digests::default(), 4096),
            Err(PduError::UnknownType(8))
        );
        b[0] = pdu_type::CAPSULE_RESP;
        b[2] = 25;
        assert!(matches!(
            decode(&b, Digests::default(), 4096),
            Err(PduError::BadHlen { .. })
        ));
    }

    #[test]
    fn oversized_pdu_is_refused_before_buffering() {
        let mut b = [0u8; 8];
        b[0] = pdu_type::CAPSULE_CMD;
        b[2] = 72;
        b[3] = 72;
        b[4..8].copy_from_slice(&(10u32 << 20).to_le_bytes());
        let err = decode(&b, Digests::default(), 1 << 20).unwrap_err();
        assert_eq!(err.fes(), fes::DATA_LIMIT_EXCEEDED);
    }

    #[test]
    fn datal_must_match_frame() {
        let mut out = Vec::new();
        let hdr = DataHeader {
            datal: 0,
            ..Default::default()
        };
        encode_data_pdu(
            &mut out,
            pdu_type::C2H_DATA,
            &hdr,
            0,
            &[1, 2, 3, 4],
            Digests::default(),
        );
        out[16] = 9; // datal
        assert!(matches!(
            decode(&out, Digests::default(), 4096),
            Err(PduError::DataLength { .. })
        ));
    }

    #[test]
    fn term_req_quotes_header() {
        let mut out = Vec::new();
        encode_term_req(
            &mut out,
            pdu_type::C2H_TERM_REQ,
            fes::INVALID_HEADER_FIELD,
            2,
            &[0xAB; 200],
        );
        assert_eq!(out.len(), TERM_REQ_MAX_PLEN);
        let d = complete(&out, BOTH);
        match d.pdu {
            Pdu::C2hTermReq(t) => {
                assert_eq!(t.fes, 1);
                assert_eq!(t.fei, 2);
                assert_eq!(t.header.len(), 128);
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever it accepts
        /// lies inside the buffer.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), hd: bool, dd: bool) {
            let d = Digests { header: hd, data: dd };
            if let Ok(DecodeStatus::Complete(x)) = decode(&bytes, d, 4096) {
                prop_assert!(x.len <= bytes.len());
            }
        }

        #[test]
        fn data_pdu_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..3000), hd: bool, dd: bool,
                              cccid: u16, datao: u32) {
            let d = Digests { header: hd, data: dd };
            let mut out = Vec::new();
            let hdr = DataHeader { cccid, ttag: 0, datao, datal: 0 };
            encode_data_pdu(&mut out, pdu_type::C2H_DATA, &hdr, flags::LAST_PDU, &data, d);
            let x = complete(&out, d);
            prop_assert!(x.data_digest_ok);
            prop_assert_eq!(x.len, out.len());
            match x.pdu {
                Pdu::C2hData { hdr: h, flags: f, data: got } => {
                    prop_assert_eq!(h.cccid, cccid);
                    prop_assert_eq!(h.datao, datao);
                    prop_assert!(f & flags::LAST_PDU != 0);
                    prop_assert_eq!(got, &data[..]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// The head of a data PDU, seen before its data has arrived,
        /// frames it exactly as the whole PDU decodes.
        #[test]
        fn data_head_agrees_with_decode(data in proptest::collection::vec(any::<u8>(), 1..3000), hd: bool, dd: bool,
                                        cccid: u16, datao: u32, cut in 0usize..3100) {
            let d = Digests { header: hd, data: dd };
            let mut out = Vec::new();
            let hdr = DataHeader { cccid, ttag: 0, datao, datal: 0 };
            encode_data_pdu(&mut out, pdu_type::C2H_DATA, &hdr, flags::LAST_PDU, &data, d);
            let x = complete(&out, d);
            let Pdu::C2hData { data: whole, .. } = x.pdu else { panic!("not C2HData") };
            let part = &out[..cut.min(out.len())];
            match decode_data_head(part, d, 1 << 20) {
                Ok(Some(h)) => {
                    prop_assert_eq!(h.hdr.cccid, cccid);
                    prop_assert_eq!(h.hdr.datao, datao);
                    prop_assert_eq!(h.plen, out.len());
                    prop_assert_eq!(&out[h.data_start..h.data_start + h.hdr.datal as usize], whole);
                    prop_assert_eq!(h.ddgst_len, usize::from(dd) * 4);
                }
                Ok(None) => {
                    let header_end = out.len() - data.len() - usize::from(dd) * 4;
                    prop_assert!(part.len() < header_end);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }

    #[test]
    fn data_head_checks_the_header_digest() {
        let d = Digests {
            header: true,
            data: false,
        };
        let mut out = Vec::new();
        let hdr = DataHeader {
            cccid: 3,
            ttag: 0,
            datao: 0,
            datal: 0,
        };
        encode_data_pdu(&mut out, pdu_type::C2H_DATA, &hdr, 0, &[7u8; 64], d);
        out[9] ^= 1;
        assert!(matches!(
            decode_data_head(&out[..40], d, 4096),
            Err(PduError::HeaderDigest { .. })
        ));
        // Other PDU types are left to `decode`.
        let mut resp = Vec::new();
        encode_capsule_resp(&mut resp, &Cqe::default(), d);
        assert_eq!(decode_data_head(&resp, d, 4096), Ok(None));
    }
}
