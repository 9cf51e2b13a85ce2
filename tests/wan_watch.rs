//! The whole WAN watch on a lab router: real rtnetlink events into the
//! tracker, its flush orders run by the executor with real deletes
//! (`ctrack::wan::watch::WanWatch` and its reader thread, driven as
//! ctrackd's core loop drives them), while a client
//! keeps UDP flows alive every 100 ms. Reconnects as an ISP's: add B and
//! delete A, PPP-style link down / new address / link up, an IPv6 prefix
//! change, a flap, masquerade (the kernel's own cleanup), and a second WAN
//! with `Flush all-wan`.

#![cfg(feature = "wan")]

mod lab;
mod support;
mod wan_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctrack::wan::config::{FlushMode, WanConfig};
use ctrack::wan::flush::{Executor, FlushOptions, FlushReport};
use ctrack::wan::rule::Rule;
use ctrack::wan::watch::{Note, WanWatch, spawn_reader};
use lab::{Netns, RouterLab};
use wan_common::*;

const A: &str = "10.9.2.1";
const B: &str = "10.9.2.3";
const SERVER: &str = "10.9.2.2";
const CLIENT: &str = "10.9.1.2";

/// The watch ctrackd runs, on its own thread: the reader's inputs go to
/// `WanWatch::handle` as they come and `WanWatch::on_timer` runs at the
/// watch's deadline, as in ctrackd's core loop.
struct Running {
    stop: Arc<AtomicBool>,
    notes: Arc<Mutex<Vec<(Instant, Note)>>>,
    handle: Option<JoinHandle<WanWatch>>,
}

fn start(router: &Netns, ifaces: &[&str], flush: FlushMode) -> Running {
    start_with(router, ifaces, flush, 1000)
}

fn start_with(router: &Netns, ifaces: &[&str], flush: FlushMode, debounce_ms: u64) -> Running {
    let cfg = WanConfig {
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        flush,
        debounce: Duration::from_millis(debounce_ms),
        ..WanConfig::default()
    };
    let (mut w, socket, baseline) = WanWatch::open(cfg, Some(&router.name)).expect("watch");
    let (tx, rx) = mpsc::channel();
    let reader = spawn_reader(socket, move |i| tx.send(i).is_ok()).expect("reader thread");
    let stop = Arc::new(AtomicBool::new(false));
    let notes = Arc::new(Mutex::new(Vec::new()));
    let (st, ns) = (stop.clone(), notes.clone());
    let t0 = Instant::now();
    let handle = std::thread::spawn(move || {
        let record = |batch: Vec<Note>| {
            for n in batch {
                eprintln!("{:>6} ms {}", t0.elapsed().as_millis(), n.log_line());
                ns.lock().unwrap().push((Instant::now(), n));
            }
        };
        record(baseline);
        // checked at least every 200 ms
        let tick = Duration::from_millis(200);
        while !st.load(Ordering::Relaxed) {
            let now = Instant::now();
            let deadline = w.next_deadline();
            if deadline.is_some_and(|d| d <= now) {
                record(w.on_timer(now));
                continue;
            }
            let wait = deadline.map_or(tick, |d| (d - now).min(tick));
            match rx.recv_timeout(wait) {
                Ok(input) => record(w.handle(Instant::now(), input)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        reader.stop();
        // the reader is gone, and with it the only sender
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the reader outlived stop()"),
            }
        }
        w
    });
    Running {
        stop,
        notes,
        handle: Some(handle),
    }
}

impl Running {
    fn flushes(&self) -> Vec<FlushReport> {
        self.notes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, n)| match n {
                Note::Flushed(_, r) => Some(r.clone()),
                Note::FlushFailed(o, e) => panic!("flush of {} failed: {e}", o.rule),
                _ => None,
            })
            .collect()
    }

    fn wait_flushes(&self, n: usize, timeout: Duration) -> Vec<FlushReport> {
        lab::wait_until(timeout, || self.flushes().len() >= n);
        self.flushes()
    }

    fn stop(mut self) -> WanWatch {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The SNAT keepalive lab: client:40000 -> server:5000, SNAT to A.
fn snat_lab(tag: &str) -> (RouterLab, Listener, Keepalive) {
    keepalive_lab(tag, Some(&format!("oifname \"wan0\" snat ip to {A}")))
}

/// A lab router (with `postnat` instead of its masquerade when given)
/// and a keepalive client:40000 -> server:5000 that got through.
fn keepalive_lab(tag: &str, postnat: Option<&str>) -> (RouterLab, Listener, Keepalive) {
    let lab = RouterLab::new(tag);
    promote_secondaries(&lab.router, "wan0");
    if let Some(rule) = postnat {
        set_postnat(&lab.router, &[rule]);
    }
    let srv = listener(&lab.server, sa("0.0.0.0:5000"), true);
    let ka = keepalive(
        &lab.client,
        sa(&format!("{CLIENT}:40000")),
        sa(&format!("{SERVER}:5000")),
    );
    assert!(
        srv.wait_for(ip(A), Instant::now(), Duration::from_secs(5))
            .is_some()
    );
    // flows re-created later have a later start second
    std::thread::sleep(Duration::from_millis(1100));
    (lab, srv, ka)
}

#[test]
fn snat_reconnect_recovers_within_two_seconds() {
    if !lab::can_run() {
        return;
    }
    let (lab, srv, _ka) = snat_lab("wws");
    let watch = start(&lab.router, &["wan0"], FlushMode::Stale);
    lab.router
        .must(&["ip", "addr", "add", &format!("{B}/24"), "dev", "wan0"]);
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {B}")]);
    lab.router
        .must(&["ip", "addr", "del", &format!("{A}/24"), "dev", "wan0"]);
    let changed = Instant::now();
    let seen_b = srv.wait_for(ip(B), changed, Duration::from_secs(2));
    assert!(
        seen_b.is_some(),
        "the server must see {B} within 2 s of the change: {:?}",
        srv.sources_since(changed)
    );
    let reports = watch.wait_flushes(1, Duration::from_secs(2));
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (
            reports[0].deleted,
            reports[0].already_gone,
            reports[0].errors
        ),
        (1, 0, 0)
    );
    let w = watch.stop();
    assert_eq!(w.stats.flushes, 1);
    assert_eq!(w.stats.flows_deleted, 1);
    assert!(w.stats.changes >= 2, "{:?}", w.stats);
    let mut text = Vec::new();
    w.stats.write_text(&mut text, &w.status());
    let text = String::from_utf8(text).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("interface wan0:"))
        .unwrap();
    assert!(line.contains("\tup ") && line.contains(B), "{text}");
}

#[test]
fn ppp_style_link_down_new_address_link_up() {
    if !lab::can_run() {
        return;
    }
    let (lab, srv, _ka) = snat_lab("wwp");
    let watch = start(&lab.router, &["wan0"], FlushMode::Stale);
    lab.router.sh(&format!(
        "ip link set wan0 down && ip addr del {A}/24 dev wan0 && ip addr add {B}/24 dev wan0"
    ));
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {B}")]);
    lab.router.must(&["ip", "link", "set", "wan0", "up"]);
    let up = Instant::now();
    assert!(
        srv.wait_for(ip(B), up, Duration::from_secs(2)).is_some(),
        "{:?}",
        srv.sources_since(up)
    );
    let reports = watch.wait_flushes(1, Duration::from_secs(2));
    assert_eq!(reports.iter().map(|r| r.deleted).sum::<u64>(), 1);
    assert!(reports.iter().all(|r| r.errors == 0));
}

#[test]
fn flapping_within_the_debounce_deletes_nothing_valid() {
    if !lab::can_run() {
        return;
    }
    let (lab, srv, _ka) = snat_lab("wwf");
    let before = flow_ident(&lab.router, 5000).expect("the keepalive flow");
    let watch = start(&lab.router, &["wan0"], FlushMode::Stale);
    lab.router.sh(&format!(
        "ip addr add {B}/24 dev wan0 && ip addr del {A}/24 dev wan0 && \
         ip addr add {A}/24 dev wan0 && ip addr del {B}/24 dev wan0"
    ));
    let flapped = Instant::now();
    let reports = watch.wait_flushes(1, Duration::from_secs(3));
    assert_eq!(reports.len(), 1, "one flush for the transient B");
    assert_eq!((reports[0].deleted, reports[0].selected), (0, 0));
    assert_eq!(
        flow_ident(&lab.router, 5000),
        Some(before),
        "the valid flow survived"
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = srv.sources_since(flapped);
    assert!(after.iter().all(|s| *s == ip(A)), "{after:?}");
}

#[test]
fn masquerade_is_left_to_the_kernel_without_errors() {
    if !lab::can_run() {
        return;
    }
    let (lab, srv, _ka) = keepalive_lab("wwm", None); // masquerade on wan0
    let original = flow_ident(&lab.router, 5000).expect("the keepalive flow");
    // a long debounce, so whatever happens first is the kernel's doing
    let watch = start_with(&lab.router, &["wan0"], FlushMode::Stale, 3000);
    lab.router.sh(&format!(
        "ip addr add {B}/24 dev wan0 && ip addr del {A}/24 dev wan0"
    ));
    let changed = Instant::now();
    assert!(
        srv.wait_for(ip(B), changed, Duration::from_secs(2))
            .is_some()
    );
    // the kernel's masquerade cleanup removed the entry on its own
    assert!(lab::wait_until(Duration::from_secs(2), || flow_ident(
        &lab.router,
        5000
    ) != Some(
        original.clone()
    )));
    assert!(watch.flushes().is_empty(), "before our flush");
    let reports = watch.wait_flushes(1, Duration::from_secs(5));
    assert_eq!(reports.len(), 1);
    // nothing deleted twice, no error; at most a leftover the kernel's
    // deferred cleanup raced into existence with the old address
    assert_eq!(reports[0].errors, 0, "{:?}", reports[0]);
    assert!(reports[0].deleted <= 1, "{:?}", reports[0]);
    let o = lab.router.ctrack(&["flush-wan", "--old-address", A]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(lab::stderr(&o), "ctrack: 0 stale flows deleted\n");
}

#[test]
fn ipv6_prefix_change() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("ww6");
    let (old, new) = ("fd09:2::1", "fd09:3::1");
    set_postnat(
        &lab.router,
        &[
            "oifname \"wan0\" meta nfproto ipv4 masquerade",
            &format!("oifname \"wan0\" snat ip6 to {old}"),
        ],
    );
    // keep the server reachable from both prefixes
    lab.router
        .must(&["ip", "-6", "route", "add", "fd09:2::2/128", "dev", "wan0"]);
    lab.server
        .must(&["ip", "-6", "route", "add", "fd09:3::/64", "dev", "s0"]);
    let srv = listener(&lab.server, sa("[::]:5000"), true);
    let _ka = keepalive(&lab.client, sa("[fd09:1::2]:40000"), sa("[fd09:2::2]:5000"));
    assert!(
        srv.wait_for(ip(old), Instant::now(), Duration::from_secs(5))
            .is_some()
    );
    let watch = start(&lab.router, &["wan0"], FlushMode::Stale);
    lab.router.must(&[
        "ip",
        "addr",
        "add",
        &format!("{new}/64"),
        "dev",
        "wan0",
        "nodad",
    ]);
    set_postnat(
        &lab.router,
        &[
            "oifname \"wan0\" meta nfproto ipv4 masquerade",
            &format!("oifname \"wan0\" snat ip6 to {new}"),
        ],
    );
    lab.router
        .must(&["ip", "addr", "del", &format!("{old}/64"), "dev", "wan0"]);
    let changed = Instant::now();
    assert!(
        srv.wait_for(ip(new), changed, Duration::from_secs(2))
            .is_some(),
        "{:?}",
        srv.sources_since(changed)
    );
    let reports = watch.wait_flushes(1, Duration::from_secs(2));
    assert_eq!(reports[0].deleted, 1);
}

#[test]
fn second_wan_fallback_moves_back_with_all_wan() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wwa");
    let s2 = Netns::new("wwa2");
    lab::veth(&s2, "s0", &lab.router, "wan1");
    s2.must(&["ip", "addr", "add", "10.9.3.2/24", "dev", "s0"]);
    lab.router
        .must(&["ip", "addr", "add", "10.9.3.1/24", "dev", "wan1"]);
    // the same remote address behind both WANs
    let remote = "10.99.0.1";
    for s in [&lab.server, &s2] {
        s.must(&["ip", "addr", "add", &format!("{remote}/32"), "dev", "lo"]);
    }
    s2.must(&["ip", "route", "add", "default", "via", "10.9.3.1"]);
    set_postnat(
        &lab.router,
        &["oifname \"wan0\" masquerade", "oifname \"wan1\" masquerade"],
    );
    let route1 = [
        "ip",
        "route",
        "replace",
        "10.99.0.1/32",
        "via",
        SERVER,
        "metric",
        "10",
    ];
    lab.router.must(&route1);
    lab.router.must(&[
        "ip",
        "route",
        "add",
        "10.99.0.1/32",
        "via",
        "10.9.3.2",
        "metric",
        "20",
    ]);
    let srv1 = listener(&lab.server, sa("0.0.0.0:5000"), true);
    let srv2 = listener(&s2, sa("0.0.0.0:5000"), true);
    let _ka = keepalive(
        &lab.client,
        sa(&format!("{CLIENT}:40000")),
        sa(&format!("{remote}:5000")),
    );
    assert!(
        srv1.wait_for(ip(A), Instant::now(), Duration::from_secs(5))
            .is_some()
    );
    let watch = start(&lab.router, &["wan0", "wan1"], FlushMode::AllWan);
    // wan0 fails: traffic falls back to wan1
    lab.router.must(&["ip", "link", "set", "wan0", "down"]);
    let down = Instant::now();
    assert!(
        srv2.wait_for(ip("10.9.3.1"), down, Duration::from_secs(3))
            .is_some()
    );
    watch.wait_flushes(1, Duration::from_secs(3));
    // wan0 returns (netifd restores its route): the flow still carries
    // wan1's address until the all-wan flush moves it back
    lab.router.must(&["ip", "link", "set", "wan0", "up"]);
    lab.router.must(&route1);
    let back = Instant::now();
    let seen_a = srv1.wait_for(ip(A), back, Duration::from_secs(3));
    assert!(
        seen_a.is_some(),
        "srv1 {:?} srv2 {:?}",
        srv1.sources_since(back),
        srv2.sources_since(back)
    );
    let reports = watch.wait_flushes(2, Duration::from_secs(2));
    assert!(reports.len() >= 2);
    assert!(reports.iter().all(|r| r.errors == 0));
    assert!(reports.last().unwrap().deleted >= 1);
}

#[test]
fn executor_kernel_filter_and_full_dump_select_the_same() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wwe");
    lab.client.sh(&format!(
        "for p in $(seq 6000 6039); do echo x | nc -u -w 1 -q 0 {SERVER} $p >/dev/null 2>&1; done"
    ));
    lab.udp("10.9.1.1", 53);
    lab.ping("fd09:2::2");
    let mut ex = Executor::open(Some(&lab.router.name)).unwrap();
    let rule = Rule::stale(&[ip(A), ip("fd09:2::1")]);
    let mut runs = Vec::new();
    for kernel_filter in [true, false] {
        let mut keys = Vec::new();
        let r = ex
            .run(
                &rule,
                &FlushOptions {
                    dry_run: true,
                    kernel_filter,
                },
                &mut |f, _, _| keys.push((f.orig, f.reply)),
            )
            .unwrap();
        assert_eq!(r.kernel_filtered, kernel_filter);
        keys.sort_by_key(|k| format!("{k:?}"));
        runs.push((keys, r));
    }
    assert_eq!(runs[0].0, runs[1].0);
    assert!(runs[0].0.len() >= 41, "{}", runs[0].0.len());
    // IPv4 in the kernel (4 dumps), IPv6 from one AF_INET6 dump
    assert_eq!(runs[0].1.dumps, 5);
    assert_eq!(runs[1].1.dumps, 1);
    assert_eq!(ex.kernel_filter_works(), Some(true));
}
