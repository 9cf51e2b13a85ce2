//! The ctnetlink requests of each conntrack command, built from the
//! parsed [`CtCommand`] (and, for `-U` and `-D`, the entry found).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::args::{CtCommand, LabelChange};
use crate::flow::{Flow, TcpInfo, proto};
use crate::netlink::attr::AttrWriter;
use crate::netlink::ct::{self, CtRequest, TupleParts, cta, msg};

/// The dump request of `-L`/`-D`: the kernel filters by mark and, when
/// `kernel_status` is set, by status; the rest is filtered here.
pub fn dump(c: &CtCommand, msg_type: u8, kernel_status: bool) -> CtRequest {
    let mut req = CtRequest::new(msg_type, c.family);
    let mut w = req.writer();
    if let Some((v, m)) = c.filter.mark {
        w.be32(cta::MARK, v);
        w.be32(cta::MARK_MASK, m);
    }
    if kernel_status && let Some(v) = c.filter.status {
        let mask = if c.filter.status_mask == 0 {
            v
        } else {
            c.filter.status_mask
        };
        w.be32(cta::STATUS, v);
        w.be32(cta::STATUS_MASK, mask);
    }
    req
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
