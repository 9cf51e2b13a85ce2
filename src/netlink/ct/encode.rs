//! A [`Flow`] (or the parts of one a command names) into ctnetlink
//! attributes and requests: tuples, NAT set-up, protocol info, and the
//! whole create/update/delete requests that put a synced flow into the
//! kernel (the failover commit and `DisableExternalCache`).

use std::net::IpAddr;

use super::{CtRequest, cta, msg};
use crate::flow::{Flow, ProtoInfo, TcpInfo, Tuple, proto, status};
use crate::netlink::attr::AttrWriter;

/// `IP_CT_TCP_FLAG_BE_LIBERAL`: no window checks on this connection.
pub const TCP_FLAG_BE_LIBERAL: u8 = 0x08;
/// `IPS_NAT_MASK`: the NAT bits an update leaves out, as conntrackd does.
const NAT_MASK: u32 = status::SRC_NAT | status::DST_NAT;

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

/// How a flow is written into a create or update request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewOpts {
    /// CTA_TIMEOUT to set; None leaves the kernel's default for the state.
    pub timeout: Option<u32>,
    /// Keep TCP window tracking; off creates TCP entries BE_LIBERAL.
    pub tcp_window_tracking: bool,
}

fn nat_parts(f: &Flow) -> (Option<NatSetup>, Option<NatSetup>) {
    let icmp = proto::is_icmp(f.orig.proto);
    let ports = !icmp && (proto::has_ports(f.orig.proto) || f.orig.proto == proto::GRE);
    let src = NatSetup {
        addr: f.is_snat().then_some(f.reply.dst),
        port: (ports && f.is_spat()).then_some(f.reply.dport),
    };
    let dst = NatSetup {
        addr: f.is_dnat().then_some(f.reply.src),
        port: (ports && f.is_dpat()).then_some(f.reply.sport),
    };
    let some = |n: NatSetup| (n != NatSetup::default()).then_some(n);
    (some(src), some(dst))
}

fn encode_protoinfo(w: &mut AttrWriter, f: &Flow, o: &NewOpts) {
    match f.protoinfo {
        ProtoInfo::Tcp(t) => encode_tcp(w, t, o),
        // a TCP flow synced without its state: no state to set, but no
        // window tracking either (the kernel takes flags without a state)
        ProtoInfo::None if f.orig.proto == proto::TCP => encode_tcp(w, TcpInfo::default(), o),
        ProtoInfo::Sctp { state, vtag } => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_SCTP);
            if let Some(s) = state {
                w.u8(cta::SCTP_STATE, s);
            }
            if let Some(v) = vtag[0] {
                w.be32(cta::SCTP_VTAG_ORIG, v);
            }
            if let Some(v) = vtag[1] {
                w.be32(cta::SCTP_VTAG_REPLY, v);
            }
            w.end(inner);
            w.end(nest);
        }
        ProtoInfo::Dccp { state, role, .. } => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_DCCP);
            if let Some(s) = state {
                w.u8(cta::DCCP_STATE, s);
            }
            if let Some(r) = role {
                w.u8(cta::DCCP_ROLE, r);
            }
            w.end(inner);
            w.end(nest);
        }
        ProtoInfo::None => {}
    }
}

/// TCP info as a request sets it: BE_LIBERAL in both directions unless
/// window tracking is kept; nothing when that leaves nothing to set.
fn encode_tcp(w: &mut AttrWriter, mut t: TcpInfo, o: &NewOpts) {
    if !o.tcp_window_tracking {
        for d in &mut t.flags {
            let (fl, m) = d.unwrap_or((0, 0));
            *d = Some((fl | TCP_FLAG_BE_LIBERAL, m | TCP_FLAG_BE_LIBERAL));
        }
    }
    if t != TcpInfo::default() {
        encode_tcp_info(w, &t);
    }
}

/// The attributes a create and an update both set from a synced flow:
/// timeout, mark, protocol info, sequence adjustments, SYN proxy state
/// and labels.
fn encode_state(w: &mut AttrWriter, f: &Flow, o: &NewOpts) {
    if let Some(t) = o.timeout {
        w.be32(cta::TIMEOUT, t);
    }
    if let Some(m) = f.mark {
        w.be32(cta::MARK, m);
    }
    encode_protoinfo(w, f, o);
    for (d, kind) in [(0, cta::SEQ_ADJ_ORIG), (1, cta::SEQ_ADJ_REPLY)] {
        if let Some(s) = f.seq_adj[d] {
            let nest = w.begin(kind);
            w.be32(cta::SEQADJ_CORRECTION_POS, s.correction_pos);
            w.be32(cta::SEQADJ_OFFSET_BEFORE, s.offset_before);
            w.be32(cta::SEQADJ_OFFSET_AFTER, s.offset_after);
            w.end(nest);
        }
    }
    if let Some(s) = &f.synproxy {
        let nest = w.begin(cta::SYNPROXY);
        w.be32(cta::SYNPROXY_ISN, s.isn);
        w.be32(cta::SYNPROXY_ITS, s.its);
        w.be32(cta::SYNPROXY_TSOFF, s.tsoff);
        w.end(nest);
    }
    if let Some(l) = f.labels.filter(|l| !l.is_empty()) {
        let mut b = Vec::with_capacity(16);
        for word in &l.words[..(l.len as usize).clamp(1, 4)] {
            b.extend_from_slice(&word.to_ne_bytes());
        }
        w.bytes(cta::LABELS, &b);
    }
}

/// The request that creates `f` in the kernel: original tuple, the reply
/// tuple as its inverse, NAT set up with CTA_NAT_SRC/DST so the kernel
/// rebuilds the NAT'ed reply, the master of a related flow, status
/// (without EXPECTED: the kernel sets it itself for a flow with a
/// master), helper, zone, timeout, mark, protocol info, sequence
/// adjustments, SYN proxy state and labels. The kernel
/// refuses a new entry without a timeout: `o.timeout` must be set.
pub fn create_request(f: &Flow, o: &NewOpts) -> CtRequest {
    let mut req = CtRequest::new(msg::NEW, f.family);
    let mut w = req.writer();
    encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&f.orig, None));
    encode_tuple(
        &mut w,
        cta::TUPLE_REPLY,
        &TupleParts::full(&f.orig.inverted(), None),
    );
    if let Some(m) = &f.master {
        encode_tuple(&mut w, cta::TUPLE_MASTER, &TupleParts::full(m, None));
    }
    if let Some(s) = f.status {
        w.be32(cta::STATUS, s & !status::EXPECTED);
    }
    let (src, dst) = nat_parts(f);
    if let Some(n) = src {
        encode_nat(&mut w, cta::NAT_SRC, &n);
    }
    if let Some(n) = dst {
        encode_nat(&mut w, cta::NAT_DST, &n);
    }
    if let Some(h) = &f.helper {
        let nest = w.begin(cta::HELP);
        w.strz(cta::HELP_NAME, h.as_bytes());
        w.end(nest);
    }
    encode_state(&mut w, f, o);
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
    req
}

/// The request that updates the existing entry with `f`'s original tuple
/// and zone in place, with the status and what a create sets from a
/// synced flow (timeout, mark, protocol info, sequence adjustments, SYN
/// proxy state, labels).
/// NAT, helper and master are left out (the kernel refuses to change
/// them); the status keeps EXPECTED as `f` has it and always has
/// CONFIRMED (every entry in the table has it), since the kernel refuses
/// an update that would change either; SRC_NAT and DST_NAT are cleared as
/// conntrackd does (the kernel ignores every NAT bit of an update).
pub fn update_request(f: &Flow, o: &NewOpts) -> CtRequest {
    let mut req = CtRequest::new(msg::NEW, f.family);
    let mut w = req.writer();
    encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&f.orig, None));
    if let Some(s) = f.status {
        w.be32(cta::STATUS, (s & !NAT_MASK) | status::CONFIRMED);
    }
    encode_state(&mut w, f, o);
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
    req
}

/// A request naming the entry with `f`'s original tuple and zone: `kind`
/// is [`msg::GET`] or [`msg::DELETE`].
fn identity_request(kind: u8, f: &Flow) -> CtRequest {
    let mut req = CtRequest::new(kind, f.family);
    let mut w = req.writer();
    encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&f.orig, None));
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
    req
}

/// The request that deletes the entry with `f`'s original tuple and zone.
pub fn delete_request(f: &Flow) -> CtRequest {
    identity_request(msg::DELETE, f)
}

/// The request that gets the entry with `f`'s original tuple and zone.
pub fn get_request(f: &Flow) -> CtRequest {
    identity_request(msg::GET, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil;

    /// What the kernel would read from a request.
    fn roundtrip(req: &CtRequest) -> Flow {
        let mut bytes = Vec::new();
        req.serialize_into(&mut bytes, 0, 1);
        let m = crate::netlink::message::NlMsgs::new(&bytes)
            .next()
            .unwrap()
            .unwrap();
        super::super::decode_flow(m.payload).unwrap()
    }

    #[test]
    fn create_request_sets_up_nat_and_be_liberal() {
        let mut f = testutil::tcp4();
        f.status = Some(0x1be);
        f.reply.dst = "100.64.0.5".parse().unwrap();
        f.reply.dport = 6000;
        let o = NewOpts {
            timeout: Some(268),
            ..NewOpts::default()
        };
        let req = create_request(&f, &o);
        let back = roundtrip(&req);
        assert_eq!(back.orig, f.orig);
        // the reply is sent un-NAT'ed; NAT comes from CTA_NAT_SRC
        assert_eq!(back.reply, f.orig.inverted());
        assert_eq!(back.timeout, Some(268));
        let ProtoInfo::Tcp(t) = back.protoinfo else {
            panic!()
        };
        assert_eq!(t.flags, [Some((8, 8)); 2]);
        let (src, dst) = nat_parts(&f);
        assert_eq!(
            src,
            Some(NatSetup {
                addr: Some("100.64.0.5".parse().unwrap()),
                port: Some(6000)
            })
        );
        assert_eq!(dst, None);
        // window tracking on: no BE_LIBERAL
        let req = create_request(
            &f,
            &NewOpts {
                tcp_window_tracking: true,
                ..NewOpts::default()
            },
        );
        let back = roundtrip(&req);
        assert_eq!(back.timeout, None);
        let ProtoInfo::Tcp(t) = back.protoinfo else {
            panic!()
        };
        assert_eq!(t.flags, [None; 2]);
        // a TCP flow synced without its state: BE_LIBERAL all the same
        let mut f2 = f.clone();
        f2.protoinfo = ProtoInfo::None;
        let back = roundtrip(&create_request(&f2, &o));
        let ProtoInfo::Tcp(t) = back.protoinfo else {
            panic!("{:?}", back.protoinfo)
        };
        assert_eq!((t.state, t.flags), (None, [Some((8, 8)); 2]));
    }

    #[test]
    fn update_request_carries_the_state_but_not_what_the_kernel_refuses() {
        use crate::flow::{HelperName, Labels, SeqAdj, Synproxy};
        let mut f = testutil::tcp4();
        f.status = Some(status::SEEN_REPLY | status::EXPECTED | status::SRC_NAT_DONE);
        f.reply.dst = "100.64.0.5".parse().unwrap();
        f.master = Some(testutil::tcp4().orig);
        f.helper = Some(HelperName::from_bytes(b"ftp"));
        f.labels = Some(Labels {
            words: [1 << 3, 0, 0, 0],
            len: 4,
        });
        f.seq_adj = [Some(SeqAdj {
            correction_pos: 1,
            offset_before: 2,
            offset_after: 3,
        }); 2];
        f.synproxy = Some(Synproxy {
            isn: 4,
            its: 5,
            tsoff: 6,
        });
        let o = NewOpts {
            timeout: Some(77),
            ..NewOpts::default()
        };
        let back = roundtrip(&update_request(&f, &o));
        assert_eq!(back.timeout, Some(77));
        assert_eq!(back.mark, f.mark);
        assert_eq!(
            (back.labels, back.seq_adj, back.synproxy),
            (f.labels, f.seq_adj, f.synproxy)
        );
        // the kernel refuses to change NAT, helper and master, and the
        // EXPECTED and CONFIRMED bits (every entry in the table has the
        // latter); SRC_NAT and DST_NAT are left out as conntrackd does
        assert_eq!(
            (back.master, back.helper, back.has_reply),
            (None, None, false)
        );
        assert_eq!(
            back.status,
            Some(status::SEEN_REPLY | status::EXPECTED | status::CONFIRMED | status::SRC_NAT_DONE)
        );
        // no timeout to refresh: none sent
        let back = roundtrip(&update_request(&f, &NewOpts::default()));
        assert_eq!(back.timeout, None);
        // create carries what the update leaves out, without EXPECTED
        let back = roundtrip(&create_request(&f, &o));
        assert_eq!((back.master, back.helper), (f.master, f.helper));
        assert_eq!(
            (back.labels, back.seq_adj, back.synproxy),
            (f.labels, f.seq_adj, f.synproxy)
        );
        assert_eq!(back.status, Some(status::SEEN_REPLY | status::SRC_NAT_DONE));
        // get and delete name the entry by its original tuple and zone
        f.zone = Some(5);
        for req in [get_request(&f), delete_request(&f)] {
            let back = roundtrip(&req);
            assert_eq!(
                (back.orig, back.zone, back.has_reply),
                (f.orig, Some(5), false)
            );
            assert_eq!((back.timeout, back.status), (None, None));
        }
        assert_eq!(get_request(&f).msg, msg::GET);
        assert_eq!(delete_request(&f).msg, msg::DELETE);
    }
}
