//! A failover lab for the sync tests at daemon level: a client and a
//! server on shared LAN and WAN segments (Linux bridges, each in its own
//! namespace), two routers on both segments plus a dedicated sync link,
//! and the virtual gateway addresses keepalived would move: the LAN VIP
//! the client routes through and the WAN VIP both routers SNAT to.
//!
//! The routers make committing matter: `nf_conntrack_tcp_loose=0` and
//! `ct state invalid drop` (in forward, and in input so that a packet for
//! the WAN VIP without an entry is not answered with a RST by the router's
//! own stack), so a mid-stream TCP packet without a conntrack entry dies.
//!
//! Also: ctrackd configs for either side of the sync link, a TCP echo
//! pair living in the lab namespaces, and table comparisons in the JSON
//! of `ctrack -L -o json` / `ctrackd -e -o json`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ctrack::netlink::socket::in_netns;

use crate::daemon_common::Daemon;
use crate::lab::{self, Netns, stdout, veth, wait_until};

/// LAN VIP (the client's gateway).
pub const LAN_VIP: &str = "10.20.1.1";
/// WAN VIP (both routers SNAT to it).
pub const WAN_VIP: &str = "10.20.2.1";
/// LAN VIP, IPv6.
pub const LAN_VIP6: &str = "fd20:1::1";
/// WAN VIP, IPv6.
pub const WAN_VIP6: &str = "fd20:2::1";
/// The client.
pub const CLIENT: &str = "10.20.1.10";
/// The client, IPv6.
pub const CLIENT6: &str = "fd20:1::10";
/// The server.
pub const SERVER: &str = "10.20.2.10";
/// The server, IPv6.
pub const SERVER6: &str = "fd20:2::10";
/// Sync link addresses and interface: the same as tests/synclab, so its
/// `Conntrackd` helper runs on this lab too.
pub use crate::synclab::{PORT, PRIMARY_SYNC, STANDBY_SYNC, SYNC_IF, Side};

/// One of the two routers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    /// Router A, the primary at the start.
    A,
    /// Router B, the standby at the start.
    B,
}

/// client -- LAN bridge -- routers A and B -- WAN bridge -- server, and
/// A <-> B on `sync0`.
pub struct HaLab {
    /// The client (LAN).
    pub client: Netns,
    /// The server (WAN).
    pub server: Netns,
    /// Router A (primary at the start; sync address 10.9.9.1).
    pub a: Netns,
    /// Router B (standby at the start; sync address 10.9.9.2).
    pub b: Netns,
    /// The LAN segment: a bridge.
    pub lan: Netns,
    /// The WAN segment: a bridge.
    pub wan: Netns,
}

fn bridge(ns: &Netns) {
    ns.must(&["ip", "link", "add", "br0", "type", "bridge"]);
    ns.must(&["ip", "link", "set", "br0", "up"]);
}

fn port(sw: &Netns, port: &str, other: &Netns, other_if: &str) {
    veth(sw, port, other, other_if);
    sw.must(&["ip", "link", "set", port, "master", "br0"]);
}

fn addr(ns: &Netns, a: &str, dev: &str) {
    let mut argv = vec!["ip", "addr", "add", a, "dev", dev];
    if a.contains(':') {
        argv.push("nodad");
    }
    ns.must(&argv);
}

/// The routers' ruleset: SNAT to the WAN VIP, invalid packets dropped
/// (and counted).
pub const ROUTER_NFT: &str = "table inet ha {\n\
     chain forward { type filter hook forward priority 0; policy accept; ct state invalid counter name fwd_invalid drop; }\n\
     chain input { type filter hook input priority 0; policy accept; ct state invalid counter name in_invalid drop; }\n\
     counter fwd_invalid { }\n\
     counter in_invalid { }\n\
     chain postnat { type nat hook postrouting priority 100; oifname \"wan0\" meta nfproto ipv4 snat ip to 10.20.2.1; oifname \"wan0\" meta nfproto ipv6 snat ip6 to fd20:2::1; }\n\
     }\n";

impl HaLab {
    /// Builds the lab; router A holds the VIPs.
    pub fn new(tag: &str) -> HaLab {
        let lan = Netns::new(&format!("{tag}l"));
        let wan = Netns::new(&format!("{tag}w"));
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        bridge(&lan);
        bridge(&wan);
        port(&lan, "pc", &client, "c0");
        port(&lan, "pa", &a, "lan0");
        port(&lan, "pb", &b, "lan0");
        port(&wan, "ps", &server, "s0");
        port(&wan, "pa", &a, "wan0");
        port(&wan, "pb", &b, "wan0");
        veth(&a, SYNC_IF, &b, SYNC_IF);
        addr(&client, &format!("{CLIENT}/24"), "c0");
        addr(&client, &format!("{CLIENT6}/64"), "c0");
        addr(&server, &format!("{SERVER}/24"), "s0");
        addr(&server, &format!("{SERVER6}/64"), "s0");
        client.must(&["ip", "route", "add", "default", "via", LAN_VIP]);
        client.must(&["ip", "-6", "route", "add", "default", "via", LAN_VIP6]);
        server.must(&["ip", "route", "add", "default", "via", WAN_VIP]);
        server.must(&["ip", "-6", "route", "add", "default", "via", WAN_VIP6]);
        for (r, n, sync) in [(&a, 2, PRIMARY_SYNC), (&b, 3, STANDBY_SYNC)] {
            addr(r, &format!("10.20.1.{n}/24"), "lan0");
            addr(r, &format!("fd20:1::{n}/64"), "lan0");
            addr(r, &format!("10.20.2.{n}/24"), "wan0");
            addr(r, &format!("fd20:2::{n}/64"), "wan0");
            addr(r, &format!("{sync}/24"), SYNC_IF);
            r.sysctl(&[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.netfilter.nf_conntrack_tcp_loose=0",
                "net.netfilter.nf_conntrack_acct=1",
                "net.netfilter.nf_conntrack_timestamp=1",
            ]);
            r.nft(ROUTER_NFT);
        }
        let l = HaLab {
            client,
            server,
            a,
            b,
            lan,
            wan,
        };
        l.activate(Router::A);
        l
    }

    /// The router's namespace.
    pub fn router(&self, r: Router) -> &Netns {
        match r {
            Router::A => &self.a,
            Router::B => &self.b,
        }
    }

    /// Moves the VIPs to `to` as keepalived does on a failover (the other
    /// router loses them), and makes the client and server forget the old
    /// gateway's MAC (keepalived sends gratuitous ARP/unsolicited NA).
    pub fn activate(&self, to: Router) {
        let from = match to {
            Router::A => &self.b,
            Router::B => &self.a,
        };
        for (vip, dev) in [
            (format!("{LAN_VIP}/24"), "lan0"),
            (format!("{LAN_VIP6}/64"), "lan0"),
            (format!("{WAN_VIP}/24"), "wan0"),
            (format!("{WAN_VIP6}/64"), "wan0"),
        ] {
            from.run(&["ip", "addr", "del", &vip, "dev", dev]);
            addr(self.router(to), &vip, dev);
        }
        for ns in [&self.client, &self.server] {
            ns.must(&["ip", "neigh", "flush", "all"]);
            ns.must(&["ip", "-6", "neigh", "flush", "all"]);
        }
    }

    /// Packets the router dropped as `ct state invalid` (forward + input).
    pub fn invalid_drops(&self, r: Router) -> u64 {
        let o = stdout(
            &self
                .router(r)
                .must(&["nft", "list", "counters", "table", "inet", "ha"]),
        );
        o.lines()
            .filter_map(|l| l.trim().strip_prefix("packets "))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The ctrackd `Filter` and `Sync` blocks for one side of the sync link
/// (FTFW over UDP unicast). `mode_extra` goes into the `Mode FTFW` block
/// (e.g. `PurgeTimeout 1`), `blocks` after `Sync` (e.g. `Auth { ... }`).
pub fn ctrackd_blocks(side: Side, mode_extra: &str, blocks: &str) -> (String, String) {
    ctrackd_mode_blocks(
        side,
        &format!("Mode FTFW {{\n    {mode_extra}\n  }}"),
        blocks,
    )
}

/// The same with a whole `Mode` block (e.g. `Mode NOTRACK { ... }`).
pub fn ctrackd_mode_blocks(side: Side, mode: &str, blocks: &str) -> (String, String) {
    let (me, peer) = side.addrs();
    let general = "  Filter From Userspace {\n    Address Ignore {\n      IPv4_address 127.0.0.1\n      IPv6_address ::1\n      IPv4_address 10.9.9.0/24\n    }\n  }\n".to_string();
    let sync = format!(
        "Sync {{\n  {mode}\n  UDP Default {{\n    IPv4_address {me}\n    IPv4_Destination_Address {peer}\n    Port {PORT}\n    Interface {SYNC_IF}\n    SndSocketBuffer 1249280\n    RcvSocketBuffer 1249280\n    Checksum on\n  }}\n}}\n{blocks}\n"
    );
    (general, sync)
}

/// Starts ctrackd on one side of the sync link.
pub fn start_ctrackd<'a>(
    ns: &'a Netns,
    tag: &str,
    side: Side,
    mode_extra: &str,
    blocks: &str,
) -> Daemon<'a> {
    let (g, s) = ctrackd_blocks(side, mode_extra, blocks);
    Daemon::start_with(ns, tag, &g, &s)
}

/// The external cache of a ctrackd (`-e -o json`) as flow keys, of the
/// flows `keep` accepts.
pub fn external_keys(d: &Daemon, keep: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<String> {
    let o = d.client(&["-e", "-o", "json"]);
    assert!(o.status.success(), "ctrackd -e: {}", lab::stderr(&o));
    json_keys(&stdout(&o), keep)
}

/// The namespace's kernel table as flow keys, of the flows `keep`
/// accepts. Read with Debian's `conntrack -L`, an oracle independent of
/// ctrack's own code.
pub fn kernel_keys(ns: &Netns, keep: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for f in ["ipv4", "ipv6"] {
        let o = ns.conntrack(&["-L", "-f", f]);
        assert!(o.status.success(), "conntrack -L: {}", lab::stderr(&o));
        for line in stdout(&o).lines().filter(|l| !l.trim().is_empty()) {
            let v = conntrack_line(f, line);
            if keep(&v) {
                all.insert(flow_key(&v));
            }
        }
    }
    all
}

/// A `conntrack -L` line as the JSON object ctrack would print for it
/// (the fields [`flow_key`] reads).
pub fn conntrack_line(family: &str, line: &str) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut words = line.split_whitespace();
    let _name = words.next();
    let protonum: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let mut top = Map::new();
    let mut tuples: Vec<Map<String, Value>> = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some(("src", v)) => {
                let mut t = Map::new();
                t.insert("src".into(), json!(v));
                tuples.push(t);
            }
            Some((k @ ("dst" | "sport" | "dport" | "type" | "code" | "id"), v)) => {
                if let Some(t) = tuples.last_mut() {
                    let val = if k == "dst" {
                        json!(v)
                    } else {
                        json!(v.parse::<u64>().unwrap_or(0))
                    };
                    t.insert(k.into(), val);
                }
            }
            Some((k @ ("mark" | "zone"), v)) => {
                top.insert(k.into(), json!(v.parse::<u64>().unwrap_or(0)));
            }
            Some(_) => {}
            None if tuples.is_empty()
                && w.len() > 1
                && w.chars().all(|c| c.is_ascii_uppercase() || c == '_') =>
            {
                top.insert("state".into(), json!(w));
            }
            None => {}
        }
    }
    top.insert("layer3".into(), json!(family));
    top.insert("protonum".into(), json!(protonum));
    let mut it = tuples.into_iter();
    top.insert("orig".into(), Value::Object(it.next().unwrap_or_default()));
    top.insert("reply".into(), Value::Object(it.next().unwrap_or_default()));
    Value::Object(top)
}

/// Flows sync replicates: not on the sync link, not GRE (conntrackd does
/// not sync GRE keys).
pub fn replicated(v: &serde_json::Value) -> bool {
    let on_link = |t: &serde_json::Value| {
        ["src", "dst"].iter().any(|k| {
            t[k].as_str()
                .is_some_and(|a| a.starts_with("10.9.9.") || a == "127.0.0.1" || a == "::1")
        })
    };
    !on_link(&v["orig"]) && v["protonum"] != 47
}

/// One flow's identity in JSON terms: family, protocol, both tuples (so
/// NAT shows), zone, mark and state; no timeouts, counters or ids.
pub fn flow_key(v: &serde_json::Value) -> String {
    let tuple = |t: &serde_json::Value| {
        ["src", "dst", "sport", "dport", "type", "code", "id"]
            .iter()
            .filter_map(|k| {
                t.get(*k).map(|x| match x {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let num = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    format!(
        "{} {} [{}] [{}] zone={} mark={} state={}",
        v["layer3"].as_str().unwrap_or("?"),
        v["protonum"],
        tuple(&v["orig"]),
        tuple(&v["reply"]),
        num("zone"),
        num("mark"),
        v["state"].as_str().unwrap_or("-"),
    )
}

/// The keys of the ndjson listing's flows that `keep` accepts.
pub fn json_keys(text: &str, keep: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| keep(v))
        .map(|v| flow_key(&v))
        .collect()
}

/// The original-direction part of a key (what `conntrackd -e` lines show).
pub fn orig_needle(key: &str) -> String {
    // "<l3> <proto> [orig] [reply] ..." -> the words of the orig tuple
    key.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("")
        .to_string()
}

/// Waits until `get()` equals `want`; panics with both sets and `ctx()`.
pub fn wait_same(
    what: &str,
    timeout: Duration,
    want: &dyn Fn() -> BTreeSet<String>,
    get: &dyn Fn() -> BTreeSet<String>,
    ctx: &dyn Fn() -> String,
) {
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let ok = wait_until(timeout, || {
        let w = want();
        let g = get();
        let same = !w.is_empty() && g == w;
        last = (w, g);
        same
    });
    if !ok {
        let (w, g) = last;
        panic!(
            "{what}: not equal after {timeout:?} ({} wanted, {} got)\nmissing: {:#?}\nextra: {:#?}\n{}",
            w.len(),
            g.len(),
            w.difference(&g).collect::<Vec<_>>(),
            g.difference(&w).collect::<Vec<_>>(),
            ctx()
        );
    }
}

/// A TCP echo server in a namespace: echoes every byte back.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The peer address of each accepted connection (the SNAT address).
    pub peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl EchoServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> EchoServer {
        let l = in_netns(&ns.name, || TcpListener::bind(addr)).expect("bind echo server");
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (st, pe) = (stop.clone(), peers.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, from)) => {
                        pe.lock().unwrap().push(from);
                        let st = st.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_millis(100)))
                                .unwrap();
                            let mut buf = [0u8; 4096];
                            while !st.load(Ordering::Relaxed) {
                                match s.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        EchoServer {
            stop,
            handle: Some(handle),
            peers,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A long-lived TCP connection from a namespace, talking to an
/// [`EchoServer`].
pub struct EchoClient {
    /// The connection.
    pub sock: TcpStream,
    pending: Vec<u8>,
}

impl EchoClient {
    /// Connects from `ns` to `to`.
    pub fn connect(ns: &Netns, to: SocketAddr) -> EchoClient {
        let sock = in_netns(&ns.name, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .expect("connect through the routers");
        sock.set_nodelay(true).unwrap();
        EchoClient {
            sock,
            pending: Vec::new(),
        }
    }

    /// Sends `msg` (a line) without waiting for the echo.
    pub fn send(&mut self, msg: &str) {
        self.sock.write_all(msg.as_bytes()).expect("send");
        self.pending.extend_from_slice(msg.as_bytes());
    }

    /// Waits up to `timeout` for every byte sent so far to come back;
    /// true when it did.
    pub fn echoed(&mut self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.pending.is_empty() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => {
                    assert!(
                        self.pending.starts_with(&buf[..n]),
                        "echo out of order: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                    self.pending.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(e) => panic!("the connection broke: {e}"),
            }
        }
        true
    }

    /// A round trip: send `msg` and wait for its echo.
    pub fn round_trip(&mut self, msg: &str, timeout: Duration) -> bool {
        self.send(msg);
        self.echoed(timeout)
    }
}

impl Drop for EchoClient {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// A `ctrackd` name for the binary (the notify script runs `$CTRACKD`,
/// and the role comes from argv[0]): a symlink in `dir`.
pub fn ctrackd_link(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("ctrackd");
    if !p.exists() {
        std::os::unix::fs::symlink(lab::ctrack_bin(), &p).expect("symlink ctrackd");
    }
    p
}

/// A directory with a `logger` that fails, so the notify script's
/// messages go to its stderr.
fn fake_logger(dir: &Path) -> std::path::PathBuf {
    let d = dir.join("bin");
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("logger");
    std::fs::write(&p, "#!/bin/sh\nexit 1\n").unwrap();
    lab::must(std::process::Command::new("chmod").arg("+x").arg(&p));
    d
}

/// Runs init/keepalived/ctrack-notify.sh for `d` with `state`
/// (`primary`, `backup`, `fault`), as keepalived would.
pub fn notify(d: &Daemon, state: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("init/keepalived/ctrack-notify.sh");
    let o = lab::run(
        std::process::Command::new("sh")
            .arg(script)
            .arg(state)
            .env("CTRACKD", ctrackd_link(d.dir.path()))
            .env("CTRACKD_CONF", d.conf())
            .env("CTRACKD_LOCK", d.dir.join("lock"))
            // errors reach stderr, not the host's syslog
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    fake_logger(d.dir.path()).display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            // the daemon runs: never start another (outside the netns)
            .env("CTRACKD_START", "false"),
    );
    assert!(
        o.status.success(),
        "notify {state}: {}{}",
        stdout(&o),
        lab::stderr(&o)
    );
    assert!(
        !lab::stderr(&o).contains("ERROR"),
        "notify {state}: {}\nlog:\n{}",
        lab::stderr(&o),
        d.log()
    );
    o
}
