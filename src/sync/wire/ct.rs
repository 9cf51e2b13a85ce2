//! Conntrack state messages: a [`Flow`] as conntrackd's TLV attributes
//! (`ct2msg`) and back (`msg2ct`).
//!
//! Attributes are `{be16 len, be16 type}` + payload, `len` = 4 + payload
//! (unpadded), the next one at the 4-byte aligned offset, padding zero.
//! They are emitted in conntrackd's order; sizes are conntrackd's, and a
//! fixed-size attribute of the wrong size makes the message malformed, as
//! in conntrackd. Unlike conntrackd, unknown attribute types are skipped,
//! so a newer peer's additions do not cost us whole messages.
//!
//! Only the original tuple travels: the receiver rebuilds the reply tuple
//! as the inverse of the original with the NAT attributes applied.
//!
//! Quirks kept for compatibility: ICMP_ID, SPAT_PORT and DPAT_PORT carry
//! a value that is already in network order passed through `htons()`
//! once more, so an x86 conntrackd puts them on the wire in *little*
//! endian order ([`QuirkOrder::Little`], our default); a big-endian
//! conntrackd (MIPS, PowerPC) puts them in network order
//! ([`QuirkOrder::Big`]). For ICMP flows through NAT, conntrackd decides
//! whether to send SPAT/DPAT by comparing the raw bytes of
//! libnetfilter_conntrack's tuple unions (an id against a type/code
//! pair) and then sends zeros: we do the same, and a rebuilt ICMP reply
//! keeps the original id (a NAT-changed ICMP id cannot be synced).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{HDR_LEN, put_header};
use crate::flow::{
    AF_INET, AF_INET6, Flow, HelperName, Labels, ProtoInfo, SeqAdj, Synproxy, TcpInfo, Tuple,
    proto, status,
};

/// Attribute types (`enum nta_attr`).
pub mod nta {
    #![allow(missing_docs)]
    pub const IPV4: u16 = 0;
    pub const IPV6: u16 = 1;
    pub const L4PROTO: u16 = 2;
    pub const PORT: u16 = 3;
    pub const TCP_STATE: u16 = 4;
    pub const STATUS: u16 = 5;
    pub const TIMEOUT: u16 = 6;
    pub const MARK: u16 = 7;
    pub const MASTER_IPV4: u16 = 8;
    pub const MASTER_IPV6: u16 = 9;
    pub const MASTER_L4PROTO: u16 = 10;
    pub const MASTER_PORT: u16 = 11;
    pub const SNAT_IPV4: u16 = 12;
    pub const DNAT_IPV4: u16 = 13;
    pub const SPAT_PORT: u16 = 14;
    pub const DPAT_PORT: u16 = 15;
    pub const NAT_SEQ_ADJ: u16 = 16;
    pub const SCTP_STATE: u16 = 17;
    pub const SCTP_VTAG_ORIG: u16 = 18;
    pub const SCTP_VTAG_REPL: u16 = 19;
    pub const DCCP_STATE: u16 = 20;
    pub const DCCP_ROLE: u16 = 21;
    pub const ICMP_TYPE: u16 = 22;
    pub const ICMP_CODE: u16 = 23;
    pub const ICMP_ID: u16 = 24;
    pub const TCP_WSCALE_ORIG: u16 = 25;
    pub const TCP_WSCALE_REPL: u16 = 26;
    pub const HELPER_NAME: u16 = 27;
    pub const LABELS: u16 = 28;
    pub const SNAT_IPV6: u16 = 29;
    pub const DNAT_IPV6: u16 = 30;
    pub const SYNPROXY: u16 = 31;
    pub const ZONE: u16 = 32;
    /// First type conntrackd 1.4.7 does not know.
    pub const MAX: u16 = 33;
}

/// Largest LABELS attribute conntrackd accepts (header included).
pub const LABELS_MAX_LEN: usize = 4 + 1024;
/// Largest HELPER_NAME attribute conntrackd accepts (header included).
pub const HELPER_MAX_LEN: usize = 16;

/// Byte order of the values conntrackd sends through a double `htons()`
/// (ICMP_ID, SPAT_PORT, DPAT_PORT): the peer's host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuirkOrder {
    /// x86, ARM, little-endian MIPS: bytes swapped on the wire (default).
    #[default]
    Little,
    /// Big-endian hosts: network order on the wire.
    Big,
}

impl QuirkOrder {
    /// Wire bytes for a value whose in-memory (network order) bytes are
    /// `raw`.
    fn put(self, raw: [u8; 2]) -> [u8; 2] {
        match self {
            QuirkOrder::Little => [raw[1], raw[0]],
            QuirkOrder::Big => raw,
        }
    }

    /// In-memory (network order) bytes back from wire bytes.
    fn get(self, wire: [u8; 2]) -> [u8; 2] {
        self.put(wire)
    }
}

/// How flows are encoded: the parts of conntrackd's configuration that
/// change the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOpts {
    /// `CommitTimeout` is set: TIMEOUT is not sent.
    pub omit_timeout: bool,
    /// `TCPWindowTracking on`: TCP window scales are sent.
    pub tcp_window_tracking: bool,
    /// Byte order of the double-swapped fields.
    pub quirk: QuirkOrder,
}

/// Why a flow could not be encoded or a message decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtError(pub &'static str);

impl std::fmt::Display for CtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CtError {}

struct Tlv<'a>(&'a mut Vec<u8>);

impl Tlv<'_> {
    fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(payload);
        let pad = (4 - len % 4) % 4;
        self.0.extend_from_slice(&[0u8; 3][..pad]);
    }

    fn u8(&mut self, kind: u16, v: u8) {
        self.put(kind, &[v]);
    }

    fn be16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_be_bytes());
    }

    fn be32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }
}

fn addr_pair(src: IpAddr, dst: IpAddr) -> Option<(u16, Vec<u8>)> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut v = s.octets().to_vec();
            v.extend_from_slice(&d.octets());
            Some((0, v))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut v = s.octets().to_vec();
            v.extend_from_slice(&d.octets());
            Some((1, v))
        }
        _ => None,
    }
}

/// Raw bytes of libnetfilter_conntrack's `l4src` union for a tuple: the
/// source port (or GRE key) or the ICMP id, in network order.
fn l4src_raw(t: &Tuple) -> [u8; 2] {
    if proto::is_icmp(t.proto) {
        t.icmp_id.to_be_bytes()
    } else {
        t.sport.to_be_bytes()
    }
}

/// Raw bytes of the `l4dst` union: destination port, or ICMP type, code.
fn l4dst_raw(t: &Tuple) -> [u8; 2] {
    if proto::is_icmp(t.proto) {
        [t.icmp_type, t.icmp_code]
    } else {
        t.dport.to_be_bytes()
    }
}

fn nat_done(f: &Flow, bit: u32) -> bool {
    f.status.is_none_or(|s| s & bit != 0)
}

/// Appends the attributes of `f` in conntrackd's order (`ct2msg`).
pub fn encode_attrs(f: &Flow, o: &EncodeOpts, out: &mut Vec<u8>) -> Result<(), CtError> {
    let (ip_kind, ips) =
        addr_pair(f.orig.src, f.orig.dst).ok_or(CtError("flow without an address pair"))?;
    let mut w = Tlv(out);
    w.put(if ip_kind == 0 { nta::IPV4 } else { nta::IPV6 }, &ips);
    w.be32(nta::STATUS, f.status.unwrap_or(0));
    let p = f.orig.proto;
    w.u8(nta::L4PROTO, p);
    let mut ports = [0u8; 4];
    ports[..2].copy_from_slice(&f.orig.sport.to_be_bytes());
    ports[2..].copy_from_slice(&f.orig.dport.to_be_bytes());
    match p {
        proto::TCP => {
            w.put(nta::PORT, &ports);
            if let ProtoInfo::Tcp(t) = &f.protoinfo
                && let Some(s) = t.state
            {
                w.u8(nta::TCP_STATE, s);
                if o.tcp_window_tracking {
                    w.u8(nta::TCP_WSCALE_ORIG, t.wscale[0].unwrap_or(0));
                    w.u8(nta::TCP_WSCALE_REPL, t.wscale[1].unwrap_or(0));
                }
            }
        }
        proto::UDP => w.put(nta::PORT, &ports),
        proto::SCTP => {
            w.put(nta::PORT, &ports);
            if let ProtoInfo::Sctp {
                state: Some(s),
                vtag,
            } = f.protoinfo
            {
                w.u8(nta::SCTP_STATE, s);
                w.be32(nta::SCTP_VTAG_ORIG, vtag[0].unwrap_or(0));
                w.be32(nta::SCTP_VTAG_REPL, vtag[1].unwrap_or(0));
            }
        }
        proto::DCCP => {
            w.put(nta::PORT, &ports);
            if let ProtoInfo::Dccp {
                state: Some(s),
                role,
                ..
            } = f.protoinfo
            {
                w.u8(nta::DCCP_STATE, s);
                w.u8(nta::DCCP_ROLE, role.unwrap_or(0));
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            w.u8(nta::ICMP_TYPE, f.orig.icmp_type);
            w.u8(nta::ICMP_CODE, f.orig.icmp_code);
            w.put(nta::ICMP_ID, &o.quirk.put(f.orig.icmp_id.to_be_bytes()));
        }
        _ => {}
    }
    if !o.omit_timeout
        && let Some(t) = f.timeout
    {
        w.be32(nta::TIMEOUT, t);
    }
    if let Some(m) = f.mark {
        w.be32(nta::MARK, m);
    }
    if let Some(m) = &f.master
        && let Some((k, ips)) = addr_pair(m.src, m.dst)
    {
        w.put(
            if k == 0 {
                nta::MASTER_IPV4
            } else {
                nta::MASTER_IPV6
            },
            &ips,
        );
        w.u8(nta::MASTER_L4PROTO, m.proto);
        if proto::has_ports(m.proto) {
            let mut mp = [0u8; 4];
            mp[..2].copy_from_slice(&m.sport.to_be_bytes());
            mp[2..].copy_from_slice(&m.dport.to_be_bytes());
            w.put(nta::MASTER_PORT, &mp);
        }
    }
    if f.has_reply {
        let snat = nat_done(f, status::SRC_NAT_DONE);
        let dnat = nat_done(f, status::DST_NAT_DONE);
        match (f.reply.dst, f.reply.src) {
            (IpAddr::V4(rd), IpAddr::V4(rs)) if ip_kind == 0 => {
                if snat && f.reply.dst != f.orig.src {
                    w.put(nta::SNAT_IPV4, &rd.octets());
                }
                if dnat && f.reply.src != f.orig.dst {
                    w.put(nta::DNAT_IPV4, &rs.octets());
                }
            }
            (IpAddr::V6(rd), IpAddr::V6(rs)) if ip_kind == 1 => {
                if snat && f.reply.dst != f.orig.src {
                    w.put(nta::SNAT_IPV6, &rd.octets());
                }
                if dnat && f.reply.src != f.orig.dst {
                    w.put(nta::DNAT_IPV6, &rs.octets());
                }
            }
            _ => {}
        }
        // libnetfilter_conntrack compares the raw union bytes, also for
        // ICMP (where they are an id against a type/code pair); the value
        // it then reads is the reply port attribute, which is unset (0)
        // for ICMP
        let icmp = proto::is_icmp(p);
        if snat && l4dst_raw(&f.reply) != l4src_raw(&f.orig) {
            let v = if icmp { [0, 0] } else { l4dst_raw(&f.reply) };
            w.put(nta::SPAT_PORT, &o.quirk.put(v));
        }
        if dnat && l4src_raw(&f.reply) != l4dst_raw(&f.orig) {
            let v = if icmp { [0, 0] } else { l4src_raw(&f.reply) };
            w.put(nta::DPAT_PORT, &o.quirk.put(v));
        }
    }
    if let [Some(a), Some(b)] = f.seq_adj {
        let mut v = Vec::with_capacity(24);
        for s in [a, b] {
            for x in [s.correction_pos, s.offset_before, s.offset_after] {
                v.extend_from_slice(&x.to_be_bytes());
            }
        }
        w.put(nta::NAT_SEQ_ADJ, &v);
    }
    if let Some(h) = &f.helper {
        let mut v = h.as_bytes().to_vec();
        v.push(0);
        w.put(nta::HELPER_NAME, &v);
    }
    if let Some(l) = &f.labels
        && !l.is_empty()
    {
        let n = (l.len as usize).clamp(1, 4);
        let mut v = Vec::with_capacity(n * 4);
        for word in &l.words[..n] {
            v.extend_from_slice(&word.to_be_bytes());
        }
        w.put(nta::LABELS, &v);
    }
    if let Some(s) = &f.synproxy {
        let mut v = Vec::with_capacity(12);
        for x in [s.its, s.isn, s.tsoff] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        w.put(nta::SYNPROXY, &v);
    }
    if let Some(z) = f.zone {
        w.be16(nta::ZONE, z);
    }
    Ok(())
}

/// Encodes a whole state message (header + attributes) of type `t` with
/// sequence 0 and no flags; [`super::stamp`] sets both when it is sent.
pub fn encode_msg(t: u8, f: &Flow, o: &EncodeOpts, out: &mut Vec<u8>) -> Result<(), CtError> {
    let at = out.len();
    put_header(out, t, 0, 0, 0);
    if let Err(e) = encode_attrs(f, o, out) {
        out.truncate(at);
        return Err(e);
    }
    let len = out.len() - at;
    if len > u16::MAX as usize {
        out.truncate(at);
        return Err(CtError("message too long"));
    }
    out[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

/// One received attribute: its type and its payload (header and padding
/// left out). Fixed-size values are read through [`Attr::fixed`], which
/// checks the size where the value is read, so no index can be out of
/// step with a separate table of sizes.
#[derive(Clone, Copy, Debug)]
struct Attr<'a> {
    kind: u16,
    payload: &'a [u8],
}

impl Attr<'_> {
    /// The payload of a fixed-size attribute: exactly `N` bytes, as
    /// conntrackd requires; any other size makes the message malformed.
    fn fixed<const N: usize>(&self) -> Result<[u8; N], CtError> {
        <[u8; N]>::try_from(self.payload).map_err(|_| CtError("attribute of the wrong size"))
    }

    fn u8(&self) -> Result<u8, CtError> {
        let [v] = self.fixed()?;
        Ok(v)
    }

    fn be16(&self) -> Result<u16, CtError> {
        Ok(u16::from_be_bytes(self.fixed()?))
    }

    fn be32(&self) -> Result<u32, CtError> {
        Ok(u32::from_be_bytes(self.fixed()?))
    }

    /// A source and destination address pair (IPV4, IPV6 and MASTER_*).
    fn addr_pair(&self, v6: bool) -> Result<(IpAddr, IpAddr), CtError> {
        if v6 {
            let b: [u8; 32] = self.fixed()?;
            let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
            s.copy_from_slice(&b[..16]);
            d.copy_from_slice(&b[16..]);
            Ok((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))))
        } else {
            let [s0, s1, s2, s3, d0, d1, d2, d3] = self.fixed()?;
            Ok((
                IpAddr::V4(Ipv4Addr::new(s0, s1, s2, s3)),
                IpAddr::V4(Ipv4Addr::new(d0, d1, d2, d3)),
            ))
        }
    }

    /// Two big-endian 16-bit values (PORT, MASTER_PORT).
    fn be16_pair(&self) -> Result<(u16, u16), CtError> {
        let [a0, a1, b0, b1] = self.fixed()?;
        Ok((u16::from_be_bytes([a0, a1]), u16::from_be_bytes([b0, b1])))
    }

    /// `W` big-endian 32-bit values in an attribute of `N` = 4 * `W` bytes.
    fn be32_words<const N: usize, const W: usize>(&self) -> Result<[u32; W], CtError> {
        const { assert!(N == 4 * W) };
        let b: [u8; N] = self.fixed()?;
        let mut out = [0u32; W];
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(out)
    }
}

/// The attributes of a state message, walked as conntrackd walks them:
/// while more than a bare attribute header remains. A length shorter than
/// a header or past the end is an error (once, then the walk stops).
struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, CtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let [l0, l1, k0, k1, ..] = *self.rest else {
            return None;
        };
        if self.rest.len() == 4 {
            return None;
        }
        let len = u16::from_be_bytes([l0, l1]) as usize;
        let Some(payload) = self.rest.get(4..len) else {
            self.rest = &[];
            return Some(Err(CtError("attribute length out of bounds")));
        };
        self.rest = self.rest.get((len + 3) & !3..).unwrap_or(&[]);
        Some(Ok(Attr {
            kind: u16::from_be_bytes([k0, k1]),
            payload,
        }))
    }
}

/// NAT information of a message, before it is folded into the reply tuple.
#[derive(Default)]
struct Nat {
    snat: Option<IpAddr>,
    dnat: Option<IpAddr>,
    spat: Option<[u8; 2]>,
    dpat: Option<[u8; 2]>,
}

/// Decodes the attributes of a state message (the bytes after the 8-byte
/// header) into a flow whose reply tuple is rebuilt from the original
/// tuple and the NAT attributes. Unknown attributes are skipped; bad
/// lengths, or a message without addresses or protocol, are an error.
pub fn decode_attrs(body: &[u8], q: QuirkOrder) -> Result<Flow, CtError> {
    let mut f = Flow::default();
    let mut nat = Nat::default();
    let mut tcp = TcpInfo::default();
    let (mut has_tcp, mut has_addr, mut has_proto) = (false, false, false);
    let (mut sctp_state, mut sctp_vtag) = (None, [None; 2]);
    let (mut dccp_state, mut dccp_role) = (None, None);
    let mut master: Option<Tuple> = None;
    let mut master_ports: Option<(u16, u16)> = None;
    for a in (Attrs { rest: body }) {
        let a = a?;
        match a.kind {
            nta::IPV4 | nta::IPV6 => {
                let v6 = a.kind == nta::IPV6;
                (f.orig.src, f.orig.dst) = a.addr_pair(v6)?;
                f.family = if v6 { AF_INET6 } else { AF_INET };
                has_addr = true;
            }
            nta::L4PROTO => {
                f.orig.proto = a.u8()?;
                has_proto = true;
            }
            nta::PORT => (f.orig.sport, f.orig.dport) = a.be16_pair()?,
            nta::TCP_STATE => {
                tcp.state = Some(a.u8()?);
                has_tcp = true;
            }
            nta::TCP_WSCALE_ORIG => {
                tcp.wscale[0] = Some(a.u8()?);
                has_tcp = true;
            }
            nta::TCP_WSCALE_REPL => {
                tcp.wscale[1] = Some(a.u8()?);
                has_tcp = true;
            }
            nta::STATUS => f.status = Some(a.be32()?),
            nta::TIMEOUT => f.timeout = Some(a.be32()?),
            nta::MARK => f.mark = Some(a.be32()?),
            nta::MASTER_IPV4 | nta::MASTER_IPV6 => {
                let (s, d) = a.addr_pair(a.kind == nta::MASTER_IPV6)?;
                let m = master.get_or_insert_with(Tuple::default);
                m.src = s;
                m.dst = d;
            }
            nta::MASTER_L4PROTO => master.get_or_insert_with(Tuple::default).proto = a.u8()?,
            nta::MASTER_PORT => master_ports = Some(a.be16_pair()?),
            nta::SNAT_IPV4 => nat.snat = Some(IpAddr::V4(Ipv4Addr::from(a.fixed::<4>()?))),
            nta::DNAT_IPV4 => nat.dnat = Some(IpAddr::V4(Ipv4Addr::from(a.fixed::<4>()?))),
            nta::SNAT_IPV6 => nat.snat = Some(IpAddr::V6(Ipv6Addr::from(a.fixed::<16>()?))),
            nta::DNAT_IPV6 => nat.dnat = Some(IpAddr::V6(Ipv6Addr::from(a.fixed::<16>()?))),
            nta::SPAT_PORT => nat.spat = Some(q.get(a.fixed()?)),
            nta::DPAT_PORT => nat.dpat = Some(q.get(a.fixed()?)),
            nta::NAT_SEQ_ADJ => {
                let [p0, b0, a0, p1, b1, a1] = a.be32_words::<24, 6>()?;
                f.seq_adj = [(p0, b0, a0), (p1, b1, a1)].map(|(p, b, a)| {
                    Some(SeqAdj {
                        correction_pos: p,
                        offset_before: b,
                        offset_after: a,
                    })
                });
            }
            nta::SCTP_STATE => sctp_state = Some(a.u8()?),
            nta::SCTP_VTAG_ORIG => sctp_vtag[0] = Some(a.be32()?),
            nta::SCTP_VTAG_REPL => sctp_vtag[1] = Some(a.be32()?),
            nta::DCCP_STATE => dccp_state = Some(a.u8()?),
            nta::DCCP_ROLE => dccp_role = Some(a.u8()?),
            nta::ICMP_TYPE => f.orig.icmp_type = a.u8()?,
            nta::ICMP_CODE => f.orig.icmp_code = a.u8()?,
            nta::ICMP_ID => f.orig.icmp_id = u16::from_be_bytes(q.get(a.fixed()?)),
            // conntrackd refuses longer names; we skip them
            nta::HELPER_NAME if a.payload.len() <= HELPER_MAX_LEN => {
                f.helper = Some(HelperName::from_bytes(a.payload))
            }
            nta::LABELS => {
                if a.payload.len() + 4 > LABELS_MAX_LEN {
                    return Err(CtError("labels attribute too long"));
                }
                let v = a.payload;
                if !v.is_empty() && v.len() % 4 == 0 {
                    let mut l = Labels::default();
                    for (i, w) in v.chunks_exact(4).take(4).enumerate() {
                        l.words[i] = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                        l.len = i as u8 + 1;
                    }
                    f.labels = Some(l);
                }
            }
            nta::SYNPROXY => {
                let [its, isn, tsoff] = a.be32_words::<12, 3>()?;
                f.synproxy = Some(Synproxy { its, isn, tsoff });
            }
            nta::ZONE => f.zone = Some(a.be16()?),
            _ => {} // newer attribute: skip it
        }
    }
    if !has_addr || !has_proto {
        return Err(CtError("message without addresses or protocol"));
    }
    let p = f.orig.proto;
    if !proto::has_ports(p) && p != proto::GRE {
        f.orig.sport = 0;
        f.orig.dport = 0;
    }
    f.orig.proto = p;
    f.has_orig = true;
    f.protoinfo = match p {
        proto::TCP if has_tcp => ProtoInfo::Tcp(tcp),
        proto::SCTP if sctp_state.is_some() => ProtoInfo::Sctp {
            state: sctp_state,
            vtag: sctp_vtag,
        },
        proto::DCCP if dccp_state.is_some() => ProtoInfo::Dccp {
            state: dccp_state,
            role: dccp_role,
            handshake_seq: None,
        },
        _ => ProtoInfo::None,
    };
    if let Some(mut m) = master {
        if let Some((s, d)) = master_ports {
            m.sport = s;
            m.dport = d;
        }
        f.master = Some(m);
    }
    f.reply = rebuild_reply(&f.orig, &nat);
    f.has_reply = true;
    Ok(f)
}

/// The reply tuple: the inverse of the original with NAT applied, as
/// libnetfilter_conntrack's SETUP_REPLY plus the NAT attributes give it.
fn rebuild_reply(orig: &Tuple, nat: &Nat) -> Tuple {
    let mut r = orig.inverted();
    if let Some(a) = nat.snat
        && a.is_ipv4() == r.dst.is_ipv4()
    {
        r.dst = a;
    }
    if let Some(a) = nat.dnat
        && a.is_ipv4() == r.src.is_ipv4()
    {
        r.src = a;
    }
    // for ICMP conntrackd sends SPAT/DPAT as zeros (see encode_attrs):
    // the reply keeps the original id
    if !proto::is_icmp(orig.proto) && (proto::has_ports(orig.proto) || orig.proto == proto::GRE) {
        if let Some(p) = nat.spat {
            r.dport = u16::from_be_bytes(p);
        }
        if let Some(p) = nat.dpat {
            r.sport = u16::from_be_bytes(p);
        }
    }
    r
}

/// Decodes a whole state message (the 8-byte header, then the
/// attributes) into a flow: [`decode_attrs`] on the bytes after the
/// header. For callers that have a whole message; the header is not
/// checked here.
pub fn decode_msg(msg: &[u8], q: QuirkOrder) -> Result<Flow, CtError> {
    match msg.get(HDR_LEN..) {
        Some(body) => decode_attrs(body, q),
        None => Err(CtError("short message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil;

    /// TCP v4 ESTABLISHED, mark 7, timeout 300, as Debian's conntrackd
    /// 1.4.7 sent it (kernel 6.18 adds zeroed SYNPROXY to entries created
    /// through ctnetlink).
    const TCP4: [u8; 84] = [
        0x10, 0x00, 0x00, 0x54, 0x6b, 0x06, 0x36, 0x6c, // header
        0x00, 0x0c, 0x00, 0x00, 10, 1, 1, 1, 10, 2, 2, 2, // IPV4
        0x00, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x0e, // STATUS
        0x00, 0x05, 0x00, 0x02, 0x06, 0x00, 0x00, 0x00, // L4PROTO
        0x00, 0x08, 0x00, 0x03, 0x04, 0x57, 0x00, 0x50, // PORT
        0x00, 0x05, 0x00, 0x04, 0x03, 0x00, 0x00, 0x00, // TCP_STATE
        0x00, 0x08, 0x00, 0x06, 0x00, 0x00, 0x01, 0x2c, // TIMEOUT
        0x00, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x07, // MARK
        0x00, 0x10, 0x00, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // SYNPROXY
    ];

    fn tcp4_flow() -> Flow {
        let mut f = testutil::tcp4();
        f.orig.src = "10.1.1.1".parse().unwrap();
        f.orig.dst = "10.2.2.2".parse().unwrap();
        f.orig.sport = 1111;
        f.reply = f.orig.inverted();
        f.timeout = Some(300);
        f.mark = Some(7);
        f.status = Some(0x0e);
        f.synproxy = Some(Synproxy::default());
        f
    }

    #[test]
    fn conntrackd_tcp4_fixture_decodes() {
        let f = decode_msg(&TCP4, QuirkOrder::Little).unwrap();
        assert_eq!(f.family, AF_INET);
        assert_eq!(f.orig.src, "10.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!((f.orig.sport, f.orig.dport), (1111, 80));
        assert_eq!(f.protoinfo.tcp_state(), Some(3));
        assert_eq!(
            (f.timeout, f.mark, f.status),
            (Some(300), Some(7), Some(14))
        );
        assert_eq!(f.reply, f.orig.inverted());
        assert!(!f.is_snat() && !f.is_dnat());
    }

    #[test]
    fn conntrackd_tcp4_fixture_encodes_byte_for_byte() {
        let mut out = Vec::new();
        encode_msg(
            super::super::ty::CT_NEW,
            &tcp4_flow(),
            &EncodeOpts::default(),
            &mut out,
        )
        .unwrap();
        super::super::stamp(&mut out, 0, 0x6b06366c);
        assert_eq!(out, TCP4);
    }

    #[test]
    fn commit_timeout_omits_timeout() {
        let mut out = Vec::new();
        let o = EncodeOpts {
            omit_timeout: true,
            ..EncodeOpts::default()
        };
        encode_msg(0, &tcp4_flow(), &o, &mut out).unwrap();
        assert_eq!(out.len(), 76);
        assert_eq!(decode_msg(&out, QuirkOrder::Little).unwrap().timeout, None);
    }

    fn icmp_nat() -> Flow {
        // ping 10.9.1.2 -> 10.9.2.2 id 0x1234, masqueraded to 10.9.2.1 id 0x0457
        let orig = Tuple {
            src: "10.9.1.2".parse().unwrap(),
            dst: "10.9.2.2".parse().unwrap(),
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 0x1234,
            ..Tuple::default()
        };
        let mut reply = orig.inverted();
        reply.dst = "10.9.2.1".parse().unwrap();
        reply.icmp_id = 0x0457;
        Flow {
            family: AF_INET,
            orig,
            reply,
            has_orig: true,
            has_reply: true,
            status: Some(0x1be),
            timeout: Some(29),
            mark: Some(0),
            ..Flow::default()
        }
    }

    fn find(out: &[u8], kind: u16) -> Option<Vec<u8>> {
        let mut p = 0;
        while p + 4 <= out.len() {
            let l = u16::from_be_bytes([out[p], out[p + 1]]) as usize;
            if u16::from_be_bytes([out[p + 2], out[p + 3]]) == kind {
                return Some(out[p + 4..p + l].to_vec());
            }
            p += (l + 3) & !3;
        }
        None
    }

    #[test]
    fn icmp_id_and_nat_ports_use_the_host_order_quirk() {
        let f = icmp_nat();
        let mut out = Vec::new();
        encode_attrs(&f, &EncodeOpts::default(), &mut out).unwrap();
        assert_eq!(find(&out, nta::ICMP_ID).unwrap(), [0x34, 0x12]);
        assert_eq!(find(&out, nta::SNAT_IPV4).unwrap(), [10, 9, 2, 1]);
        // SPAT: reply type/code (0, 0) differs from the id: sent, as 0
        assert_eq!(find(&out, nta::SPAT_PORT).unwrap(), [0, 0]);
        // DPAT: reply id 0x0457 differs from orig type/code 08 00: sent, 0
        assert_eq!(find(&out, nta::DPAT_PORT).unwrap(), [0, 0]);
        let back = decode_attrs(&out, QuirkOrder::Little).unwrap();
        assert_eq!(back.orig, f.orig);
        // the NAT'ed id is lost on the way, as with conntrackd
        let mut want = f.reply;
        want.icmp_id = 0x1234;
        assert_eq!(back.reply, want);

        // a big-endian peer: network order on the wire
        let o = EncodeOpts {
            quirk: QuirkOrder::Big,
            ..EncodeOpts::default()
        };
        out.clear();
        encode_attrs(&f, &o, &mut out).unwrap();
        assert_eq!(find(&out, nta::ICMP_ID).unwrap(), [0x12, 0x34]);
        assert_eq!(decode_attrs(&out, QuirkOrder::Big).unwrap().reply, want);
    }

    #[test]
    fn snat_and_dnat_ports_rebuild_the_reply() {
        let mut f = tcp4_flow();
        f.status = Some(0x1be);
        f.reply.dst = "100.64.0.5".parse().unwrap();
        f.reply.dport = 6000;
        f.reply.src = "192.168.1.9".parse().unwrap();
        f.reply.sport = 8080;
        let mut out = Vec::new();
        encode_attrs(&f, &EncodeOpts::default(), &mut out).unwrap();
        // SPAT 6000 = 0x1770 goes out byte-swapped, as observed
        assert!(out.windows(8).any(|w| w == [0, 6, 0, 14, 0x70, 0x17, 0, 0]));
        assert!(out.windows(8).any(|w| w == [0, 8, 0, 12, 100, 64, 0, 5]));
        let back = decode_attrs(&out, QuirkOrder::Little).unwrap();
        assert_eq!(back.reply, f.reply);
        assert!(back.is_snat() && back.is_dnat() && back.is_spat() && back.is_dpat());
    }

    #[test]
    fn ipv6_zone_labels_helper_seqadj_master_roundtrip() {
        let mut f = tcp4_flow();
        f.family = AF_INET6;
        f.orig.src = "fd09:1::2".parse().unwrap();
        f.orig.dst = "fd09:2::2".parse().unwrap();
        f.reply = f.orig.inverted();
        f.reply.dst = "fd09:2::1".parse().unwrap();
        f.status = Some(0x1be);
        f.zone = Some(5);
        f.helper = Some(HelperName::from_bytes(b"ftp"));
        f.labels = Some(Labels {
            words: [1, 0, 0x8000_0000, 0],
            len: 4,
        });
        f.seq_adj = [
            Some(SeqAdj {
                correction_pos: 1,
                offset_before: 2,
                offset_after: 3,
            }),
            Some(SeqAdj::default()),
        ];
        f.master = Some(Tuple {
            src: "fd09:1::2".parse().unwrap(),
            dst: "fd09:2::2".parse().unwrap(),
            proto: proto::TCP,
            sport: 40000,
            dport: 21,
            ..Tuple::default()
        });
        f.synproxy = Some(Synproxy {
            isn: 1,
            its: 2,
            tsoff: 3,
        });
        let o = EncodeOpts {
            tcp_window_tracking: true,
            ..EncodeOpts::default()
        };
        let mut out = Vec::new();
        encode_msg(1, &f, &o, &mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let back = decode_msg(&out, QuirkOrder::Little).unwrap();
        assert_eq!(back.family, AF_INET6);
        assert_eq!(back.orig, f.orig);
        assert_eq!(back.reply, f.reply);
        assert_eq!(back.zone, Some(5));
        assert_eq!(back.helper, f.helper);
        assert_eq!(back.labels, f.labels);
        assert_eq!(back.seq_adj, f.seq_adj);
        assert_eq!(back.master, f.master);
        assert_eq!(back.synproxy, f.synproxy);
        assert_eq!(
            back.protoinfo,
            ProtoInfo::Tcp(TcpInfo {
                state: Some(3),
                wscale: [Some(0), Some(0)],
                flags: [None; 2]
            })
        );
        // zone is the last attribute: 0006 0020 0005 + 2 bytes padding
        assert_eq!(&out[out.len() - 8..], [0, 6, 0, 0x20, 0, 5, 0, 0]);
    }

    #[test]
    fn unknown_attributes_are_skipped_bad_sizes_are_not() {
        let mut body = TCP4[8..].to_vec();
        body.extend_from_slice(&[0, 6, 0, 99, 1, 2, 0, 0]); // type 99
        let f = decode_attrs(&body, QuirkOrder::Little).unwrap();
        assert_eq!(f.mark, Some(7));
        // MARK with 3 bytes
        let mut bad = TCP4[8..].to_vec();
        bad.extend_from_slice(&[0, 7, 0, 7, 1, 2, 3, 0]);
        assert!(decode_attrs(&bad, QuirkOrder::Little).is_err());
        // nothing but a status
        assert!(decode_attrs(&TCP4[20..28], QuirkOrder::Little).is_err());
    }

    /// conntrackd's payload size of every fixed-size attribute type: the
    /// test's own copy, as the decoder checks each size where it reads
    /// the value.
    const FIXED_SIZES: [(u16, usize); 31] = [
        (nta::IPV4, 8),
        (nta::IPV6, 32),
        (nta::L4PROTO, 1),
        (nta::PORT, 4),
        (nta::TCP_STATE, 1),
        (nta::STATUS, 4),
        (nta::TIMEOUT, 4),
        (nta::MARK, 4),
        (nta::MASTER_IPV4, 8),
        (nta::MASTER_IPV6, 32),
        (nta::MASTER_L4PROTO, 1),
        (nta::MASTER_PORT, 4),
        (nta::SNAT_IPV4, 4),
        (nta::DNAT_IPV4, 4),
        (nta::SPAT_PORT, 2),
        (nta::DPAT_PORT, 2),
        (nta::NAT_SEQ_ADJ, 24),
        (nta::SCTP_STATE, 1),
        (nta::SCTP_VTAG_ORIG, 4),
        (nta::SCTP_VTAG_REPL, 4),
        (nta::DCCP_STATE, 1),
        (nta::DCCP_ROLE, 1),
        (nta::ICMP_TYPE, 1),
        (nta::ICMP_CODE, 1),
        (nta::ICMP_ID, 2),
        (nta::TCP_WSCALE_ORIG, 1),
        (nta::TCP_WSCALE_REPL, 1),
        (nta::SNAT_IPV6, 16),
        (nta::DNAT_IPV6, 16),
        (nta::SYNPROXY, 12),
        (nta::ZONE, 2),
    ];

    /// One attribute of `kind` with `len` payload bytes, then TCP4's
    /// attributes (first, because the walk ignores a bare header at the
    /// end, as conntrackd's does).
    fn with_attr(kind: u16, len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        Tlv(&mut body).put(kind, &vec![0x5a; len]);
        body.extend_from_slice(&TCP4[8..]);
        body
    }

    #[test]
    fn every_attribute_type_checks_its_size() {
        for (kind, n) in FIXED_SIZES {
            for len in [0, n - 1, n + 1] {
                assert_eq!(
                    decode_attrs(&with_attr(kind, len), QuirkOrder::Little).unwrap_err(),
                    CtError("attribute of the wrong size"),
                    "type {kind} with {len} bytes"
                );
            }
            assert!(
                decode_attrs(&with_attr(kind, n), QuirkOrder::Little).is_ok(),
                "type {kind} with {n} bytes"
            );
        }
        // the variable ones: HELPER_NAME and LABELS
        for kind in 0..nta::MAX {
            let listed = FIXED_SIZES.iter().any(|(k, _)| *k == kind);
            assert!(listed || kind == nta::HELPER_NAME || kind == nta::LABELS);
        }
        // every type (known or not) at every length: an answer, no panic
        for kind in 0..=nta::MAX + 1 {
            for len in 0..=40 {
                let _ = decode_attrs(&with_attr(kind, len), QuirkOrder::Big);
                let mut alone = Vec::new();
                Tlv(&mut alone).put(kind, &vec![0xff; len]);
                let _ = decode_attrs(&alone, QuirkOrder::Little);
            }
        }
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        for n in 0..TCP4.len() {
            let _ = decode_msg(&TCP4[..n], QuirkOrder::Little);
            let mut m = TCP4;
            m[n] ^= 0xff;
            let _ = decode_msg(&m, QuirkOrder::Big);
        }
        let mut x: u64 = 88172645463325252;
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 120) as usize;
            let mut b = Vec::with_capacity(len);
            let mut y = x;
            for i in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // keep attribute headers plausible now and then
                b.push(if i % 4 == 0 && y & 1 == 0 {
                    0
                } else {
                    (y >> 33) as u8
                });
            }
            let _ = decode_attrs(&b, QuirkOrder::Little);
        }
    }

    #[test]
    fn flows_that_cannot_be_encoded_are_an_error() {
        let mut f = tcp4_flow();
        f.orig.dst = "::1".parse().unwrap();
        let mut out = vec![1, 2, 3];
        assert!(encode_msg(0, &f, &EncodeOpts::default(), &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }
}
