//! `CTA_EXPECT_*` attributes into an [`Expectation`]: the dump and event
//! path, so no allocation (names are kept inline). Unknown attributes are
//! skipped; a malformed one is an error, never a panic.

use super::cta_exp;
use crate::flow::expect::{ExpectFnName, ExpectNat, Expectation};
use crate::flow::{HelperName, Tuple};
use crate::netlink::attr::{Attr, Attrs, WireError};
use crate::netlink::ct::decode::decode_tuple;
use crate::netlink::ct::split_nfgenmsg;

/// A tuple nest of an expectation (its zone, if any, is not kept: the
/// expectation's zone is `CTA_EXPECT_ZONE`).
fn tuple(a: &Attr) -> Result<Tuple, WireError> {
    let mut t = Tuple::default();
    let mut zone = None;
    decode_tuple(a, &mut t, &mut zone)?;
    Ok(t)
}

fn nat(a: &Attr) -> Result<ExpectNat, WireError> {
    let mut n = ExpectNat::default();
    for x in a.nested() {
        let x = x?;
        match x.kind {
            cta_exp::NAT_DIR => n.dir = Some(x.be32()?),
            cta_exp::NAT_TUPLE => n.tuple = Some(tuple(&x)?),
            _ => {}
        }
    }
    Ok(n)
}

/// Decodes the attributes of one expectation message into `e` (which the
/// caller resets), with `family` from its nfgenmsg header.
pub fn decode_expect_into(family: u8, attrs: &[u8], e: &mut Expectation) -> Result<(), WireError> {
    e.family = family;
    for a in Attrs::new(attrs) {
        let a = a?;
        match a.kind {
            cta_exp::MASTER => e.master = Some(tuple(&a)?),
            cta_exp::TUPLE => e.tuple = Some(tuple(&a)?),
            cta_exp::MASK => e.mask = Some(tuple(&a)?),
            cta_exp::TIMEOUT => e.timeout = Some(a.be32()?),
            cta_exp::ID => e.id = Some(a.be32()?),
            cta_exp::HELP_NAME => e.helper = Some(HelperName::from_bytes(a.payload)),
            cta_exp::ZONE => e.zone = Some(a.be16()?),
            cta_exp::FLAGS => e.flags = Some(a.be32()?),
            cta_exp::CLASS => e.class = Some(a.be32()?),
            cta_exp::NAT => e.nat = Some(nat(&a)?),
            cta_exp::FN => e.expectfn = Some(ExpectFnName::from_bytes(a.payload)),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes an expectation message payload (nfgenmsg + attributes).
pub fn decode_expect(payload: &[u8]) -> Result<Expectation, WireError> {
    let (family, _, attrs) = split_nfgenmsg(payload)?;
    let mut e = Expectation::default();
    decode_expect_into(family, attrs, &mut e)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::expect::testutil::ftp_pasv;
    use crate::flow::{AF_INET, proto};
    use crate::netlink::exp::encode::{create_request, encode_expect};
    use crate::netlink::message::NlMsgs;

    /// What the kernel would read from a request (and what a dump of the
    /// same expectation carries).
    fn roundtrip(e: &Expectation) -> Expectation {
        let mut bytes = Vec::new();
        create_request(e).serialize_into(&mut bytes, 0, 1);
        let m = NlMsgs::new(&bytes).next().unwrap().unwrap();
        assert_eq!(m.ty, 0x200);
        decode_expect(m.payload).unwrap()
    }

    #[test]
    fn every_attribute_roundtrips() {
        let mut e = ftp_pasv();
        e.zone = Some(7);
        e.flags = Some(5);
        e.class = Some(1);
        e.nat = Some(ExpectNat {
            dir: Some(1),
            tuple: Some(Tuple {
                src: "10.9.1.2".parse().unwrap(),
                proto: proto::TCP,
                sport: 4000,
                ..Tuple::default()
            }),
        });
        e.expectfn = Some(ExpectFnName::from_bytes(b"nat-follow-master"));
        assert_eq!(roundtrip(&e), e);
        let bare = Expectation {
            family: AF_INET,
            ..Expectation::default()
        };
        assert_eq!(roundtrip(&bare), bare);
    }

    #[test]
    fn unknown_attributes_are_skipped_and_short_ones_refused() {
        let mut buf = Vec::new();
        let mut w = crate::netlink::attr::AttrWriter::new(&mut buf);
        w.be32(99, 1);
        w.be32(cta_exp::TIMEOUT, 30);
        let mut e = Expectation::default();
        decode_expect_into(AF_INET, &buf, &mut e).unwrap();
        assert_eq!(e.timeout, Some(30));
        for kind in [
            cta_exp::TIMEOUT,
            cta_exp::ID,
            cta_exp::ZONE,
            cta_exp::FLAGS,
            cta_exp::CLASS,
        ] {
            let mut buf = Vec::new();
            crate::netlink::attr::AttrWriter::new(&mut buf).bytes(kind, &[1]);
            assert!(decode_expect_into(AF_INET, &buf, &mut e).is_err(), "{kind}");
        }
        let mut buf = Vec::new();
        let mut w = crate::netlink::attr::AttrWriter::new(&mut buf);
        let n = w.begin(cta_exp::NAT);
        w.bytes(cta_exp::NAT_DIR, &[0, 1]);
        w.end(n);
        assert!(decode_expect_into(AF_INET, &buf, &mut e).is_err());
        assert!(decode_expect(&[2, 0]).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_or_a_value_never_a_panic() {
        let mut e = ftp_pasv();
        e.nat = Some(ExpectNat {
            dir: Some(0),
            tuple: e.master,
        });
        e.expectfn = Some(ExpectFnName::from_bytes(b"nat-follow-master"));
        let mut buf = Vec::new();
        encode_expect(&mut crate::netlink::attr::AttrWriter::new(&mut buf), &e);
        for cut in 0..buf.len() {
            let mut d = Expectation::default();
            let _ = decode_expect_into(AF_INET, &buf[..cut], &mut d);
        }
    }
}
