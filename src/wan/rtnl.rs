//! rtnetlink address and link watching, without new crates: a
//! NETLINK_ROUTE socket bound to the link and IPv4/IPv6 address groups, a
//! decoder for RTM_NEWADDR/DELADDR and RTM_NEWLINK/DELLINK built on our
//! checked attribute walker, and the initial dump of links and addresses.
//!
//! Layouts (all host-endian, as rtnetlink is):
//! - `struct ifaddrmsg` (8 bytes): family u8, prefixlen u8, flags u8,
//!   scope u8, index u32; then IFA_* attributes.
//! - `struct ifinfomsg` (16 bytes): family u8, pad u8, type u16, index i32,
//!   flags u32, change u32; then IFLA_* attributes.
//!
//! On point-to-point links (PPP, tun, `ip addr add A peer B`) IFA_ADDRESS
//! is the peer and IFA_LOCAL our own address, so IFA_LOCAL wins when both
//! are present.

use std::io;
use std::net::IpAddr;

use crate::netlink::attr::{Attr, Attrs, WireError};
use crate::netlink::client::Error;
use crate::netlink::message::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NlMsg, NlMsgs, push_header,
};
use crate::netlink::socket::{NETLINK_ROUTE, NlSocket};

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

/// IFA_* attribute types.
pub mod ifa {
    /// The address (the peer on point-to-point links).
    pub const ADDRESS: u16 = 1;
    /// The local address.
    pub const LOCAL: u16 = 2;
    /// The IPv4 label (interface name or alias such as `eth0:1`).
    pub const LABEL: u16 = 3;
    /// Lifetimes.
    pub const CACHEINFO: u16 = 6;
    /// 32-bit flags (supersede the 8-bit ifa_flags).
    pub const FLAGS: u16 = 8;
}

/// IFA_F_* address flags this crate names.
pub mod ifa_flag {
    /// IPv4: a secondary address (IPv6: a temporary one, same bit).
    pub const SECONDARY: u32 = 0x01;
    /// Duplicate address detection failed.
    pub const DADFAILED: u32 = 0x08;
    /// Preferred lifetime ran out: kept for existing traffic only.
    pub const DEPRECATED: u32 = 0x20;
    /// Duplicate address detection still running.
    pub const TENTATIVE: u32 = 0x40;
    /// Configured by hand (no lifetime).
    pub const PERMANENT: u32 = 0x80;
}

/// IFLA_* attribute types.
pub mod ifla {
    /// Interface name.
    pub const IFNAME: u16 = 3;
    /// Operational state (RFC 2863).
    pub const OPERSTATE: u16 = 16;
}

/// IFF_* link flags this crate names.
pub mod iff {
    /// Administratively up.
    pub const UP: u32 = 0x1;
    /// Point-to-point link.
    pub const POINTOPOINT: u32 = 0x10;
    /// Operationally up (carrier and not dormant).
    pub const RUNNING: u32 = 0x40;
    /// Carrier present.
    pub const LOWER_UP: u32 = 0x10000;
}

/// Size of `struct ifaddrmsg`.
pub const IFADDRMSG_LEN: usize = 8;
/// Size of `struct ifinfomsg`.
pub const IFINFOMSG_LEN: usize = 16;
/// `NLM_F_DUMP_INTR`: the dump changed while it was built; redo it.
pub const NLM_F_DUMP_INTR: u16 = 0x10;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// An address added to (or refreshed on, or removed from) an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrMsg {
    /// RTM_NEWADDR (true) or RTM_DELADDR (false).
    pub new: bool,
    /// Interface index.
    pub index: u32,
    /// Our address: IFA_LOCAL when present, else IFA_ADDRESS.
    pub addr: IpAddr,
    /// The peer of a point-to-point address (IFA_ADDRESS when it differs
    /// from IFA_LOCAL).
    pub peer: Option<IpAddr>,
    /// Prefix length.
    pub prefix_len: u8,
    /// IFA_F_* flags (IFA_FLAGS when present, else the header's 8 bits).
    pub flags: u32,
    /// Scope (0 universe/global, 253 link, 254 host).
    pub scope: u8,
    /// IPv4 label (IFA_LABEL), usually the interface name.
    pub label: Option<String>,
}

/// A link that appeared, changed or went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMsg {
    /// RTM_NEWLINK (true) or RTM_DELLINK (false).
    pub new: bool,
    /// Interface index.
    pub index: u32,
    /// IFF_* flags.
    pub flags: u32,
    /// Interface name (IFLA_IFNAME).
    pub name: Option<String>,
}

impl LinkMsg {
    /// Administratively up (IFF_UP): what the kernel's masquerade cleanup
    /// also keys on (NETDEV_DOWN clears it).
    pub fn is_up(&self) -> bool {
        self.new && self.flags & iff::UP != 0
    }
}

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

fn ip_of(family: u8, a: &Attr) -> Result<IpAddr, WireError> {
    match family {
        AF_INET => Ok(IpAddr::V4(a.ipv4()?)),
        AF_INET6 => Ok(IpAddr::V6(a.ipv6()?)),
        _ => Err(WireError("address of unknown family")),
    }
}

fn name_of(a: &Attr) -> String {
    let end = a
        .payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(a.payload.len());
    String::from_utf8_lossy(&a.payload[..end]).into_owned()
}

/// Decodes an RTM_NEWADDR/DELADDR payload. Families other than IPv4 and
/// IPv6 give `Ok(None)`.
pub fn parse_addr(new: bool, payload: &[u8]) -> Result<Option<AddrMsg>, WireError> {
    if payload.len() < IFADDRMSG_LEN {
        return Err(WireError("truncated ifaddrmsg"));
    }
    let family = payload[0];
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let index = ne_u32(payload, 4).ok_or(WireError("truncated ifaddrmsg"))?;
    let (mut address, mut local, mut label, mut flags32) = (None, None, None, None);
    for a in Attrs::new(&payload[IFADDRMSG_LEN..]) {
        let a = a?;
        match a.kind {
            ifa::ADDRESS => address = Some(ip_of(family, &a)?),
            ifa::LOCAL => local = Some(ip_of(family, &a)?),
            ifa::LABEL => label = Some(name_of(&a)),
            ifa::FLAGS => flags32 = Some(a.ne32()?),
            _ => {}
        }
    }
    let (addr, peer) = match (local, address) {
        (Some(l), Some(p)) if l != p => (l, Some(p)),
        (Some(l), _) => (l, None),
        (None, Some(a)) => (a, None),
        (None, None) => return Err(WireError("address message without an address")),
    };
    Ok(Some(AddrMsg {
        new,
        index,
        addr,
        peer,
        prefix_len: payload[1],
        flags: flags32.unwrap_or(payload[2] as u32),
        scope: payload[3],
        label,
    }))
}

/// Decodes an RTM_NEWLINK/DELLINK payload.
pub fn parse_link(new: bool, payload: &[u8]) -> Result<LinkMsg, WireError> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(WireError("truncated ifinfomsg"));
    }
    let index = ne_u32(payload, 4).ok_or(WireError("truncated ifinfomsg"))?;
    let flags = ne_u32(payload, 8).ok_or(WireError("truncated ifinfomsg"))?;
    let mut name = None;
    for a in Attrs::new(&payload[IFINFOMSG_LEN..]) {
        let a = a?;
        if a.kind == ifla::IFNAME {
            name = Some(name_of(&a));
        }
    }
    Ok(LinkMsg {
        new,
        index,
        flags,
        name,
    })
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

/// What one receive on the watch socket produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// Messages were appended (possibly none).
    Messages,
    /// The socket overran (ENOBUFS): events were lost, dump again.
    Overrun,
    /// Nothing to read now (non-blocking socket).
    Empty,
}

/// The rtnetlink side of the WAN watch: one socket subscribed to link and
/// address changes, one for dumps (so dump replies and events never mix).
#[derive(Debug)]
pub struct RtnlWatch {
    events: NlSocket,
    query: NlSocket,
    seq: u32,
    /// Messages that failed to decode so far.
    pub malformed: u64,
}

impl RtnlWatch {
    /// Subscribes in this or the named network namespace. Subscribe
    /// first, then [`RtnlWatch::dump`]: changes between the two are queued
    /// on the event socket, so none is missed.
    pub fn open(netns: Option<&str>) -> io::Result<RtnlWatch> {
        let events = NlSocket::open(NETLINK_ROUTE, group::WAN, netns)?;
        // Address changes are rare; 1 MiB rides out a burst of link
        // messages (each can be 1-2 KiB) without an overrun.
        let _ = events.set_recv_buffer(1 << 20);
        let query = NlSocket::open(NETLINK_ROUTE, 0, netns)?;
        Ok(RtnlWatch {
            events,
            query,
            seq: crate::flow::now_secs() as u32,
            malformed: 0,
        })
    }

    /// The event socket's file descriptor (for poll).
    pub fn fd(&self) -> i32 {
        self.events.fd()
    }

    /// Makes [`RtnlWatch::recv`] return [`Recv::Empty`] instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.events.set_nonblocking(on)
    }

    /// Receives one datagram of events into `out`.
    pub fn recv(&mut self, out: &mut Vec<RtMsg>) -> io::Result<Recv> {
        match self.events.recv() {
            Ok(data) => {
                self.malformed += parse_datagram(data, out) as u64;
                Ok(Recv::Messages)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Recv::Overrun),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Recv::Empty),
            Err(e) => Err(e),
        }
    }

    /// Dumps every link, then every address, into `out` (see [`dump_on`]).
    pub fn dump(&mut self, out: &mut Vec<RtMsg>) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(8);
        self.malformed += dump_on(&mut self.query, self.seq, out)?;
        Ok(())
    }
}

/// Dumps every link, then every address, in this or the named namespace
/// (for one-shot users such as `ctrack flush-wan --interface`).
pub fn dump(netns: Option<&str>) -> Result<Vec<RtMsg>, Error> {
    let mut sock = NlSocket::open(NETLINK_ROUTE, 0, netns)?;
    let mut out = Vec::new();
    dump_on(&mut sock, crate::flow::now_secs() as u32, &mut out)?;
    Ok(out)
}

/// Dumps every link, then every address, into `out` on `sock` (links
/// first, so an address's interface is known when it is read), with
/// sequence numbers from `seq`. A dump the kernel marks as interrupted is
/// redone. Returns how many messages were malformed (skipped).
pub fn dump_on(sock: &mut NlSocket, seq: u32, out: &mut Vec<RtMsg>) -> Result<u64, Error> {
    let start = out.len();
    let mut seq = seq;
    for _attempt in 0..4 {
        out.truncate(start);
        let mut intr = false;
        let mut bad = 0;
        for ty in [rtm::GETLINK, rtm::GETADDR] {
            seq = seq.wrapping_add(1);
            let (i, b) = dump_one(sock, ty, seq, out)?;
            intr |= i;
            bad += b;
        }
        if !intr {
            return Ok(bad);
        }
    }
    Err(Error::Wire(WireError(
        "address dump kept changing while it was read",
    )))
}

/// One dump of `ty`; returns (interrupted, malformed).
fn dump_one(
    sock: &mut NlSocket,
    ty: u16,
    seq: u32,
    out: &mut Vec<RtMsg>,
) -> Result<(bool, u64), Error> {
    sock.send(&dump_request(ty, seq))?;
    let portid = sock.portid();
    let mut intr = false;
    let mut bad = 0;
    loop {
        let data = sock.recv()?;
        for m in NlMsgs::new(data) {
            let m = m?;
            if m.seq != seq || (m.pid != 0 && m.pid != portid) {
                continue;
            }
            intr |= m.flags & NLM_F_DUMP_INTR != 0;
            match m.ty {
                NLMSG_DONE => return Ok((intr, bad)),
                NLMSG_ERROR => {
                    let code = m.error_code()?;
                    if code != 0 {
                        return Err(Error::Kernel(code));
                    }
                    return Ok((intr, bad));
                }
                _ => match parse_message(&m) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(_) => bad += 1,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

        const DUMP: &[u8] = include_bytes!("../../tests/data/wan/dump.bin");
        const V4_PROMOTE: &[u8] = include_bytes!("../../tests/data/wan/v4_promote.bin");
        const V4_NO_PROMOTE: &[u8] = include_bytes!("../../tests/data/wan/v4_no_promote.bin");
        const V4_REFRESH: &[u8] = include_bytes!("../../tests/data/wan/v4_refresh.bin");
        const V6_PREFIX: &[u8] = include_bytes!("../../tests/data/wan/v6_prefix.bin");
        const PPP_READDRESS: &[u8] = include_bytes!("../../tests/data/wan/ppp_readdress.bin");
        const PPP_RECREATE: &[u8] = include_bytes!("../../tests/data/wan/ppp_recreate.bin");
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
