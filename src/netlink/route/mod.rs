//! rtnetlink (NETLINK_ROUTE) without new crates, one file per message
//! family as rust-netlink's netlink-packet-route does: [`address`]
//! (RTM_NEWADDR/DELADDR), [`link`] (RTM_NEWLINK/DELLINK), both built on
//! our checked attribute walker, and [`watch`], the sockets that
//! subscribe to link and address changes and dump the current ones. The
//! WAN watch (crate::wan) is their user.

pub mod address;
pub mod link;
pub mod watch;

pub use address::{AddrMsg, IFADDRMSG_LEN, ifa, ifa_flag, parse_addr};
pub use link::{IFINFOMSG_LEN, LinkMsg, iff, ifla, parse_link};
pub use watch::{Recv, RtnlWatch, dump, dump_on};

use super::attr::{Attr, WireError};
use super::message::{NLM_F_DUMP, NLM_F_REQUEST, NlMsg, NlMsgs, push_header};

/// Message types of rtnetlink this module reads and sends.
pub mod rtm {
    /// A link appeared or changed.
    pub const NEWLINK: u16 = 16;
    /// A link went away.
    pub const DELLINK: u16 = 17;
    /// Link query (dump).
    pub const GETLINK: u16 = 18;
    /// An address was added or refreshed.
    pub const NEWADDR: u16 = 20;
    /// An address was removed.
    pub const DELADDR: u16 = 21;
    /// Address query (dump).
    pub const GETADDR: u16 = 22;
}

/// Legacy multicast group bits (`RTMGRP_*`) for the bind.
pub mod group {
    /// Link changes.
    pub const LINK: u32 = 0x1;
    /// IPv4 address changes.
    pub const IPV4_IFADDR: u32 = 0x10;
    /// IPv6 address changes.
    pub const IPV6_IFADDR: u32 = 0x100;
    /// What the WAN watch subscribes to.
    pub const WAN: u32 = LINK | IPV4_IFADDR | IPV6_IFADDR;
}

/// `NLM_F_DUMP_INTR`: the dump changed while it was built; redo it.
pub const NLM_F_DUMP_INTR: u16 = 0x10;

/// One decoded rtnetlink message of interest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtMsg {
    /// RTM_NEWADDR or RTM_DELADDR.
    Addr(AddrMsg),
    /// RTM_NEWLINK or RTM_DELLINK.
    Link(LinkMsg),
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_ne_bytes)
}

fn name_of(a: &Attr) -> String {
    let end = a
        .payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(a.payload.len());
    String::from_utf8_lossy(&a.payload[..end]).into_owned()
}

/// Decodes one netlink message: `Ok(None)` for types this module does not
/// watch (routes, neighbours, control messages, other families).
pub fn parse_message(m: &NlMsg) -> Result<Option<RtMsg>, WireError> {
    match m.ty {
        rtm::NEWADDR | rtm::DELADDR => {
            Ok(parse_addr(m.ty == rtm::NEWADDR, m.payload)?.map(RtMsg::Addr))
        }
        rtm::NEWLINK | rtm::DELLINK => Ok(Some(RtMsg::Link(parse_link(
            m.ty == rtm::NEWLINK,
            m.payload,
        )?))),
        _ => Ok(None),
    }
}

/// Decodes every watched message of one datagram into `out`. Returns how
/// many messages were malformed (skipped); a broken frame ends the walk.
pub fn parse_datagram(buf: &[u8], out: &mut Vec<RtMsg>) -> usize {
    let mut bad = 0;
    for m in NlMsgs::new(buf) {
        match m {
            Ok(m) => match parse_message(&m) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(_) => bad += 1,
            },
            Err(_) => {
                bad += 1;
                break;
            }
        }
    }
    bad
}

/// Builds an RTM_GETLINK or RTM_GETADDR dump request for all families.
pub fn dump_request(ty: u16, seq: u32) -> Vec<u8> {
    let len = if ty == rtm::GETLINK {
        IFINFOMSG_LEN
    } else {
        IFADDRMSG_LEN
    };
    let mut buf = Vec::with_capacity(16 + len);
    push_header(&mut buf, ty, NLM_F_REQUEST | NLM_F_DUMP, seq, len);
    buf.resize(buf.len() + len, 0);
    buf
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::flow::{AF_INET, AF_INET6};
    use crate::netlink::attr::AttrWriter;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parse_all(buf: &[u8]) -> (Vec<RtMsg>, usize) {
        let mut out = Vec::new();
        let bad = parse_datagram(buf, &mut out);
        (out, bad)
    }

    fn addr_msg(ty: u16, family: u8, index: u32, attrs: impl FnOnce(&mut AttrWriter)) -> Vec<u8> {
        let mut payload = vec![family, 24, 0, 0];
        payload.extend_from_slice(&index.to_ne_bytes());
        attrs(&mut AttrWriter::new(&mut payload));
        let mut buf = Vec::new();
        push_header(&mut buf, ty, 0, 0, payload.len());
        buf.extend_from_slice(&payload);
        buf
    }

    fn link_msg(ty: u16, index: u32, flags: u32, name: &[u8]) -> Vec<u8> {
        let mut payload = vec![0u8, 0, 1, 0];
        payload.extend_from_slice(&index.to_ne_bytes());
        payload.extend_from_slice(&flags.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes());
        AttrWriter::new(&mut payload).strz(ifla::IFNAME, name);
        let mut buf = Vec::new();
        push_header(&mut buf, ty, 0, 0, payload.len());
        buf.extend_from_slice(&payload);
        buf
    }

    #[test]
    fn synthetic_messages_any_endianness() {
        // point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer
        let mut buf = addr_msg(rtm::NEWADDR, AF_INET, 7, |w| {
            w.bytes(ifa::ADDRESS, &[100, 64, 0, 1]);
            w.bytes(ifa::LOCAL, &[100, 64, 0, 5]);
            w.strz(ifa::LABEL, b"pppoe-wan");
            w.bytes(ifa::FLAGS, &0x80u32.to_ne_bytes());
        });
        buf.extend(addr_msg(rtm::DELADDR, AF_INET6, 7, |w| {
            w.bytes(ifa::ADDRESS, &ip6("2001:db8::5"));
        }));
        buf.extend(link_msg(
            rtm::NEWLINK,
            7,
            iff::UP | iff::RUNNING,
            b"pppoe-wan",
        ));
        buf.extend(link_msg(rtm::DELLINK, 7, 0, b"pppoe-wan"));
        // a route message is not ours: skipped, not an error
        push_header(&mut buf, 24, 0, 0, 12);
        buf.extend_from_slice(&[0; 12]);
        let (msgs, bad) = parse_all(&buf);
        assert_eq!(bad, 0);
        assert_eq!(msgs.len(), 4);
        let RtMsg::Addr(a) = &msgs[0] else { panic!() };
        assert!(a.new);
        assert_eq!(
            (a.index, a.addr, a.peer),
            (7, ip("100.64.0.5"), Some(ip("100.64.0.1")))
        );
        assert_eq!(a.label.as_deref(), Some("pppoe-wan"));
        assert_eq!(a.flags, 0x80);
        let RtMsg::Addr(b) = &msgs[1] else { panic!() };
        assert!(!b.new);
        assert_eq!((b.addr, b.peer), (ip("2001:db8::5"), None));
        let RtMsg::Link(l) = &msgs[2] else { panic!() };
        assert!(l.is_up());
        assert_eq!(l.name.as_deref(), Some("pppoe-wan"));
        let RtMsg::Link(d) = &msgs[3] else { panic!() };
        assert!(!d.new && !d.is_up());
    }

    fn ip6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn malformed_messages_are_errors() {
        // no address at all
        let buf = addr_msg(rtm::NEWADDR, AF_INET, 1, |w| w.strz(ifa::LABEL, b"x"));
        assert_eq!(parse_all(&buf).1, 1);
        // an IPv4 address of 3 bytes
        let buf = addr_msg(rtm::NEWADDR, AF_INET, 1, |w| {
            w.bytes(ifa::LOCAL, &[1, 2, 3])
        });
        assert_eq!(parse_all(&buf).1, 1);
        // a header too short for ifaddrmsg / ifinfomsg
        for ty in [rtm::NEWADDR, rtm::NEWLINK] {
            let mut buf = Vec::new();
            push_header(&mut buf, ty, 0, 0, 4);
            buf.extend_from_slice(&[2, 0, 0, 0]);
            assert_eq!(parse_all(&buf), (vec![], 1));
        }
        // other families (AF_MCTP...) are skipped quietly
        let buf = addr_msg(rtm::NEWADDR, 45, 1, |w| w.bytes(ifa::LOCAL, &[9]));
        assert_eq!(parse_all(&buf), (vec![], 0));
    }

    #[test]
    fn dump_requests_are_framed() {
        let r = dump_request(rtm::GETADDR, 9);
        let m = NlMsgs::new(&r).next().unwrap().unwrap();
        assert_eq!(
            (m.ty, m.flags, m.seq),
            (rtm::GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 9)
        );
        assert_eq!(m.payload, &[0; IFADDRMSG_LEN]);
        let r = dump_request(rtm::GETLINK, 1);
        assert_eq!(
            NlMsgs::new(&r).next().unwrap().unwrap().payload.len(),
            IFINFOMSG_LEN
        );
    }

    /// Captures from a 6.18 x86_64 kernel (tests/data/wan/README.md):
    /// host-endian, so they decode on little-endian hosts only.
    #[cfg(target_endian = "little")]
    mod captures {
        use super::*;

        const DUMP: &[u8] = include_bytes!("../../../tests/data/wan/dump.bin");
        const V4_PROMOTE: &[u8] = include_bytes!("../../../tests/data/wan/v4_promote.bin");
        const V4_NO_PROMOTE: &[u8] = include_bytes!("../../../tests/data/wan/v4_no_promote.bin");
        const V4_REFRESH: &[u8] = include_bytes!("../../../tests/data/wan/v4_refresh.bin");
        const V6_PREFIX: &[u8] = include_bytes!("../../../tests/data/wan/v6_prefix.bin");
        const PPP_READDRESS: &[u8] = include_bytes!("../../../tests/data/wan/ppp_readdress.bin");
        const PPP_RECREATE: &[u8] = include_bytes!("../../../tests/data/wan/ppp_recreate.bin");
        const ALL: [&[u8]; 7] = [
            DUMP,
            V4_PROMOTE,
            V4_NO_PROMOTE,
            V4_REFRESH,
            V6_PREFIX,
            PPP_READDRESS,
            PPP_RECREATE,
        ];

        fn addrs(msgs: &[RtMsg]) -> Vec<(bool, u32, IpAddr)> {
            msgs.iter()
                .filter_map(|m| match m {
                    RtMsg::Addr(a) => Some((a.new, a.index, a.addr)),
                    _ => None,
                })
                .collect()
        }

        #[test]
        fn dump_lists_links_then_addresses() {
            let (msgs, bad) = parse_all(DUMP);
            assert_eq!(bad, 0);
            let links: Vec<(u32, &str, bool)> = msgs
                .iter()
                .filter_map(|m| match m {
                    RtMsg::Link(l) => Some((l.index, l.name.as_deref().unwrap(), l.is_up())),
                    _ => None,
                })
                .collect();
            assert_eq!(
                links,
                [(1, "lo", true), (2, "wan0", true), (3, "ppp-x", true)]
            );
            let a = addrs(&msgs);
            for want in [
                (true, 1, ip("127.0.0.1")),
                (true, 2, ip("10.9.2.1")),
                (true, 3, ip("100.64.0.5")),
                (true, 2, ip("fd09:2::1")),
            ] {
                assert!(a.contains(&want), "{want:?} in {a:?}");
            }
            let p2p = msgs.iter().find_map(|m| match m {
                RtMsg::Addr(a) if a.index == 3 => Some(a),
                _ => None,
            });
            let p2p = p2p.unwrap();
            assert_eq!(p2p.peer, Some(ip("100.64.0.1")));
            assert_eq!(p2p.prefix_len, 32);
            assert_eq!(p2p.label.as_deref(), Some("ppp-x"));
            // link-local IPv6 is reported with link scope
            assert!(msgs.iter().any(|m| matches!(m, RtMsg::Addr(a)
                if a.scope == 253 && a.addr.is_ipv6())));
        }

        #[test]
        fn promote_secondaries_sequences() {
            let (msgs, _) = parse_all(V4_PROMOTE);
            assert_eq!(
                addrs(&msgs),
                [
                    (true, 2, ip("10.9.2.3")),
                    (false, 2, ip("10.9.2.1")),
                    (true, 2, ip("10.9.2.3")),
                ]
            );
            // the first NEWADDR of B says secondary, the re-announce primary
            let flags: Vec<u32> = msgs
                .iter()
                .filter_map(|m| match m {
                    RtMsg::Addr(a) => Some(a.flags & ifa_flag::SECONDARY),
                    _ => None,
                })
                .collect();
            assert_eq!(flags, [1, 0, 0]);
            let (msgs, _) = parse_all(V4_NO_PROMOTE);
            assert_eq!(
                addrs(&msgs),
                [
                    (false, 2, ip("10.9.2.1")),
                    (false, 2, ip("10.9.2.4")),
                    (false, 2, ip("10.9.2.3")),
                ]
            );
        }

        #[test]
        fn refresh_and_ipv6_prefix_change() {
            let (msgs, _) = parse_all(V4_REFRESH);
            assert_eq!(addrs(&msgs), [(true, 2, ip("10.9.2.1"))]);
            let (msgs, _) = parse_all(V6_PREFIX);
            assert_eq!(
                addrs(&msgs),
                [
                    (true, 2, ip("fd09:3::1")),
                    (true, 2, ip("fd09:2::1")),
                    (false, 2, ip("fd09:2::1")),
                ]
            );
            let RtMsg::Addr(dep) = &msgs[1] else { panic!() };
            assert_ne!(dep.flags & ifa_flag::DEPRECATED, 0);
        }

        #[test]
        fn ppp_readdress_and_recreate() {
            let (msgs, _) = parse_all(PPP_READDRESS);
            let RtMsg::Link(down) = &msgs[0] else {
                panic!()
            };
            assert!(!down.is_up());
            assert_eq!(
                addrs(&msgs),
                [(false, 3, ip("100.64.0.5")), (true, 3, ip("100.64.0.9"))]
            );
            let RtMsg::Link(up) = msgs.last().unwrap() else {
                panic!()
            };
            assert!(up.is_up() && up.flags & iff::POINTOPOINT != 0);
            let (msgs, bad) = parse_all(PPP_RECREATE);
            assert_eq!(bad, 0);
            // the device goes away (index 3), a new one (index 4) appears
            // as ppp0 and is renamed before it gets its address
            let links: Vec<(bool, u32, &str)> = msgs
                .iter()
                .filter_map(|m| match m {
                    RtMsg::Link(l) => Some((l.new, l.index, l.name.as_deref().unwrap())),
                    _ => None,
                })
                .collect();
            assert!(links.contains(&(false, 3, "ppp-x")));
            let at = links.iter().position(|l| *l == (true, 4, "ppp0")).unwrap();
            assert_eq!(links[at + 1], (true, 4, "ppp-x"));
            assert!(addrs(&msgs).contains(&(true, 4, ip("100.64.0.7"))));
        }

        #[test]
        fn every_truncation_and_corruption_is_safe() {
            for cap in ALL {
                for cut in 0..cap.len() {
                    let _ = parse_all(&cap[..cut]);
                }
                let mut bytes = cap.to_vec();
                for i in 0..bytes.len() {
                    for v in [0u8, 0xff, 0x03] {
                        let old = bytes[i];
                        bytes[i] = v;
                        let _ = parse_all(&bytes);
                        bytes[i] = old;
                    }
                }
            }
        }
    }
}
