//! init/openwrt/ctrack.hotplug: shellcheck-clean POSIX sh, and in a lab
//! router under BusyBox ash and dash it remembers the WAN addresses,
//! flushes the stale flows with `ctrack flush-wan` after a reconnect, and
//! stays out of the way when ctrackd runs. `uci` is a small stand-in
//! reading a file (OpenWrt's config tool is not on Debian); everything
//! else (ip, the kernel table, ctrack) is real.

#![cfg(feature = "wan")]

mod lab;
mod support;
mod wan_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{Netns, RouterLab, stderr};
use support::TempDir;
use wan_common::*;

const A: &str = "10.9.2.1";
const B: &str = "10.9.2.3";
const C: &str = "10.9.2.4";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("init/openwrt/ctrack.hotplug")
}

/// Fails under CI when a tool is missing, else says why the test skips.
fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is needed (make deps installs it)");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

#[test]
fn shellcheck_is_clean() {
    if !have("shellcheck") {
        return;
    }
    let o = lab::run(Command::new("shellcheck").args(["-s", "sh"]).arg(script()));
    assert!(o.status.success(), "{}{}", lab::stdout(&o), stderr(&o));
}

/// A scratch directory with `uci` and `ctrack` on a PATH of their own.
struct Env {
    dir: TempDir,
}

impl Env {
    fn new(tag: &str, uci: &str) -> Env {
        let dir = TempDir::new(&format!("hotplug-{tag}"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("uci.conf"), uci).unwrap();
        let fake = "#!/bin/sh\n\
             # stand-in for OpenWrt's uci: `uci -q get ctrack.wan.KEY`\n\
             [ \"$1\" = -q ] && shift\n\
             [ \"$1\" = get ] || exit 1\n\
             v=$(grep \"^$2=\" \"$UCI_FILE\" | cut -d= -f2-)\n\
             [ -n \"$v\" ] || exit 1\n\
             echo \"$v\"\n";
        let uci = dir.join("bin/uci");
        std::fs::write(&uci, fake).unwrap();
        std::fs::set_permissions(&uci, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(lab::ctrack_bin(), dir.join("bin/ctrack")).unwrap();
        Env { dir }
    }

    /// Runs the hook in `ns` with `shell` and the netifd variables.
    fn hook(&self, ns: &Netns, shell: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut argv: Vec<String> = vec!["env".into(), "-i".into(), format!("PATH={path}")];
        argv.push(format!("UCI_FILE={}", self.dir.join("uci.conf").display()));
        argv.push(format!(
            "CTRACK_STATE_DIR={}",
            self.dir.join("state").display()
        ));
        argv.push(format!(
            "CTRACK_CTL={}",
            self.dir.join("ctrackd.ctl").display()
        ));
        argv.push("CTRACK_LOG=stderr".into());
        for (k, v) in vars {
            argv.push(format!("{k}={v}"));
        }
        argv.extend(shell.iter().map(|s| s.to_string()));
        argv.push(script().display().to_string());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let o = ns.run(&argv);
        assert!(o.status.success(), "hook failed: {}", stderr(&o));
        o
    }

    fn state(&self, iface: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("state").join(format!("{iface}.addr")))
            .ok()
            .map(|s| {
                let mut v: Vec<&str> = s.split_whitespace().collect();
                v.sort();
                v.join(" ")
            })
    }
}

fn readdress(router: &Netns, from: &str, to: &str) {
    router.must(&["ip", "addr", "add", &format!("{to}/24"), "dev", "wan0"]);
    set_postnat(router, &[&format!("oifname \"wan0\" snat ip to {to}")]);
    router.must(&["ip", "addr", "del", &format!("{from}/24"), "dev", "wan0"]);
}

fn reconnect_flow(shell: &[&str], tag: &str) {
    let lab = RouterLab::new(tag);
    promote_secondaries(&lab.router, "wan0");
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {A}")]);
    let env = Env::new(tag, "ctrack.wan.enabled=1\nctrack.wan.interface=wan wan6\n");
    let up = [("ACTION", "ifup"), ("INTERFACE", "wan"), ("DEVICE", "wan0")];
    let update = [
        ("ACTION", "ifupdate"),
        ("INTERFACE", "wan"),
        ("DEVICE", "wan0"),
        ("IFUPDATE_ADDRESSES", "1"),
    ];

    // first ifup after boot: remember only
    env.hook(&lab.router, shell, &up);
    assert_eq!(
        env.state("wan").as_deref(),
        Some(&*format!("{A} fd09:2::1"))
    );

    let srv = listener(&lab.server, sa("0.0.0.0:5000"), true);
    let _ka = keepalive(&lab.client, sa("10.9.1.2:40000"), sa("10.9.2.2:5000"));
    assert!(
        srv.wait_for(ip(A), Instant::now(), Duration::from_secs(5))
            .is_some()
    );

    // events that are not ours change nothing
    for vars in [
        &[("ACTION", "ifdown"), ("INTERFACE", "wan")][..],
        &[("ACTION", "ifup"), ("INTERFACE", "lan"), ("DEVICE", "lan0")][..],
        &[
            ("ACTION", "ifupdate"),
            ("INTERFACE", "wan"),
            ("DEVICE", "wan0"),
        ][..],
    ] {
        let o = env.hook(&lab.router, shell, vars);
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
    }
    assert!(env.state("lan").is_none());

    // the ISP reconnects with B: the hook flushes the flow stuck on A
    readdress(&lab.router, A, B);
    let o = env.hook(&lab.router, shell, &update);
    let fixed = Instant::now();
    assert_eq!(
        stderr(&o),
        "ctrack: wan (wan0): lost 10.9.2.1: 1 stale flow deleted\n"
    );
    assert!(
        srv.wait_for(ip(B), fixed, Duration::from_secs(2)).is_some(),
        "{:?}",
        srv.sources_since(fixed)
    );
    assert_eq!(
        env.state("wan").as_deref(),
        Some(&*format!("{B} fd09:2::1"))
    );

    // a repeated ifupdate with the same addresses does nothing
    let o = env.hook(&lab.router, shell, &update);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));

    // with ctrackd running (its socket and its process), the hook leaves
    // the flush to it and only remembers
    let ctl = std::os::unix::net::UnixListener::bind(env.dir.join("ctrackd.ctl")).unwrap();
    let fake_daemon = env.dir.join("ctrackd");
    std::fs::copy("/bin/sleep", &fake_daemon).unwrap();
    let mut daemon = Command::new(&fake_daemon).arg("30").spawn().unwrap();
    readdress(&lab.router, B, C);
    let o = env.hook(&lab.router, shell, &update);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert_eq!(
        env.state("wan").as_deref(),
        Some(&*format!("{C} fd09:2::1"))
    );
    let listing = lab::stdout(
        &lab.router
            .conntrack(&["-L", "-p", "udp", "--dport", "5000"]),
    );
    assert!(
        listing.contains(&format!("dst={B} ")),
        "left for ctrackd: {listing}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    drop(ctl);
}

#[test]
fn hook_under_busybox_ash() {
    if !lab::can_run() || !have("busybox") {
        return;
    }
    reconnect_flow(&["busybox", "sh"], "whb");
}

#[test]
fn hook_under_dash() {
    if !lab::can_run() || !have("dash") {
        return;
    }
    reconnect_flow(&["dash"], "whd");
}

#[test]
fn disabled_or_other_mode() {
    if !lab::can_run() || !have("busybox") {
        return;
    }
    let lab = RouterLab::new("whx");
    promote_secondaries(&lab.router, "wan0");
    set_postnat(&lab.router, &[&format!("oifname \"wan0\" snat ip to {A}")]);
    lab.udp("10.9.2.2", 5001);
    lab.udp("10.9.1.1", 5003);
    let update = [
        ("ACTION", "ifupdate"),
        ("INTERFACE", "wan"),
        ("DEVICE", "wan0"),
        ("IFUPDATE_ADDRESSES", "1"),
    ];
    // disabled: not even remembered
    let env = Env::new("whx0", "ctrack.wan.enabled=0\n");
    env.hook(&lab.router, &["busybox", "sh"], &update);
    assert!(env.state("wan").is_none());
    // all-wan on a gained address only (nothing lost): the WAN flows go,
    // the LAN-only one stays
    let env = Env::new("whx1", "ctrack.wan.flush=all-wan\n");
    env.hook(&lab.router, &["busybox", "sh"], &update);
    lab.router
        .must(&["ip", "addr", "add", &format!("{B}/24"), "dev", "wan0"]);
    let o = env.hook(&lab.router, &["busybox", "sh"], &update);
    assert_eq!(stderr(&o), "ctrack: wan (wan0): 1 WAN flow deleted\n");
    let listing = lab::stdout(&lab.router.conntrack(&["-L"]));
    assert!(listing.contains("dst=10.9.1.1 "), "{listing}");
}
