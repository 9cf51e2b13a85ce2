//! `ctrack flush-wan` on a lab router, as a real ISP reconnect: the WAN
//! address changes from A to B (B added, A deleted, the SNAT rule
//! rewritten) while a client keeps a UDP flow alive every 100 ms.
//! Each test first shows the broken state without ctrack (the server
//! keeps seeing A), then that `flush-wan --old-address A` fixes it.

#![cfg(feature = "wan")]

mod lab;
mod support;
mod wan_common;

use std::time::{Duration, Instant};

use lab::{Netns, RouterLab, stderr, stdout};
use support::flowline::TUPLES;
use wan_common::*;

const A: &str = "10.9.2.1"; // the lab's router WAN address
const B: &str = "10.9.2.3"; // the address after the reconnect
const SERVER: &str = "10.9.2.2";
const CLIENT: &str = "10.9.1.2";

/// Add B, rewrite the SNAT rule to B, delete A: what a reconnect script
/// (or netifd and firewall4) does.
fn reconnect(router: &Netns) {
    router.must(&["ip", "addr", "add", &format!("{B}/24"), "dev", "wan0"]);
    set_postnat(router, &[&format!("oifname \"wan0\" snat ip to {B}")]);
    router.must(&["ip", "addr", "del", &format!("{A}/24"), "dev", "wan0"]);
}

/// The baseline: for 2 s after the change the server sees only A.
fn assert_stays_broken(srv: &Listener, changed: Instant) {
    std::thread::sleep(Duration::from_millis(2300));
    let after = srv.sources_since(changed + Duration::from_millis(300));
    assert!(
        after.len() >= 10,
        "keepalives must keep arriving: {after:?}"
    );
    assert!(
        after.iter().all(|s| *s == ip(A)),
        "without ctrack the flow stays on the old address: {after:?}"
    );
}

#[test]
fn snat_keepalive_stays_on_old_address_until_flush_wan() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wfs");
    promote_secondaries(&lab.router, "wan0");
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {A}")]);
    let srv = listener(&lab.server, sa("0.0.0.0:5000"), true);
    let _ka = keepalive(
        &lab.client,
        sa(&format!("{CLIENT}:40000")),
        sa(&format!("{SERVER}:5000")),
    );
    let t0 = Instant::now();
    assert!(srv.wait_for(ip(A), t0, Duration::from_secs(5)).is_some());

    reconnect(&lab.router);
    let changed = Instant::now();
    assert_stays_broken(&srv, changed);

    let o = lab.router.ctrack(&["flush-wan", "--old-address", A]);
    let fixed = Instant::now();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "ctrack: 1 stale flow deleted\n");
    // the deleted flow is printed as conntrack -D prints it
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("udp      17 ") && out.contains(&format!("dst={A} ")),
        "{out}"
    );
    let seen_b = srv.wait_for(ip(B), fixed, Duration::from_secs(2));
    assert!(
        seen_b.is_some(),
        "server must see {B} within 2 s: {:?}",
        srv.sources_since(fixed)
    );
    // and the keepalive's flow is not stale any more (a pong the server
    // sent to A before the flush may still make an entry of its own)
    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--dry-run"]);
    assert!(
        !stdout(&o).contains(&format!("src={CLIENT} ")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn dnat_port_forward_reply_direction_moves_to_new_address() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wfd");
    promote_secondaries(&lab.router, "wan0");
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {A}")]);
    add_prenat(
        &lab.router,
        &format!("iifname \"wan0\" udp dport 5060 dnat ip to {CLIENT}:5060"),
    );
    // the remote peer opens the port forward: remote:7000 -> A:5060 -> client:5060
    let lan_srv = listener(&lab.client, sa("0.0.0.0:5060"), false);
    let remote = listener(&lab.server, sa("0.0.0.0:7000"), false);
    remote
        .sock
        .send_to(b"register", sa(&format!("{A}:5060")))
        .unwrap();
    assert!(
        lan_srv
            .wait_for(
                ip(SERVER),
                Instant::now() - Duration::from_secs(1),
                Duration::from_secs(3)
            )
            .is_some()
    );
    // the LAN server keeps sending to the peer through the forward's
    // reply direction (from its port 5060)
    let _ka = keepalive_on(lan_srv.sock.clone(), sa(&format!("{SERVER}:7000")));
    assert!(
        remote
            .wait_for(ip(A), Instant::now(), Duration::from_secs(3))
            .is_some()
    );
    let listing = stdout(
        &lab.router
            .conntrack(&["-L", "-p", "udp", "--dport", "5060"]),
    );
    assert!(
        listing.contains(&format!("dst={A} sport=7000 dport=5060")),
        "{listing}"
    );

    reconnect(&lab.router);
    let changed = Instant::now();
    assert_stays_broken(&remote, changed);

    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--new-address", B]);
    let fixed = Instant::now();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "ctrack: 1 stale flow deleted\n");
    assert!(
        remote
            .wait_for(ip(B), fixed, Duration::from_secs(2))
            .is_some(),
        "{:?}",
        remote.sources_since(fixed)
    );
}

/// A second WAN (wan1 to a second server) with its own SNAT address.
fn add_second_wan(lab: &RouterLab) -> Netns {
    let s2 = Netns::new("wfs2");
    lab::veth(&s2, "s0", &lab.router, "wan1");
    s2.must(&["ip", "addr", "add", "10.9.3.2/24", "dev", "s0"]);
    s2.must(&["ip", "route", "add", "default", "via", "10.9.3.1"]);
    lab.router
        .must(&["ip", "addr", "add", "10.9.3.1/24", "dev", "wan1"]);
    s2
}

#[test]
fn dry_run_lists_exactly_the_stale_flows_and_the_rest_is_untouched() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wfx");
    let _s2 = add_second_wan(&lab);
    promote_secondaries(&lab.router, "wan0");
    set_postnat(
        &lab.router,
        &[
            &format!("oifname \"wan0\" meta nfproto ipv4 snat ip to {A}"),
            "oifname \"wan0\" meta nfproto ipv6 masquerade",
            "oifname \"wan1\" snat ip to 10.9.3.1",
        ],
    );
    add_prenat(
        &lab.router,
        &format!("iifname \"wan0\" udp dport 5060 dnat ip to {CLIENT}:5060"),
    );
    // stale: SNAT to A, the router's own flow from A, a port forward on A
    lab.udp(SERVER, 5001);
    lab.router.sh(&format!(
        "echo x | nc -u -w 1 -q 0 -s {A} {SERVER} 5004 >/dev/null 2>&1 || true"
    ));
    lab.server.sh(&format!(
        "echo x | nc -u -w 1 -q 0 {A} 5060 >/dev/null 2>&1 || true"
    ));
    // not stale: another WAN, LAN-only, IPv6
    lab.udp("10.9.3.2", 5002);
    lab.udp("10.9.1.1", 5003);
    lab.udp("fd09:2::2", 5005);
    lab.ping("fd09:2::2");

    reconnect(&lab.router);
    let before = stdout(&lab.router.conntrack(&["-L"]));
    let expected = lines_with(&before, A);
    assert_eq!(expected.len(), 3, "{before}");
    let others: Vec<String> = before
        .lines()
        .filter(|l| lines_with(l, A).is_empty())
        .map(|l| TUPLES.apply(l))
        .collect();
    assert!(others.len() >= 4, "{before}");

    for extra in [&[][..], &["--kernel-filter"][..]] {
        let mut args = vec![
            "flush-wan",
            "--old-address",
            A,
            "--interface",
            "wan0",
            "--dry-run",
        ];
        args.extend_from_slice(extra);
        let o = lab.router.ctrack(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "ctrack: 3 stale flows would be deleted (dry run)\n"
        );
        let mut listed: Vec<String> = stdout(&o).lines().map(|l| TUPLES.apply(l)).collect();
        listed.sort();
        assert_eq!(listed, expected, "{args:?}");
    }
    // ndjson: one object per stale flow
    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--dry-run", "-o", "json"]);
    let objs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 3);
    for v in &objs {
        let s = v.to_string();
        assert!(s.contains(&format!("\"{A}\"")), "{s}");
    }
    // a dry run deletes nothing
    let after_dry = stdout(&lab.router.conntrack(&["-L"]));
    assert_eq!(lines_with(&after_dry, A), expected);

    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--interface", "wan0"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o), "ctrack: 3 stale flows deleted\n");
    let after = stdout(&lab.router.conntrack(&["-L"]));
    assert!(lines_with(&after, A).is_empty(), "{after}");
    let remaining: Vec<String> = after.lines().map(|l| TUPLES.apply(l)).collect();
    for o in &others {
        assert!(remaining.contains(o), "{o} must survive: {after}");
    }
}

#[test]
fn address_still_on_the_interface_is_not_stale() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wfk");
    lab.udp(SERVER, 5001);
    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--interface", "wan0"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stderr(&o),
        format!(
            "ctrack: {A} is still on wan0: its flows are not stale\nctrack: 0 stale flows deleted (nothing stale)\n"
        )
    );
    let o = lab
        .router
        .ctrack(&["flush-wan", "--old-address", A, "--interface", "nosuch0"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "ctrack: no interface 'nosuch0'\n");
}

#[test]
fn bad_command_lines_are_refused_clearly() {
    let run = |args: &[&str]| {
        let o = lab::run(std::process::Command::new(lab::ctrack_bin()).args(args));
        (o.status.code(), stderr(&o))
    };
    let (code, err) = run(&["flush-wan"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("ctrack: flush-wan needs --old-address"),
        "{err}"
    );
    let (code, err) = run(&["flush-wan", "--old-address", "10.1.1"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("ctrack: invalid address '10.1.1' for --old-address"),
        "{err}"
    );
    let (code, err) = run(&["flush-wan", "--old-address", "10.1.1.1", "--netns"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--netns"), "{err}");
    let o = lab::run(std::process::Command::new(lab::ctrack_bin()).args(["flush-wan", "--help"]));
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("Usage: ctrack flush-wan"));
}
