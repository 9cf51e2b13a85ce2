//! Helpers of the WAN tests: UDP endpoints living in lab namespaces
//! (sockets opened inside a namespace stay there; the test process drives
//! them from threads), a keepalive sender like SIP/WireGuard, a listener
//! that records each packet's source, and the reconnect steps.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctrack::netlink::socket::in_netns;

use crate::lab::Netns;
use crate::support::flowline::TUPLES;

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_in(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    in_netns(&ns.name, || UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name))
}

/// Sends a datagram every 100 ms until dropped.
pub struct Keepalive {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The socket (for receiving what the peer sends back, if wanted).
    pub sock: Arc<UdpSocket>,
}

/// Starts a keepalive from `ns` (bound to `from`) to `to`.
pub fn keepalive(ns: &Netns, from: SocketAddr, to: SocketAddr) -> Keepalive {
    keepalive_on(Arc::new(udp_in(ns, from)), to)
}

/// Starts a keepalive to `to` on an existing socket (a listener's).
pub fn keepalive_on(sock: Arc<UdpSocket>, to: SocketAddr) -> Keepalive {
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (sock.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            // errors (no route during a reconnect) are part of the test
            let _ = s.send_to(b"keepalive", to);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Keepalive {
        stop,
        handle: Some(handle),
        sock,
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Records the source of every datagram it receives (and echoes it back
/// when asked, as a SIP or WireGuard peer answers keepalives).
pub struct Listener {
    seen: Arc<Mutex<Vec<(Instant, SocketAddr)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The socket.
    pub sock: Arc<UdpSocket>,
}

/// Listens on `addr` inside `ns`.
pub fn listener(ns: &Netns, addr: SocketAddr, echo: bool) -> Listener {
    let sock = Arc::new(udp_in(ns, addr));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st, sn) = (sock.clone(), stop.clone(), seen.clone());
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            if let Ok((_, from)) = s.recv_from(&mut buf) {
                sn.lock().unwrap().push((Instant::now(), from));
                if echo {
                    let _ = s.send_to(b"pong", from);
                }
            }
        }
    });
    Listener {
        seen,
        stop,
        handle: Some(handle),
        sock,
    }
}

impl Listener {
    /// Sources of the datagrams received at or after `t`.
    pub fn sources_since(&self, t: Instant) -> Vec<IpAddr> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, a)| a.ip())
            .collect()
    }

    /// Waits until a datagram from `ip` arrives at or after `since`;
    /// returns when it arrived.
    pub fn wait_for(&self, ip: IpAddr, since: Instant, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            let hit = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|(at, a)| *at >= since && a.ip() == ip)
                .map(|(at, _)| *at);
            if hit.is_some() {
                return hit;
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A socket address from text.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IP address from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Replaces the lab router's postrouting NAT with `rules` (nft syntax,
/// one statement per line, each added to `inet lab postnat`).
pub fn set_postnat(router: &Netns, rules: &[&str]) {
    let mut script = String::from("flush chain inet lab postnat\n");
    for r in rules {
        script.push_str("add rule inet lab postnat ");
        script.push_str(r);
        script.push('\n');
    }
    router.nft(&script);
}

/// Adds a rule to the lab router's prerouting NAT chain.
pub fn add_prenat(router: &Netns, rule: &str) {
    router.nft(&format!("add rule inet lab prenat {rule}\n"));
}

/// Turns promote_secondaries on, so deleting the old primary address of
/// a subnet keeps the new one (as DHCP clients and netifd rely on).
pub fn promote_secondaries(router: &Netns, dev: &str) {
    router.sysctl(&[
        "net.ipv4.conf.all.promote_secondaries=1",
        &format!("net.ipv4.conf.{dev}.promote_secondaries=1"),
    ]);
}

/// Text of a conntrack/ctrack listing's lines that mention `addr` as one
/// of the four addresses, reduced to their stable part (protocol and
/// tuples, without timeout, state and counters: [`TUPLES`]).
pub fn lines_with(listing: &str, addr: &str) -> Vec<String> {
    let mut v: Vec<String> = listing
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|t| t == format!("src={addr}") || t == format!("dst={addr}"))
        })
        .map(|l| TUPLES.apply(l))
        .collect();
    v.sort();
    v
}

/// The identity of the UDP flow to `dport` in `router`: its id and start
/// time. (The id alone is not enough: the kernel derives it from the
/// entry's address and original tuple, so an entry freed and re-created
/// for the same tuple often gets the same id back.)
pub fn flow_ident(router: &Netns, dport: u16) -> Option<String> {
    let o = router.conntrack(&[
        "-L",
        "-p",
        "udp",
        "--dport",
        &dport.to_string(),
        "-o",
        "id,ktimestamp",
    ]);
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()?
        .to_string();
    let id = line
        .split_whitespace()
        .find_map(|t| t.strip_prefix("id="))?
        .to_string();
    let start = line.split("[start=").nth(1)?.split(']').next()?.to_string();
    Some(format!("id={id} start={start}"))
}
