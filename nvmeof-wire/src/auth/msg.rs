//! Authentication messages, as carried in the data of Authentication Send
//! (host to controller) and Authentication Receive (controller to host).
//!
//! Every message starts with AUTH_TYPE (0 common, 1 DH-HMAC-CHAP), AUTH_ID,
//! two reserved bytes and the 16-bit transaction ID. Decoding checks each
//! length against the bytes actually present before reading or allocating
//! anything, and never panics on what a peer sends.

use super::MAX_AUTH_MESSAGE;

pub mod auth_type {
    pub const COMMON: u8 = 0x00;
    pub const DHCHAP: u8 = 0x01;
}

pub mod auth_id {
    pub const NEGOTIATE: u8 = 0x00;
    pub const CHALLENGE: u8 = 0x01;
    pub const REPLY: u8 = 0x02;
    pub const SUCCESS1: u8 = 0x03;
    pub const SUCCESS2: u8 = 0x04;
    pub const FAILURE2: u8 = 0xF0;
    pub const FAILURE1: u8 = 0xF1;
}

/// Authentication protocol identifier of DH-HMAC-CHAP in a Negotiate
/// descriptor.
pub const PROTOCOL_DHCHAP: u8 = 0x01;
/// Size of one protocol descriptor in AUTH_Negotiate.
const DESCRIPTOR_LEN: usize = 64;
/// Room for hash and for DH group identifiers in a descriptor.
const ID_LIST_LEN: usize = 30;

/// Reason code of AUTH_Failure1/2 (the only one defined).
pub const RC_FAILURE: u8 = 0x01;

/// Reason code explanations of AUTH_Failure1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FailureReason {
    Failed = 0x01,
    ProtocolUnusable = 0x02,
    ConcatMismatch = 0x03,
    HashUnusable = 0x04,
    DhGroupUnusable = 0x05,
    IncorrectPayload = 0x06,
    IncorrectProtocolMessage = 0x07,
}

impl FailureReason {
    pub fn from_code(c: u8) -> Option<FailureReason> {
        use FailureReason::*;
        [
            Failed,
            ProtocolUnusable,
            ConcatMismatch,
            HashUnusable,
            DhGroupUnusable,
            IncorrectPayload,
            IncorrectProtocolMessage,
        ]
        .into_iter()
        .find(|r| *r as u8 == c)
    }

    pub fn describe(self) -> &'static str {
        match self {
            FailureReason::Failed => "authentication failed (wrong key)",
            FailureReason::ProtocolUnusable => "authentication protocol not usable",
            FailureReason::ConcatMismatch => "secure channel concatenation mismatch",
            FailureReason::HashUnusable => "no usable hash function in common",
            FailureReason::DhGroupUnusable => "no usable DH group in common",
            FailureReason::IncorrectPayload => "incorrect payload",
            FailureReason::IncorrectProtocolMessage => "incorrect protocol message",
        }
    }
}

/// One protocol descriptor of AUTH_Negotiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub protocol: u8,
    pub hashes: Vec<u8>,
    pub dhgroups: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub tid: u16,
    pub hash: u8,
    pub dhgroup: u8,
    pub seqnum: u32,
    pub challenge: Vec<u8>,
    pub dh_public: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub tid: u16,
    pub response: Vec<u8>,
    /// The host's challenge to the controller (bidirectional), with its
    /// sequence number.
    pub ctrl_challenge: Option<(u32, Vec<u8>)>,
    pub dh_public: Vec<u8>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Negotiate {
        tid: u16,
        sc_c: u8,
        protocols: Vec<Descriptor>,
    },
    Challenge(Challenge),
    Reply(Reply),
    /// The controller's response to the host's challenge, if it had one.
    /// `hl` is the hash length of the transaction, sent even without a
    /// response (the Linux host refuses a Success1 whose HL differs), and
    /// the response field is then HL zero bytes.
    Success1 {
        tid: u16,
        hl: u8,
        response: Option<Vec<u8>>,
    },
    Success2 {
        tid: u16,
    },
    /// AUTH_Failure1 (controller to host) or, with `from_host`,
    /// AUTH_Failure2.
    Failure {
        tid: u16,
        from_host: bool,
        rc: u8,
        rce: u8,
    },
}

/// What is wrong with a received message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    #[error("authentication message of {0} bytes is too short")]
    Short(usize),
    #[error("authentication message of {0} bytes exceeds the {MAX_AUTH_MESSAGE}-byte limit")]
    TooLong(usize),
    #[error("unknown authentication message type {0:#x}/{1:#x}")]
    Unknown(u8, u8),
    #[error("{what} of {len} bytes does not fit in a {total}-byte message")]
    Truncated {
        what: &'static str,
        len: usize,
        total: usize,
    },
    #[error("{0}")]
    Invalid(&'static str),
}

fn header(out: &mut Vec<u8>, t: u8, id: u8, tid: u16) {
    out.extend_from_slice(&[t, id, 0, 0]);
    out.extend_from_slice(&tid.to_le_bytes());
}

impl Message {
    pub fn tid(&self) -> u16 {
        match self {
            Message::Negotiate { tid, .. }
            | Message::Success1 { tid, .. }
            | Message::Success2 { tid }
            | Message::Failure { tid, .. } => *tid,
            Message::Challenge(c) => c.tid,
            Message::Reply(r) => r.tid,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Negotiate { .. } => "AUTH_Negotiate",
            Message::Challenge(_) => "DH-HMAC-CHAP_Challenge",
            Message::Reply(_) => "DH-HMAC-CHAP_Reply",
            Message::Success1 { .. } => "DH-HMAC-CHAP_Success1",
            Message::Success2 { .. } => "DH-HMAC-CHAP_Success2",
            Message::Failure {
                from_host: false, ..
            } => "AUTH_Failure1",
            Message::Failure {
                from_host: true, ..
            } => "AUTH_Failure2",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Message::Negotiate {
                tid,
                sc_c,
                protocols,
            } => {
                header(&mut out, auth_type::COMMON, auth_id::NEGOTIATE, *tid);
                out.push(*sc_c);
                out.push(protocols.len() as u8);
                for d in protocols {
                    let mut desc = [0u8; DESCRIPTOR_LEN];
                    let nh = d.hashes.len().min(ID_LIST_LEN);
                    let nd = d.dhgroups.len().min(ID_LIST_LEN);
                    desc[0] = d.protocol;
                    desc[2] = nh as u8;
                    desc[3] = nd as u8;
                    desc[4..4 + nh].copy_from_slice(&d.hashes[..nh]);
                    desc[34..34 + nd].copy_from_slice(&d.dhgroups[..nd]);
                    out.extend_from_slice(&desc);
                }
            }
            Message::Challenge(c) => {
                header(&mut out, auth_type::DHCHAP, auth_id::CHALLENGE, c.tid);
                out.push(c.challenge.len() as u8);
                out.push(0);
                out.push(c.hash);
                out.push(c.dhgroup);
                out.extend_from_slice(&(c.dh_public.len() as u16).to_le_bytes());
                out.extend_from_slice(&c.seqnum.to_le_bytes());
                out.extend_from_slice(&c.challenge);
                out.extend_from_slice(&c.dh_public);
            }
            Message::Reply(r) => {
                let hl = r.response.len();
                header(&mut out, auth_type::DHCHAP, auth_id::REPLY, r.tid);
                out.push(hl as u8);
                out.push(0);
                out.push(u8::from(r.ctrl_challenge.is_some()));
                out.push(0);
                out.extend_from_slice(&(r.dh_public.len() as u16).to_le_bytes());
                let seq = r.ctrl_challenge.as_ref().map_or(0, |c| c.0);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&r.response);
                // The controller challenge field is always present (zero
                // when unused).
                match &r.ctrl_challenge {
                    Some((_, c)) => {
                        let mut field = c.clone();
                        field.resize(hl, 0);
                        out.extend_from_slice(&field);
                    }
                    None => out.resize(out.len() + hl, 0),
                }
                out.extend_from_slice(&r.dh_public);
            }
            Message::Success1 { tid, hl, response } => {
                header(&mut out, auth_type::DHCHAP, auth_id::SUCCESS1, *tid);
                out.push(*hl);
                out.push(0);
                out.push(u8::from(response.is_some()));
                out.extend_from_slice(&[0; 7]);
                let mut field = response.clone().unwrap_or_default();
                field.resize(usize::from(*hl), 0);
                out.extend_from_slice(&field);
            }
            Message::Success2 { tid } => {
                header(&mut out, auth_type::DHCHAP, auth_id::SUCCESS2, *tid);
                out.extend_from_slice(&[0; 10]);
            }
            Message::Failure {
                tid,
                from_host,
                rc,
                rce,
            } => {
                let id = if *from_host {
                    auth_id::FAILURE2
                } else {
                    auth_id::FAILURE1
                };
                header(&mut out, auth_type::COMMON, id, *tid);
                out.push(*rc);
                out.push(*rce);
                // Padded to 16 bytes, the size of the other short messages.
                out.extend_from_slice(&[0; 8]);
            }
        }
        out
    }

    /// Decode one message; `b` may carry trailing padding.
    pub fn decode(b: &[u8]) -> Result<Message, MsgError> {
        if b.len() > MAX_AUTH_MESSAGE {
            return Err(MsgError::TooLong(b.len()));
        }
        if b.len() < 8 {
            return Err(MsgError::Short(b.len()));
        }
        let tid = u16::from_le_bytes([b[4], b[5]]);
        match (b[0], b[1]) {
            (auth_type::COMMON, auth_id::NEGOTIATE) => decode_negotiate(b, tid),
            (auth_type::COMMON, id @ (auth_id::FAILURE1 | auth_id::FAILURE2)) => {
                Ok(Message::Failure {
                    tid,
                    from_host: id == auth_id::FAILURE2,
                    rc: b[6],
                    rce: b[7],
                })
            }
            (auth_type::DHCHAP, auth_id::CHALLENGE) => decode_challenge(b, tid),
            (auth_type::DHCHAP, auth_id::REPLY) => decode_reply(b, tid),
            (auth_type::DHCHAP, auth_id::SUCCESS1) => decode_success1(b, tid),
            (auth_type::DHCHAP, auth_id::SUCCESS2) => {
                need(b, 16)?;
                Ok(Message::Success2 { tid })
            }
            (t, id) => Err(MsgError::Unknown(t, id)),
        }
    }
}

fn need(b: &[u8], n: usize) -> Result<(), MsgError> {
    if b.len() < n {
        return Err(MsgError::Short(b.len()));
    }
    Ok(())
}

/// `len` bytes at `at`, or a Truncated error naming `what`.
fn field<'a>(b: &'a [u8], at: usize, len: usize, what: &'static str) -> Result<&'a [u8], MsgError> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or(MsgError::Truncated {
            what,
            len,
            total: b.len(),
        })
}

fn decode_negotiate(b: &[u8], tid: u16) -> Result<Message, MsgError> {
    let sc_c = b[6];
    let napd = usize::from(b[7]);
    if napd == 0 {
        return Err(MsgError::Invalid("AUTH_Negotiate lists no protocol"));
    }
    let mut protocols = Vec::with_capacity(napd.min((b.len() - 8) / DESCRIPTOR_LEN + 1));
    for i in 0..napd {
        let d = field(
            b,
            8 + i * DESCRIPTOR_LEN,
            DESCRIPTOR_LEN,
            "protocol descriptor",
        )?;
        let (nh, nd) = (usize::from(d[2]), usize::from(d[3]));
        if nh > ID_LIST_LEN || nd > ID_LIST_LEN {
            return Err(MsgError::Invalid(
                "AUTH_Negotiate descriptor lists more than 30 identifiers",
            ));
        }
        protocols.push(Descriptor {
            protocol: d[0],
            hashes: d[4..4 + nh].to_vec(),
            dhgroups: d[34..34 + nd].to_vec(),
        });
    }
    Ok(Message::Negotiate {
        tid,
        sc_c,
        protocols,
    })
}

fn decode_challenge(b: &[u8], tid: u16) -> Result<Message, MsgError> {
    need(b, 16)?;
    let hl = usize::from(b[6]);
    let dhvlen = usize::from(u16::from_le_bytes([b[10], b[11]]));
    let challenge = field(b, 16, hl, "challenge value")?.to_vec();
    let dh_public = field(b, 16 + hl, dhvlen, "DH public value")?.to_vec();
    Ok(Message::Challenge(Challenge {
        tid,
        hash: b[8],
        dhgroup: b[9],
        seqnum: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        challenge,
        dh_public,
    }))
}

fn decode_reply(b: &[u8], tid: u16) -> Result<Message, MsgError> {
    need(b, 16)?;
    let hl = usize::from(b[6]);
    let cvalid = b[8] & 1 != 0;
    let dhvlen = usize::from(u16::from_le_bytes([b[10], b[11]]));
    let seqnum = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let response = field(b, 16, hl, "response value")?.to_vec();
    let cval = field(b, 16 + hl, hl, "controller challenge")?;
    let dh_public = field(b, 16 + 2 * hl, dhvlen, "DH public value")?.to_vec();
    Ok(Message::Reply(Reply {
        tid,
        response,
        ctrl_challenge: cvalid.then(|| (seqnum, cval.to_vec())),
        dh_public,
    }))
}

fn decode_success1(b: &[u8], tid: u16) -> Result<Message, MsgError> {
    need(b, 16)?;
    let hl = usize::from(b[6]);
    let rvalid = b[8] & 1 != 0;
    let response = if rvalid {
        Some(field(b, 16, hl, "response value")?.to_vec())
    } else {
        None
    };
    Ok(Message::Success1 {
        tid,
        hl: b[6],
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Negotiate {
                tid: 7,
                sc_c: 0,
                protocols: vec![Descriptor {
                    protocol: PROTOCOL_DHCHAP,
                    hashes: vec![1, 2, 3],
                    dhgroups: vec![0, 1, 2, 3, 4, 5],
                }],
            },
            Message::Challenge(Challenge {
                tid: 7,
                hash: 2,
                dhgroup: 1,
                seqnum: 0xDEAD_BEEF,
                challenge: vec![0xAA; 48],
                dh_public: vec![0x55; 256],
            }),
            Message::Reply(Reply {
                tid: 7,
                response: vec![1; 32],
                ctrl_challenge: Some((9, vec![2; 32])),
                dh_public: vec![3; 384],
            }),
            Message::Reply(Reply {
                tid: 8,
                response: vec![1; 64],
                ctrl_challenge: None,
                dh_public: vec![],
            }),
            Message::Success1 {
                tid: 7,
                hl: 64,
                response: Some(vec![4; 64]),
            },
            Message::Success1 {
                tid: 7,
                hl: 48,
                response: None,
            },
            Message::Success2 { tid: 7 },
            Message::Failure {
                tid: 7,
                from_host: false,
                rc: RC_FAILURE,
                rce: FailureReason::Failed as u8,
            },
            Message::Failure {
                tid: 7,
                from_host: true,
                rc: RC_FAILURE,
                rce: FailureReason::IncorrectPayload as u8,
            },
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let enc = m.encode();
            assert_eq!(Message::decode(&enc).unwrap(), m, "{}", m.name());
            // Trailing padding (a Receive buffer larger than the message)
            // changes nothing.
            let mut padded = enc.clone();
            padded.resize(1024.max(enc.len()), 0);
            assert_eq!(Message::decode(&padded).unwrap(), m);
        }
    }

    #[test]
    fn layout_matches_the_specification() {
        let enc = samples()[1].encode();
        // Challenge: type, id, rsvd, tid, hl, rsvd, hashid, dhgid, dhvlen, seqnum.
        assert_eq!(&enc[..12], &[1, 1, 0, 0, 7, 0, 48, 0, 2, 1, 0, 1]);
        assert_eq!(&enc[12..16], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(enc.len(), 16 + 48 + 256);
        let neg = samples()[0].encode();
        assert_eq!(neg.len(), 8 + 64);
        assert_eq!(&neg[8..12], &[1, 0, 3, 6]);
        assert_eq!(neg[8 + 34 + 5], 5);
        let reply = samples()[3].encode();
        assert_eq!(
            reply.len(),
            16 + 64 + 64,
            "the C2 field is there even when unused"
        );
    }

    #[test]
    fn truncated_and_oversized_messages_are_refused() {
        for m in samples() {
            let enc = m.encode();
            for cut in 0..enc.len() {
                if let Ok(d) = Message::decode(&enc[..cut]) {
                    // Only a cut inside trailing zero padding may decode,
                    // and then to the same message.
                    assert_eq!(d, m, "cut at {cut} of {}", m.name());
                }
            }
        }
        assert_eq!(
            Message::decode(&vec![0u8; MAX_AUTH_MESSAGE + 1]),
            Err(MsgError::TooLong(MAX_AUTH_MESSAGE + 1))
        );
        // A Negotiate claiming 255 descriptors in 72 bytes.
        let mut neg = samples()[0].encode();
        neg[7] = 255;
        assert!(matches!(
            Message::decode(&neg),
            Err(MsgError::Truncated { .. })
        ));
        // A descriptor claiming 31 hashes.
        let mut neg = samples()[0].encode();
        neg[10] = 31;
        assert!(matches!(Message::decode(&neg), Err(MsgError::Invalid(_))));
        // A challenge whose dhvlen runs past the end.
        let mut ch = samples()[1].encode();
        ch[10] = 0xFF;
        ch[11] = 0xFF;
        assert!(matches!(
            Message::decode(&ch),
            Err(MsgError::Truncated { .. })
        ));
        assert_eq!(
            Message::decode(&[9, 9, 0, 0, 0, 0, 0, 0]),
            Err(MsgError::Unknown(9, 9))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_known_headers(
            t in 0u8..2, id in prop_oneof![Just(0u8), Just(1), Just(2), Just(3), Just(4), Just(0xF0), Just(0xF1)],
            rest in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let mut b = vec![t, id, 0, 0];
            b.extend(rest);
            let _ = Message::decode(&b);
        }
    }
}
