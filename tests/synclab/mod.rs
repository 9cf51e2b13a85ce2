//! A sync lab on top of the router lab: a standby router namespace joined
//! to the primary (the lab's router) by a dedicated sync link, Debian's
//! conntrackd run in either, and the traffic that makes the flows the
//! sync tests and captures use (TCP/UDP/ICMP over IPv4 and IPv6 through
//! masquerade, a DNAT port forward, and hand-made entries with zone, mark,
//! SCTP and GRE).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use crate::lab::{self, Netns, RouterLab, wait_until};
use crate::support::TempDir;

/// Primary's address on the sync link.
pub const PRIMARY_SYNC: &str = "10.9.9.1";
/// Standby's address on the sync link.
pub const STANDBY_SYNC: &str = "10.9.9.2";
/// Sync interface name in both namespaces.
pub const SYNC_IF: &str = "sync0";
/// Multicast group of the multicast scenarios.
pub const MCAST_GROUP: &str = "225.0.0.50";
/// UDP port of the sync link.
pub const PORT: u16 = 3780;

/// client -- primary (the lab router) -- server, plus a standby namespace
/// joined to the primary by `sync0` (10.9.9.1 <-> 10.9.9.2).
pub struct SyncLab {
    /// The router lab; its router is the primary.
    pub lab: RouterLab,
    /// The standby router.
    pub standby: Netns,
    /// A scratch directory for configs, logs and sockets (removed on drop).
    pub dir: TempDir,
}

impl SyncLab {
    /// Builds the lab.
    pub fn new(tag: &str) -> SyncLab {
        let lab = RouterLab::new(tag);
        let standby = Netns::new(&format!("{tag}b"));
        lab::veth(&lab.router, SYNC_IF, &standby, SYNC_IF);
        lab.router.must(&[
            "ip",
            "addr",
            "add",
            &format!("{PRIMARY_SYNC}/24"),
            "dev",
            SYNC_IF,
        ]);
        standby.must(&[
            "ip",
            "addr",
            "add",
            &format!("{STANDBY_SYNC}/24"),
            "dev",
            SYNC_IF,
        ]);
        let dir = TempDir::new(&format!("sync-{tag}"));
        SyncLab { lab, standby, dir }
    }

    /// The primary router namespace.
    pub fn primary(&self) -> &Netns {
        &self.lab.router
    }
}

/// The transport block of a conntrackd.conf for one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP unicast between the sync addresses.
    Udp,
    /// IPv4 multicast on 225.0.0.50.
    Multicast,
    /// TCP between the sync addresses (each side listens and connects).
    Tcp,
}

/// Which side of the link a config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The primary (10.9.9.1).
    Primary,
    /// The standby (10.9.9.2).
    Standby,
}

impl Side {
    /// (own address, peer address).
    pub fn addrs(self) -> (&'static str, &'static str) {
        match self {
            Side::Primary => (PRIMARY_SYNC, STANDBY_SYNC),
            Side::Standby => (STANDBY_SYNC, PRIMARY_SYNC),
        }
    }
}

/// The transport block for `side`.
pub fn transport_block(t: Transport, side: Side) -> String {
    let (me, peer) = side.addrs();
    match t {
        Transport::Udp => format!(
            "\tUDP Default {{\n\t\tIPv4_address {me}\n\t\tIPv4_Destination_Address {peer}\n\
             \t\tPort {PORT}\n\t\tInterface {SYNC_IF}\n\t\tSndSocketBuffer 1249280\n\
             \t\tRcvSocketBuffer 1249280\n\t\tChecksum on\n\t}}\n"
        ),
        Transport::Tcp => format!(
            "\tTCP Default {{\n\t\tIPv4_address {me}\n\t\tIPv4_Destination_Address {peer}\n\
             \t\tPort {PORT}\n\t\tInterface {SYNC_IF}\n\t\tSndSocketBuffer 1249280\n\
             \t\tRcvSocketBuffer 1249280\n\t\tChecksum on\n\t}}\n"
        ),
        Transport::Multicast => format!(
            "\tMulticast Default {{\n\t\tIPv4_address {MCAST_GROUP}\n\t\tGroup {PORT}\n\
             \t\tIPv4_interface {me}\n\t\tInterface {SYNC_IF}\n\t\tSndSocketBuffer 1249280\n\
             \t\tRcvSocketBuffer 1249280\n\t\tChecksum on\n\t}}\n"
        ),
    }
}

/// A Debian conntrackd running in a namespace (stopped on drop).
pub struct Conntrackd {
    ns_name: String,
    /// Its config file.
    pub conf: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

impl Conntrackd {
    /// Writes a config with this `mode` block (e.g. `Mode FTFW { }`) and
    /// transport, and starts conntrackd as a daemon.
    pub fn start(ns: &Netns, dir: &Path, name: &str, mode: &str, t: Transport, side: Side) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        let text = format!(
            "Sync {{\n\t{mode}\n{transport}}}\n\
             General {{\n\tSystemd off\n\tHashSize 8192\n\tHashLimit 65535\n\
             \tLogFile {log}\n\tSyslog off\n\tLockFile {lock}\n\tUNIX {{ Path {ctl} }}\n\
             \tNetlinkBufferSize 2097152\n\tNetlinkBufferSizeMaxGrowth 8388608\n\
             \tFilter From Userspace {{\n\t\tAddress Ignore {{\n\
             \t\t\tIPv4_address 127.0.0.1\n\t\t\tIPv6_address ::1\n\
             \t\t\tIPv4_address 10.9.9.0/24\n\t\t}}\n\t}}\n}}\n",
            transport = transport_block(t, side),
            log = log.display(),
            lock = dir.join(format!("{name}.lock")).display(),
            ctl = dir.join(format!("{name}.ctl")).display(),
        );
        std::fs::write(&conf, text).expect("write conntrackd.conf");
        let c = Conntrackd {
            ns_name: ns.name.clone(),
            conf,
            log,
        };
        let o = c.run(&["-d"]);
        assert!(
            o.status.success(),
            "conntrackd did not start: {}{}",
            lab::stderr(&o),
            c.log_text()
        );
        let ok = wait_until(Duration::from_secs(5), || c.run(&["-s"]).status.success());
        assert!(ok, "conntrackd not answering: {}", c.log_text());
        c
    }

    /// Runs `conntrackd -C conf ARGS` in the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let conf = self.conf.display().to_string();
        let mut argv = vec![
            "ip",
            "netns",
            "exec",
            &self.ns_name,
            "conntrackd",
            "-C",
            &conf,
        ];
        argv.extend_from_slice(args);
        lab::run(std::process::Command::new(argv[0]).args(&argv[1..]))
    }

    /// `conntrackd -e` (external cache) lines.
    pub fn external(&self) -> Vec<String> {
        lab::stdout(&self.run(&["-e"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `conntrackd -i` (internal cache) lines.
    pub fn internal(&self) -> Vec<String> {
        lab::stdout(&self.run(&["-i"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (`-k`).
    pub fn stop(&self) {
        let _ = self.run(&["-k"]);
    }
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ports and ids of the generated traffic (fixed so captures are
/// reproducible and tests can name the flows).
pub mod traffic {
    /// TCP over IPv4 through masquerade: client:40001 -> server:5001.
    pub const TCP4_SPORT: u16 = 40001;
    /// Server port of the IPv4 TCP flow.
    pub const TCP4_DPORT: u16 = 5001;
    /// UDP over IPv4: client:40002 -> server:5002.
    pub const UDP4_SPORT: u16 = 40002;
    /// Server port of the UDP flow.
    pub const UDP4_DPORT: u16 = 5002;
    /// TCP over IPv6: client:40003 -> server:5003.
    pub const TCP6_SPORT: u16 = 40003;
    /// Server port of the IPv6 TCP flow.
    pub const TCP6_DPORT: u16 = 5003;
    /// DNAT: server:40005 -> router wan:2222 -> client:22.
    pub const DNAT_SPORT: u16 = 40005;
    /// ICMP echo id over IPv4.
    pub const ICMP4_ID: u16 = 0x1234;
    /// ICMPv6 echo id.
    pub const ICMP6_ID: u16 = 0x1235;
}

/// Long-lived processes that keep the generated TCP connections open.
pub struct Traffic {
    children: Vec<Child>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn listen(ns: &Netns, port: u16, v6: bool) -> Child {
    let p = port.to_string();
    let mut argv = vec!["nc"];
    if v6 {
        argv.push("-6");
    }
    argv.extend_from_slice(&["-k", "-l", "-p", &p]);
    let c = ns.spawn(&argv);
    let ok = wait_until(Duration::from_secs(3), || {
        !ns.run(&["ss", "-Htln", &format!("sport = :{port}")])
            .stdout
            .is_empty()
    });
    assert!(ok, "listener on {port} did not start");
    c
}

fn connect(ns: &Netns, dst: &str, port: u16, sport: u16) -> Child {
    ns.spawn(&[
        "sh",
        "-c",
        &format!("sleep 600 | nc -p {sport} {dst} {port}"),
    ])
}

/// Makes the real flows through the primary: long-lived TCP over IPv4 and
/// IPv6 (masqueraded), a DNAT'ed TCP connection, UDP, ICMP and ICMPv6
/// echoes. Keep the returned value alive while the TCP flows are needed.
pub fn make_traffic(l: &RouterLab) -> Traffic {
    use lab::addr::*;
    use traffic::*;
    let mut children = vec![
        listen(&l.server, TCP4_DPORT, false),
        listen(&l.server, TCP6_DPORT, true),
        listen(&l.client, 22, false),
    ];
    children.push(connect(&l.client, SERVER, TCP4_DPORT, TCP4_SPORT));
    children.push(connect(&l.client, SERVER6, TCP6_DPORT, TCP6_SPORT));
    children.push(connect(&l.server, ROUTER_WAN, 2222, DNAT_SPORT));
    l.client.sh(&format!(
        "echo x | nc -u -w 1 -q 0 -p {UDP4_SPORT} {SERVER} {UDP4_DPORT} >/dev/null 2>&1 || true"
    ));
    l.client.must(&[
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "-e",
        &ICMP4_ID.to_string(),
        SERVER,
    ]);
    l.client.must(&[
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        "-e",
        &ICMP6_ID.to_string(),
        SERVER6,
    ]);
    let t = Traffic { children };
    let ok = wait_until(Duration::from_secs(5), || {
        let o = lab::stdout(&l.router.conntrack(&["-L"]));
        o.contains(&format!("sport={TCP4_SPORT}"))
            && o.contains(&format!("sport={TCP6_SPORT}"))
            && o.contains(&format!("sport={DNAT_SPORT}"))
            && o.matches("ESTABLISHED").count() >= 3
    });
    assert!(
        ok,
        "traffic did not make the flows: {}",
        lab::stdout(&l.router.conntrack(&["-L"]))
    );
    t
}

/// Entries made with `conntrack -I` in `ns`: a TCP flow in zone 5 with
/// mark 7, an IPv6 UDP flow with a mark, SCTP with verification tags and
/// GRE with keys. Returns the `conntrack -D` arguments that delete the
/// first one (the DEL message of the captures).
pub fn make_entries(ns: &Netns) -> Vec<&'static str> {
    const ZONED: [&str; 10] = [
        "-s",
        "192.0.2.1",
        "-d",
        "198.51.100.1",
        "-p",
        "tcp",
        "--sport",
        "1111",
        "--dport",
        "80",
    ];
    let zoned = [
        &["-I"][..],
        &ZONED[..],
        &[
            "--state",
            "ESTABLISHED",
            "-t",
            "300",
            "-u",
            "SEEN_REPLY,ASSURED",
            "-m",
            "7",
            "-w",
            "5",
        ][..],
    ]
    .concat();
    let entries: [&[&str]; 4] = [
        &zoned,
        &[
            "-I",
            "-s",
            "2001:db8::1",
            "-d",
            "2001:db8::2",
            "-p",
            "udp",
            "--sport",
            "5353",
            "--dport",
            "53",
            "-t",
            "200",
            "-m",
            "0x10",
        ],
        &[
            "-I",
            "-s",
            "192.0.2.3",
            "-d",
            "198.51.100.3",
            "-p",
            "sctp",
            "--sport",
            "3868",
            "--dport",
            "3868",
            "--state",
            "ESTABLISHED",
            "--orig-vtag",
            "0x11223344",
            "--reply-vtag",
            "0x55667788",
            "-t",
            "250",
        ],
        &[
            "-I",
            "-s",
            "192.0.2.4",
            "-d",
            "198.51.100.4",
            "-p",
            "gre",
            "--srckey",
            "0x0102",
            "--dstkey",
            "0x0304",
            "-t",
            "220",
        ],
    ];
    for e in entries {
        let o = ns.conntrack(e);
        assert!(o.status.success(), "conntrack {e:?}: {}", lab::stderr(&o));
    }
    [&["-D"][..], &ZONED[..], &["-w", "5"][..]].concat()
}

/// Starts tcpdump on the standby's sync interface writing `file`.
pub fn capture(ns: &Netns, file: &Path) -> Child {
    let f = file.display().to_string();
    let c = ns.spawn(&["tcpdump", "-i", SYNC_IF, "-w", &f, "-U", "-n", "udp"]);
    // tcpdump creates the file once it listens
    let ok = wait_until(Duration::from_secs(5), || file.exists());
    assert!(ok, "tcpdump did not start");
    std::thread::sleep(Duration::from_millis(300));
    c
}

/// Stops a capture cleanly (SIGINT flushes the file).
pub fn stop_capture(mut c: Child) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGINT);
    }
    let _ = c.wait();
}

/// The primary's table as raw ctnetlink dump payloads (nfgenmsg +
/// attributes), each prefixed by its length as a big-endian u32.
pub fn raw_table(ns: &Netns) -> Vec<u8> {
    use ctrack::netlink::client::Conntrack;
    use ctrack::netlink::ct::{CtRequest, msg};
    use ctrack::netlink::message::NLM_F_DUMP;
    let mut c = Conntrack::open(Some(&ns.name)).expect("open ctnetlink");
    let mut out = Vec::new();
    c.talk(&CtRequest::new(msg::GET, 0), NLM_F_DUMP, &mut |m| {
        out.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(m.payload);
        Ok(())
    })
    .expect("dump");
    out
}

/// Sleeps (lets daemons exchange messages).
pub fn settle(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Makes `ns` a router like the lab's: forwarding and the same NAT hooks
/// (masquerade on wan0, DNAT wan:2222 -> client:22), so flows committed
/// there get their NAT set up.
pub fn router_firewall(ns: &Netns) {
    ns.sysctl(&[
        "net.ipv4.ip_forward=1",
        "net.netfilter.nf_conntrack_tcp_loose=1",
    ]);
    ns.nft(
        "table inet lab {\n\
         chain postnat { type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }\n\
         chain prenat { type nat hook prerouting priority -100; iifname \"wan0\" tcp dport 2222 dnat ip to 10.9.1.2:22; }\n\
         }\n",
    );
}
