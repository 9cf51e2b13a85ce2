//! The namespace test lab: uniquely named network namespaces that are
//! removed when dropped (also when a test panics), a client/router/server
//! lab with nftables masquerade and a DNAT port forward, and helpers to
//! send real traffic and run ctrack and Debian's conntrack tools in them.
//!
//! Tests never touch the host namespace's table, addresses or firewall:
//! everything runs inside namespaces made here.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when this machine can run namespace tests. Without root or
/// network namespaces, fails the test when `CI=true`, else prints why and
/// returns false so the caller can skip.
pub fn can_run() -> bool {
    let why = if unsafe_geteuid() != 0 {
        Some("not running as root")
    } else if !Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        Some("`ip netns` is not available (install iproute2)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("namespace tests need root and network namespaces: {why}");
            }
            eprintln!("skipping namespace test: {why}");
            false
        }
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Path of the ctrack binary under test.
pub fn ctrack_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctrack"))
}

/// Runs a command and returns its output (panics only if it cannot start).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A network namespace owned by a test; deleted (with every process in
/// it) on drop.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name under /var/run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name and loopback up.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ctt-{tag}-{}-{n}", std::process::id());
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, argv: &[&str]) -> Output {
        run(&mut self.cmd(argv))
    }

    /// Runs a command inside the namespace; it must succeed.
    pub fn must(&self, argv: &[&str]) -> Output {
        must(&mut self.cmd(argv))
    }

    /// Runs a shell script inside the namespace; it must succeed.
    pub fn sh(&self, script: &str) -> Output {
        self.must(&["sh", "-c", script])
    }

    /// Starts a background process inside the namespace.
    pub fn spawn(&self, argv: &[&str]) -> Child {
        self.cmd(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
    }

    /// Runs ctrack with `--netns` pointing here.
    pub fn ctrack(&self, args: &[&str]) -> Output {
        run(Command::new(ctrack_bin())
            .arg("--netns")
            .arg(&self.name)
            .args(args))
    }

    /// Runs Debian's conntrack inside the namespace.
    pub fn conntrack(&self, args: &[&str]) -> Output {
        let mut argv = vec!["conntrack"];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// Loads an nftables ruleset.
    pub fn nft(&self, ruleset: &str) {
        use std::io::Write;
        let mut child = self
            .cmd(&["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start nft");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(ruleset.as_bytes())
            .expect("write ruleset");
        let o = child.wait_with_output().expect("nft");
        assert!(
            o.status.success(),
            "nft failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Sets sysctls (`key=value`).
    pub fn sysctl(&self, kv: &[&str]) {
        let mut argv = vec!["sysctl", "-qw"];
        argv.extend_from_slice(kv);
        self.must(&argv);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // kill what still runs inside, then remove the namespace
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Joins two namespaces with a veth pair and names both ends.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    let tmp_a = format!("v{}a", COUNTER.fetch_add(1, Ordering::SeqCst));
    let tmp_b = format!("{tmp_a}b");
    must(Command::new("ip").args([
        "link", "add", &tmp_a, "netns", &a.name, "type", "veth", "peer", "name", &tmp_b, "netns",
        &b.name,
    ]));
    a.must(&["ip", "link", "set", &tmp_a, "name", a_if]);
    b.must(&["ip", "link", "set", &tmp_b, "name", b_if]);
    a.must(&["ip", "link", "set", a_if, "up"]);
    b.must(&["ip", "link", "set", b_if, "up"]);
}

/// Addresses of the standard lab.
pub mod addr {
    /// Client LAN address.
    pub const CLIENT: &str = "10.9.1.2";
    /// Router LAN address.
    pub const ROUTER_LAN: &str = "10.9.1.1";
    /// Router WAN address.
    pub const ROUTER_WAN: &str = "10.9.2.1";
    /// Server address.
    pub const SERVER: &str = "10.9.2.2";
    /// Client IPv6 address.
    pub const CLIENT6: &str = "fd09:1::2";
    /// Router LAN IPv6.
    pub const ROUTER_LAN6: &str = "fd09:1::1";
    /// Router WAN IPv6.
    pub const ROUTER_WAN6: &str = "fd09:2::1";
    /// Server IPv6 address.
    pub const SERVER6: &str = "fd09:2::2";
}

/// client -- router (masquerade on wan0, DNAT wan:2222 -> client:22) -- server.
pub struct RouterLab {
    /// The client namespace (LAN side).
    pub client: Netns,
    /// The router namespace: where the conntrack table under test lives.
    pub router: Netns,
    /// The server namespace (WAN side).
    pub server: Netns,
}

impl RouterLab {
    /// Builds the lab with IPv4 and IPv6, accounting and timestamps on.
    pub fn new(tag: &str) -> RouterLab {
        let client = Netns::new(&format!("{tag}c"));
        let router = Netns::new(&format!("{tag}r"));
        let server = Netns::new(&format!("{tag}s"));
        veth(&client, "c0", &router, "lan0");
        veth(&server, "s0", &router, "wan0");
        use addr::*;
        client.must(&["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", "c0"]);
        client.must(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT6}/64"),
            "dev",
            "c0",
            "nodad",
        ]);
        router.must(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_LAN}/24"),
            "dev",
            "lan0",
        ]);
        router.must(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_LAN6}/64"),
            "dev",
            "lan0",
            "nodad",
        ]);
        router.must(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_WAN}/24"),
            "dev",
            "wan0",
        ]);
        router.must(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_WAN6}/64"),
            "dev",
            "wan0",
            "nodad",
        ]);
        server.must(&["ip", "addr", "add", &format!("{SERVER}/24"), "dev", "s0"]);
        server.must(&[
            "ip",
            "addr",
            "add",
            &format!("{SERVER6}/64"),
            "dev",
            "s0",
            "nodad",
        ]);
        client.must(&["ip", "route", "add", "default", "via", ROUTER_LAN]);
        client.must(&["ip", "-6", "route", "add", "default", "via", ROUTER_LAN6]);
        server.must(&["ip", "route", "add", "default", "via", ROUTER_WAN]);
        server.must(&["ip", "-6", "route", "add", "default", "via", ROUTER_WAN6]);
        router.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.netfilter.nf_conntrack_acct=1",
            "net.netfilter.nf_conntrack_timestamp=1",
        ]);
        router.nft(
            "table inet lab {\n\
             chain forward_filter { type filter hook forward priority 0; policy accept; ct state invalid drop; }\n\
             chain postnat { type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }\n\
             chain prenat { type nat hook prerouting priority -100; iifname \"wan0\" tcp dport 2222 dnat ip to 10.9.1.2:22; }\n\
             }\n",
        );
        RouterLab {
            client,
            router,
            server,
        }
    }

    /// One ICMP echo from the client to `dst` (IPv4 or IPv6).
    pub fn ping(&self, dst: &str) {
        self.client.must(&["ping", "-c", "1", "-W", "2", dst]);
    }

    /// A short TCP exchange from the client to the server's `port` (a
    /// listener is started on the server for it).
    pub fn tcp(&self, dst: &str, port: u16) {
        let p = port.to_string();
        let mut srv = self.server.spawn(&["nc", "-l", "-p", &p]);
        wait_until(Duration::from_secs(3), || {
            let o = self
                .server
                .run(&["ss", "-Htln", &format!("sport = :{port}")]);
            !o.stdout.is_empty()
        });
        self.client.sh(&format!(
            "echo hello | nc -w 1 -q 1 {dst} {port} >/dev/null 2>&1 || true"
        ));
        let _ = srv.kill();
        let _ = srv.wait();
    }

    /// One UDP datagram from the client to `dst:port` (no reply expected).
    pub fn udp(&self, dst: &str, port: u16) {
        self.client.sh(&format!(
            "echo x | nc -u -w 1 -q 0 {dst} {port} >/dev/null 2>&1 || true"
        ));
    }
}

/// Polls `cond` until it holds or the timeout passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Text of an output's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of an output's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One TCP connection from the server to the router's WAN port 2222,
/// which the router forwards to the client's port 22 (the DNAT rule).
pub fn dnat_flow(lab: &RouterLab) {
    let mut srv = lab.client.spawn(&["nc", "-l", "-p", "22"]);
    wait_until(Duration::from_secs(3), || {
        !lab.client
            .run(&["ss", "-Htln", "sport = :22"])
            .stdout
            .is_empty()
    });
    lab.server.sh(&format!(
        "echo hi | nc -w 1 -q 1 {} 2222 >/dev/null 2>&1 || true",
        addr::ROUTER_WAN
    ));
    let _ = srv.kill();
    let _ = srv.wait();
}
