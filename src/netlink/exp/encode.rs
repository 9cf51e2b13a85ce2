//! Every expectation request, built in one place: an [`Expectation`]
//! (whole, or the parts a command names) into `CTA_EXPECT_*` attributes,
//! and the create, get, delete, dump and flush requests around them.
//!
//! Tuples are written whole, as libnetfilter_conntrack's
//! `nfct_build_tuple` writes them: both addresses, the protocol, and both
//! ports (zero when not given) or the ICMP type, code and id, so the
//! kernel sees what it sees from conntrack.

use super::{cta_exp, msg};
use crate::flow::expect::Expectation;
use crate::netlink::attr::AttrWriter;
use crate::netlink::ct::{CtRequest, SUBSYS_CTNETLINK_EXP, TupleParts, encode_tuple};

/// An expectation-subsystem request of type `msg` for `family`, with no
/// attributes yet.
pub fn request(msg: u8, family: u8) -> CtRequest {
    CtRequest {
        subsys: SUBSYS_CTNETLINK_EXP,
        ..CtRequest::new(msg, family)
    }
}

/// Writes the attributes of `e` that are set: the expected tuple, the
/// master, the mask, then timeout, id, flags, zone, helper, class, NAT
/// and expectation function.
pub fn encode_expect(w: &mut AttrWriter, e: &Expectation) {
    for (kind, t) in [
        (cta_exp::TUPLE, &e.tuple),
        (cta_exp::MASTER, &e.master),
        (cta_exp::MASK, &e.mask),
    ] {
        if let Some(t) = t {
            encode_tuple(w, kind, &TupleParts::full(t, None));
        }
    }
    if let Some(t) = e.timeout {
        w.be32(cta_exp::TIMEOUT, t);
    }
    if let Some(id) = e.id {
        w.be32(cta_exp::ID, id);
    }
    if let Some(f) = e.flags {
        w.be32(cta_exp::FLAGS, f);
    }
    if let Some(z) = e.zone {
        w.be16(cta_exp::ZONE, z);
    }
    if let Some(h) = &e.helper {
        w.strz(cta_exp::HELP_NAME, h.as_bytes());
    }
    if let Some(c) = e.class {
        w.be32(cta_exp::CLASS, c);
    }
    if let Some(n) = &e.nat {
        let nest = w.begin(cta_exp::NAT);
        if let Some(d) = n.dir {
            w.be32(cta_exp::NAT_DIR, d);
        }
        if let Some(t) = &n.tuple {
            encode_tuple(w, cta_exp::NAT_TUPLE, &TupleParts::full(t, None));
        }
        w.end(nest);
    }
    if let Some(f) = &e.expectfn {
        w.strz(cta_exp::FN, f.as_bytes());
    }
}

fn with_attrs(msg: u8, e: &Expectation) -> CtRequest {
    let mut req = request(msg, e.family);
    encode_expect(&mut req.writer(), e);
    req
}

/// The request that creates `e` (send it with NLM_F_CREATE|NLM_F_EXCL,
/// as `conntrack -I expect` does): the kernel needs the tuple, the mask
/// and the master, whose connection must exist and have a helper.
pub fn create_request(e: &Expectation) -> CtRequest {
    with_attrs(msg::NEW, e)
}

/// The get of one expectation: the kernel looks it up by `e.tuple`, or by
/// `e.master` when there is no tuple (matched against the expected
/// tuples under their masks, as `conntrack -G expect` asks).
pub fn get_request(e: &Expectation) -> CtRequest {
    with_attrs(msg::GET, e)
}

/// The delete of the expectation whose tuple matches `e.tuple` (and id,
/// when given).
pub fn delete_request(e: &Expectation) -> CtRequest {
    with_attrs(msg::DELETE, e)
}

/// The dump of the expectations of `family` (0: both).
pub fn dump_request(family: u8) -> CtRequest {
    request(msg::GET, family)
}

/// The flush of the whole expectation table (a delete without a tuple;
/// the kernel flushes every family).
pub fn flush_request(family: u8) -> CtRequest {
    request(msg::DELETE, family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::expect::testutil::ftp_pasv;
    use crate::flow::{AF_INET6, Tuple, proto};
    use crate::netlink::attr::Attrs;
    use crate::netlink::message::NlMsgs;

    fn attrs_of(req: &CtRequest) -> (u16, u8, Vec<u16>) {
        let mut bytes = Vec::new();
        req.serialize_into(&mut bytes, 0, 1);
        let m = NlMsgs::new(&bytes).next().unwrap().unwrap();
        let kinds = Attrs::new(&m.payload[4..])
            .map(|a| a.unwrap().kind)
            .collect();
        (m.ty, m.payload[0], kinds)
    }

    #[test]
    fn requests_name_the_subsystem_and_carry_what_is_set() {
        let e = Expectation {
            master: ftp_pasv().master,
            ..Expectation::default()
        };
        assert_eq!(
            attrs_of(&get_request(&Expectation { family: 2, ..e })),
            (0x201, 2, vec![cta_exp::MASTER])
        );
        let d = Expectation {
            family: AF_INET6,
            tuple: ftp_pasv().tuple,
            ..Expectation::default()
        };
        assert_eq!(
            attrs_of(&delete_request(&d)),
            (0x202, AF_INET6, vec![cta_exp::TUPLE])
        );
        assert_eq!(attrs_of(&dump_request(0)), (0x201, 0, vec![]));
        assert_eq!(attrs_of(&flush_request(2)), (0x202, 2, vec![]));
        let mut c = ftp_pasv();
        c.id = None;
        c.helper = None;
        c.flags = None;
        c.class = None;
        assert_eq!(
            attrs_of(&create_request(&c)),
            (
                0x200,
                2,
                vec![
                    cta_exp::TUPLE,
                    cta_exp::MASTER,
                    cta_exp::MASK,
                    cta_exp::TIMEOUT
                ]
            )
        );
    }

    #[test]
    fn tuples_carry_both_ports_as_conntrack_sends_them() {
        // a TCP tuple with port 0 still has both port attributes
        let e = Expectation {
            tuple: Some(Tuple {
                proto: proto::TCP,
                dport: 5000,
                ..Tuple::default()
            }),
            ..Expectation::default()
        };
        let mut buf = Vec::new();
        encode_expect(&mut AttrWriter::new(&mut buf), &e);
        let t = Attrs::new(&buf).next().unwrap().unwrap();
        let p = t.nested().nth(1).unwrap().unwrap();
        let kinds: Vec<u16> = p.nested().map(|a| a.unwrap().kind).collect();
        assert_eq!(kinds, [1, 2, 3]);
    }
}
