//! Netlink attributes (NLAs): a checked, allocation-free view for reading
//! and a small writer that sets NLA_F_NESTED on every nest.
//!
//! Attribute headers are host-endian (`nla_len`, `nla_type`); ctnetlink
//! values are big-endian. After an [`Attr`] is produced its payload slice
//! is within bounds, and every accessor checks the payload length, so no
//! input can make a reader panic.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The nested flag of an attribute type.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// The network-byte-order flag of an attribute type.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// The bits of an attribute type that are the type proper.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Malformed netlink data: what was wrong, for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed netlink message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// Rounds a length up to the 4-byte netlink alignment.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One attribute: its type (flags masked off) and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Attribute type without the nested/byte-order flags.
    pub kind: u16,
    /// The payload, without header or padding.
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    // The readers are `#[inline(always)]` and use only calls that cannot
    // panic (`first_chunk`, `split_at_checked`): at opt-level "z" those
    // inline, where indexing by a range would stay a call (see flow::buf).
    #[inline(always)]
    fn fixed<const N: usize>(&self, what: &'static str) -> Result<[u8; N], WireError> {
        match self.payload.first_chunk::<N>() {
            Some(b) => Ok(*b),
            None => Err(WireError(what)),
        }
    }

    /// A one-byte value.
    #[inline(always)]
    pub fn u8(&self) -> Result<u8, WireError> {
        Ok(self.fixed::<1>("short u8 attribute")?[0])
    }

    /// A big-endian 16-bit value.
    #[inline(always)]
    pub fn be16(&self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.fixed("short u16 attribute")?))
    }

    /// A big-endian 32-bit value.
    #[inline(always)]
    pub fn be32(&self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.fixed("short u32 attribute")?))
    }

    /// A big-endian 64-bit value.
    #[inline(always)]
    pub fn be64(&self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.fixed("short u64 attribute")?))
    }

    /// A host-endian 32-bit value.
    #[inline(always)]
    pub fn ne32(&self) -> Result<u32, WireError> {
        Ok(u32::from_ne_bytes(self.fixed("short u32 attribute")?))
    }

    /// An IPv4 address in network order.
    #[inline(always)]
    pub fn ipv4(&self) -> Result<Ipv4Addr, WireError> {
        Ok(Ipv4Addr::from(self.fixed::<4>("short IPv4 address")?))
    }

    /// An IPv6 address in network order.
    #[inline(always)]
    pub fn ipv6(&self) -> Result<Ipv6Addr, WireError> {
        Ok(Ipv6Addr::from(self.fixed::<16>("short IPv6 address")?))
    }

    /// The attributes nested in this one.
    #[inline(always)]
    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }
}

/// Iterator over the attributes in a buffer. Yields an error (once, then
/// stops) when an attribute header or length is impossible.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Attributes packed in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Attrs { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, WireError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let fail = |s: &mut Self, what| {
            s.rest = &[];
            Some(Err(WireError(what)))
        };
        let Some(&[l0, l1, k0, k1]) = self.rest.first_chunk::<4>() else {
            return fail(self, "truncated attribute header");
        };
        let len = u16::from_ne_bytes([l0, l1]) as usize;
        let kind = u16::from_ne_bytes([k0, k1]) & NLA_TYPE_MASK;
        if len < 4 {
            return fail(self, "attribute length out of bounds");
        }
        let Some((attr, _)) = self.rest.split_at_checked(len) else {
            return fail(self, "attribute length out of bounds");
        };
        let payload = attr.split_at_checked(4).map_or(&[][..], |(_, p)| p);
        let next = align4(len).min(self.rest.len());
        self.rest = self.rest.split_at_checked(next).map_or(&[][..], |(_, r)| r);
        Some(Ok(Attr { kind, payload }))
    }
}

/// Appends netlink attributes to a byte buffer.
#[derive(Debug)]
pub struct AttrWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> AttrWriter<'a> {
    /// Writes after the current end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        AttrWriter { buf }
    }

    fn header(&mut self, kind: u16, len: usize) {
        self.buf
            .extend_from_slice(&((len + 4) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// An attribute with raw payload bytes.
    pub fn bytes(&mut self, kind: u16, payload: &[u8]) {
        self.header(kind, payload.len());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    /// A one-byte attribute.
    pub fn u8(&mut self, kind: u16, v: u8) {
        self.bytes(kind, &[v]);
    }

    /// A big-endian 16-bit attribute.
    pub fn be16(&mut self, kind: u16, v: u16) {
        self.bytes(kind, &v.to_be_bytes());
    }

    /// A big-endian 32-bit attribute.
    pub fn be32(&mut self, kind: u16, v: u32) {
        self.bytes(kind, &v.to_be_bytes());
    }

    /// A string attribute with its terminating NUL.
    pub fn strz(&mut self, kind: u16, s: &[u8]) {
        self.header(kind, s.len() + 1);
        self.buf.extend_from_slice(s);
        self.buf.push(0);
        self.pad();
    }

    /// Opens a nested attribute (with NLA_F_NESTED); close it with
    /// [`AttrWriter::end`] and the returned offset.
    pub fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.header(kind | NLA_F_NESTED, 0);
        at
    }

    /// Closes a nest opened at `at`, fixing its length.
    pub fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        if let Some(h) = self.buf.get_mut(at..at + 2) {
            h.copy_from_slice(&len.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_nested() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        let n = w.begin(1);
        w.be32(3, 0xdead_beef);
        w.u8(4, 7);
        w.end(n);
        w.be16(2, 80);
        assert_eq!(buf.len() % 4, 0);
        // nested flag set on the wire, masked when read
        assert_eq!(u16::from_ne_bytes([buf[2], buf[3]]), 1 | NLA_F_NESTED);
        let attrs: Vec<_> = Attrs::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].kind, 1);
        let inner: Vec<_> = attrs[0].nested().collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].be32().unwrap(), 0xdead_beef);
        assert_eq!(inner[1].u8().unwrap(), 7);
        assert_eq!(attrs[1].be16().unwrap(), 80);
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        for bad in [
            &[1u8][..],
            &[3, 0, 1, 0],
            &[200, 0, 1, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0],
        ] {
            let mut it = Attrs::new(bad);
            assert!(it.next().unwrap().is_err());
            assert!(it.next().is_none());
        }
        // a short payload: the accessor errs
        let a = Attr {
            kind: 1,
            payload: &[1, 2],
        };
        assert!(a.be32().is_err());
        assert!(a.ipv6().is_err());
        assert_eq!(a.be16().unwrap(), 0x0102);
    }

    #[test]
    fn every_truncation_of_a_valid_buffer_is_safe() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        let n = w.begin(1);
        w.bytes(2, &[9; 13]);
        w.end(n);
        w.strz(3, b"ftp");
        for cut in 0..buf.len() {
            for a in Attrs::new(&buf[..cut]).flatten() {
                for b in a.nested().flatten() {
                    let _ = (b.be64(), b.u8(), b.ipv4());
                }
            }
        }
    }
}
