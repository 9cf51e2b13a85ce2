//! The Hosts view: flows, bytes, packets and rates per LAN device, from
//! the shared table. A device is its MAC when the neighbour table or the
//! leases know it (so a laptop's IPv4 address and its SLAAC and temporary
//! IPv6 addresses are one host), else its address.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::flow::addr::{push_ip, push_u64};
use crate::flow::json::push_str;

use super::names::Names;
use super::neigh::{Mac, Macs, push_mac};
use super::query::FlowQuery;
use super::table::{Row, Table};

/// Hosts kept (the flows of others are counted as `other_hosts_flows`).
pub const MAX_HOSTS: usize = 4096;
/// Addresses listed per host.
const MAX_ADDRS: usize = 16;

/// What a host is known by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Mac(Mac),
    Addr(IpAddr),
}

/// Totals of one host, each way (up: from the host).
#[derive(Debug, Default, Clone)]
pub struct Host {
    /// Its addresses seen in flows, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Its MAC, when known.
    pub mac: Option<Mac>,
    /// Flows.
    pub flows: u64,
    /// Bytes and packets from the host.
    pub up: [u64; 2],
    /// Bytes and packets to the host.
    pub down: [u64; 2],
    /// Bytes per second from and to the host (flows with a rate).
    pub rate: [u64; 2],
}

fn is_lan_like(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_private() || v.is_link_local(),
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// The LAN host of a flow and whether it is the original direction's
/// sender: the port-forward target of a DNAT flow (its reply source),
/// else the initiator, when it is behind SNAT, has a name or a MAC, or
/// has a private, unique-local or link-local address.
pub fn lan_host(r: &Row, names: &Names, macs: &Macs) -> Option<(IpAddr, bool)> {
    let forwarded = r.is_dnat() && r.addr(2) != r.addr(1);
    let (h, orig) = if forwarded {
        (r.addr(2), false)
    } else {
        (r.addr(0), true)
    };
    if h.is_loopback() || h.is_unspecified() {
        return None;
    }
    let known = r.is_snat()
        || forwarded
        || names.get(&h).is_some()
        || macs.get(&h).is_some()
        || is_lan_like(h);
    known.then_some((h, orig))
}

/// Per-host totals of the rows `q` selects, largest first, and the flows
/// of hosts beyond [`MAX_HOSTS`].
pub fn aggregate(
    t: &Table,
    q: &FlowQuery,
    names: &Names,
    macs: &Macs,
    now: u32,
) -> (Vec<Host>, u64) {
    let mut map: HashMap<Key, Host> = HashMap::new();
    let mut other = 0u64;
    for (_, r) in t.iter() {
        if !q.filter.is_empty() && !q.filter.matches(&r.to_flow(now), names) {
            continue;
        }
        let Some((h, orig)) = lan_host(r, names, macs) else {
            continue;
        };
        let mac = macs.get(&h).copied();
        let key = mac.map_or(Key::Addr(h), Key::Mac);
        let len = map.len();
        let agg = match map.get_mut(&key) {
            Some(a) => a,
            None if len >= MAX_HOSTS => {
                other += 1;
                continue;
            }
            None => map.entry(key).or_insert_with(|| Host {
                mac,
                ..Host::default()
            }),
        };
        if !agg.addrs.contains(&h) && agg.addrs.len() < MAX_ADDRS {
            agg.addrs.push(h);
        }
        let (up, down) = if orig { (0, 1) } else { (1, 0) };
        let u = r.counters(up).unwrap_or_default();
        let d = r.counters(down).unwrap_or_default();
        agg.flows += 1;
        agg.up[0] = agg.up[0].saturating_add(u.bytes);
        agg.up[1] = agg.up[1].saturating_add(u.packets);
        agg.down[0] = agg.down[0].saturating_add(d.bytes);
        agg.down[1] = agg.down[1].saturating_add(d.packets);
        agg.rate[0] += r.rate(up).unwrap_or(0) as u64;
        agg.rate[1] += r.rate(down).unwrap_or(0) as u64;
    }
    let mut list: Vec<Host> = map.into_values().collect();
    for h in list.iter_mut() {
        // IPv4 first, then by address: the first is the one to show
        h.addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    }
    list.sort_by(|a, b| {
        let ta = a.up[0].saturating_add(a.down[0]);
        let tb = b.up[0].saturating_add(b.down[0]);
        tb.cmp(&ta)
            .then(b.flows.cmp(&a.flows))
            .then(a.addrs.cmp(&b.addrs))
    });
    (list, other)
}

/// The `/api/v1/hosts` reply: hosts with their addresses, MAC, name (of
/// any of their addresses, IPv4 first), flows, and bytes, packets and
/// rate up and down; the table's size, the flows of hosts left out, and
/// whether counters are on.
pub fn render(
    hosts: &[Host],
    other: u64,
    t: &Table,
    names: &Names,
    acct_on: bool,
    now: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + hosts.len() * 200);
    out.extend_from_slice(b"{\"hosts\":[");
    for (i, h) in hosts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(first) = h.addrs.first() else {
            continue;
        };
        out.extend_from_slice(b"{\"addr\":\"");
        push_ip(&mut out, *first);
        out.extend_from_slice(b"\",\"addrs\":[");
        for (j, a) in h.addrs.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'"');
            push_ip(&mut out, *a);
            out.push(b'"');
        }
        out.push(b']');
        if let Some(m) = &h.mac {
            out.extend_from_slice(b",\"mac\":\"");
            push_mac(&mut out, m);
            out.push(b'"');
        }
        if let Some(n) = h.addrs.iter().find_map(|a| names.get(a)) {
            out.extend_from_slice(b",\"name\":");
            push_str(&mut out, n);
        }
        out.extend_from_slice(b",\"flows\":");
        push_u64(&mut out, h.flows);
        for (key, v, rate) in [(&b"up"[..], h.up, h.rate[0]), (b"down", h.down, h.rate[1])] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\":{\"bytes\":");
            push_u64(&mut out, v[0]);
            out.extend_from_slice(b",\"packets\":");
            push_u64(&mut out, v[1]);
            out.extend_from_slice(b",\"rate\":");
            push_u64(&mut out, rate);
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"total\":");
    push_u64(&mut out, t.len() as u64);
    out.extend_from_slice(b",\"other_hosts_flows\":");
    push_u64(&mut out, other);
    out.extend_from_slice(b",\"acct\":");
    out.extend_from_slice(if acct_on { b"true" } else { b"false" });
    if !acct_on {
        out.extend_from_slice(
            b",\"note\":\"byte and packet counters are off: set net.netfilter.nf_conntrack_acct=1\"",
        );
    }
    out.extend_from_slice(b",\"counters_age\":");
    match t.counters_epoch() {
        Some(e) => push_u64(&mut out, now.saturating_sub(e) as u64),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::flow::{Counters, Flow, status};
    use crate::web::query::Endpoint;
    use crate::web::table::Clock;

    fn flow(src: &str, dst: &str, sport: u16, bytes: (u64, u64)) -> Flow {
        let mut f = tcp4();
        f.orig.src = src.parse().unwrap();
        f.orig.dst = dst.parse().unwrap();
        f.orig.sport = sport;
        f.reply = f.orig.inverted();
        f.id = Some(sport as u32);
        f.counters = [
            Some(Counters {
                packets: 1,
                bytes: bytes.0,
            }),
            Some(Counters {
                packets: 2,
                bytes: bytes.1,
            }),
        ];
        f
    }

    fn table(flows: &[Flow]) -> Table {
        let mut t = Table::new();
        let now = Clock {
            epoch: 10,
            mono_ms: 0,
        };
        t.begin_dump(now);
        for f in flows {
            t.merge_dumped(f, now);
        }
        t.end_dump(true, now);
        t
    }

    #[test]
    fn hosts_group_addresses_by_mac() {
        let mut fwd = flow("198.51.100.7", "192.0.2.1", 7, (5, 6));
        fwd.status = Some(status::DST_NAT_DONE | status::SEEN_REPLY);
        fwd.reply.src = "10.9.1.3".parse().unwrap();
        let t = table(&[
            flow("10.9.1.2", "198.51.100.1", 1, (100, 1000)),
            flow("fd00::2", "2001:db8::1", 2, (10, 20)),
            flow("fd00::a:b", "2001:db8::1", 3, (1, 2)),
            flow("10.9.1.9", "198.51.100.1", 4, (1, 1)),
            flow("198.51.100.5", "198.51.100.1", 5, (9999, 9999)),
            flow("127.0.0.1", "127.0.0.1", 6, (1, 1)),
            fwd,
        ]);
        let mut macs = Macs::default();
        let laptop = [2, 0, 0, 0, 0, 2];
        for a in ["10.9.1.2", "fd00::2", "fd00::a:b"] {
            macs.add(a.parse().unwrap(), laptop);
        }
        let mut names = Names::default();
        names.add_hosts("fd00::2 laptop\n");
        let q = FlowQuery::parse("", Endpoint::Hosts).unwrap();
        let (hosts, other) = aggregate(&t, &q, &names, &macs, 10);
        assert_eq!(other, 0);
        assert_eq!(hosts.len(), 3, "{hosts:?}");
        let l = &hosts[0];
        assert_eq!(l.mac, Some(laptop));
        assert_eq!(
            l.addrs,
            ["10.9.1.2", "fd00::2", "fd00::a:b"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert_eq!(l.flows, 3);
        assert_eq!(l.up, [111, 3]);
        assert_eq!(l.down, [1022, 6]);
        // the port-forward target, seen from the reply side
        let f = hosts
            .iter()
            .find(|h| h.addrs[0] == "10.9.1.3".parse::<IpAddr>().unwrap())
            .unwrap();
        assert_eq!((f.up, f.down), ([6, 2], [5, 1]));
        let text = render(&hosts, other, &t, &names, true, 12);
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["hosts"][0]["addr"], "10.9.1.2");
        assert_eq!(v["hosts"][0]["name"], "laptop", "a name of any address");
        assert_eq!(v["hosts"][0]["mac"], "02:00:00:00:00:02");
        assert_eq!(v["hosts"][0]["addrs"].as_array().unwrap().len(), 3);
        assert_eq!(v["hosts"][0]["up"]["rate"], 0);
        assert_eq!(v["total"], 7);
        assert_eq!(v["counters_age"], 2);
        assert!(v.get("note").is_none());
        let off = render(&hosts, other, &t, &names, false, 12);
        let v: serde_json::Value = serde_json::from_slice(&off).unwrap();
        assert_eq!(v["acct"], false);
        assert!(v["note"].as_str().unwrap().contains("nf_conntrack_acct"));
        // a filter narrows the flows counted
        let q = FlowQuery::parse("family=ipv6", Endpoint::Hosts).unwrap();
        let (hosts, _) = aggregate(&t, &q, &names, &macs, 10);
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].flows, 2);
    }

    #[test]
    fn who_is_a_lan_host() {
        let names = Names::default();
        let macs = Macs::default();
        let row = |f: &Flow| crate::web::table::test_row(f, 0);
        let out = flow("10.0.0.5", "198.51.100.1", 1, (0, 0));
        assert_eq!(
            lan_host(&row(&out), &names, &macs),
            Some(("10.0.0.5".parse().unwrap(), true))
        );
        let wan = flow("198.51.100.5", "198.51.100.1", 1, (0, 0));
        assert_eq!(lan_host(&row(&wan), &names, &macs), None);
        let mut m = Macs::default();
        m.add("198.51.100.5".parse().unwrap(), [2; 6]);
        assert!(lan_host(&row(&wan), &names, &m).is_some(), "a neighbour");
        let mut n = Names::default();
        n.add_hosts("198.51.100.5 box\n");
        assert!(lan_host(&row(&wan), &n, &macs).is_some(), "a named host");
        let mut snat = wan.clone();
        snat.status = Some(status::SRC_NAT_DONE);
        snat.reply.dst = "203.0.113.1".parse().unwrap();
        assert!(
            lan_host(&row(&snat), &names, &macs).is_some(),
            "behind SNAT"
        );
        // a REDIRECT (port only) keeps the initiator as the host
        let mut redirect = flow("10.0.0.5", "10.0.0.1", 1, (0, 0));
        redirect.status = Some(status::DST_NAT_DONE);
        redirect.reply.sport = 5353;
        assert_eq!(
            lan_host(&row(&redirect), &names, &macs),
            Some(("10.0.0.5".parse().unwrap(), true))
        );
        for (a, lan) in [
            ("fe80::1", true),
            ("fd12::1", true),
            ("fc00::1", true),
            ("2001:db8::1", false),
            ("169.254.1.1", true),
            ("8.8.8.8", false),
        ] {
            assert_eq!(is_lan_like(a.parse().unwrap()), lan, "{a}");
        }
    }
}
