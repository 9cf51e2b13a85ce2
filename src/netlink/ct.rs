//! ctnetlink messages: decoding a conntrack entry from its attributes into a
//! [`Flow`] (allocation-free), and encoding requests.
//!
//! netlink-packet-netfilter models only part of CTA_* (no counters, id,
//! zone, ICMP tuple fields, timestamps, labels, NAT, helper...) and its
//! typed parse allocates per attribute, so the hot path walks attributes
//! here. Requests are framed with netlink-packet-core's `NetlinkMessage`
//! and netlink-packet-netfilter's `NetfilterHeader`; their attributes are
//! written by [`AttrWriter`], which sets NLA_F_NESTED on every nest as the
//! kernel's strict parsers (CTA_FILTER) require.

use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};

use super::attr::{Attr, AttrWriter, Attrs, WireError};
use crate::flow::{
    Counters, Flow, HelperName, Labels, ProtoInfo, SeqAdj, Synproxy, TcpInfo, Tuple, proto,
};

/// The ctnetlink subsystem (`NFNL_SUBSYS_CTNETLINK`).
pub const SUBSYS_CTNETLINK: u8 = 1;
/// The expectation subsystem (`NFNL_SUBSYS_CTNETLINK_EXP`).
pub const SUBSYS_CTNETLINK_EXP: u8 = 2;

/// ctnetlink message types (`IPCTNL_MSG_CT_*`).
pub mod msg {
    /// Create/update; also every dump entry and NEW/UPDATE event.
    pub const NEW: u8 = 0;
    /// Get one entry, or dump with NLM_F_DUMP.
    pub const GET: u8 = 1;
    /// Delete one entry, or flush without a tuple; also DESTROY events.
    pub const DELETE: u8 = 2;
    /// Dump and zero counters.
    pub const GET_CTRZERO: u8 = 3;
    /// Per-CPU statistics.
    pub const GET_STATS_CPU: u8 = 4;
    /// Global statistics (entry count).
    pub const GET_STATS: u8 = 5;
    /// Dump the dying list.
    pub const GET_DYING: u8 = 6;
    /// Dump the unconfirmed list.
    pub const GET_UNCONFIRMED: u8 = 7;
}

/// Top-level CTA_* attribute types.
pub mod cta {
    #![allow(missing_docs)]
    pub const TUPLE_ORIG: u16 = 1;
    pub const TUPLE_REPLY: u16 = 2;
    pub const STATUS: u16 = 3;
    pub const PROTOINFO: u16 = 4;
    pub const HELP: u16 = 5;
    pub const NAT_SRC: u16 = 6;
    pub const TIMEOUT: u16 = 7;
    pub const MARK: u16 = 8;
    pub const COUNTERS_ORIG: u16 = 9;
    pub const COUNTERS_REPLY: u16 = 10;
    pub const USE: u16 = 11;
    pub const ID: u16 = 12;
    pub const NAT_DST: u16 = 13;
    pub const TUPLE_MASTER: u16 = 14;
    pub const SEQ_ADJ_ORIG: u16 = 15;
    pub const SEQ_ADJ_REPLY: u16 = 16;
    pub const SECMARK: u16 = 17;
    pub const ZONE: u16 = 18;
    pub const SECCTX: u16 = 19;
    pub const TIMESTAMP: u16 = 20;
    pub const MARK_MASK: u16 = 21;
    pub const LABELS: u16 = 22;
    pub const LABELS_MASK: u16 = 23;
    pub const SYNPROXY: u16 = 24;
    pub const FILTER: u16 = 25;
    pub const STATUS_MASK: u16 = 26;
    pub const TIMESTAMP_EVENT: u16 = 27;

    pub const TUPLE_IP: u16 = 1;
    pub const TUPLE_PROTO: u16 = 2;
    pub const TUPLE_ZONE: u16 = 3;

    pub const IP_V4_SRC: u16 = 1;
    pub const IP_V4_DST: u16 = 2;
    pub const IP_V6_SRC: u16 = 3;
    pub const IP_V6_DST: u16 = 4;

    pub const PROTO_NUM: u16 = 1;
    pub const PROTO_SRC_PORT: u16 = 2;
    pub const PROTO_DST_PORT: u16 = 3;
    pub const PROTO_ICMP_ID: u16 = 4;
    pub const PROTO_ICMP_TYPE: u16 = 5;
    pub const PROTO_ICMP_CODE: u16 = 6;
    pub const PROTO_ICMPV6_ID: u16 = 7;
    pub const PROTO_ICMPV6_TYPE: u16 = 8;
    pub const PROTO_ICMPV6_CODE: u16 = 9;

    pub const PROTOINFO_TCP: u16 = 1;
    pub const PROTOINFO_DCCP: u16 = 2;
    pub const PROTOINFO_SCTP: u16 = 3;

    pub const TCP_STATE: u16 = 1;
    pub const TCP_WSCALE_ORIG: u16 = 2;
    pub const TCP_WSCALE_REPLY: u16 = 3;
    pub const TCP_FLAGS_ORIG: u16 = 4;
    pub const TCP_FLAGS_REPLY: u16 = 5;

    pub const DCCP_STATE: u16 = 1;
    pub const DCCP_ROLE: u16 = 2;
    pub const DCCP_HANDSHAKE_SEQ: u16 = 3;

    pub const SCTP_STATE: u16 = 1;
    pub const SCTP_VTAG_ORIG: u16 = 2;
    pub const SCTP_VTAG_REPLY: u16 = 3;

    pub const COUNTERS_PACKETS: u16 = 1;
    pub const COUNTERS_BYTES: u16 = 2;
    pub const COUNTERS32_PACKETS: u16 = 3;
    pub const COUNTERS32_BYTES: u16 = 4;

    pub const TIMESTAMP_START: u16 = 1;
    pub const TIMESTAMP_STOP: u16 = 2;

    pub const NAT_V4_MINIP: u16 = 1;
    pub const NAT_V4_MAXIP: u16 = 2;
    pub const NAT_PROTO: u16 = 3;
    pub const NAT_V6_MINIP: u16 = 4;
    pub const NAT_V6_MAXIP: u16 = 5;
    pub const PROTONAT_PORT_MIN: u16 = 1;
    pub const PROTONAT_PORT_MAX: u16 = 2;

    pub const SEQADJ_CORRECTION_POS: u16 = 1;
    pub const SEQADJ_OFFSET_BEFORE: u16 = 2;
    pub const SEQADJ_OFFSET_AFTER: u16 = 3;

    pub const HELP_NAME: u16 = 1;
    pub const SECCTX_NAME: u16 = 1;

    pub const SYNPROXY_ISN: u16 = 1;
    pub const SYNPROXY_ITS: u16 = 2;
    pub const SYNPROXY_TSOFF: u16 = 3;

    pub const FILTER_ORIG_FLAGS: u16 = 1;
    pub const FILTER_REPLY_FLAGS: u16 = 2;

    pub const STATS_GLOBAL_ENTRIES: u16 = 1;
    pub const STATS_GLOBAL_MAX_ENTRIES: u16 = 2;
}

/// CTA_FILTER flags (which tuple fields a filtered dump compares).
pub mod filter_flag {
    #![allow(missing_docs)]
    pub const IP_SRC: u32 = 1 << 0;
    pub const IP_DST: u32 = 1 << 1;
    pub const TUPLE_ZONE: u32 = 1 << 2;
    pub const PROTO_NUM: u32 = 1 << 3;
    pub const PROTO_SRC_PORT: u32 = 1 << 4;
    pub const PROTO_DST_PORT: u32 = 1 << 5;
}

/// Size of the nfgenmsg header that starts every ctnetlink payload.
pub const NFGENMSG_LEN: usize = 4;

/// Splits a ctnetlink payload into its nfgenmsg family and attributes.
pub fn split_nfgenmsg(payload: &[u8]) -> Result<(u8, u16, &[u8]), WireError> {
    if payload.len() < NFGENMSG_LEN {
        return Err(WireError("truncated nfgenmsg header"));
    }
    let res_id = u16::from_be_bytes([payload[2], payload[3]]);
    Ok((payload[0], res_id, &payload[NFGENMSG_LEN..]))
}

fn decode_tuple(a: &Attr, t: &mut Tuple, zone: &mut Option<u16>) -> Result<(), WireError> {
    for a in a.nested() {
        let a = a?;
        match a.kind {
            cta::TUPLE_IP => {
                for ip in a.nested() {
                    let ip = ip?;
                    match ip.kind {
                        cta::IP_V4_SRC => t.src = IpAddr::V4(ip.ipv4()?),
                        cta::IP_V4_DST => t.dst = IpAddr::V4(ip.ipv4()?),
                        cta::IP_V6_SRC => t.src = IpAddr::V6(ip.ipv6()?),
                        cta::IP_V6_DST => t.dst = IpAddr::V6(ip.ipv6()?),
                        _ => {}
                    }
                }
            }
            cta::TUPLE_PROTO => {
                for p in a.nested() {
                    let p = p?;
                    match p.kind {
                        cta::PROTO_NUM => t.proto = p.u8()?,
                        cta::PROTO_SRC_PORT => t.sport = p.be16()?,
                        cta::PROTO_DST_PORT => t.dport = p.be16()?,
                        cta::PROTO_ICMP_ID | cta::PROTO_ICMPV6_ID => t.icmp_id = p.be16()?,
                        cta::PROTO_ICMP_TYPE | cta::PROTO_ICMPV6_TYPE => t.icmp_type = p.u8()?,
                        cta::PROTO_ICMP_CODE | cta::PROTO_ICMPV6_CODE => t.icmp_code = p.u8()?,
                        _ => {}
                    }
                }
            }
            cta::TUPLE_ZONE => *zone = Some(a.be16()?),
            _ => {}
        }
    }
    Ok(())
}

fn decode_protoinfo(a: &Attr) -> Result<ProtoInfo, WireError> {
    let mut info = ProtoInfo::None;
    for p in a.nested() {
        let p = p?;
        match p.kind {
            cta::PROTOINFO_TCP => {
                let mut t = TcpInfo::default();
                for x in p.nested() {
                    let x = x?;
                    match x.kind {
                        cta::TCP_STATE => t.state = Some(x.u8()?),
                        cta::TCP_WSCALE_ORIG => t.wscale[0] = Some(x.u8()?),
                        cta::TCP_WSCALE_REPLY => t.wscale[1] = Some(x.u8()?),
                        cta::TCP_FLAGS_ORIG | cta::TCP_FLAGS_REPLY => {
                            let d = (x.kind == cta::TCP_FLAGS_REPLY) as usize;
                            let b = x.payload;
                            if b.len() < 2 {
                                return Err(WireError("short TCP flags"));
                            }
                            t.flags[d] = Some((b[0], b[1]));
                        }
                        _ => {}
                    }
                }
                info = ProtoInfo::Tcp(t);
            }
            cta::PROTOINFO_SCTP => {
                let (mut state, mut vtag) = (None, [None; 2]);
                for x in p.nested() {
                    let x = x?;
                    match x.kind {
                        cta::SCTP_STATE => state = Some(x.u8()?),
                        cta::SCTP_VTAG_ORIG => vtag[0] = Some(x.be32()?),
                        cta::SCTP_VTAG_REPLY => vtag[1] = Some(x.be32()?),
                        _ => {}
                    }
                }
                info = ProtoInfo::Sctp { state, vtag };
            }
            cta::PROTOINFO_DCCP => {
                let (mut state, mut role, mut hs) = (None, None, None);
                for x in p.nested() {
                    let x = x?;
                    match x.kind {
                        cta::DCCP_STATE => state = Some(x.u8()?),
                        cta::DCCP_ROLE => role = Some(x.u8()?),
                        cta::DCCP_HANDSHAKE_SEQ => hs = Some(x.be64()?),
                        _ => {}
                    }
                }
                info = ProtoInfo::Dccp {
                    state,
                    role,
                    handshake_seq: hs,
                };
            }
            _ => {}
        }
    }
    Ok(info)
}

fn decode_counters(a: &Attr) -> Result<Option<Counters>, WireError> {
    let (mut packets, mut bytes) = (None, None);
    for c in a.nested() {
        let c = c?;
        match c.kind {
            cta::COUNTERS_PACKETS => packets = Some(c.be64()?),
            cta::COUNTERS_BYTES => bytes = Some(c.be64()?),
            cta::COUNTERS32_PACKETS => packets = packets.or(Some(c.be32()? as u64)),
            cta::COUNTERS32_BYTES => bytes = bytes.or(Some(c.be32()? as u64)),
            _ => {}
        }
    }
    Ok(match (packets, bytes) {
        (Some(packets), Some(bytes)) => Some(Counters { packets, bytes }),
        _ => None,
    })
}

fn decode_seq_adj(a: &Attr) -> Result<SeqAdj, WireError> {
    let mut s = SeqAdj::default();
    for x in a.nested() {
        let x = x?;
        match x.kind {
            cta::SEQADJ_CORRECTION_POS => s.correction_pos = x.be32()?,
            cta::SEQADJ_OFFSET_BEFORE => s.offset_before = x.be32()?,
            cta::SEQADJ_OFFSET_AFTER => s.offset_after = x.be32()?,
            _ => {}
        }
    }
    Ok(s)
}

/// Decodes the attributes of one conntrack message into `f` (which the
/// caller resets; reusing one `Flow` keeps the dump loop allocation-free).
/// Unknown attributes are skipped; malformed ones are an error.
pub fn decode_flow_into(family: u8, attrs: &[u8], f: &mut Flow) -> Result<(), WireError> {
    f.family = family;
    for a in Attrs::new(attrs) {
        let a = a?;
        match a.kind {
            cta::TUPLE_ORIG => {
                decode_tuple(&a, &mut f.orig, &mut f.orig_zone)?;
                f.has_orig = true;
            }
            cta::TUPLE_REPLY => {
                decode_tuple(&a, &mut f.reply, &mut f.reply_zone)?;
                f.has_reply = true;
            }
            cta::TUPLE_MASTER => {
                let mut t = Tuple::default();
                let mut z = None;
                decode_tuple(&a, &mut t, &mut z)?;
                f.master = Some(t);
            }
            cta::STATUS => f.status = Some(a.be32()?),
            cta::PROTOINFO => f.protoinfo = decode_protoinfo(&a)?,
            cta::TIMEOUT => f.timeout = Some(a.be32()?),
            cta::MARK => f.mark = Some(a.be32()?),
            cta::SECMARK => f.secmark = Some(a.be32()?),
            cta::COUNTERS_ORIG => f.counters[0] = decode_counters(&a)?,
            cta::COUNTERS_REPLY => f.counters[1] = decode_counters(&a)?,
            cta::USE => f.use_count = Some(a.be32()?),
            cta::ID => f.id = Some(a.be32()?),
            cta::ZONE => f.zone = Some(a.be16()?),
            cta::HELP => {
                for h in a.nested() {
                    let h = h?;
                    if h.kind == cta::HELP_NAME {
                        f.helper = Some(HelperName::from_bytes(h.payload));
                    }
                }
            }
            cta::SECCTX => {
                for s in a.nested() {
                    let s = s?;
                    if s.kind == cta::SECCTX_NAME {
                        let end = s
                            .payload
                            .iter()
                            .position(|&b| b == 0)
                            .unwrap_or(s.payload.len());
                        let text = String::from_utf8_lossy(&s.payload[..end]);
                        f.secctx = Some(text.into_owned().into_boxed_str());
                    }
                }
            }
            cta::TIMESTAMP => {
                for t in a.nested() {
                    let t = t?;
                    match t.kind {
                        cta::TIMESTAMP_START => f.timestamp_start = Some(t.be64()?),
                        cta::TIMESTAMP_STOP => f.timestamp_stop = Some(t.be64()?),
                        _ => {}
                    }
                }
            }
            cta::TIMESTAMP_EVENT => f.timestamp_event = Some(a.be64()?),
            cta::LABELS if !a.payload.is_empty() => {
                let mut l = Labels::default();
                for (i, w) in a.payload.chunks_exact(4).take(4).enumerate() {
                    l.words[i] = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
                    l.len = i as u8 + 1;
                }
                f.labels = Some(l);
            }
            cta::SEQ_ADJ_ORIG => f.seq_adj[0] = Some(decode_seq_adj(&a)?),
            cta::SEQ_ADJ_REPLY => f.seq_adj[1] = Some(decode_seq_adj(&a)?),
            cta::SYNPROXY => {
                let mut s = Synproxy::default();
                for x in a.nested() {
                    let x = x?;
                    match x.kind {
                        cta::SYNPROXY_ISN => s.isn = x.be32()?,
                        cta::SYNPROXY_ITS => s.its = x.be32()?,
                        cta::SYNPROXY_TSOFF => s.tsoff = x.be32()?,
                        _ => {}
                    }
                }
                f.synproxy = Some(s);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a ctnetlink payload (nfgenmsg + attributes) into a new flow.
pub fn decode_flow(payload: &[u8]) -> Result<Flow, WireError> {
    let (family, _, attrs) = split_nfgenmsg(payload)?;
    let mut f = Flow::default();
    decode_flow_into(family, attrs, &mut f)?;
    Ok(f)
}

/// Which parts of a tuple to put in a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleParts {
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Protocol number.
    pub proto: Option<u8>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// ICMP code.
    pub icmp_code: Option<u8>,
    /// ICMP id.
    pub icmp_id: Option<u16>,
    /// Tuple zone.
    pub zone: Option<u16>,
}

impl TupleParts {
    /// Every part of a complete tuple.
    pub fn full(t: &Tuple, zone: Option<u16>) -> TupleParts {
        let icmp = proto::is_icmp(t.proto);
        let ports = proto::has_ports(t.proto) || t.proto == proto::GRE;
        TupleParts {
            src: Some(t.src),
            dst: Some(t.dst),
            proto: Some(t.proto),
            sport: ports.then_some(t.sport),
            dport: ports.then_some(t.dport),
            icmp_type: icmp.then_some(t.icmp_type),
            icmp_code: icmp.then_some(t.icmp_code),
            icmp_id: icmp.then_some(t.icmp_id),
            zone,
        }
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == TupleParts::default()
    }
}

/// Writes a CTA_TUPLE_* nest with the given parts.
pub fn encode_tuple(w: &mut AttrWriter, kind: u16, t: &TupleParts) {
    let nest = w.begin(kind);
    if t.src.is_some() || t.dst.is_some() {
        let ip = w.begin(cta::TUPLE_IP);
        for (a, v4, v6) in [
            (t.src, cta::IP_V4_SRC, cta::IP_V6_SRC),
            (t.dst, cta::IP_V4_DST, cta::IP_V6_DST),
        ] {
            match a {
                Some(IpAddr::V4(a)) => w.bytes(v4, &a.octets()),
                Some(IpAddr::V6(a)) => w.bytes(v6, &a.octets()),
                None => {}
            }
        }
        w.end(ip);
    }
    if let Some(p) = t.proto {
        let pn = w.begin(cta::TUPLE_PROTO);
        w.u8(cta::PROTO_NUM, p);
        if let Some(v) = t.sport {
            w.be16(cta::PROTO_SRC_PORT, v);
        }
        if let Some(v) = t.dport {
            w.be16(cta::PROTO_DST_PORT, v);
        }
        let v6 = p == proto::ICMPV6;
        if let Some(v) = t.icmp_id {
            w.be16(
                if v6 {
                    cta::PROTO_ICMPV6_ID
                } else {
                    cta::PROTO_ICMP_ID
                },
                v,
            );
        }
        if let Some(v) = t.icmp_type {
            w.u8(
                if v6 {
                    cta::PROTO_ICMPV6_TYPE
                } else {
                    cta::PROTO_ICMP_TYPE
                },
                v,
            );
        }
        if let Some(v) = t.icmp_code {
            w.u8(
                if v6 {
                    cta::PROTO_ICMPV6_CODE
                } else {
                    cta::PROTO_ICMP_CODE
                },
                v,
            );
        }
        w.end(pn);
    }
    if let Some(z) = t.zone {
        w.be16(cta::TUPLE_ZONE, z);
    }
    w.end(nest);
}

/// A NAT binding to set up when creating an entry (CTA_NAT_SRC/DST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSetup {
    /// Address to map to.
    pub addr: Option<IpAddr>,
    /// Port to map to.
    pub port: Option<u16>,
}

/// Writes a CTA_NAT_SRC or CTA_NAT_DST nest.
pub fn encode_nat(w: &mut AttrWriter, kind: u16, n: &NatSetup) {
    let nest = w.begin(kind);
    match n.addr {
        Some(IpAddr::V4(a)) => {
            w.bytes(cta::NAT_V4_MINIP, &a.octets());
            w.bytes(cta::NAT_V4_MAXIP, &a.octets());
        }
        Some(IpAddr::V6(a)) => {
            w.bytes(cta::NAT_V6_MINIP, &a.octets());
            w.bytes(cta::NAT_V6_MAXIP, &a.octets());
        }
        None => {}
    }
    if let Some(p) = n.port {
        let pn = w.begin(cta::NAT_PROTO);
        w.be16(cta::PROTONAT_PORT_MIN, p);
        w.be16(cta::PROTONAT_PORT_MAX, p);
        w.end(pn);
    }
    w.end(nest);
}

/// Writes CTA_PROTOINFO for TCP (state and flags/masks).
pub fn encode_tcp_info(w: &mut AttrWriter, t: &TcpInfo) {
    let nest = w.begin(cta::PROTOINFO);
    let tcp = w.begin(cta::PROTOINFO_TCP);
    if let Some(s) = t.state {
        w.u8(cta::TCP_STATE, s);
    }
    if let Some(v) = t.wscale[0] {
        w.u8(cta::TCP_WSCALE_ORIG, v);
    }
    if let Some(v) = t.wscale[1] {
        w.u8(cta::TCP_WSCALE_REPLY, v);
    }
    if let Some((f, m)) = t.flags[0] {
        w.bytes(cta::TCP_FLAGS_ORIG, &[f, m]);
    }
    if let Some((f, m)) = t.flags[1] {
        w.bytes(cta::TCP_FLAGS_REPLY, &[f, m]);
    }
    w.end(tcp);
    w.end(nest);
}

/// Writes the attributes that identify one existing entry for a per-entry
/// GET/DELETE/update: its original tuple (with zone) and the entry zone.
pub fn encode_identity(w: &mut AttrWriter, f: &Flow) {
    encode_tuple(w, cta::TUPLE_ORIG, &TupleParts::full(&f.orig, f.orig_zone));
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
}

/// A ctnetlink request: nfgenmsg header fields and encoded attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtRequest {
    /// Subsystem (ctnetlink or expectations).
    pub subsys: u8,
    /// Message type within the subsystem.
    pub msg: u8,
    /// nfgenmsg family.
    pub family: u8,
    /// nfgenmsg version (1 makes the kernel honour the family in a flush).
    pub version: u8,
    /// Encoded attributes.
    pub attrs: Vec<u8>,
}

impl CtRequest {
    /// A conntrack-subsystem request with no attributes.
    pub fn new(msg: u8, family: u8) -> CtRequest {
        CtRequest {
            subsys: SUBSYS_CTNETLINK,
            msg,
            family,
            version: 0,
            attrs: Vec::new(),
        }
    }

    /// A writer for this request's attributes.
    pub fn writer(&mut self) -> AttrWriter<'_> {
        AttrWriter::new(&mut self.attrs)
    }

    /// Appends the framed message (netlink header + payload) to `out`.
    pub fn serialize_into(&self, out: &mut Vec<u8>, flags: u16, seq: u32) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(self.clone_ref()));
        m.finalize();
        let at = out.len();
        out.resize(at + m.buffer_len(), 0);
        m.serialize(&mut out[at..]);
    }

    fn clone_ref(&self) -> CtRequestRef<'_> {
        CtRequestRef(self)
    }
}

/// Borrowing adapter so serialising does not copy the attributes.
#[derive(Debug)]
struct CtRequestRef<'a>(&'a CtRequest);

impl NetlinkSerializable for CtRequestRef<'_> {
    fn message_type(&self) -> u16 {
        ((self.0.subsys as u16) << 8) | self.0.msg as u16
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.0.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let h = NetfilterHeader::new(NetfilterProtoFamily::from(self.0.family), self.0.version, 0);
        if buffer.len() >= NFGENMSG_LEN + self.0.attrs.len() {
            h.emit(&mut buffer[..NFGENMSG_LEN]);
            buffer[NFGENMSG_LEN..NFGENMSG_LEN + self.0.attrs.len()].copy_from_slice(&self.0.attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::AF_INET;

    #[test]
    fn request_roundtrip_through_our_decoder() {
        let t = Tuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 0x1234,
            ..Tuple::default()
        };
        let mut r = CtRequest::new(msg::NEW, AF_INET);
        let mut w = r.writer();
        encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&t, Some(4)));
        encode_tuple(
            &mut w,
            cta::TUPLE_REPLY,
            &TupleParts::full(&t.inverted(), None),
        );
        w.be32(cta::TIMEOUT, 30);
        let mut bytes = Vec::new();
        r.serialize_into(&mut bytes, 0x5, 9);
        let m = super::super::message::NlMsgs::new(&bytes)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(m.ty, 0x100);
        assert_eq!(m.seq, 9);
        let f = decode_flow(m.payload).unwrap();
        assert_eq!(f.orig, t);
        assert_eq!(f.orig_zone, Some(4));
        assert_eq!(f.reply.icmp_type, 0);
        assert_eq!(f.timeout, Some(30));
    }
}
