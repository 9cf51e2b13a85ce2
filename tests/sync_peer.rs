//! ctrack's sans-I/O sync engine (src/sync/engine.rs) against a real
//! Debian conntrackd 1.4.7, below the daemon: a small loop feeds the
//! engine real UDP/multicast datagrams in the lab namespaces and sends
//! what it asks, so a failure here points at the engine and the wire
//! format, not at the daemon's wiring. The same pairs with ctrackd itself
//! on each side (the daemon's sync part, commits, restarts, forgeries)
//! are tests/sync_daemon.rs and tests/sync_inject.rs.
//!
//! - ctrack primary -> conntrackd standby: the standby's external cache
//!   (`conntrackd -e`) lists the primary's flows, and after
//!   `conntrackd -c` its kernel table equals the primary's (NAT, IPv6,
//!   ICMP, zone included).
//! - conntrackd primary -> ctrack standby (FTFW over UDP and multicast,
//!   NOTRACK, ALARM): our external cache equals the primary's table, and
//!   our batched commit puts the same entries in the standby's kernel.
#![cfg(feature = "sync")]

mod lab;
mod support;
mod synclab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ctrack::flow::{EventKind, Flow, proto};
use ctrack::netlink::client::Conntrack;
use ctrack::netlink::ct::{CtRequest, msg};
use ctrack::netlink::socket::in_netns;
use ctrack::sync::commit::{self, CommitOpts};
use ctrack::sync::config::{LinkConfig, ModeKind, SyncConfig};
use ctrack::sync::engine::{Action, Engine, Start};
use ctrack::sync::external::FlowKey;
use ctrack::sync::link::LinkSocket;
use synclab::{Conntrackd, Side, SyncLab, Transport};

/// An engine and its link socket, driven by hand (only sends and logs:
/// these tests replicate events they feed themselves and commit with
/// `commit_external`; ctrackd's carrying out of every action is tested
/// in tests/sync_daemon.rs).
struct Peer {
    engine: Engine,
    sock: LinkSocket,
    sent: usize,
    /// The first datagrams sent, kept for replay tests.
    record: Vec<Vec<u8>>,
}

impl Peer {
    fn open(ns: &lab::Netns, cfg: SyncConfig) -> Peer {
        Peer::open_with_key(ns, cfg, None)
    }

    fn open_with_key(ns: &lab::Netns, cfg: SyncConfig, key: Option<&[u8]>) -> Peer {
        let mut cfg = cfg;
        cfg.validate().expect("valid config");
        let sock = in_netns(&ns.name, || LinkSocket::open(&cfg.links[0])).expect("link socket");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let engine = Engine::new(&cfg, Start::now(vec![sock.mtu()], key.map(<[u8]>::to_vec)));
        Peer {
            engine,
            sock,
            sent: 0,
            record: Vec::new(),
        }
    }

    /// Feeds datagrams and timers to the engine and sends what it asks,
    /// for `ms` milliseconds.
    fn run(&mut self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < end {
            let now = Instant::now();
            if self.engine.next_deadline().is_some_and(|d| d <= now) {
                self.engine.on_timeout(now);
            }
            self.engine.transmit(now);
            while let Some(a) = self.engine.poll_action() {
                match a {
                    Action::Send { link, datagram } => {
                        if self.sock.send(&datagram).is_err() {
                            self.engine.note_send_error(link);
                        }
                        self.sent += 1;
                        if self.record.len() < 50 {
                            self.record.push(datagram);
                        }
                    }
                    Action::Log { text, .. } => eprintln!("engine: {text}"),
                    _ => {}
                }
            }
            if let Ok((n, from)) = self.sock.recv(&mut buf) {
                self.engine
                    .on_datagram(Instant::now(), 0, &buf[..n], Some(from));
            }
        }
    }
}

fn udp_cfg(mode: ModeKind, side: Side) -> SyncConfig {
    let (me, peer) = side.addrs();
    let mut link = LinkConfig::udp(
        Some(me.parse().unwrap()),
        peer.parse().unwrap(),
        synclab::PORT,
        synclab::SYNC_IF,
    );
    link.rcv_buffer = Some(1 << 20);
    link.check_source = true;
    SyncConfig {
        mode,
        links: vec![link],
        ..SyncConfig::default()
    }
}

fn tcp_cfg(mode: ModeKind, side: Side) -> SyncConfig {
    let (me, peer) = side.addrs();
    let mut link = LinkConfig::tcp(
        Some(me.parse().unwrap()),
        peer.parse().unwrap(),
        synclab::PORT,
        synclab::SYNC_IF,
    );
    link.rcv_buffer = Some(1 << 20);
    link.check_source = true;
    SyncConfig {
        mode,
        links: vec![link],
        ..SyncConfig::default()
    }
}

fn mcast_cfg(side: Side) -> SyncConfig {
    let (me, _) = side.addrs();
    SyncConfig {
        links: vec![LinkConfig::multicast(
            synclab::MCAST_GROUP.parse().unwrap(),
            synclab::PORT,
            me.parse().unwrap(),
            synclab::SYNC_IF,
        )],
        ..SyncConfig::default()
    }
}

/// Flows conntrackd (and we) replicate: not on the sync link, not GRE
/// (whose keys conntrackd does not sync).
fn replicated(f: &Flow) -> bool {
    let on_link = |a: IpAddr| matches!(a, IpAddr::V4(v) if v.octets()[..3] == [10, 9, 9]);
    !on_link(f.orig.src) && !on_link(f.reply.src) && f.orig.proto != proto::GRE
}

fn table(ns: &lab::Netns) -> Vec<Flow> {
    let mut c = Conntrack::open(Some(&ns.name)).expect("ctnetlink");
    let mut out = Vec::new();
    c.dump(&CtRequest::new(msg::GET, 0), &mut |f| {
        if replicated(f) {
            out.push(f.clone());
        }
        Ok(())
    })
    .expect("dump");
    out
}

/// The standby's kernel holds the primary's flows: same original and
/// reply tuples (so NAT was set up), mark, zone and TCP state.
fn assert_same_tables(primary: &[Flow], standby: &[Flow], what: &str) {
    let by_key: std::collections::HashMap<FlowKey, &Flow> =
        standby.iter().map(|f| (FlowKey::of(f), f)).collect();
    assert_eq!(
        primary.len(),
        standby.len(),
        "{what}: primary {primary:#?}\nstandby {standby:#?}"
    );
    for p in primary {
        let s = by_key
            .get(&FlowKey::of(p))
            .unwrap_or_else(|| panic!("{what}: {:?} missing on the standby", p.orig));
        assert_eq!(s.reply, p.reply, "{what}: reply of {:?}", p.orig);
        assert_eq!(s.zone, p.zone, "{what}: zone of {:?}", p.orig);
        assert_eq!(
            s.mark.unwrap_or(0),
            p.mark.unwrap_or(0),
            "{what}: mark of {:?}",
            p.orig
        );
        assert_eq!(
            s.protoinfo.tcp_state(),
            p.protoinfo.tcp_state(),
            "{what}: state of {:?}",
            p.orig
        );
    }
}

fn needle(f: &Flow) -> String {
    if proto::is_icmp(f.orig.proto) {
        format!(
            "src={} dst={} type={} code={} id={}",
            f.orig.src, f.orig.dst, f.orig.icmp_type, f.orig.icmp_code, f.orig.icmp_id
        )
    } else {
        format!(
            "src={} dst={} sport={} dport={}",
            f.orig.src, f.orig.dst, f.orig.sport, f.orig.dport
        )
    }
}

#[test]
fn ctrack_primary_to_conntrackd_standby() {
    if lab::can_run() {
        ctrack_to_conntrackd(Transport::Udp);
    }
}

#[test]
fn ctrack_primary_to_conntrackd_standby_over_tcp() {
    if lab::can_run() {
        ctrack_to_conntrackd(Transport::Tcp);
    }
}

fn ctrack_to_conntrackd(transport: Transport) {
    for (mode, block) in [
        (ModeKind::Ftfw, "Mode FTFW { }"),
        (ModeKind::Notrack, "Mode NOTRACK { }"),
    ] {
        let l = SyncLab::new("pc");
        synclab::router_firewall(&l.standby);
        let standby = Conntrackd::start(
            &l.standby,
            &l.dir,
            "standby",
            block,
            transport,
            Side::Standby,
        );
        let _traffic = synclab::make_traffic(&l.lab);
        synclab::make_entries(l.primary());
        let cfg = match transport {
            Transport::Tcp => tcp_cfg(mode, Side::Primary),
            _ => udp_cfg(mode, Side::Primary),
        };
        let mut p = Peer::open(l.primary(), cfg);
        // the daemon's startup dump, as events
        let flows = table(l.primary());
        let now = Instant::now();
        for f in &flows {
            p.engine.on_event(now, EventKind::New, f);
        }
        let mut ext = Vec::new();
        let ok = lab::wait_until(Duration::from_secs(10), || {
            p.run(300);
            ext = standby.external();
            flows
                .iter()
                .all(|f| ext.iter().any(|line| line.contains(&needle(f))))
        });
        assert!(
            ok,
            "{mode:?}: conntrackd -e misses flows:\n{}\nlog: {}",
            ext.join("\n"),
            standby.log_text()
        );
        assert_eq!(ext.len(), flows.len(), "{mode:?}: {}", ext.join("\n"));
        // a destroyed flow leaves the standby's cache
        let gone = flows
            .iter()
            .find(|f| f.zone == Some(5))
            .expect("zone-5 entry");
        p.engine.on_event(Instant::now(), EventKind::Destroy, gone);
        let ok = lab::wait_until(Duration::from_secs(5), || {
            p.run(200);
            standby.external().len() == flows.len() - 1
        });
        assert!(ok, "{mode:?}: DEL not applied");
        // failover: conntrackd commits what we sent
        let o = standby.run(&["-c"]);
        assert!(o.status.success());
        let want: Vec<Flow> = flows
            .iter()
            .filter(|f| f.zone != Some(5))
            .cloned()
            .collect();
        let got = table(&l.standby);
        assert_same_tables(&want, &got, &format!("{mode:?} conntrackd -c"));
        assert!(
            standby
                .log_text()
                .contains(&format!("Committed {} new entries", want.len())),
            "{}",
            standby.log_text()
        );
        assert_eq!(p.engine.net_stats().malformed, 0);
    }
}

fn conntrackd_to_ctrack(transport: Transport, mode: ModeKind, block: &str) {
    let l = SyncLab::new("cp");
    synclab::router_firewall(&l.standby);
    let cfg = match transport {
        Transport::Udp => udp_cfg(mode, Side::Standby),
        Transport::Multicast => mcast_cfg(Side::Standby),
        Transport::Tcp => tcp_cfg(mode, Side::Standby),
    };
    let mut s = Peer::open(&l.standby, cfg);
    let primary = Conntrackd::start(
        l.primary(),
        &l.dir,
        "primary",
        block,
        transport,
        Side::Primary,
    );
    s.run(1500);
    let _traffic = synclab::make_traffic(&l.lab);
    synclab::make_entries(l.primary());
    let what = format!("{transport:?} {mode:?}");
    let mut want = Vec::new();
    let ok = lab::wait_until(Duration::from_secs(12), || {
        s.run(300);
        want = table(l.primary());
        let ext = s.engine.external();
        let not_gre = ext
            .iter()
            .filter(|e| e.flow.orig.proto != proto::GRE)
            .count();
        want.len() == not_gre
            && want
                .iter()
                .all(|f| s.engine.external().get(&FlowKey::of(f)).is_some())
    });
    assert!(
        ok,
        "{what}: external cache {} flows, primary {}: {:#?}\nlog: {}",
        s.engine.external().len(),
        want.len(),
        s.engine
            .external()
            .iter()
            .map(|e| e.flow.orig)
            .collect::<Vec<_>>(),
        primary.log_text()
    );
    for f in &want {
        let e = s.engine.external().get(&FlowKey::of(f)).unwrap();
        assert_eq!(
            e.flow.reply, f.reply,
            "{what}: rebuilt reply of {:?}",
            f.orig
        );
    }
    assert_eq!(s.engine.net_stats().malformed, 0, "{what}");
    // failover: our batched commit into the standby's kernel
    let mut c = commit::Committer::open(Some(&l.standby.name)).expect("ctnetlink");
    // conntrackd syncs GRE without its keys: one more entry, not compared
    let gre = s
        .engine
        .external()
        .iter()
        .filter(|e| e.flow.orig.proto == proto::GRE)
        .count();
    let opts = CommitOpts::default();
    let r = commit::commit_external(&mut c, s.engine.external(), Instant::now(), &opts);
    assert_eq!(
        (r.ok, r.failed.len()),
        (want.len() + gre, 0),
        "{what}: {r:?}"
    );
    assert_same_tables(&want, &table(&l.standby), &format!("{what} commit"));
    // committing again updates the entries in place (EEXIST, the same
    // connection: nothing is deleted)
    let r = commit::commit_external(&mut c, s.engine.external(), Instant::now(), &opts);
    assert_eq!(
        (r.ok, r.updated, r.replaced),
        (want.len() + gre, want.len() + gre, 0),
        "{what}: {:?}",
        r.failed
    );
    assert_same_tables(&want, &table(&l.standby), &format!("{what} commit again"));
    // TCP entries were created BE_LIBERAL
    let o = l.standby.conntrack(&["-L", "-p", "tcp"]);
    assert!(lab::stdout(&o).contains("ESTABLISHED"));
    // -t: the purge leaves only what the filter keeps
    let on_link = |f: &Flow| !replicated(f) && f.orig.proto != proto::GRE;
    let r = commit::purge_kernel_table(&mut c, &on_link).unwrap();
    assert_eq!((r.deleted, r.failed), (want.len() + gre, 0));
    assert!(table(&l.standby).is_empty());
}

#[test]
fn conntrackd_primary_to_ctrack_standby_ftfw_udp() {
    if lab::can_run() {
        conntrackd_to_ctrack(Transport::Udp, ModeKind::Ftfw, "Mode FTFW { }");
    }
}

#[test]
fn conntrackd_primary_to_ctrack_standby_ftfw_multicast() {
    if lab::can_run() {
        conntrackd_to_ctrack(Transport::Multicast, ModeKind::Ftfw, "Mode FTFW { }");
    }
}

#[test]
fn conntrackd_primary_to_ctrack_standby_notrack_and_alarm() {
    if lab::can_run() {
        conntrackd_to_ctrack(Transport::Udp, ModeKind::Notrack, "Mode NOTRACK { }");
        conntrackd_to_ctrack(
            Transport::Udp,
            ModeKind::Alarm,
            "Mode ALARM { RefreshTime 2\n\tCacheTimeout 30 }",
        );
    }
}

#[test]
fn conntrackd_primary_to_ctrack_standby_over_tcp() {
    if lab::can_run() {
        conntrackd_to_ctrack(Transport::Tcp, ModeKind::Notrack, "Mode NOTRACK { }");
        conntrackd_to_ctrack(Transport::Tcp, ModeKind::Ftfw, "Mode FTFW { }");
        conntrackd_to_ctrack(
            Transport::Tcp,
            ModeKind::Alarm,
            "Mode ALARM { RefreshTime 2\n\tCacheTimeout 30 }",
        );
    }
}

#[test]
fn ctrack_pair_with_auth_converges_over_a_lossy_link_and_refuses_forgeries() {
    if !lab::can_run() {
        return;
    }
    let l = SyncLab::new("au");
    // 20% of the sync datagrams are dropped in each direction (no netem
    // in this kernel: nftables' random number generator does it)
    for ns in [l.primary(), &l.standby] {
        ns.nft(
            "table inet loss {\n\
             chain out { type filter hook output priority 0; udp dport 3780 numgen random mod 5 == 0 drop; }\n\
             }\n",
        );
    }
    let key = b"a shared secret of 32 bytes....!";
    let mut p = Peer::open_with_key(
        l.primary(),
        udp_cfg(ModeKind::Ftfw, Side::Primary),
        Some(key),
    );
    let mut s = Peer::open_with_key(
        &l.standby,
        udp_cfg(ModeKind::Ftfw, Side::Standby),
        Some(key),
    );
    let _traffic = synclab::make_traffic(&l.lab);
    synclab::make_entries(l.primary());
    let flows = table(l.primary());
    let now = Instant::now();
    for f in &flows {
        p.engine.on_event(now, EventKind::New, f);
    }
    // and many more, to fill datagrams: 2000 hand-made TCP flows
    let mut want: std::collections::HashMap<FlowKey, Flow> =
        flows.iter().map(|f| (FlowKey::of(f), f.clone())).collect();
    let template = flows
        .iter()
        .find(|f| f.orig.proto == proto::TCP && f.zone.is_none() && f.orig.src.is_ipv4())
        .unwrap()
        .clone();
    for i in 0..2000u32 {
        let mut f = template.clone();
        f.orig.src = IpAddr::from([172, 16, (i >> 8) as u8, i as u8]);
        f.reply.dst = f.orig.src;
        f.reply.src = f.orig.dst;
        p.engine.on_event(now, EventKind::New, &f);
        want.insert(FlowKey::of(&f), f);
    }
    let ok = lab::wait_until(Duration::from_secs(30), || {
        p.run(40);
        s.run(40);
        let ext = s.engine.external();
        ext.len() == want.len() && want.keys().all(|k| ext.get(k).is_some())
    });
    let (np, ns) = (p.engine.net_stats(), s.engine.net_stats());
    assert!(
        ok,
        "standby has {} of {} flows; primary {np:?}; standby {ns:?}",
        s.engine.external().len(),
        want.len()
    );
    // converged although the link really lost datagrams (recovered by
    // NACK resends or by the session's resend of unacknowledged objects)
    assert!(ns.lost > 0, "the link lost datagrams: {ns:?} {np:?}");
    assert_eq!(ns.auth_bad_mac + ns.auth_missing + ns.auth_replay, 0);

    // forgeries sent from the primary's namespace to the standby's port
    let before = s.engine.external().len();
    let fake = {
        let mut f = template.clone();
        f.orig.src = "203.0.113.66".parse().unwrap();
        f
    };
    let mut mallory = Engine::new(
        &{
            let mut c = udp_cfg(ModeKind::Ftfw, Side::Primary);
            c.validate().unwrap();
            c
        },
        Start::now(
            vec![1500],
            Some(b"the wrong key, but 32 bytes long".to_vec()),
        ),
    );
    mallory.on_event(Instant::now(), EventKind::New, &fake);
    mallory.transmit(Instant::now());
    let Some(Action::Send {
        datagram: forged, ..
    }) = mallory.poll_action()
    else {
        panic!("no datagram")
    };
    let mut plain = Vec::new();
    ctrack::sync::wire::ct::encode_msg(0, &fake, &Default::default(), &mut plain).unwrap();
    let replayed = p.record[5].clone();
    let truncated = p.record[6][..p.record[6].len() - 1].to_vec();
    let sock = in_netns(&l.primary().name, || {
        std::net::UdpSocket::bind("10.9.9.1:0")
    })
    .unwrap();
    for d in [&forged, &plain, &replayed, &truncated] {
        // repeat each: the nft loss rule applies to our sends too
        for _ in 0..10 {
            let _ = sock.send_to(d, "10.9.9.2:3780"); // EPERM when nft drops it
        }
    }
    s.run(500);
    let ns2 = s.engine.net_stats();
    assert_eq!(
        s.engine.external().len(),
        before,
        "a forgery changed the cache"
    );
    assert!(s.engine.external().get(&FlowKey::of(&fake)).is_none());
    assert!(ns2.auth_bad_mac >= 2, "{ns2:?}"); // wrong key, truncated
    assert!(ns2.auth_missing >= 1, "{ns2:?}");
    assert!(ns2.auth_replay >= 1, "{ns2:?}");
}
