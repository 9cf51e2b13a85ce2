//! ctrackd with its WAN watch and its web server: a real reconnect on the
//! lab router fixed by the daemon (with the broken baseline in the same
//! test), and the API served by the daemon (its counters, an event).
#![cfg(all(feature = "web", feature = "wan"))]

mod daemon_common;
mod lab;
mod support;
mod wan_common;

use std::time::{Duration, Instant};

use daemon_common::Daemon;
use lab::{RouterLab, addr, stdout, wait_until};
use wan_common::{ip, keepalive, listener, promote_secondaries, sa, set_postnat};

const A: &str = "10.9.2.1";
const B: &str = "10.9.2.11";

/// Moves the router's WAN from `from` to `to` as a reconnect does: new
/// address added, SNAT rule rewritten, old address removed.
fn reconnect(lab: &RouterLab, from: &str, to: &str) {
    lab.router
        .must(&["ip", "addr", "add", &format!("{to}/24"), "dev", "wan0"]);
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {to}")]);
    lab.router
        .must(&["ip", "addr", "del", &format!("{from}/24"), "dev", "wan0"]);
}

#[test]

fn snat_reconnect_stays_broken_without_ctrackd_and_recovers_with_it() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("dwan");
    promote_secondaries(&lab.router, "wan0");
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {A}")]);
    let srv = listener(&lab.server, sa("0.0.0.0:5000"), true);
    let _ka = keepalive(
        &lab.client,
        sa(&format!("{}:40000", addr::CLIENT)),
        sa(&format!("{}:5000", addr::SERVER)),
    );
    assert!(
        srv.wait_for(ip(A), Instant::now(), Duration::from_secs(5))
            .is_some()
    );

    // baseline: no ctrackd, the keepalive flow keeps its SNAT to A forever
    reconnect(&lab, A, B);
    let changed = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let seen = srv.sources_since(changed);
    assert!(!seen.is_empty(), "the keepalive must keep flowing");
    assert!(
        seen.iter().all(|s| *s == ip(A)),
        "without ctrackd the server keeps seeing the old address: {seen:?}"
    );
    // back to A (the old flow is valid again), then with ctrackd watching
    reconnect(&lab, B, A);
    assert!(
        srv.wait_for(ip(A), Instant::now(), Duration::from_secs(3))
            .is_some()
    );
    let d = Daemon::start_with(
        &lab.router,
        "wan",
        "",
        "WAN {\n  Interface wan0\n  Debounce 300\n  Flush stale\n}\n",
    );
    reconnect(&lab, A, B);
    let changed = Instant::now();
    assert!(
        srv.wait_for(ip(B), changed, Duration::from_secs(2))
            .is_some(),
        "with ctrackd the server must see {B} within 2 s: {:?}\nlog:\n{}",
        srv.sources_since(changed),
        d.log()
    );
    let logged = wait_until(Duration::from_secs(3), || d.log().contains("wan: flushed"));
    assert!(logged, "{}", d.log());
    assert!(
        d.log()
            .contains("wan: watching wan0 (Flush stale, Debounce 300 ms)"),
        "{}",
        d.log()
    );
    let wan = stdout(&d.client(&["-s", "wan"]));
    assert!(wan.contains("wan0"), "{wan}");
    let all = stdout(&d.client(&["-s"]));
    assert!(
        all.contains("cache internal:") && all.contains("wan0"),
        "{all}"
    );
}

#[test]

fn web_api_served_by_ctrackd() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("dweb");
    lab.ping(addr::SERVER);
    let d = Daemon::start_with(
        &lab.router,
        "web",
        "",
        "Web {\n  Address 127.0.0.1\n  Port 8077\n}\n",
    );
    let curl = |path: &str| {
        stdout(&lab.router.run(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:8077{path}"),
        ]))
    };
    let up = wait_until(Duration::from_secs(5), || !curl("/api/v1/stats").is_empty());
    assert!(up, "web not answering; log:\n{}", d.log());
    let stats: serde_json::Value = serde_json::from_str(&curl("/api/v1/stats")).unwrap();
    assert!(
        stats["cache"]["internal"]["active"].as_u64().is_some(),
        "the daemon's own counters: {stats}"
    );
    let list: serde_json::Value = serde_json::from_str(&curl("/api/v1/connections")).unwrap();
    assert_eq!(
        list["total"].as_u64().unwrap(),
        stdout(&lab.router.conntrack(&["-C"]))
            .trim()
            .parse::<u64>()
            .unwrap()
    );
    let metrics = curl("/metrics");
    assert!(
        metrics.contains("ctrack_cache_internal_active"),
        "{metrics}"
    );
    // an event through the daemon's event reader reaches the stream
    let sse = lab.router.spawn(&[
        "curl",
        "-s",
        "-N",
        "--max-time",
        "4",
        "http://127.0.0.1:8077/api/v1/events",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    lab.router.must(&[
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "7.7.7.7",
        "-d",
        "8.8.8.8",
        "--sport",
        "1",
        "--dport",
        "2",
        "-t",
        "60",
    ]);
    let out = sse.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("7.7.7.7"), "SSE stream: {text}");
    assert!(d.log().contains("web: listening on http://127.0.0.1:8077/"));
}
