//! Commit speed against conntrackd in the same run (run by
//! bench/sync-commit.sh; not a test: no timed assertions).
//!
//! The primary holds N TCP entries; conntrackd's standby receives them
//! over FTFW and commits them (`conntrackd -c`, its own log gives the
//! time); our engine receives the same entries from the primary's table
//! and our batched commit puts them into an empty namespace.
#![cfg(feature = "sync")]

mod lab;
mod support;
mod synclab;

use std::io::Write;
use std::time::{Duration, Instant};

use ctrack::flow::EventKind;
use ctrack::netlink::client::Conntrack;
use ctrack::netlink::ct::{CtRequest, msg};
use ctrack::sync::commit::{self, CommitOpts};
use ctrack::sync::config::{LinkConfig, SyncConfig};
use ctrack::sync::engine::{Action, Engine, Start};
use synclab::{Conntrackd, Side, SyncLab, Transport};

fn count(ns: &lab::Netns) -> usize {
    let mut c = Conntrack::open(Some(&ns.name)).unwrap();
    c.count().unwrap().0 as usize
}

#[test]
#[ignore = "benchmark: bench/sync-commit.sh"]
fn commit_speed_against_conntrackd() {
    if !lab::can_run() {
        return;
    }
    let n: usize = std::env::var("FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let l = SyncLab::new("bc");
    let target = lab::Netns::new("bct");
    // N entries in the primary, loaded with conntrack -R
    let file = l.dir.join("flows");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 0..n {
        writeln!(
            w,
            "-I -s 10.{}.{}.{} -d 192.0.2.1 -p tcp --sport {} --dport 80 --state ESTABLISHED -t 3000 -u SEEN_REPLY,ASSURED",
            20 + i / 60000,
            (i / 250) % 240,
            i % 250 + 1,
            1024 + i % 60000
        )
        .unwrap();
    }
    drop(w);
    let f = file.display().to_string();
    let o = l.primary().conntrack(&["-R", &f]);
    assert!(o.status.success(), "{}", lab::stderr(&o));
    assert!(count(l.primary()) >= n);

    // conntrackd pair
    let mode = "Mode FTFW { }";
    let standby = Conntrackd::start(
        &l.standby,
        &l.dir,
        "standby",
        mode,
        Transport::Udp,
        Side::Standby,
    );
    let primary = Conntrackd::start(
        l.primary(),
        &l.dir,
        "primary",
        mode,
        Transport::Udp,
        Side::Primary,
    );
    let t = Instant::now();
    primary.run(&["-B"]);
    let ok = lab::wait_until(Duration::from_secs(120), || {
        lab::stdout(&standby.run(&["-s"]))
            .split("cache external:")
            .nth(1)
            .and_then(|s| {
                s.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .is_some_and(|v| v >= n)
    });
    assert!(ok, "conntrackd standby did not get {n} entries");
    let sync_time = t.elapsed();

    // ours: the primary's table through two engines, then our commit
    let cfg = SyncConfig {
        links: vec![LinkConfig::udp(
            None,
            "10.9.9.2".parse().unwrap(),
            3780,
            "sync0",
        )],
        ..SyncConfig::default()
    };
    let t0 = Instant::now();
    let start = |seq| Start {
        now: t0,
        seq,
        mtus: vec![1500],
        auth_key: None,
        auth_seed: 0,
        seed: 1,
    };
    let mut a = Engine::new(&cfg, start(1));
    let mut b = Engine::new(&cfg, start(2));
    let mut c = Conntrack::open(Some(&l.primary().name)).unwrap();
    c.dump(&CtRequest::new(msg::GET, 0), &mut |f| {
        if f.orig.dst == "192.0.2.1".parse::<std::net::IpAddr>().unwrap() {
            a.on_event(t0, EventKind::New, f);
        }
        Ok(())
    })
    .unwrap();
    a.transmit(t0);
    let mut bytes = 0;
    let mut datagrams = 0;
    while let Some(act) = a.poll_action() {
        if let Action::Send { datagram, .. } = act {
            bytes += datagram.len();
            datagrams += 1;
            b.on_datagram(t0, 0, &datagram, None);
        }
    }
    assert_eq!(b.external().len(), n);
    let mut conn = commit::Committer::open(Some(&target.name)).unwrap();
    // an event listener in the target namespace that does not read during
    // the commit, like conntrackd's own event socket (the kernel builds
    // the events either way)
    let ev = ctrack::netlink::events::EventSocket::open(
        ctrack::netlink::events::group::ALL,
        Some(&target.name),
    )
    .unwrap();
    let _ = ev.socket().set_recv_buffer(2 << 20);
    if std::env::var("NO_LISTENER").is_ok() {
        drop(ev);
    }
    // alternate conntrackd -c and ours, best of 3 each (the machine may
    // be shared: alternating keeps both under the same load)
    let (mut theirs, mut ours) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let o = l.standby.conntrack(&["-F"]);
        assert!(o.status.success());
        let o = standby.run(&["-c"]);
        assert!(o.status.success());
        let t: f64 = standby
            .log_text()
            .lines()
            .rev()
            .find_map(|l| l.split("commit has taken ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("conntrackd's commit time");
        assert!(count(&l.standby) >= n);
        theirs = theirs.min(t);
        commit::purge_kernel_table(&mut conn, &|_| false).unwrap();
        let r = commit::commit_external(
            &mut conn,
            b.external(),
            Instant::now(),
            &CommitOpts::default(),
        );
        assert_eq!(r.ok, n, "{:?}", r.failed.first());
        ours = ours.min(r.elapsed.as_secs_f64());
    }
    println!("flows: {n}");
    println!(
        "conntrackd -B to conntrackd standby: {:.3} s",
        sync_time.as_secs_f64()
    );
    println!(
        "ctrack wire: {datagrams} datagrams, {:.1} bytes per flow",
        bytes as f64 / n as f64
    );
    println!("commit conntrackd -c: {theirs:.3} s");
    println!("commit ctrack:        {ours:.3} s");
    println!("ratio conntrackd/ctrack commit time: {:.2}", theirs / ours);
}
