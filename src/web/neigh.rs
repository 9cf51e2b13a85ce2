//! Which addresses belong to one device: the kernel's neighbour table
//! (`ip neigh`: IPv4 ARP and IPv6 neighbour discovery entries with the
//! link-layer address) and dnsmasq's IPv4 leases, so the Hosts view can
//! put a laptop's IPv4 address, its SLAAC and temporary IPv6 addresses
//! together under its MAC.
//!
//! The table is dumped over rtnetlink (RTM_GETNEIGH) at most every few
//! seconds, on Hosts requests only; [`parse_neigh`] decodes one entry and
//! is unit-tested here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netlink::attr::Attrs;
use crate::netlink::message::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NlMsgs, push_header,
};
use crate::netlink::socket::{NETLINK_ROUTE, NlSocket};

/// A link-layer (Ethernet) address.
pub type Mac = [u8; 6];

/// RTM_NEWNEIGH: one entry of a dump.
const RTM_NEWNEIGH: u16 = 28;
/// RTM_GETNEIGH: the dump request.
const RTM_GETNEIGH: u16 = 30;
/// NDA_DST: the neighbour's network address.
const NDA_DST: u16 = 1;
/// NDA_LLADDR: its link-layer address.
const NDA_LLADDR: u16 = 2;
/// Length of `struct ndmsg`: family u8, pad u8, pad u16, ifindex i32,
/// state u16, flags u8, type u8.
const NDMSG_LEN: usize = 12;
/// NUD states whose link-layer address is known: REACHABLE, STALE,
/// DELAY, PROBE, PERMANENT (not INCOMPLETE, FAILED, NOARP).
const NUD_KNOWN: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
/// Entries kept at most.
const MAX_ENTRIES: usize = 16384;
/// How long a dump is used before the next.
const REFRESH: Duration = Duration::from_secs(5);

/// Decodes one RTM_NEWNEIGH payload into (address, MAC) when its
/// link-layer address is known and is an Ethernet address.
pub fn parse_neigh(payload: &[u8]) -> Option<(IpAddr, Mac)> {
    let head = payload.get(..NDMSG_LEN)?;
    let state = u16::from_ne_bytes([head[8], head[9]]);
    if state & NUD_KNOWN == 0 {
        return None;
    }
    let (mut dst, mut mac) = (None, None);
    for a in Attrs::new(&payload[NDMSG_LEN..]) {
        let a = a.ok()?;
        match (a.kind, a.payload.len()) {
            (NDA_DST, 4) => {
                let b: [u8; 4] = a.payload.try_into().ok()?;
                dst = Some(IpAddr::V4(Ipv4Addr::from(b)));
            }
            (NDA_DST, 16) => {
                let b: [u8; 16] = a.payload.try_into().ok()?;
                dst = Some(IpAddr::V6(Ipv6Addr::from(b)));
            }
            (NDA_LLADDR, 6) => mac = a.payload.try_into().ok(),
            _ => {}
        }
    }
    let mac: Mac = mac?;
    (mac != [0; 6]).then_some((dst?, mac))
}

/// Parses a MAC written `aa:bb:cc:dd:ee:ff` (dnsmasq's lease files).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Appends a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn push_mac(out: &mut Vec<u8>, m: &Mac) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Address to MAC.
#[derive(Debug, Default, Clone)]
pub struct Macs {
    map: HashMap<IpAddr, Mac>,
}

impl Macs {
    /// The MAC of `a`, when known.
    pub fn get(&self, a: &IpAddr) -> Option<&Mac> {
        self.map.get(a)
    }

    /// Every address with this MAC.
    pub fn addrs_of(&self, mac: &Mac) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .map
            .iter()
            .filter(|(_, m)| *m == mac)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }

    /// Adds an entry (the first one for an address wins).
    pub fn add(&mut self, a: IpAddr, m: Mac) {
        if self.map.len() < MAX_ENTRIES {
            self.map.entry(a).or_insert(m);
        }
    }

    /// Adds the MACs of dnsmasq's IPv4 lease lines (`expiry mac ip name
    /// client-id`).
    pub fn add_leases(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_ascii_whitespace();
            let (Some(_), Some(mac), Some(ip)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            if let (Some(m), Ok(a)) = (parse_mac(mac), ip.parse::<IpAddr>()) {
                self.add(a, m);
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Dumps the neighbour table of this or the named namespace.
pub fn dump(netns: Option<&str>, out: &mut Macs) -> std::io::Result<()> {
    let mut sock = NlSocket::open(NETLINK_ROUTE, 0, netns)?;
    let seq = crate::flow::now_secs() as u32;
    let mut req = Vec::with_capacity(32);
    push_header(
        &mut req,
        RTM_GETNEIGH,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NDMSG_LEN,
    );
    req.resize(req.len() + NDMSG_LEN, 0);
    sock.send(&req)?;
    let portid = sock.portid();
    loop {
        let data = sock.recv()?;
        for m in NlMsgs::new(data) {
            let m = m.map_err(|e| std::io::Error::other(e.0))?;
            if m.seq != seq || (m.pid != 0 && m.pid != portid) {
                continue;
            }
            match m.ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    return match m.error_code() {
                        Ok(0) => Ok(()),
                        Ok(c) => Err(std::io::Error::from_raw_os_error(-c.abs())),
                        Err(e) => Err(std::io::Error::other(e.0)),
                    };
                }
                RTM_NEWNEIGH => {
                    if let Some((a, mac)) = parse_neigh(m.payload) {
                        out.add(a, mac);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The neighbour table and lease MACs, dumped again at most every 5 s.
#[derive(Debug)]
pub struct MacCache {
    netns: Option<String>,
    leases: Option<std::path::PathBuf>,
    state: Mutex<(Option<Instant>, Arc<Macs>)>,
}

impl MacCache {
    /// A cache for `netns`, with the MACs of the `leases` file too.
    pub fn new(netns: Option<String>, leases: Option<std::path::PathBuf>) -> MacCache {
        MacCache {
            netns,
            leases,
            state: Mutex::new((None, Arc::new(Macs::default()))),
        }
    }

    /// The current table (a failed dump gives what the leases say).
    pub fn get(&self) -> Arc<Macs> {
        let Ok(mut st) = self.state.lock() else {
            return Arc::new(Macs::default());
        };
        if st.0.is_some_and(|t| t.elapsed() < REFRESH) {
            return st.1.clone();
        }
        let mut m = Macs::default();
        let _ = dump(self.netns.as_deref(), &mut m);
        if let Some(p) = &self.leases {
            m.add_leases(&super::names::read_capped(p));
        }
        *st = (Some(Instant::now()), Arc::new(m));
        st.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr::AttrWriter;

    fn entry(state: u16, dst: &[u8], mac: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; NDMSG_LEN];
        p[8..10].copy_from_slice(&state.to_ne_bytes());
        let mut w = AttrWriter::new(&mut p);
        w.bytes(NDA_DST, dst);
        w.bytes(NDA_LLADDR, mac);
        p
    }

    #[test]
    fn entries_with_a_known_mac() {
        let mac = [2, 0, 0, 0, 0, 9];
        let v4 = entry(0x02, &[10, 9, 1, 2], &mac);
        assert_eq!(parse_neigh(&v4), Some(("10.9.1.2".parse().unwrap(), mac)));
        let six: Ipv6Addr = "fd00::9".parse().unwrap();
        let v6 = entry(0x04, &six.octets(), &mac);
        assert_eq!(parse_neigh(&v6), Some((IpAddr::V6(six), mac)));
        for state in [0x08, 0x10, 0x80] {
            assert!(parse_neigh(&entry(state, &[10, 0, 0, 1], &mac)).is_some());
        }
        // not known: incomplete, failed, noarp; odd link addresses
        for state in [0x00, 0x01, 0x20, 0x40] {
            assert_eq!(parse_neigh(&entry(state, &[10, 0, 0, 1], &mac)), None);
        }
        assert_eq!(parse_neigh(&entry(2, &[10, 0, 0, 1], &[1, 2, 3])), None);
        assert_eq!(parse_neigh(&entry(2, &[10, 0, 0, 1], &[0; 6])), None);
        assert_eq!(parse_neigh(&entry(2, &[10, 0, 1], &mac)), None);
        assert_eq!(parse_neigh(&v4[..8]), None);
        let mut bad = v4.clone();
        bad.truncate(NDMSG_LEN + 6);
        assert_eq!(parse_neigh(&bad), None);
    }

    #[test]
    fn macs_from_text_and_back() {
        assert_eq!(parse_mac("02:00:0a:FF:00:01"), Some([2, 0, 10, 255, 0, 1]));
        for bad in [
            "",
            "02:00:0a:ff:00",
            "02:00:0a:ff:00:01:02",
            "2:00:0a:ff:00:01",
            "zz:00:0a:ff:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        let mut out = Vec::new();
        push_mac(&mut out, &[2, 0, 10, 255, 0, 1]);
        assert_eq!(out, b"02:00:0a:ff:00:01");
        let mut m = Macs::default();
        m.add_leases(
            "1 02:00:00:00:00:02 10.9.1.2 laptop 01:02\n1 1234 fd00::7 phone 00:01\nshort\n",
        );
        m.add("fd00::2".parse().unwrap(), [2, 0, 0, 0, 0, 2]);
        m.add("10.9.1.2".parse().unwrap(), [9; 6]);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.addrs_of(&[2, 0, 0, 0, 0, 2]),
            vec![
                "10.9.1.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        assert_eq!(
            m.get(&"10.9.1.2".parse().unwrap()),
            Some(&[2, 0, 0, 0, 0, 2])
        );
        assert!(!m.is_empty());
    }
}
