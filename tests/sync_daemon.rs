//! Sync at daemon level: ctrackd pairs in a failover lab (client and
//! server on bridged LAN/WAN segments, two routers, VIPs moved as
//! keepalived moves them), mixed pairs with Debian's conntrackd in both
//! directions, a lossy sync link, a restarted standby, a killed primary,
//! and forged datagrams against an authenticated pair.
#![cfg(feature = "sync")]

mod daemon_common;
mod halab;
mod lab;
mod support;
mod synclab;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use daemon_common::Daemon;
use halab::{
    EchoClient, EchoServer, HaLab, Router, external_keys, kernel_keys, notify, replicated,
    start_ctrackd, wait_same,
};
use lab::{Netns, stdout, wait_until};
use support::TempDir;
use synclab::{Conntrackd, Side, SyncLab, Transport};

const LONG: Duration = Duration::from_secs(30);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The ctrackd's flows as keys: its external cache's replicated flows.
fn ext(d: &Daemon) -> BTreeSet<String> {
    external_keys(d, replicated)
}

fn table(ns: &Netns) -> BTreeSet<String> {
    kernel_keys(ns, replicated)
}

fn logs(ds: &[&Daemon]) -> String {
    ds.iter()
        .map(|d| format!("--- {} log:\n{}", d.ns.name, d.log()))
        .collect()
}

/// A counter of `ctrackd -s SECTION`: the number after `label`.
fn stat(d: &Daemon, section: &str, label: &str) -> u64 {
    let o = d.client(&["-s", section]);
    assert!(o.status.success(), "-s {section}: {}", lab::stderr(&o));
    stdout(&o)
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| {
            l[l.find(label).unwrap() + label.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The key of the flow whose original tuple has this source port.
fn with_sport(keys: &BTreeSet<String>, sport: u16) -> Option<String> {
    let needle = format!(" sport={sport} ");
    keys.iter().find(|k| k.contains(&needle)).cloned()
}

#[test]
fn failover_keeps_a_nat_tcp_connection_once_the_standby_commits() {
    if !lab::can_run() {
        return;
    }
    let l = HaLab::new("fo");
    let da = start_ctrackd(&l.a, "fo-a", Side::Primary, "PurgeTimeout 1", "");
    let db = start_ctrackd(&l.b, "fo-b", Side::Standby, "PurgeTimeout 1", "");
    let srv = EchoServer::start(&l.server, sa("10.20.2.10:7000"));
    let mut c = EchoClient::connect(&l.client, sa("10.20.2.10:7000"));
    assert!(c.round_trip("hello\n", LONG), "no echo through router A");
    let sport = c.sock.local_addr().unwrap().port();
    // the server sees the WAN VIP: the connection is SNATed
    assert_eq!(
        srv.peers.lock().unwrap()[0].ip(),
        halab::WAN_VIP.parse::<IpAddr>().unwrap()
    );
    // the standby holds it in its external cache, NAT included
    let mut key = None;
    let ok = wait_until(LONG, || {
        key = with_sport(&ext(&db), sport);
        key.as_deref()
            .is_some_and(|k| k.contains("state=ESTABLISHED"))
    });
    assert!(
        ok,
        "the standby did not learn the connection\n{}",
        logs(&[&da, &db])
    );
    let key = key.unwrap();
    assert!(
        key.contains(&format!("dst={}", halab::WAN_VIP)),
        "reply tuple without the SNAT: {key}"
    );
    assert_eq!(Some(&key), with_sport(&table(&l.a), sport).as_ref());

    // baseline: the gateway moves, the standby has not committed; the
    // client's data (and the server's ACKs) have no entry on B and die
    let dropped = l.invalid_drops(Router::B);
    l.activate(Router::B);
    c.send("during the failover\n");
    assert!(
        !c.echoed(Duration::from_secs(2)),
        "data went through the standby without an entry"
    );
    assert!(
        l.invalid_drops(Router::B) > dropped,
        "B should drop the stream as invalid"
    );
    assert!(with_sport(&table(&l.b), sport).is_none());

    // keepalived's notify on the new master: -c, -f, -R, -B
    notify(&db, "primary");
    assert!(db.log().contains("commit has taken"), "{}", logs(&[&db]));
    assert_eq!(with_sport(&table(&l.b), sport).as_ref(), Some(&key));
    assert!(
        c.echoed(LONG),
        "the connection did not recover after the commit\n{}",
        logs(&[&da, &db])
    );
    assert!(c.round_trip("after the failover\n", LONG));

    // the old master becomes the backup: -t purges its table after
    // PurgeTimeout, -n asks B for everything, B's -B/-R already sent it
    notify(&da, "backup");
    let ok = wait_until(LONG, || {
        with_sport(&table(&l.a), sport).is_none()
            && with_sport(&ext(&da), sport).as_ref() == Some(&key)
    });
    assert!(
        ok,
        "A: table {:#?}\nexternal {:#?}\n{}",
        table(&l.a),
        ext(&da),
        logs(&[&da, &db])
    );
    // and back: A commits what B sent, the connection goes on
    l.activate(Router::A);
    notify(&da, "primary");
    assert_eq!(with_sport(&table(&l.a), sport).as_ref(), Some(&key));
    assert!(
        c.round_trip("after the failback\n", LONG),
        "no echo after the failback\n{}",
        logs(&[&da, &db])
    );
    assert_eq!(
        srv.peers.lock().unwrap().len(),
        1,
        "one connection all along"
    );
}

#[test]
fn standby_follows_new_update_destroy_and_commits_the_primarys_table() {
    if !lab::can_run() {
        return;
    }
    let l = HaLab::new("nud");
    let da = start_ctrackd(&l.a, "nud-a", Side::Primary, "", "");
    let db = start_ctrackd(&l.b, "nud-b", Side::Standby, "", "");
    // NEW: real flows through the NAT (TCP and ICMP over IPv4 and IPv6,
    // UDP) and hand-made ones (zone and mark, IPv6 UDP, SCTP)
    let _srv = EchoServer::start(&l.server, sa("10.20.2.10:7000"));
    let _srv6 = EchoServer::start(&l.server, sa("[fd20:2::10]:7001"));
    let mut c4 = EchoClient::connect(&l.client, sa("10.20.2.10:7000"));
    let mut c6 = EchoClient::connect(&l.client, sa("[fd20:2::10]:7001"));
    assert!(c4.round_trip("v4\n", LONG) && c6.round_trip("v6\n", LONG));
    l.client
        .must(&["ping", "-c", "1", "-W", "5", halab::SERVER]);
    l.client
        .must(&["ping", "-6", "-c", "1", "-W", "5", halab::SERVER6]);
    l.client.sh(&format!(
        "echo x | nc -u -w 1 -q 0 -p 40002 {} 5002 >/dev/null 2>&1 || true",
        halab::SERVER
    ));
    let delete_zoned = synclab::make_entries(&l.a);
    let ctx = || logs(&[&da, &db]);
    wait_same("NEW", LONG, &|| table(&l.a), &|| ext(&db), &ctx);
    let t = table(&l.a);
    for want in [
        "ipv4 6 ",
        "ipv6 6 ",
        "ipv4 1 ",
        "ipv6 58 ",
        "ipv4 17 ",
        "ipv6 17 ",
        "ipv4 132 ",
        "zone=5 mark=7",
    ] {
        assert!(t.iter().any(|k| k.contains(want)), "no `{want}' in {t:#?}");
    }
    assert!(
        t.iter()
            .filter(|k| k.contains(&format!("src={} dst=", halab::CLIENT)))
            .all(|k| k.contains(&format!("dst={} ", halab::WAN_VIP))
                || k.contains(&format!("dst={}]", halab::WAN_VIP))),
        "the client's flows are SNATed: {t:#?}"
    );

    // UPDATE: a mark and a TCP state change
    l.a.must(&[
        "conntrack",
        "-U",
        "-f",
        "ipv6",
        "-p",
        "udp",
        "-s",
        "2001:db8::1",
        "-m",
        "0x20",
    ]);
    let sport4 = c4.sock.local_addr().unwrap().port();
    drop(c4); // FIN both ways: ESTABLISHED -> TIME_WAIT
    let ok = wait_until(LONG, || {
        let e = ext(&db);
        e.iter()
            .any(|k| k.contains("2001:db8::1") && k.contains("mark=32"))
            && with_sport(&e, sport4).is_some_and(|k| k.contains("state=TIME_WAIT"))
    });
    assert!(ok, "updates not replicated: {:#?}\n{}", ext(&db), ctx());
    wait_same("UPDATE", LONG, &|| table(&l.a), &|| ext(&db), &ctx);

    // DESTROY
    l.a.must(&[&["conntrack"][..], &delete_zoned].concat());
    let ok = wait_until(LONG, || !ext(&db).iter().any(|k| k.contains("zone=5")));
    assert!(ok, "DESTROY not replicated\n{}", ctx());
    wait_same("DESTROY", LONG, &|| table(&l.a), &|| ext(&db), &ctx);

    // -c: B's kernel gets A's table (tuples, NAT, state, mark, zone)
    let o = db.client(&["-c"]);
    assert!(o.status.success(), "-c: {}{}", lab::stderr(&o), ctx());
    wait_same("commit", LONG, &|| table(&l.a), &|| table(&l.b), &ctx);
    let s = stdout(&db.client(&["-s"]));
    assert!(s.contains("cache external"), "{s}");
    drop(c6);
}

/// ctrackd primary -> Debian conntrackd standby: `conntrackd -e` lists
/// the primary's flows, `conntrackd -c` puts them in the standby's kernel.
#[test]
fn ctrackd_primary_feeds_a_conntrackd_standby() {
    if !lab::can_run() {
        return;
    }
    let l = SyncLab::new("mx1");
    synclab::router_firewall(&l.standby);
    let standby = Conntrackd::start(
        &l.standby,
        &l.dir,
        "standby",
        "Mode FTFW { }",
        Transport::Udp,
        Side::Standby,
    );
    let p = start_ctrackd(l.primary(), "mx1-p", Side::Primary, "", "");
    let _traffic = synclab::make_traffic(&l.lab);
    let delete_zoned = synclab::make_entries(l.primary());
    let ctx = || format!("{}--- conntrackd log:\n{}", logs(&[&p]), standby.log_text());
    // conntrackd -e lines show the original tuple only
    let cd_ext = || -> Vec<String> {
        standby
            .external()
            .into_iter()
            .filter(|l| !l.starts_with("gre"))
            .collect()
    };
    let same = || {
        let t = table(l.primary());
        let e = cd_ext();
        e.len() == t.len()
            && t.iter()
                .all(|k| e.iter().any(|line| line.contains(&halab::orig_needle(k))))
    };
    let ok = wait_until(LONG, same);
    assert!(
        ok,
        "conntrackd -e {:#?}\nprimary {:#?}\n{}",
        cd_ext(),
        table(l.primary()),
        ctx()
    );
    let t = table(l.primary());
    for want in ["ipv6 6 ", "ipv6 58 ", "ipv4 1 ", "zone=5"] {
        assert!(t.iter().any(|k| k.contains(want)), "no `{want}' in {t:#?}");
    }
    l.primary()
        .must(&[&["conntrack"][..], &delete_zoned].concat());
    assert!(
        wait_until(LONG, same),
        "DESTROY: {:#?}\n{}",
        cd_ext(),
        ctx()
    );
    let o = standby.run(&["-c"]);
    assert!(o.status.success(), "{}", ctx());
    wait_same(
        "conntrackd -c",
        LONG,
        &|| table(l.primary()),
        &|| table(&l.standby),
        &ctx,
    );
}

/// Debian conntrackd primary -> ctrackd standby: our external cache and,
/// after `-c`, the standby's kernel equal the primary's table.
#[test]
fn conntrackd_primary_feeds_a_ctrackd_standby() {
    if !lab::can_run() {
        return;
    }
    let l = SyncLab::new("mx2");
    synclab::router_firewall(&l.standby);
    let s = start_ctrackd(&l.standby, "mx2-s", Side::Standby, "", "");
    let primary = Conntrackd::start(
        l.primary(),
        &l.dir,
        "primary",
        "Mode FTFW { }",
        Transport::Udp,
        Side::Primary,
    );
    let _traffic = synclab::make_traffic(&l.lab);
    let delete_zoned = synclab::make_entries(l.primary());
    let ctx = || format!("{}--- conntrackd log:\n{}", logs(&[&s]), primary.log_text());
    wait_same(
        "conntrackd -> ctrackd -e",
        LONG,
        &|| table(l.primary()),
        &|| ext(&s),
        &ctx,
    );
    let t = table(l.primary());
    for want in ["ipv6 6 ", "ipv6 58 ", "ipv4 1 ", "zone=5"] {
        assert!(t.iter().any(|k| k.contains(want)), "no `{want}' in {t:#?}");
    }
    // NAT rebuilt: the DNAT'ed and the masqueraded flows
    assert!(
        t.iter()
            .any(|k| k.contains("dport=2222") && k.contains("sport=22 ")),
        "{t:#?}"
    );
    l.primary()
        .must(&[&["conntrack"][..], &delete_zoned].concat());
    wait_same("DESTROY", LONG, &|| table(l.primary()), &|| ext(&s), &ctx);
    let o = s.client(&["-c"]);
    assert!(o.status.success(), "-c: {}{}", lab::stderr(&o), ctx());
    wait_same(
        "ctrackd -c",
        LONG,
        &|| table(l.primary()),
        &|| table(&l.standby),
        &ctx,
    );
    assert_eq!(stat(&s, "network", "Malformed messages:"), 0, "{}", ctx());
}

/// Two routers joined only by the sync link.
fn pair(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    lab::veth(&a, synclab::SYNC_IF, &b, synclab::SYNC_IF);
    a.must(&["ip", "addr", "add", "10.9.9.1/24", "dev", synclab::SYNC_IF]);
    b.must(&["ip", "addr", "add", "10.9.9.2/24", "dev", synclab::SYNC_IF]);
    (a, b)
}

/// Loads `n` TCP flows numbered from `first` into `ns` (`conntrack -R`);
/// odd ones go to port 81, even ones to port 80.
fn load(ns: &Netns, dir: &TempDir, first: u32, n: u32) {
    let mut text = String::new();
    for i in first..first + n {
        text.push_str(&format!(
            "-I -p tcp -s 172.16.{}.{} -d 198.51.100.1 --sport 40000 --dport {} --state ESTABLISHED -t 3600 -u SEEN_REPLY,ASSURED\n",
            i >> 8,
            i & 255,
            80 + (i & 1)
        ));
    }
    let f = dir.join(format!("flows-{first}"));
    std::fs::write(&f, text).unwrap();
    let o = ns.ctrack(&["-R", f.to_str().unwrap()]);
    assert!(o.status.success(), "-R: {}", lab::stderr(&o));
}

#[test]
fn lossy_link_restarted_standby_and_killed_primary() {
    if !lab::can_run() {
        return;
    }
    let (a, b) = pair("rb");
    let dir = TempDir::new("rb");
    // 20% of the sync datagrams are lost in each direction (no netem
    // here: nftables' random numbers)
    for ns in [&a, &b] {
        ns.nft(&format!(
            "table inet loss {{\n chain out {{ type filter hook output priority 0; oifname \"{}\" udp dport {} numgen random mod 100 < 20 counter drop; }}\n}}\n",
            synclab::SYNC_IF,
            synclab::PORT
        ));
    }
    let mut da = start_ctrackd(&a, "rb-a", Side::Primary, "", "");
    let mut db = start_ctrackd(&b, "rb-b", Side::Standby, "", "");
    load(&a, &dir, 0, 3000);
    let logs_at = [da.dir.join("log"), db.dir.join("log")];
    let confs = [da.conf(), db.conf()];
    let ctx = || {
        let mut s = String::new();
        for c in &confs {
            for sec in ["network", "queue"] {
                let o = lab::run(std::process::Command::new(lab::ctrack_bin()).args([
                    "daemon",
                    "-C",
                    c.to_str().unwrap(),
                    "-s",
                    sec,
                ]));
                s.push_str(&format!("--- {} -s {sec}:\n{}", c.display(), stdout(&o)));
            }
        }
        s + &logs_at
            .iter()
            .map(|p| {
                format!(
                    "--- {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    wait_same("lossy NEW", LONG, &|| table(&a), &|| ext(&db), &ctx);
    a.must(&["conntrack", "-D", "-p", "tcp", "--dport", "81"]);
    // (conntrack 1.4.7 -U with -p fails here with EOPNOTSUPP; ctrack does it)
    let o = a.ctrack(&["-U", "-p", "tcp", "--dport", "80", "-m", "3"]);
    assert!(o.status.success(), "-U: {}", lab::stderr(&o));
    wait_same(
        "lossy DESTROY/UPDATE",
        LONG,
        &|| table(&a),
        &|| ext(&db),
        &ctx,
    );
    assert_eq!(table(&a).len(), 1500);
    assert!(
        stat(&db, "network", "Packets lost:") > 0,
        "the link lost nothing?\n{}",
        stdout(&db.client(&["-s", "network"]))
    );

    // the standby restarts; meanwhile the table changes; -n resyncs it
    db.signal("-TERM");
    assert_eq!(db.wait_exit(), Some(0));
    a.must(&["conntrack", "-D", "-p", "tcp", "-s", "172.16.0.0/24"]);
    load(&a, &dir, 5000, 500);
    db.spawn();
    let o = db.client(&["-n"]);
    assert!(o.status.success(), "-n: {}", lab::stderr(&o));
    wait_same(
        "resync after a restart",
        LONG,
        &|| table(&a),
        &|| ext(&db),
        &ctx,
    );

    // again with `StartupResync on`: no -n needed
    db.signal("-TERM");
    assert_eq!(db.wait_exit(), Some(0));
    let conf = std::fs::read_to_string(db.conf()).unwrap();
    std::fs::write(
        db.conf(),
        conf.replace("Mode FTFW {", "Mode FTFW {\n    StartupResync on"),
    )
    .unwrap();
    a.must(&["conntrack", "-D", "-p", "tcp", "-s", "172.16.1.0/24"]);
    load(&a, &dir, 6000, 100);
    db.spawn();
    wait_same("StartupResync", LONG, &|| table(&a), &|| ext(&db), &ctx);

    // the primary dies: the standby commits what it has
    let want = table(&a);
    da.signal("-KILL");
    da.wait_exit();
    let o = db.client(&["-c"]);
    assert!(o.status.success(), "-c: {}{}", lab::stderr(&o), ctx());
    assert_eq!(table(&b), want);
}

/// A tiny pcap reader: the UDP payloads sent from `src` (Ethernet, IPv4).
fn udp_payloads(pcap: &[u8], src: [u8; 4]) -> Vec<Vec<u8>> {
    let le = pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(pcap, at + 8) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = (ip[0] & 15) as usize * 4;
        if ip[9] != 17 || ip[12..16] != src || ip.len() < ihl + 8 {
            continue;
        }
        out.push(ip[ihl + 8..].to_vec());
    }
    out
}

#[test]
fn authenticated_pair_refuses_forged_replayed_and_truncated_datagrams() {
    use ctrack::flow::{Flow, Tuple, proto};
    use ctrack::sync::config::{LinkConfig, SyncConfig};
    use ctrack::sync::engine::{Action, Engine, Start};
    if !lab::can_run() {
        return;
    }
    let (a, b) = pair("au");
    let dir = TempDir::new("au");
    let key = dir.join("sync.key");
    std::fs::write(&key, "c2VjcmV0IHNoYXJlZCBieSB0aGUgdHdvIHJvdXRlcnM=\n").unwrap();
    let auth = format!("Auth {{ KeyFile {} }}", key.display());
    let da = start_ctrackd(&a, "au-a", Side::Primary, "", &auth);
    let db = start_ctrackd(&b, "au-b", Side::Standby, "", &auth);
    let pcap = dir.join("sync.pcap");
    let cap = synclab::capture(&b, &pcap);
    load(&a, &dir, 0, 20);
    let ctx = || logs(&[&da, &db]);
    wait_same(
        "authenticated sync",
        LONG,
        &|| table(&a),
        &|| ext(&db),
        &ctx,
    );
    // tcpdump hands packets over in blocks: wait until they are written
    let mut sent = Vec::new();
    let ok = wait_until(LONG, || {
        sent = udp_payloads(&std::fs::read(&pcap).unwrap(), [10, 9, 9, 1]);
        sent.iter().any(|d| d.len() > 200)
    });
    synclab::stop_capture(cap);
    assert!(ok, "no datagram of the primary captured");
    let real = sent
        .iter()
        .max_by_key(|d| d.len())
        .expect("captured the primary's datagrams")
        .clone();
    let before = ext(&db);

    // a NEW for a flow that does not exist, signed with the wrong key
    let fake = Flow {
        family: libc::AF_INET as u8,
        orig: Tuple {
            src: "203.0.113.66".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            proto: proto::TCP,
            sport: 4444,
            dport: 80,
            ..Tuple::default()
        },
        reply: Tuple {
            src: "198.51.100.1".parse().unwrap(),
            dst: "203.0.113.66".parse().unwrap(),
            proto: proto::TCP,
            sport: 80,
            dport: 4444,
            ..Tuple::default()
        },
        has_orig: true,
        has_reply: true,
        timeout: Some(300),
        ..Flow::default()
    };
    let mut cfg = SyncConfig {
        links: vec![LinkConfig::udp(
            Some("10.9.9.1".parse().unwrap()),
            "10.9.9.2".parse().unwrap(),
            synclab::PORT,
            synclab::SYNC_IF,
        )],
        ..SyncConfig::default()
    };
    cfg.validate().unwrap();
    let mut mallory = Engine::new(
        &cfg,
        Start::now(
            vec![1500],
            Some(b"not the key the routers share!!".to_vec()),
        ),
    );
    mallory.on_event(Instant::now(), ctrack::flow::EventKind::New, &fake);
    mallory.transmit(Instant::now());
    let Some(Action::Send {
        datagram: wrong_key,
        ..
    }) = mallory.poll_action()
    else {
        panic!("no datagram");
    };
    // the same message without any auth block (what conntrackd sends)
    let mut plain = Vec::new();
    ctrack::sync::wire::ct::encode_msg(0, &fake, &Default::default(), &mut plain).unwrap();
    let forgeries: [(&str, Vec<u8>); 5] = [
        ("wrong key", wrong_key),
        ("unauthenticated", plain),
        ("replayed", real.clone()),
        ("truncated by a byte", real[..real.len() - 1].to_vec()),
        ("truncated in the auth block", real[..20].to_vec()),
    ];
    let sock =
        ctrack::netlink::socket::in_netns(&a.name, || std::net::UdpSocket::bind("10.9.9.1:0"))
            .unwrap();
    for (what, d) in &forgeries {
        sock.send_to(d, "10.9.9.2:3780")
            .unwrap_or_else(|e| panic!("send {what}: {e}"));
    }
    let counted = || {
        (
            stat(&db, "network", "Bad MAC:"),
            stat(&db, "network", "Not authenticated:"),
            stat(&db, "network", "Replayed:"),
        )
    };
    let ok = wait_until(LONG, || {
        let (bad, missing, replay) = counted();
        bad >= 2 && missing >= 2 && replay >= 1
    });
    assert!(
        ok,
        "(bad MAC, missing, replayed) = {:?}\n{}",
        counted(),
        stdout(&db.client(&["-s", "network"]))
    );
    assert_eq!(ext(&db), before, "a forgery changed the external cache");
    assert!(!stdout(&db.client(&["-e"])).contains("203.0.113.66"));
    // the real primary still gets through
    load(&a, &dir, 100, 5);
    wait_same(
        "after the forgeries",
        LONG,
        &|| table(&a),
        &|| ext(&db),
        &ctx,
    );
}

/// The `cache external:` block of plain `-s`: (current active
/// connections, connections created, of which failed).
fn external_counts(d: &Daemon) -> (u64, u64, u64) {
    let o = d.client(&["-s"]);
    assert!(o.status.success(), "-s: {}", lab::stderr(&o));
    let text = stdout(&o);
    let block = text.split("cache external:").nth(1).unwrap_or("");
    let numbers = |line: &str| -> Vec<u64> {
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let line = |label: &str| {
        block
            .lines()
            .find(|l| l.starts_with(label))
            .map(numbers)
            .unwrap_or_default()
    };
    let active = line("current active connections:");
    let created = line("connections created:");
    (
        active.first().copied().unwrap_or(0),
        created.first().copied().unwrap_or(0),
        created.get(1).copied().unwrap_or(0),
    )
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A NEW message for flow number `i` (a TCP flow from 172.16.x.y), with
/// sequence number `seq`, followed by `padding` bytes of an attribute no
/// conntrackd version knows.
fn flood_message(i: u32, seq: u32, padding: usize) -> Vec<u8> {
    use ctrack::flow::{Flow, Tuple, proto};
    use ctrack::sync::wire::{self, ct, ty};
    let orig = Tuple {
        src: std::net::Ipv4Addr::from(0xac10_0000 | i).into(),
        dst: "198.51.100.1".parse().unwrap(),
        proto: proto::TCP,
        sport: 40000,
        dport: 80,
        ..Tuple::default()
    };
    let f = Flow {
        family: libc::AF_INET as u8,
        orig,
        reply: orig.inverted(),
        has_orig: true,
        has_reply: true,
        timeout: Some(300),
        ..Flow::default()
    };
    let mut m = Vec::new();
    ct::encode_msg(ty::CT_NEW, &f, &Default::default(), &mut m).unwrap();
    if padding > 0 {
        m.extend_from_slice(&((padding + 4) as u16).to_be_bytes());
        m.extend_from_slice(&99u16.to_be_bytes());
        m.resize(m.len() + padding.next_multiple_of(4), 0);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
    }
    wire::stamp(&mut m, 0, seq);
    m
}

#[test]
fn a_flooded_standby_stays_within_its_memory_bounds() {
    if !lab::can_run() {
        return;
    }
    let (a, b) = pair("fl");
    let (g, s) = halab::ctrackd_blocks(Side::Standby, "", "");
    let db = Daemon::start_with(&b, "fl-b", &format!("{g}  HashLimit 10000\n"), &s);
    let pid = db.child.as_ref().unwrap().id();
    synclab::settle(500);
    let base = rss_kib(pid);
    let sock =
        ctrack::netlink::socket::in_netns(&a.name, || std::net::UdpSocket::bind("10.9.9.1:0"))
            .unwrap();
    let mut seq = 1;
    let send = |d: &[u8]| {
        // the socket buffer may be full: what is lost is lost
        let _ = sock.send_to(d, "10.9.9.2:3780");
    };
    // 3000 flows whose messages carry 60 KB of attributes nobody knows
    // (kept whole, that was 180 MB), then 200k flows for a HashLimit of
    // 10k, 16 messages a datagram
    for i in 0..3000 {
        send(&flood_message(i, seq, 60_000));
        seq += 1;
    }
    for n in 0..12_500 {
        let mut d = Vec::new();
        for k in 0..16 {
            d.extend_from_slice(&flood_message(3000 + n * 16 + k, seq, 0));
            seq += 1;
        }
        send(&d);
    }
    // wait until the standby has taken everything in
    let mut last = (0, 0, 0);
    let mut peak = 0;
    let ok = wait_until(LONG, || {
        peak = peak.max(rss_kib(pid));
        let now = external_counts(&db);
        let still = now == last;
        last = now;
        synclab::settle(300);
        still && now.1 > 0
    });
    assert!(ok, "the standby did not settle: {last:?}");
    peak = peak.max(rss_kib(pid));
    let (held, _, refused) = last;
    eprintln!(
        "flood: standby RSS {base} KiB -> peak {peak} KiB; {held} flows held, {refused} refused"
    );
    assert!(held <= 10_000, "{held} flows for a HashLimit of 10000");
    assert!(refused > 0, "nothing refused?");
    assert!(
        db.log().contains("external cache full"),
        "no log line:\n{}",
        db.log()
    );
    // 10k entries of at most 512 bytes of attributes, 4 MiB of datagrams
    // waiting for the core: well under 32 MiB more than at rest
    assert!(
        peak < base + 32 * 1024,
        "RSS grew from {base} to {peak} KiB"
    );
}

#[test]
fn authenticated_pair_survives_reflection_restarts_and_recordings() {
    if !lab::can_run() {
        return;
    }
    let (a, b) = pair("ar");
    let dir = TempDir::new("ar");
    let key = dir.join("sync.key");
    std::fs::write(&key, "c2VjcmV0IHNoYXJlZCBieSB0aGUgdHdvIHJvdXRlcnM=\n").unwrap();
    let auth = format!("Auth {{ KeyFile {} }}", key.display());
    let mut da = start_ctrackd(&a, "ar-a", Side::Primary, "", &auth);
    let mut db = start_ctrackd(&b, "ar-b", Side::Standby, "", &auth);
    let pcap = dir.join("sync.pcap");
    let cap = synclab::capture(&b, &pcap);
    load(&a, &dir, 0, 50);
    let logs_at = [da.dir.join("log"), db.dir.join("log")];
    let ctx = || {
        logs_at
            .iter()
            .map(|p| {
                format!(
                    "--- {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    wait_same("authenticated", LONG, &|| table(&a), &|| ext(&db), &ctx);
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    let ok = wait_until(LONG, || {
        let p = std::fs::read(&pcap).unwrap();
        from_a = udp_payloads(&p, [10, 9, 9, 1]);
        from_b = udp_payloads(&p, [10, 9, 9, 2]);
        from_a.iter().any(|d| d.len() > 500) && !from_b.is_empty()
    });
    synclab::stop_capture(cap);
    assert!(ok, "nothing captured");
    let sock =
        ctrack::netlink::socket::in_netns(&a.name, || std::net::UdpSocket::bind("10.9.9.1:0"))
            .unwrap();
    let play = |ds: &[Vec<u8>]| {
        for d in ds {
            sock.send_to(d, "10.9.9.2:3780").unwrap();
        }
    };

    // the standby's own datagrams sent back to it: refused, and the
    // primary's still get through (they were taken for replays before)
    play(&from_b);
    let ok = wait_until(LONG, || stat(&db, "network", "Reflected:") >= 1);
    assert!(ok, "{}", stdout(&db.client(&["-s", "network"])));
    load(&a, &dir, 100, 10);
    wait_same(
        "after a reflection",
        LONG,
        &|| table(&a),
        &|| ext(&db),
        &ctx,
    );

    // the standby restarts, nobody runs -n: the primary sees a new
    // session and sends it everything
    db.signal("-TERM");
    assert_eq!(db.wait_exit(), Some(0));
    db.spawn();
    wait_same("restarted standby", LONG, &|| table(&a), &|| ext(&db), &ctx);
    let ok = wait_until(LONG, || da.log().contains("the other node restarted"));
    assert!(ok, "{}", ctx());
    // flows the primary deleted since do not come back when the recording
    // of their NEW messages is played to the new standby
    a.must(&["conntrack", "-D", "-p", "tcp", "-s", "172.16.0.0/26"]);
    wait_same("deletes", LONG, &|| table(&a), &|| ext(&db), &ctx);
    play(&from_a);
    let ok = wait_until(LONG, || {
        stat(&db, "network", "Replayed:") + stat(&db, "network", "Not verified yet:") >= 1
    });
    assert!(ok, "{}", stdout(&db.client(&["-s", "network"])));
    synclab::settle(500);
    assert_eq!(ext(&db), table(&a), "a recording changed the standby");

    // the primary restarts: a new instance, counting from 1; it is
    // verified again and its table comes through
    da.signal("-TERM");
    assert_eq!(da.wait_exit(), Some(0));
    da.spawn();
    load(&a, &dir, 200, 10);
    wait_same("restarted primary", LONG, &|| table(&a), &|| ext(&db), &ctx);
    assert!(db.log().matches("authenticated").count() >= 2, "{}", ctx());
}
