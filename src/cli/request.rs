//! The ctnetlink requests of each conntrack command, built from the
//! parsed [`CtCommand`] (and, for `-U` and `-D`, the entry found).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::args::{CtCommand, LabelChange};
use crate::flow::{AF_INET, AF_INET6, Flow, TcpInfo, proto};
use crate::netlink::attr::AttrWriter;
use crate::netlink::ct::{self, CtRequest, TupleParts, cta, filter_flag, msg};

/// What a dump of `-L`, `-D` or `-U` lets the kernel select besides the
/// tuple fields and the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSelects {
    /// `-m` is a selector (`-L`, `-D`), not the new mark of `-U`.
    pub mark: bool,
    /// `-u` is a selector the kernel applies (`-L`).
    pub status: bool,
}

/// The dump requests of `-L`, `-D` and `-U`. The kernel selects what it
/// can compare as conntrack does (everything is checked again here): the
/// mark, the status, a zone, and with CTA_FILTER the protocol, TCP and UDP
/// ports and IPv4 addresses of either tuple; so it builds only the
/// entries that can match, which is most of a dump's cost. CTA_FILTER
/// needs a family: without `-f` (or an address), a filter with ports is
/// sent once per family, IPv4 first.
pub fn dumps(c: &CtCommand, msg_type: u8, sel: KernelSelects) -> Vec<CtRequest> {
    let tuple = |family| kernel_tuple(c, family);
    let families: &[u8] = match c.family {
        0 if tuple(AF_INET).is_some_and(|t| t.worth_a_dump_per_family()) => &[AF_INET, AF_INET6],
        0 => &[0],
        AF_INET => &[AF_INET],
        _ => &[AF_INET6],
    };
    families
        .iter()
        .map(|&family| {
            let mut req = CtRequest::new(msg_type, family);
            let mut w = req.writer();
            if sel.mark
                && let Some((v, m)) = c.filter.mark
            {
                w.be32(cta::MARK, v);
                w.be32(cta::MARK_MASK, m);
            }
            if sel.status
                && let Some(v) = c.filter.status
            {
                let mask = if c.filter.status_mask == 0 {
                    v
                } else {
                    c.filter.status_mask
                };
                w.be32(cta::STATUS, v);
                w.be32(cta::STATUS_MASK, mask);
            }
            // the kernel's zone filter matches a zone of either direction:
            // a superset of `-w Z` for Z > 0, but not for 0
            if let Some(z) = c.filter.zone.filter(|&z| z != 0) {
                w.be16(cta::ZONE, z);
            }
            if let Some(t) = tuple(family) {
                ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &t.orig);
                ct::encode_tuple(&mut w, cta::TUPLE_REPLY, &t.reply);
                ct::encode_filter(&mut w, t.orig_flags, t.reply_flags);
            }
            req
        })
        .collect()
}

/// The tuple fields of a command the kernel can compare in a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct KernelTuple {
    orig: TupleParts,
    reply: TupleParts,
    orig_flags: u32,
    reply_flags: u32,
}

impl KernelTuple {
    /// Whether the filter selects more than a protocol: only then does it
    /// pay to dump once per family when no family was given.
    fn worth_a_dump_per_family(&self) -> bool {
        (self.orig_flags | self.reply_flags) & !filter_flag::PROTO_NUM != 0
    }
}

/// What of `c`'s selection CTA_FILTER can express for `family`, or None.
/// Only what the kernel (6.18) compares exactly as conntrack's filter:
/// protocol numbers, TCP and UDP ports (it ignores the ports of other
/// protocols) and IPv4 addresses (its IPv6 comparison is inverted), no
/// prefixes and no ICMP fields (it refuses types that have no reply).
fn kernel_tuple(c: &CtCommand, family: u8) -> Option<KernelTuple> {
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let f = &c.filter;
    let mut t = KernelTuple::default();
    let v4 = |a: Option<IpAddr>| a.filter(|a| a.is_ipv4() && family == AF_INET);
    let ports = f.proto.is_some_and(|p| p == proto::TCP || p == proto::UDP);
    for (parts, flags, src, dst, sport, dport) in [
        (
            &mut t.orig,
            &mut t.orig_flags,
            f.orig_src,
            f.orig_dst,
            f.orig_sport,
            f.orig_dport,
        ),
        (
            &mut t.reply,
            &mut t.reply_flags,
            f.reply_src,
            f.reply_dst,
            f.reply_sport,
            f.reply_dport,
        ),
    ] {
        if let Some(a) = v4(src) {
            parts.src = Some(a);
            *flags |= filter_flag::IP_SRC;
        }
        if let Some(a) = v4(dst) {
            parts.dst = Some(a);
            *flags |= filter_flag::IP_DST;
        }
        if ports {
            if let Some(p) = sport {
                parts.sport = Some(p);
                *flags |= filter_flag::PROTO_SRC_PORT;
            }
            if let Some(p) = dport {
                parts.dport = Some(p);
                *flags |= filter_flag::PROTO_DST_PORT;
            }
        }
    }
    if let Some(p) = f.proto {
        t.orig.proto = Some(p);
        t.orig_flags |= filter_flag::PROTO_NUM;
        // the reply tuple's ports need its protocol
        if t.reply_flags & (filter_flag::PROTO_SRC_PORT | filter_flag::PROTO_DST_PORT) != 0 {
            t.reply.proto = Some(p);
            t.reply_flags |= filter_flag::PROTO_NUM;
        }
    }
    (t.orig_flags | t.reply_flags != 0).then_some(t)
}

/// The request of `-G`: the original tuple, or the reply one when only
/// that was given.
pub fn get(c: &CtCommand) -> CtRequest {
    let mut req = CtRequest::new(msg::GET, c.family);
    let mut w = req.writer();
    if c.orig_given || !c.reply_given {
        ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &orig_parts(c));
    } else {
        ct::encode_tuple(&mut w, cta::TUPLE_REPLY, &reply_parts(c));
    }
    if let Some(z) = c.filter.zone {
        w.be16(cta::ZONE, z);
    }
    req
}

/// The get of `-U` when the command names one entry by a whole tuple (the
/// original one, or else the reply one, with every field its protocol
/// has): that entry is updated directly instead of searched for in a
/// dump. None when no tuple is whole.
pub fn get_named(c: &CtCommand) -> Option<CtRequest> {
    let f = &c.filter;
    let p = f.proto?;
    let whole = |t: &TupleParts| {
        t.src.is_some()
            && t.dst.is_some()
            && if proto::has_ports(p) || p == proto::GRE {
                t.sport.is_some() && t.dport.is_some()
            } else if proto::is_icmp(p) {
                t.icmp_type.is_some() && t.icmp_code.is_some() && t.icmp_id.is_some()
            } else {
                true
            }
    };
    let (kind, parts) = [
        (cta::TUPLE_ORIG, orig_parts(c)),
        (cta::TUPLE_REPLY, reply_parts(c)),
    ]
    .into_iter()
    .find(|(_, t)| whole(t))?;
    let mut req = CtRequest::new(msg::GET, c.family);
    ct::encode_tuple(&mut req.writer(), kind, &parts);
    Some(req)
}

/// A get of one entry as it is now (after `-U` changed it).
pub fn get_entry(f: &Flow) -> CtRequest {
    let mut req = CtRequest::new(msg::GET, f.family);
    ct::encode_identity(&mut req.writer(), f);
    req
}

/// The delete of one entry `-D` selected (by its tuple and id).
pub fn delete(f: &Flow) -> CtRequest {
    let mut req = CtRequest::new(msg::DELETE, f.family);
    let mut w = req.writer();
    ct::encode_identity(&mut w, f);
    if let Some(id) = f.id {
        w.be32(cta::ID, id);
    }
    req
}

/// The request of `-F`.
pub fn flush(c: &CtCommand) -> CtRequest {
    let mut req = CtRequest::new(msg::DELETE, c.family);
    // version 1 makes the kernel honour the family (conntrack sends 0
    // and so always flushes both families)
    if c.family != 0 {
        req.version = 1;
    }
    req
}

/// The original tuple as the command line gives it.
fn orig_parts(c: &CtCommand) -> TupleParts {
    let f = &c.filter;
    let p = f.proto;
    TupleParts {
        src: f.orig_src,
        dst: f.orig_dst,
        proto: p,
        sport: f.orig_sport,
        dport: f.orig_dport,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
        icmp_id: f.icmp_id,
        zone: f.orig_zone,
    }
}

/// The reply tuple as the command line gives it.
fn reply_parts(c: &CtCommand) -> TupleParts {
    let f = &c.filter;
    let icmp = f.proto.is_some_and(proto::is_icmp);
    TupleParts {
        src: f.reply_src,
        dst: f.reply_dst,
        proto: f.proto,
        sport: f.reply_sport,
        dport: f.reply_dport,
        icmp_type: if icmp {
            f.icmp_type
                .map(|t| crate::flow::names::icmp_reply_type(f.proto.unwrap_or(0), t))
        } else {
            None
        },
        icmp_code: if icmp { f.icmp_code } else { None },
        icmp_id: if icmp { f.icmp_id } else { None },
        zone: f.reply_zone,
    }
}

/// Builds the CT_NEW request of `-I`/`-A` from the template: the missing
/// direction is the inverse of the given one, as libnetfilter_conntrack's
/// SETUP_REPLY/SETUP_ORIGINAL do.
pub fn create(c: &CtCommand) -> CtRequest {
    let f = &c.filter;
    let has_orig = c.orig_given;
    let has_reply = c.reply_given;
    let p = f.proto.unwrap_or(0);
    let mut orig = orig_parts(c);
    let mut reply = reply_parts(c);
    let swap = |t: &TupleParts| TupleParts {
        src: t.dst,
        dst: t.src,
        proto: t.proto,
        sport: if proto::has_ports(p) || p == proto::GRE {
            t.dport
        } else {
            None
        },
        dport: if proto::has_ports(p) || p == proto::GRE {
            t.sport
        } else {
            None
        },
        ..*t
    };
    if has_orig && !has_reply {
        reply = TupleParts {
            zone: f.reply_zone,
            ..swap(&orig)
        };
        if proto::is_icmp(p) {
            reply.icmp_type = f
                .icmp_type
                .map(|t| crate::flow::names::icmp_reply_type(p, t));
        }
    } else if has_reply && !has_orig {
        orig = TupleParts {
            zone: f.orig_zone,
            ..swap(&reply)
        };
        if proto::is_icmp(p) {
            orig.icmp_type = f.icmp_type;
        }
    }
    // a direction given in part (`-r A -n B`: NAT completes the reply)
    // gets the missing address as zeros, as conntrack sends it; the
    // kernel wants both addresses and the NAT setup replaces the zeros
    for t in [&mut orig, &mut reply] {
        let zero = |a: IpAddr| match a {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        match (t.src, t.dst) {
            (Some(a), None) => t.dst = Some(zero(a)),
            (None, Some(a)) => t.src = Some(zero(a)),
            _ => {}
        }
    }
    let mut req = CtRequest::new(msg::NEW, c.family);
    let mut w = req.writer();
    ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &orig);
    ct::encode_tuple(&mut w, cta::TUPLE_REPLY, &reply);
    if let Some(s) = f.status {
        w.be32(cta::STATUS, s | crate::flow::status::CONFIRMED);
    }
    if let Some(t) = f.timeout {
        w.be32(cta::TIMEOUT, t);
    }
    if let Some((v, _)) = f.mark {
        w.be32(cta::MARK, v);
    }
    encode_protoinfo(&mut w, c, p);
    if let Some(n) = &c.snat {
        ct::encode_nat(&mut w, cta::NAT_SRC, n);
    }
    if let Some(n) = &c.dnat {
        ct::encode_nat(&mut w, cta::NAT_DST, n);
    }
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
    if let Some(l) = c.label_change.and_then(LabelChange::labels) {
        let mut b = Vec::with_capacity(16);
        for word in l.words {
            b.extend_from_slice(&word.to_ne_bytes());
        }
        w.bytes(cta::LABELS, &b);
    }
    req
}

/// The protocol state `-I` sets: TCP's state and flags, SCTP's state and
/// verification tags, DCCP's state and role.
fn encode_protoinfo(w: &mut AttrWriter, c: &CtCommand, p: u8) {
    match p {
        proto::TCP => {
            let fl = c.tcp_flags();
            ct::encode_tcp_info(
                w,
                &TcpInfo {
                    state: c.filter.state,
                    wscale: [None; 2],
                    flags: [Some((fl, fl)); 2],
                },
            );
        }
        proto::SCTP => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_SCTP);
            if let Some(s) = c.filter.state {
                w.u8(cta::SCTP_STATE, s);
            }
            // conntrack 1.4.7 byte-swaps the tag on little-endian hosts
            // (htonl twice); its `-o save` dumps print it swapped back,
            // so swapping here keeps dumps of both tools loadable
            for (i, kind) in [cta::SCTP_VTAG_ORIG, cta::SCTP_VTAG_REPLY]
                .into_iter()
                .enumerate()
            {
                if let Some(t) = c.sctp_vtag[i] {
                    w.be32(kind, t.to_be());
                }
            }
            w.end(inner);
            w.end(nest);
        }
        proto::DCCP => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_DCCP);
            if let Some(s) = c.filter.state {
                w.u8(cta::DCCP_STATE, s);
            }
            if let Some(r) = c.dccp_role {
                w.u8(cta::DCCP_ROLE, r);
            }
            w.end(inner);
            w.end(nest);
        }
        _ => {}
    }
}

/// The update `-U` sends for one entry, or None when nothing would change.
pub fn update(c: &CtCommand, old: &Flow) -> Option<CtRequest> {
    let f = &c.filter;
    let mut changed = false;
    let mut req = CtRequest::new(msg::NEW, old.family);
    let mut w = req.writer();
    ct::encode_identity(&mut w, old);
    if let Some(t) = f.timeout {
        changed |= old.timeout != Some(t);
        w.be32(cta::TIMEOUT, t);
    }
    if let Some(given) = f.status {
        let s = old.status.unwrap_or(0) | given;
        changed |= old.status != Some(s);
        w.be32(cta::STATUS, s);
    }
    if let Some((v, m)) = f.mark {
        let new = (old.mark.unwrap_or(0) & !m) ^ v;
        changed |= old.mark != Some(new);
        w.be32(cta::MARK, new);
    }
    if let (Some(s), proto::TCP) = (f.state, old.orig.proto) {
        changed |= old.protoinfo.tcp_state() != Some(s);
        let fl = c.tcp_flags();
        ct::encode_tcp_info(
            &mut w,
            &TcpInfo {
                state: Some(s),
                wscale: [None; 2],
                flags: [Some((fl, fl)); 2],
            },
        );
    }
    if let Some(change) = c.label_change {
        let have = old.labels.map(|l| l.words).unwrap_or([0; 4]);
        let (labels, mask) = match change {
            LabelChange::Add(m) => (std::array::from_fn(|i| have[i] | m.words[i]), m.words),
            LabelChange::Delete(Some(m)) => {
                (std::array::from_fn(|i| have[i] & !m.words[i]), m.words)
            }
            LabelChange::Delete(None) => ([0; 4], [u32::MAX; 4]),
        };
        changed |= labels != have;
        let enc = |ws: [u32; 4]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        w.bytes(cta::LABELS, &enc(labels));
        w.bytes(cta::LABELS_MASK, &enc(mask));
    }
    changed.then_some(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::parse;
    use crate::netlink::attr::Attrs;

    fn command(s: &str) -> CtCommand {
        parse(s.split_whitespace().map(str::to_string).collect())
            .unwrap()
            .0
    }

    const LIST: KernelSelects = KernelSelects {
        mark: true,
        status: true,
    };

    /// The top-level attribute kinds of a request, and its CTA_FILTER
    /// flags (original, reply).
    fn shape(r: &CtRequest) -> (Vec<u16>, Option<(u32, u32)>) {
        let mut kinds = Vec::new();
        let mut filter = None;
        for a in Attrs::new(&r.attrs) {
            let a = a.unwrap();
            kinds.push(a.kind);
            if a.kind == cta::FILTER {
                let (mut o, mut rp) = (0, 0);
                for f in a.nested() {
                    let f = f.unwrap();
                    match f.kind {
                        cta::FILTER_ORIG_FLAGS => o = f.ne32().unwrap(),
                        cta::FILTER_REPLY_FLAGS => rp = f.ne32().unwrap(),
                        _ => {}
                    }
                }
                filter = Some((o, rp));
            }
        }
        (kinds, filter)
    }

    #[test]
    fn ports_without_a_family_are_one_dump_per_family() {
        let reqs = dumps(&command("-L -p tcp --dport 22"), msg::GET, LIST);
        let families: Vec<u8> = reqs.iter().map(|r| r.family).collect();
        assert_eq!(families, [AF_INET, AF_INET6]);
        for r in &reqs {
            let (kinds, filter) = shape(r);
            assert_eq!(kinds, [cta::TUPLE_ORIG, cta::TUPLE_REPLY, cta::FILTER]);
            assert_eq!(
                filter,
                Some((filter_flag::PROTO_NUM | filter_flag::PROTO_DST_PORT, 0))
            );
        }
        // a protocol alone: one dump, selected here
        let reqs = dumps(&command("-L -p tcp"), msg::GET, LIST);
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].family, shape(&reqs[0])), (0, (vec![], None)));
        // with a family, the protocol goes to the kernel too
        let reqs = dumps(&command("-L -p udp -f ipv6"), msg::GET, LIST);
        assert_eq!(reqs.len(), 1);
        assert_eq!(shape(&reqs[0]).1, Some((filter_flag::PROTO_NUM, 0)));
    }

    #[test]
    fn what_the_kernel_compares_exactly() {
        // an IPv4 address and a reply port (which needs its protocol)
        let c = command("-L -s 10.0.0.1 -p udp --reply-port-src 53");
        let reqs = dumps(&c, msg::GET, LIST);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].family, AF_INET);
        assert_eq!(
            shape(&reqs[0]).1,
            Some((
                filter_flag::IP_SRC | filter_flag::PROTO_NUM,
                filter_flag::PROTO_SRC_PORT | filter_flag::PROTO_NUM
            ))
        );
        // reply addresses
        let c = command("-L -r 10.0.0.2 -q 10.0.0.3");
        assert_eq!(
            shape(&dumps(&c, msg::GET, LIST)[0]).1,
            Some((0, filter_flag::IP_SRC | filter_flag::IP_DST))
        );
        // no IPv6 address, prefix, or port of another protocol
        for s in [
            "-L -s fd00::1",
            "-L -s 10.0.0.0/8",
            "-L -d 10.0.0.0/8",
            "-L -p icmp --icmp-type 8",
        ] {
            let reqs = dumps(&command(s), msg::GET, LIST);
            let flags = shape(&reqs[0]).1;
            assert!(
                flags.is_none_or(|(o, r)| r == 0 && o & !filter_flag::PROTO_NUM == 0),
                "{s}: {flags:?}"
            );
        }
        let reqs = dumps(&command("-L -p sctp --dport 9 -f ipv4"), msg::GET, LIST);
        assert_eq!(shape(&reqs[0]).1, Some((filter_flag::PROTO_NUM, 0)));
        let reqs = dumps(&command("-L -s fd00::1 -p tcp --dport 80"), msg::GET, LIST);
        assert_eq!(reqs[0].family, AF_INET6);
        assert_eq!(
            shape(&reqs[0]).1,
            Some((filter_flag::PROTO_NUM | filter_flag::PROTO_DST_PORT, 0))
        );
    }

    #[test]
    fn mark_status_and_zone_as_asked() {
        let c = command("-L -m 7 -u ASSURED -w 5");
        let kinds = |sel| shape(&dumps(&c, msg::GET, sel)[0]).0;
        assert_eq!(
            kinds(LIST),
            [
                cta::MARK,
                cta::MARK_MASK,
                cta::STATUS,
                cta::STATUS_MASK,
                cta::ZONE
            ]
        );
        assert_eq!(
            kinds(KernelSelects {
                mark: true,
                status: false
            }),
            [cta::MARK, cta::MARK_MASK, cta::ZONE]
        );
        assert_eq!(
            kinds(KernelSelects {
                mark: false,
                status: false
            }),
            [cta::ZONE]
        );
        // zone 0 is not sent: the kernel's zone filter is not conntrack's there
        let c = command("-L -w 0");
        assert_eq!(shape(&dumps(&c, msg::GET, LIST)[0]).0, Vec::<u16>::new());
    }

    #[test]
    fn get_named_only_for_whole_tuples() {
        let named = |s: &str| get_named(&command(s)).map(|r| shape(&r).0);
        assert_eq!(
            named("-U -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -m 1"),
            Some(vec![cta::TUPLE_ORIG])
        );
        assert_eq!(
            named("-U -r 1.1.1.1 -q 2.2.2.2 -p udp --reply-port-src 1 --reply-port-dst 2 -m 1"),
            Some(vec![cta::TUPLE_REPLY])
        );
        assert_eq!(
            named("-U -s 1.1.1.1 -d 2.2.2.2 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 3 -m 1"),
            Some(vec![cta::TUPLE_ORIG])
        );
        assert_eq!(
            named("-U -s 1.1.1.1 -d 2.2.2.2 -p 50 -m 1"),
            Some(vec![cta::TUPLE_ORIG])
        );
        for partial in [
            "-U -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 -m 1",
            "-U -s 1.1.1.1 -p tcp --sport 1 --dport 2 -m 1",
            "-U -d 2.2.2.2 -p tcp --sport 1 --dport 2 -m 1",
            "-U -s 1.1.1.1 -d 2.2.2.2 -m 1",
            "-U -s 1.1.1.1 -d 2.2.2.2 -p icmp --icmp-type 8 -m 1",
            "-U -s 1.1.1.1 -d 2.2.2.2 -p gre --srckey 1 -m 1",
        ] {
            assert_eq!(named(partial), None, "{partial}");
        }
    }
}
