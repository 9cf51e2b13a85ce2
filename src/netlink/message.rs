//! Netlink message framing: a checked walk over the messages in one
//! datagram, and the error/ack payload.
//!
//! The header (`struct nlmsghdr`: len, type, flags, seq, pid) is host-endian.

use super::attr::{WireError, align4};

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// No-op message.
pub const NLMSG_NOOP: u16 = 1;
/// Error or acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// End of a multipart dump.
pub const NLMSG_DONE: u16 = 3;
/// Data lost.
pub const NLMSG_OVERRUN: u16 = 4;

/// Request flag.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Part of a multipart reply.
pub const NLM_F_MULTI: u16 = 0x2;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Dump: return every entry (ROOT|MATCH).
pub const NLM_F_DUMP: u16 = 0x300;
/// Replace existing (NEW requests).
pub const NLM_F_REPLACE: u16 = 0x100;
/// Fail if it exists (NEW requests).
pub const NLM_F_EXCL: u16 = 0x200;
/// Create if missing (NEW requests; on events: a new entry).
pub const NLM_F_CREATE: u16 = 0x400;

/// One netlink message: header fields and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlMsg<'a> {
    /// Message type.
    pub ty: u16,
    /// Flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Port id of the sender (0 for the kernel; a socket's id for events
    /// caused by a userspace request).
    pub pid: u32,
    /// Payload after the header.
    pub payload: &'a [u8],
}

impl NlMsg<'_> {
    /// For NLMSG_ERROR: the errno (positive), or 0 for an acknowledgement.
    pub fn error_code(&self) -> Result<i32, WireError> {
        let b: [u8; 4] = self
            .payload
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError("truncated error message"))?;
        Ok(-i32::from_ne_bytes(b))
    }
}

/// Iterator over the messages of one datagram.
#[derive(Clone, Debug)]
pub struct NlMsgs<'a> {
    rest: &'a [u8],
}

impl<'a> NlMsgs<'a> {
    /// Messages in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        NlMsgs { rest: buf }
    }
}

impl<'a> Iterator for NlMsgs<'a> {
    type Item = Result<NlMsg<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        let Some(h) = r.first_chunk::<NLMSG_HDRLEN>() else {
            self.rest = &[];
            return Some(Err(WireError("truncated message header")));
        };
        let u32_at = |o: usize| u32::from_ne_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let len = u32_at(0) as usize;
        let msg = match r.split_at_checked(len) {
            Some((m, _)) if len >= NLMSG_HDRLEN => m,
            _ => {
                self.rest = &[];
                return Some(Err(WireError("message length out of bounds")));
            }
        };
        let msg = NlMsg {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            flags: u16::from_ne_bytes([h[6], h[7]]),
            seq: u32_at(8),
            pid: u32_at(12),
            payload: msg
                .split_at_checked(NLMSG_HDRLEN)
                .map_or(&[][..], |(_, p)| p),
        };
        self.rest = r
            .split_at_checked(align4(len).min(r.len()))
            .map_or(&[][..], |(_, rest)| rest);
        Some(Ok(msg))
    }
}

/// Appends a netlink header for a message of `payload_len` bytes.
pub fn push_header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, payload_len: usize) {
    buf.extend_from_slice(&((NLMSG_HDRLEN + payload_len) as u32).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_messages_and_errors() {
        let mut buf = Vec::new();
        push_header(&mut buf, NLMSG_ERROR, 0, 7, 4);
        buf.extend_from_slice(&(-17i32).to_ne_bytes());
        push_header(&mut buf, NLMSG_DONE, NLM_F_MULTI, 7, 0);
        let msgs: Vec<_> = NlMsgs::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].error_code().unwrap(), 17);
        assert_eq!(msgs[1].ty, NLMSG_DONE);
        for cut in 0..buf.len() {
            let _ = NlMsgs::new(&buf[..cut]).count();
        }
        let mut bad = buf.clone();
        bad[0] = 3;
        assert!(NlMsgs::new(&bad).next().unwrap().is_err());
    }
}
