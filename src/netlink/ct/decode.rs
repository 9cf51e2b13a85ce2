//! ctnetlink attributes into a [`Flow`]: the dump and event hot path, so
//! one reused `Flow` and no allocation per attribute.

use std::net::IpAddr;

use super::{cta, split_nfgenmsg};
use crate::flow::{
    Counters, Flow, HelperName, Labels, ProtoInfo, SeqAdj, Synproxy, TcpInfo, Tuple,
};
use crate::netlink::attr::{Attr, Attrs, WireError};

/// Decodes a CTA_TUPLE_* nest (addresses, protocol, ports or ICMP fields,
/// tuple zone) into `t` and `zone`; the expectation codec reads its
/// tuples with it too.
pub(crate) fn decode_tuple(
    a: &Attr,
    t: &mut Tuple,
    zone: &mut Option<u16>,
) -> Result<(), WireError> {
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
