//! ctrack's sync engine against a real Debian conntrackd 1.4.7, before the
//! daemon exists: a small loop drives the engine with real UDP/multicast
//! sockets in the lab namespaces.
//!
//! - ctrack primary -> conntrackd standby: the standby's external cache
//!   (`conntrackd -e`) lists the primary's flows, and after
//!   `conntrackd -c` its kernel table equals the primary's (NAT, IPv6,
//!   ICMP, zone included).
//! - conntrackd primary -> ctrack standby (FTFW over UDP and multicast,
//!   NOTRACK, ALARM): our external cache equals the primary's table, and
//!   our batched commit puts the same entries in the standby's kernel.

mod lab;
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

/// An engine and its link socket, driven by hand.
struct Peer {
    engine: Engine,
    sock: LinkSocket,
    sent: usize,
}

impl Peer {
    fn open(ns: &lab::Netns, cfg: SyncConfig) -> Peer {
        let mut cfg = cfg;
        cfg.validate().expect("valid config");
        let sock = in_netns(&ns.name, || LinkSocket::open(&cfg.links[0])).expect("link socket");
        sock.recv_socket()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let engine = Engine::new(&cfg, Start::now(vec![sock.mtu()], None));
        Peer {
            engine,
            sock,
            sent: 0,
        }
    }

    /// Runs the loop a daemon would run, for `ms` milliseconds.
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

fn standby_firewall(l: &SyncLab) {
    // the standby is a router like the primary: same NAT hooks
    l.standby.sysctl(&[
        "net.ipv4.ip_forward=1",
        "net.netfilter.nf_conntrack_tcp_loose=1",
    ]);
    l.standby.nft(
        "table inet lab {\n\
         chain postnat { type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }\n\
         chain prenat { type nat hook prerouting priority -100; iifname \"wan0\" tcp dport 2222 dnat ip to 10.9.1.2:22; }\n\
         }\n",
    );
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
    if !lab::can_run() {
        return;
    }
    for (mode, block) in [
        (ModeKind::Ftfw, "Mode FTFW { }"),
        (ModeKind::Notrack, "Mode NOTRACK { }"),
    ] {
        let l = SyncLab::new("pc");
        standby_firewall(&l);
        let standby = Conntrackd::start(
            &l.standby,
            &l.dir,
            "standby",
            block,
            Transport::Udp,
            Side::Standby,
        );
        let _traffic = synclab::make_traffic(&l.lab);
        synclab::make_entries(l.primary());
        let mut p = Peer::open(l.primary(), udp_cfg(mode, Side::Primary));
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
    standby_firewall(&l);
    let cfg = match transport {
        Transport::Udp => udp_cfg(mode, Side::Standby),
        Transport::Multicast => mcast_cfg(Side::Standby),
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
    let mut c = Conntrack::open(Some(&l.standby.name)).expect("ctnetlink");
    // conntrackd syncs GRE without its keys: one more entry, not compared
    let gre = s
        .engine
        .external()
        .iter()
        .filter(|e| e.flow.orig.proto == proto::GRE)
        .count();
    let opts = CommitOpts::default();
    let r = commit::commit_external(&mut c, s.engine.external(), Instant::now(), &opts).unwrap();
    assert_eq!(
        (r.ok, r.failed.len()),
        (want.len() + gre, 0),
        "{what}: {r:?}"
    );
    assert_same_tables(&want, &table(&l.standby), &format!("{what} commit"));
    // committing again replaces the entries (EEXIST -> delete + create)
    let r = commit::commit_external(&mut c, s.engine.external(), Instant::now(), &opts).unwrap();
    assert_eq!(
        (r.ok, r.replaced),
        (want.len() + gre, want.len() + gre),
        "{what}"
    );
    // TCP entries were created BE_LIBERAL
    let o = l.standby.conntrack(&["-L", "-p", "tcp"]);
    assert!(lab::stdout(&o).contains("ESTABLISHED"));
    // -t: the purge leaves only what the filter keeps
    let on_link = |f: &Flow| !replicated(f) && f.orig.proto != proto::GRE;
    let (deleted, failed) = commit::purge_kernel_table(&mut c, &on_link).unwrap();
    assert_eq!((deleted, failed), (want.len() + gre, 0));
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
