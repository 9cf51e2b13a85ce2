//! conntrackd's sync protocol, version 1, byte for byte.
//!
//! A datagram carries one or more messages back to back. Each message
//! starts with an 8-byte header (`nethdr`: version in the high nibble and
//! type in the low nibble of byte 0, flags, big-endian total length and
//! sequence number); ACK, NACK and RESYNC control messages carry a 16-byte
//! header (`nethdr_ack`) with a big-endian `[from, to]` sequence range.
//! Conntrack state messages (NEW/UPD/DEL) follow the header with TLV
//! attributes, see [`ct`].
//!
//! Everything here is a checked view or a plain writer in the smoltcp
//! style: no input can make it panic, and the receive checks are the ones
//! conntrackd makes (so both count the same things as malformed).

pub mod ct;

/// The only protocol version conntrackd speaks.
pub const VERSION: u8 = 1;
/// Size of the plain header (`NETHDR_SIZ`).
pub const HDR_LEN: usize = 8;
/// Size of the ACK/NACK/RESYNC header (`NETHDR_ACK_SIZ`).
pub const ACK_HDR_LEN: usize = 16;
/// Largest datagram conntrackd receives (its static receive buffer).
pub const MAX_DATAGRAM: usize = 65536;
/// Bytes of IPv4 + UDP headers conntrackd subtracts from the link MTU to
/// size its send buffer.
pub const UDP_IP_OVERHEAD: usize = 28;

/// Message types (`enum nethdr_type`).
pub mod ty {
    /// A new conntrack entry.
    pub const CT_NEW: u8 = 0;
    /// An update of a conntrack entry (creates it if unknown).
    pub const CT_UPD: u8 = 1;
    /// A destroyed conntrack entry.
    pub const CT_DEL: u8 = 2;
    /// A new expectation.
    pub const EXP_NEW: u8 = 3;
    /// An updated expectation.
    pub const EXP_UPD: u8 = 4;
    /// A destroyed expectation.
    pub const EXP_DEL: u8 = 5;
    /// Highest state (data) message type.
    pub const STATE_MAX: u8 = 5;
    /// A control message (flags say which).
    pub const CTL: u8 = 10;
}

/// Header flags (`NET_F_*`).
pub mod flag {
    /// Unused.
    pub const UNUSED: u8 = 1 << 0;
    /// Asks the peer for a full resynchronisation (bulk send).
    pub const RESYNC: u8 = 1 << 1;
    /// Negative acknowledgement of `[from, to]`: resend these.
    pub const NACK: u8 = 1 << 2;
    /// Acknowledgement of `[from, to]`.
    pub const ACK: u8 = 1 << 3;
    /// Keep-alive.
    pub const ALIVE: u8 = 1 << 4;
    /// Sent after a start until the peer answers with HELLO_BACK.
    pub const HELLO: u8 = 1 << 5;
    /// Answer to a HELLO.
    pub const HELLO_BACK: u8 = 1 << 6;
}

/// A decoded message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version (high nibble of byte 0).
    pub version: u8,
    /// Message type (low nibble of byte 0), see [`ty`].
    pub ty: u8,
    /// Flags, see [`flag`].
    pub flags: u8,
    /// Total message length, header included.
    pub len: u16,
    /// Sequence number.
    pub seq: u32,
    /// `[from, to]` of an ACK/NACK/RESYNC message.
    pub from: u32,
    /// End of the range (inclusive).
    pub to: u32,
}

impl Header {
    /// True for state messages: type ≤ 5 and no flags but HELLO/HELLO_BACK.
    pub fn is_data(&self) -> bool {
        self.ty <= ty::STATE_MAX && self.flags & !(flag::HELLO | flag::HELLO_BACK) == 0
    }

    fn ctl_with(&self, f: u8) -> bool {
        self.ty == ty::CTL && self.flags & f != 0
    }

    /// An acknowledgement.
    pub fn is_ack(&self) -> bool {
        self.ctl_with(flag::ACK)
    }

    /// A negative acknowledgement.
    pub fn is_nack(&self) -> bool {
        self.ctl_with(flag::NACK)
    }

    /// A resync request.
    pub fn is_resync(&self) -> bool {
        self.ctl_with(flag::RESYNC)
    }

    /// A keep-alive.
    pub fn is_alive(&self) -> bool {
        self.ctl_with(flag::ALIVE)
    }

    /// Carries HELLO.
    pub fn is_hello(&self) -> bool {
        self.flags & flag::HELLO != 0
    }

    /// Carries HELLO_BACK.
    pub fn is_hello_back(&self) -> bool {
        self.flags & flag::HELLO_BACK != 0
    }

    /// True when this message uses the 16-byte header with a range.
    pub fn has_range(&self) -> bool {
        ranged(self.ty, self.flags)
    }
}

fn ranged(t: u8, flags: u8) -> bool {
    t == ty::CTL && flags & (flag::ACK | flag::NACK | flag::RESYNC) != 0
}

/// Why a message of a datagram was not accepted. The names follow the
/// counters of `conntrackd -s network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Fewer bytes left than a header ("Truncated message"); the rest of
    /// the datagram is dropped.
    Truncated,
    /// Length field 0, too small for the header, or beyond the datagram
    /// ("Bad message size"); the rest of the datagram is dropped.
    BadSize,
    /// Version is not 1 ("Wrong protocol version"); only this message is
    /// skipped.
    BadVersion,
}

/// Appends a message header. `len` is the total message length.
pub fn put_header(out: &mut Vec<u8>, t: u8, flags: u8, len: u16, seq: u32) {
    out.push((VERSION << 4) | (t & 0x0f));
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Appends a complete control message: 16 bytes with a range for
/// ACK/NACK/RESYNC, else 8 bytes (ALIVE).
pub fn put_ctl(out: &mut Vec<u8>, flags: u8, seq: u32, from: u32, to: u32) {
    if ranged(ty::CTL, flags) {
        put_header(out, ty::CTL, flags, ACK_HDR_LEN as u16, seq);
        out.extend_from_slice(&from.to_be_bytes());
        out.extend_from_slice(&to.to_be_bytes());
    } else {
        put_header(out, ty::CTL, flags, HDR_LEN as u16, seq);
    }
}

/// Rewrites the sequence number and flags of an encoded message in place
/// (messages are built once and stamped when they are sent).
pub fn stamp(msg: &mut [u8], flags: u8, seq: u32) {
    if msg.len() >= HDR_LEN {
        msg[1] = flags;
        msg[4..8].copy_from_slice(&seq.to_be_bytes());
    }
}

/// One message of a datagram: its header and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The decoded header.
    pub header: Header,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// The attributes after the 8-byte header (state messages).
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(HDR_LEN..).unwrap_or(&[])
    }
}

/// Walks the messages of a datagram with conntrackd's receive checks
/// (`channel_handler_routine`): a truncated header or a bad length ends
/// the walk with one error; a wrong version skips just that message.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Messages<'a> {
    /// A walker over `datagram`.
    pub fn new(datagram: &'a [u8]) -> Self {
        Messages {
            buf: datagram,
            pos: 0,
            done: false,
        }
    }

    fn fail(&mut self, e: RecvError) -> Option<Result<Message<'a>, RecvError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        if rest.len() < HDR_LEN {
            return self.fail(RecvError::Truncated);
        }
        let len = u16::from_be_bytes([rest[2], rest[3]]);
        let n = len as usize;
        if n == 0 || n > rest.len() {
            return self.fail(RecvError::BadSize);
        }
        let (version, t, flags) = (rest[0] >> 4, rest[0] & 0x0f, rest[1]);
        let need = if ranged(t, flags) {
            if rest.len() < ACK_HDR_LEN {
                return self.fail(RecvError::Truncated);
            }
            ACK_HDR_LEN
        } else {
            HDR_LEN
        };
        if n < need {
            return self.fail(RecvError::BadSize);
        }
        self.pos += n;
        if version != VERSION {
            return Some(Err(RecvError::BadVersion));
        }
        let be32 =
            |at: usize| u32::from_be_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let (from, to) = if need == ACK_HDR_LEN {
            (be32(8), be32(12))
        } else {
            (0, 0)
        };
        Some(Ok(Message {
            header: Header {
                version,
                ty: t,
                flags,
                len,
                seq: be32(4),
                from,
                to,
            },
            bytes: &rest[..n],
        }))
    }
}

/// Packs messages into datagrams of at most `limit` bytes, the way
/// conntrackd's buffered channel does: a message is appended while
/// `len + msg < limit`; otherwise the buffer is sent first.
#[derive(Clone, Debug)]
pub struct Packer {
    buf: Vec<u8>,
    limit: usize,
}

impl Packer {
    /// A packer for datagrams below `limit` bytes (conntrackd: MTU - 28).
    pub fn new(limit: usize) -> Packer {
        Packer {
            buf: Vec::with_capacity(limit),
            limit: limit.max(ACK_HDR_LEN + 1),
        }
    }

    /// The datagram size limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Appends one message; returns the previous datagram when the message
    /// did not fit next to it. A message larger than the limit goes out
    /// alone.
    pub fn push(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        if self.buf.len() + msg.len() < self.limit {
            self.buf.extend_from_slice(msg);
            return None;
        }
        let full = self.take();
        self.buf.extend_from_slice(msg);
        full
    }

    /// Bytes waiting in the current datagram.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes the current datagram, if it holds anything.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            None
        } else {
            let cap = self.limit;
            Some(std::mem::replace(&mut self.buf, Vec::with_capacity(cap)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Control messages seen between two Debian conntrackd 1.4.7 (FTFW).
    const ALIVE_HELLO: [u8; 8] = [0x1a, 0x30, 0x00, 0x08, 0x6b, 0x06, 0x36, 0x6c];
    const ACK_HELLO_BACK: [u8; 16] = [
        0x1a, 0x68, 0x00, 0x10, 0x6b, 0x06, 0x36, 0x6d, 0x6b, 0x06, 0x36, 0x60, 0x6b, 0x06, 0x36,
        0x6a,
    ];

    #[test]
    fn control_headers_decode() {
        let mut w = Messages::new(&ALIVE_HELLO);
        let m = w.next().unwrap().unwrap();
        assert!(m.header.is_alive() && m.header.is_hello() && !m.header.is_data());
        assert_eq!(m.header.seq, 0x6b06366c);
        assert!(w.next().is_none());

        let m = Messages::new(&ACK_HELLO_BACK).next().unwrap().unwrap();
        assert!(m.header.is_ack() && m.header.is_hello() && m.header.is_hello_back());
        assert_eq!((m.header.from, m.header.to), (0x6b063660, 0x6b06366a));
    }

    #[test]
    fn control_headers_encode_byte_for_byte() {
        let mut out = Vec::new();
        put_ctl(&mut out, flag::ALIVE | flag::HELLO, 0x6b06366c, 0, 0);
        assert_eq!(out, ALIVE_HELLO);
        out.clear();
        put_ctl(
            &mut out,
            flag::ACK | flag::HELLO | flag::HELLO_BACK,
            0x6b06366d,
            0x6b063660,
            0x6b06366a,
        );
        assert_eq!(out, ACK_HELLO_BACK);
    }

    #[test]
    fn two_messages_in_one_datagram() {
        let mut d = Vec::new();
        put_ctl(&mut d, flag::ACK, 0xbd, 0xa0, 0xbd);
        put_ctl(&mut d, flag::NACK, 0xbe, 0xbf, 0xbf);
        let all: Vec<_> = Messages::new(&d).collect();
        assert_eq!(all.len(), 2);
        let b = all[1].unwrap().header;
        assert!(b.is_nack());
        assert_eq!((b.seq, b.from, b.to), (0xbe, 0xbf, 0xbf));
    }

    #[test]
    fn bad_sizes_end_the_walk() {
        // length 0
        let d = [0x10, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            Messages::new(&d).collect::<Vec<_>>(),
            vec![Err(RecvError::BadSize)]
        );
        // length beyond the datagram
        let d = [0x10, 0, 0, 9, 0, 0, 0, 1];
        assert_eq!(
            Messages::new(&d).collect::<Vec<_>>(),
            vec![Err(RecvError::BadSize)]
        );
        // short header
        assert_eq!(
            Messages::new(&[0x1a, 0x08, 0]).collect::<Vec<_>>(),
            vec![Err(RecvError::Truncated)]
        );
        // an ACK needs 16 bytes
        let d = [0x1a, 0x08, 0, 8, 0, 0, 0, 1];
        assert_eq!(
            Messages::new(&d).collect::<Vec<_>>(),
            vec![Err(RecvError::Truncated)]
        );
        let mut d = d.to_vec();
        d.extend_from_slice(&[0; 8]);
        assert_eq!(
            Messages::new(&d).collect::<Vec<_>>(),
            vec![Err(RecvError::BadSize)]
        );
    }

    #[test]
    fn wrong_version_skips_one_message() {
        let mut d = vec![0x20, 0x10, 0, 8, 0, 0, 0, 1];
        put_ctl(&mut d, flag::ALIVE, 2, 0, 0);
        let all: Vec<_> = Messages::new(&d).collect();
        assert_eq!(all[0], Err(RecvError::BadVersion));
        assert!(all[1].unwrap().header.is_alive());
    }

    #[test]
    fn stamp_rewrites_seq_and_flags() {
        let mut m = ALIVE_HELLO;
        stamp(&mut m, flag::ALIVE, 7);
        assert_eq!(m, [0x1a, 0x10, 0, 8, 0, 0, 0, 7]);
        stamp(&mut m[..3], 0, 0); // too short: left alone
    }

    #[test]
    fn packer_flushes_when_next_message_does_not_fit() {
        let mut p = Packer::new(40);
        let m = [0u8; 16];
        assert!(p.push(&m).is_none());
        assert!(p.push(&m).is_none()); // 32 < 40
        let d = p.push(&m).unwrap(); // 48 >= 40
        assert_eq!(d.len(), 32);
        assert_eq!(p.pending(), 16);
        assert_eq!(p.take().unwrap().len(), 16);
        assert!(p.take().is_none());
        // conntrackd's test is strict: exactly filling the limit flushes
        let mut p = Packer::new(32);
        p.push(&m);
        assert!(p.push(&m).is_some());
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..5000 {
            let len = (next() % 80) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len > 4 && next() % 2 == 0 {
                d[0] = 0x10 | (d[0] & 0x0f); // mostly valid version
                let l = (next() % (len as u32 + 4)) as u16;
                d[2..4].copy_from_slice(&l.to_be_bytes());
            }
            for m in Messages::new(&d).flatten() {
                let _ = m.body();
                let _ = m.header.is_data();
            }
        }
    }
}
