//! The rtnetlink watch against the real kernel, in a namespace: what the
//! WAN tracker sees when addresses and links change. Also the recorder of
//! the captures in tests/data/wan/ the unit tests decode:
//! `cargo test --test wan_rtnl -- --ignored record_captures`.

#![cfg(feature = "wan")]

mod lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ctrack::netlink::events::poll_readable;
use ctrack::netlink::route::{self, AddrMsg, Recv, RtMsg, RtnlWatch, group};
use ctrack::netlink::socket::{NETLINK_ROUTE, NlSocket};
use lab::Netns;

/// Reads every datagram that arrives within `quiet` of the previous one.
fn drain(sock: &mut NlSocket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while poll_readable(sock.fd(), quiet.as_millis() as i32).unwrap() {
        out.push(sock.recv().unwrap().to_vec());
    }
    out
}

fn drain_watch(w: &mut RtnlWatch, quiet: Duration) -> Vec<RtMsg> {
    let mut out = Vec::new();
    while poll_readable(w.fd(), quiet.as_millis() as i32).unwrap() {
        assert_eq!(w.recv(&mut out).unwrap(), Recv::Messages);
    }
    out
}

fn addrs(msgs: &[RtMsg]) -> Vec<(bool, IpAddr)> {
    msgs.iter()
        .filter_map(|m| match m {
            RtMsg::Addr(a) => Some((a.new, a.addr)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A tun device `ppp-x` (point-to-point, like PPP) with `local peer
/// 100.64.0.1`, up.
fn ppp_like(r: &Netns, local: &str) {
    r.must(&["ip", "tuntap", "add", "dev", "ppp-x", "mode", "tun"]);
    r.must(&[
        "ip",
        "addr",
        "add",
        local,
        "peer",
        "100.64.0.1",
        "dev",
        "ppp-x",
    ]);
    r.must(&["ip", "link", "set", "ppp-x", "up"]);
}

/// A namespace with wan0 (a veth to a peer namespace) and one address.
fn wan_ns(tag: &str) -> (Netns, Netns) {
    let r = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}p"));
    lab::veth(&r, "wan0", &peer, "s0");
    r.sysctl(&["net.ipv4.conf.all.promote_secondaries=1"]);
    r.sysctl(&["net.ipv4.conf.wan0.promote_secondaries=1"]);
    r.must(&["ip", "addr", "add", "10.9.2.1/24", "dev", "wan0"]);
    r.must(&["ip", "addr", "add", "fd09:2::1/64", "dev", "wan0", "nodad"]);
    (r, peer)
}

#[test]
fn watch_sees_v4_v6_and_point_to_point_changes() {
    if !lab::can_run() {
        return;
    }
    let (r, _peer) = wan_ns("rtw");
    let mut w = RtnlWatch::open(Some(&r.name)).unwrap();
    let mut dump = Vec::new();
    w.dump(&mut dump).unwrap();
    let wan = dump
        .iter()
        .find_map(|m| match m {
            RtMsg::Link(l) if l.name.as_deref() == Some("wan0") => Some(l.clone()),
            _ => None,
        })
        .expect("wan0 in the link dump");
    assert!(wan.is_up());
    let dumped = addrs(&dump);
    assert!(dumped.contains(&(true, ip("10.9.2.1"))), "{dumped:?}");
    assert!(dumped.contains(&(true, ip("fd09:2::1"))), "{dumped:?}");
    assert!(dumped.contains(&(true, ip("127.0.0.1"))), "{dumped:?}");

    // promote_secondaries: B added in A's subnet, A deleted, B stays
    r.must(&["ip", "addr", "add", "10.9.2.3/24", "dev", "wan0"]);
    r.must(&["ip", "addr", "del", "10.9.2.1/24", "dev", "wan0"]);
    r.must(&["ip", "addr", "add", "fd09:3::1/64", "dev", "wan0", "nodad"]);
    r.must(&["ip", "addr", "del", "fd09:2::1/64", "dev", "wan0"]);
    let got = drain_watch(&mut w, Duration::from_millis(300));
    let seen = addrs(&got);
    for want in [
        (true, ip("10.9.2.3")),
        (false, ip("10.9.2.1")),
        (true, ip("fd09:3::1")),
        (false, ip("fd09:2::1")),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert!(
        !seen.contains(&(false, ip("10.9.2.3"))),
        "B must survive: {seen:?}"
    );
    for m in &got {
        if let RtMsg::Addr(a) = m {
            assert_eq!(a.index, wan.index);
        }
    }

    // a PPP-like point-to-point address: IFA_LOCAL is ours, IFA_ADDRESS the peer
    ppp_like(&r, "100.64.0.5");
    r.must(&["ip", "link", "set", "ppp-x", "down"]);
    r.must(&["ip", "tuntap", "del", "dev", "ppp-x", "mode", "tun"]);
    let got = drain_watch(&mut w, Duration::from_millis(300));
    let p2p: Vec<&AddrMsg> = got
        .iter()
        .filter_map(|m| match m {
            RtMsg::Addr(a) if a.addr == ip("100.64.0.5") => Some(a),
            _ => None,
        })
        .collect();
    assert!(!p2p.is_empty(), "{got:?}");
    assert!(p2p.iter().all(|a| a.peer == Some(ip("100.64.0.1"))));
    let link_states: Vec<(bool, bool)> = got
        .iter()
        .filter_map(|m| match m {
            RtMsg::Link(l) if l.name.as_deref() == Some("ppp-x") => Some((l.new, l.is_up())),
            _ => None,
        })
        .collect();
    assert!(link_states.contains(&(true, true)), "{link_states:?}");
    assert!(link_states.contains(&(false, false)), "{link_states:?}");
    assert_eq!(w.malformed, 0);
}

/// Writes the captures the unit tests in src/wan/ decode. Run by hand
/// (they are committed): `cargo test --test wan_rtnl -- --ignored`.
#[test]
#[ignore]
fn record_captures() {
    if !lab::can_run() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wan");
    std::fs::create_dir_all(&dir).unwrap();
    let save = |name: &str, dgrams: &[Vec<u8>]| {
        let all: Vec<u8> = dgrams.concat();
        std::fs::write(dir.join(name), all).unwrap();
    };
    let quiet = Duration::from_millis(300);
    let (r, _peer) = wan_ns("rtc");
    ppp_like(&r, "100.64.0.5");

    // the initial dump: links, then addresses
    let mut q = NlSocket::open(NETLINK_ROUTE, 0, Some(&r.name)).unwrap();
    let mut dump = Vec::new();
    for (i, ty) in [route::rtm::GETLINK, route::rtm::GETADDR]
        .iter()
        .enumerate()
    {
        q.send(&route::dump_request(*ty, 100 + i as u32)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let d = q.recv().unwrap().to_vec();
            let done = ctrack::netlink::message::NlMsgs::new(&d)
                .any(|m| m.map(|m| m.ty == 3).unwrap_or(true));
            dump.push(d);
            if done || Instant::now() > deadline {
                break;
            }
        }
    }
    save("dump.bin", &dump);

    let mut ev = NlSocket::open(NETLINK_ROUTE, group::WAN, Some(&r.name)).unwrap();
    // IPv4 change with promote_secondaries: B added in A's subnet, A removed
    r.must(&["ip", "addr", "add", "10.9.2.3/24", "dev", "wan0"]);
    r.must(&["ip", "addr", "del", "10.9.2.1/24", "dev", "wan0"]);
    save("v4_promote.bin", &drain(&mut ev, quiet));

    // the same without promote_secondaries: deleting the primary takes B along
    r.sysctl(&[
        "net.ipv4.conf.all.promote_secondaries=0",
        "net.ipv4.conf.wan0.promote_secondaries=0",
    ]);
    r.must(&["ip", "addr", "add", "10.9.2.1/24", "dev", "wan0"]);
    r.must(&["ip", "addr", "add", "10.9.2.4/24", "dev", "wan0"]);
    let _ = drain(&mut ev, quiet);
    r.must(&["ip", "addr", "del", "10.9.2.3/24", "dev", "wan0"]);
    save("v4_no_promote.bin", &drain(&mut ev, quiet));
    r.sysctl(&[
        "net.ipv4.conf.all.promote_secondaries=1",
        "net.ipv4.conf.wan0.promote_secondaries=1",
    ]);

    // an RTM_NEWADDR refresh of an unchanged address (DHCP renew style)
    r.must(&["ip", "addr", "add", "10.9.2.1/24", "dev", "wan0"]);
    let _ = drain(&mut ev, quiet);
    r.must(&[
        "ip",
        "addr",
        "change",
        "10.9.2.1/24",
        "dev",
        "wan0",
        "valid_lft",
        "3600",
        "preferred_lft",
        "3600",
    ]);
    save("v4_refresh.bin", &drain(&mut ev, quiet));

    // IPv6 prefix change: new prefix added, old one deprecated then removed
    r.must(&["ip", "addr", "add", "fd09:3::1/64", "dev", "wan0", "nodad"]);
    r.must(&[
        "ip",
        "addr",
        "change",
        "fd09:2::1/64",
        "dev",
        "wan0",
        "preferred_lft",
        "0",
    ]);
    r.must(&["ip", "addr", "del", "fd09:2::1/64", "dev", "wan0"]);
    save("v6_prefix.bin", &drain(&mut ev, quiet));

    // PPP style: link down, address replaced, link up; then the device goes
    // away and comes back under a temporary name that is renamed
    r.must(&["ip", "link", "set", "ppp-x", "down"]);
    r.must(&["ip", "addr", "flush", "dev", "ppp-x"]);
    r.must(&[
        "ip",
        "addr",
        "add",
        "100.64.0.9",
        "peer",
        "100.64.0.1",
        "dev",
        "ppp-x",
    ]);
    r.must(&["ip", "link", "set", "ppp-x", "up"]);
    save("ppp_readdress.bin", &drain(&mut ev, quiet));
    r.must(&["ip", "tuntap", "del", "dev", "ppp-x", "mode", "tun"]);
    r.must(&["ip", "tuntap", "add", "dev", "ppp0", "mode", "tun"]);
    r.must(&["ip", "link", "set", "ppp0", "name", "ppp-x"]);
    r.must(&[
        "ip",
        "addr",
        "add",
        "100.64.0.7",
        "peer",
        "100.64.0.1",
        "dev",
        "ppp-x",
    ]);
    r.must(&["ip", "link", "set", "ppp-x", "up"]);
    save("ppp_recreate.bin", &drain(&mut ev, quiet));
}
