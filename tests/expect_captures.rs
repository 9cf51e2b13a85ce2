//! The expectation codec (`netlink::exp`) on byte captures of real kernel
//! messages (tests/data/, see its README), recorded on the FTP lab's
//! router (tests/ftplab): a dump of the expectation table (FTP PASV/EPSV
//! and PORT/EPRT through NAT over IPv4 and IPv6, a TFTP read request, a
//! `conntrack -I expect` one, one with PERMANENT and INACTIVE flags made
//! through ctnetlink), the expectation events of transfers and of
//! `-I/-D/-F expect`, and a dump of the conntrack table with the RELATED
//! flows those expectations let in. Every message decodes; the decoded
//! expectations print exactly as conntrack printed the same table (text
//! and XML); RELATED flows carry their control connection as master and
//! still print as conntrack prints them; no truncation or corruption of
//! any capture panics.
//!
//! `CTRACK_RECORD=1 cargo test --test expect_captures record` records new
//! captures (root, Debian with conntrack, nftables and python3-pyftpdlib).

mod ftplab;
mod lab;
mod support;

use ctrack::flow::expect::{
    self, ExpJsonOptions, ExpTextOptions, ExpXmlOptions, Expectation, flag,
};
use ctrack::flow::text::{self, TextOptions};
use ctrack::flow::{AF_INET, AF_INET6, EventKind, Flow, Tuple, proto, status};
use ctrack::netlink::ct::{self, SUBSYS_CTNETLINK_EXP};
use ctrack::netlink::exp::{self, ExpEvent};
use ctrack::netlink::message::NlMsgs;
use support::captures::{Capture, Rng, data_dir, hex, load, payload};
use support::flowline::{EXPECT_RUNS, Mask, PRINT_TIME};

/// conntrack's listing of the live router right after the dump: the
/// held transfer and its control connection still move packets, so their
/// counters are masked with the timeouts and delta-times.
const LIVE: Mask = Mask {
    hide: &["delta-time=", "packets=", "bytes="],
    ..PRINT_TIME
};

/// The expectations of a capture's data messages.
fn expectations(c: &Capture) -> Vec<Expectation> {
    let mut out = Vec::new();
    for m in &c.msgs {
        let (ty, _, _, p) = payload(m);
        if ty >> 8 != SUBSYS_CTNETLINK_EXP as u16 {
            continue;
        }
        out.push(exp::decode_expect(p).unwrap_or_else(|e| panic!("{}: {e} in {}", c.name, hex(m))));
    }
    out
}

fn line(e: &Expectation) -> String {
    let mut v = Vec::new();
    expect::write_line(&mut v, e, &ExpTextOptions::default());
    String::from_utf8(v).expect("utf8")
}

/// Lines as a sorted list with the timeouts masked (the kernel dumps both
/// families in one go, conntrack one family per run).
fn sorted(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = lines.map(|l| EXPECT_RUNS.apply(&l)).collect();
    v.sort();
    v
}

#[test]
fn dump_prints_as_conntrack_printed_it() {
    let c = load("expect-dump");
    let ex = expectations(&c);
    assert!(ex.len() >= 7, "only {} expectations", ex.len());
    let golden =
        std::fs::read_to_string(data_dir().join("expect-dump.conntrack.txt")).expect("golden text");
    let ours = sorted(ex.iter().map(line));
    let theirs = sorted(golden.lines().map(str::to_string));
    assert_eq!(ours, theirs);
    let golden =
        std::fs::read_to_string(data_dir().join("expect-dump.conntrack.xml")).expect("golden xml");
    let ours = sorted(ex.iter().map(|e| {
        let mut v = Vec::new();
        expect::write_xml(&mut v, e, &ExpXmlOptions::default());
        String::from_utf8(v).expect("utf8")
    }));
    let theirs = sorted(
        golden
            .lines()
            .filter(|l| l.starts_with("<flow>"))
            .map(str::to_string),
    );
    assert_eq!(ours, theirs);
}

#[test]
fn dump_fields() {
    let ex = expectations(&load("expect-dump"));
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    let find = |pred: &dyn Fn(&Expectation) -> bool| -> &Expectation {
        ex.iter().find(|e| pred(e)).expect("expectation in capture")
    };
    // every one has its three tuples, a timeout, an id, a class
    for e in &ex {
        assert!(
            e.master.is_some() && e.tuple.is_some() && e.mask.is_some(),
            "{e:?}"
        );
        assert!(
            e.timeout.is_some() && e.id.is_some() && e.class.is_some(),
            "{e:?}"
        );
        assert!(e.family == AF_INET || e.family == AF_INET6);
    }
    // PASV: client -> server, the data port expected, the source masked out
    let pasv = find(&|e| {
        e.tuple
            .is_some_and(|t| t.src == ip(lab::addr::CLIENT) && t.proto == proto::TCP)
            && e.flags == Some(0)
            && e.master.is_some_and(|m| m.dport == 21)
    });
    let m = pasv.mask.expect("mask");
    assert_eq!(
        (m.src, m.dst, m.sport, m.dport),
        (ip("255.255.255.255"), ip("255.255.255.255"), 0, 0xffff)
    );
    assert_eq!(
        pasv.helper.map(|h| h.to_string_lossy()).as_deref(),
        Some("ftp")
    );
    assert!(pasv.nat.is_none());
    // PORT through NAT: server -> router, the client's port saved, the NAT
    // follows the master
    let port = find(&|e| {
        e.tuple
            .is_some_and(|t| t.dport == ftplab::HELD_PORT && t.src == ip(lab::addr::SERVER))
    });
    let nat = port.nat.expect("NAT of the PORT expectation");
    assert_eq!(nat.dir, Some(1));
    assert_eq!(nat.tuple.map(|t| t.sport), Some(ftplab::HELD_PORT));
    assert_eq!(
        port.expectfn.map(|f| f.to_string_lossy()).as_deref(),
        Some("nat-follow-master")
    );
    // IPv6 EPSV and EPRT
    assert!(ex.iter().filter(|e| e.family == AF_INET6).count() >= 2);
    // TFTP: UDP from the server back to the client's port
    let tftp = find(&|e| e.helper.is_some_and(|h| h.as_bytes() == b"tftp"));
    assert_eq!(tftp.proto(), proto::UDP);
    assert_eq!(tftp.master.map(|m| m.dport), Some(69));
    // made through ctnetlink with flags
    let flagged = find(&|e| e.flags.is_some_and(|f| f != 0));
    assert_eq!(flagged.flags, Some(flag::PERMANENT | flag::INACTIVE));
    // and JSON of each is valid
    for e in &ex {
        let mut v = Vec::new();
        expect::write_json(&mut v, e, &ExpJsonOptions::default());
        let j: serde_json::Value = serde_json::from_slice(&v).expect("json");
        assert_eq!(j["master"]["src"].as_str().map(ip), e.master.map(|m| m.src));
    }
}

#[test]
fn events_decode_with_kinds() {
    let c = load("expect-events");
    let mut evs: Vec<ExpEvent> = Vec::new();
    let mut malformed = 0;
    for m in &c.msgs {
        malformed += exp::decode_events(m, &mut evs);
    }
    assert_eq!(malformed, 0);
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EventKind::New) && kinds.contains(&EventKind::Destroy),
        "{kinds:?}"
    );
    // each transfer's expectation: NEW from the kernel, DESTROY when used
    let kernel_new = evs
        .iter()
        .filter(|e| e.kind == EventKind::New && e.portid == 0)
        .count();
    assert!(kernel_new >= 4, "{kernel_new}");
    // -I expect and -D/-F expect come from a userspace port
    assert!(
        evs.iter()
            .any(|e| e.kind == EventKind::New && e.portid != 0)
    );
    assert!(
        evs.iter()
            .any(|e| e.kind == EventKind::Destroy && e.portid != 0)
    );
    // what conntrack printed for the same events
    let golden = std::fs::read_to_string(data_dir().join("expect-events.conntrack.txt"))
        .expect("golden events");
    let ours: Vec<String> = evs
        .iter()
        .map(|e| {
            let mut v = Vec::new();
            expect::write_line(
                &mut v,
                &e.exp,
                &ExpTextOptions {
                    event: Some(e.kind),
                    hide_timeout: false,
                },
            );
            EXPECT_RUNS.apply(&String::from_utf8(v).expect("utf8"))
        })
        .collect();
    let theirs: Vec<String> = golden.lines().map(|l| EXPECT_RUNS.apply(l)).collect();
    assert_eq!(ours, theirs);
}

/// The flows of a conntrack-table capture.
fn flows(c: &Capture) -> Vec<Flow> {
    c.msgs
        .iter()
        .filter_map(|m| {
            let (ty, _, _, p) = payload(m);
            (ty >> 8 == ct::SUBSYS_CTNETLINK as u16 && ty & 0xff == 0)
                .then(|| ct::decode_flow(p).unwrap_or_else(|e| panic!("{e} in {}", hex(m))))
        })
        .collect()
}

#[test]
fn related_flows_carry_their_master() {
    let fl = flows(&load("related-router"));
    let related: Vec<&Flow> = fl
        .iter()
        .filter(|f| f.status.is_some_and(|s| s & status::EXPECTED != 0))
        .collect();
    assert!(related.len() >= 4, "{}", related.len());
    let controls: Vec<Tuple> = fl
        .iter()
        .filter(|f| f.helper.is_some())
        .map(|f| f.orig)
        .collect();
    for f in &related {
        let m = f.master.expect("a RELATED flow has its master");
        assert!(
            controls.contains(&m),
            "master {m:?} is no control connection"
        );
    }
    assert!(
        fl.iter()
            .filter(|f| f.master.is_none())
            .all(|f| f.status.is_some_and(|s| s & status::EXPECTED == 0))
    );
    // and conntrack's text does not show it
    let golden =
        std::fs::read_to_string(data_dir().join("related-router.conntrack.txt")).expect("golden");
    let mut ours: Vec<String> = fl
        .iter()
        .map(|f| {
            let mut v = Vec::new();
            text::write_line(
                &mut v,
                f,
                &TextOptions {
                    extended: true,
                    id: true,
                    now: 0,
                    ..TextOptions::default()
                },
            );
            LIVE.apply(&String::from_utf8(v).expect("utf8"))
        })
        .collect();
    let mut theirs: Vec<String> = golden.lines().map(|l| LIVE.apply(l)).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

/// Decodes bytes as the dump and event paths do and formats what decodes;
/// the result does not matter, only that it returns.
fn decode_any(bytes: &[u8]) {
    for m in NlMsgs::new(bytes) {
        let Ok(m) = m else { break };
        let mut out = Vec::new();
        if let Ok(e) = exp::decode_expect(m.payload) {
            expect::write_line(&mut out, &e, &ExpTextOptions::default());
            expect::write_xml(&mut out, &e, &ExpXmlOptions::default());
            expect::write_json(&mut out, &e, &ExpJsonOptions::default());
        }
        // a RELATED flow's master, and its JSON
        if let Ok(f) = ct::decode_flow(m.payload) {
            ctrack::flow::json::write_flow(&mut out, &f, &Default::default());
        }
    }
    let _ = exp::decode_events(bytes, &mut Vec::new());
    let _ = exp::decode_expect(bytes);
}

#[test]
fn truncation_and_corruption_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut cases = 0u64;
    for name in ["expect-dump", "expect-events", "related-router"] {
        for m in &load(name).msgs {
            for cut in 0..m.len() {
                decode_any(&m[..cut]);
                if cut >= 16 {
                    let _ = exp::decode_expect(&m[16..cut]);
                }
                cases += 1;
            }
            for _ in 0..300 {
                let mut b = m.clone();
                match rng.below(4) {
                    0 => {
                        for _ in 0..=rng.below(4) {
                            let i = rng.below(b.len());
                            b[i] ^= (rng.next() as u8) | 1;
                        }
                    }
                    1 => {
                        let i = (20 + rng.below(b.len().saturating_sub(22))) & !3;
                        if i + 2 <= b.len() {
                            let v = rng.next() as u16;
                            b[i..i + 2].copy_from_slice(&v.to_ne_bytes());
                        }
                    }
                    2 => {
                        let i = rng.below(b.len());
                        b.truncate(i);
                        b.extend_from_slice(&m[rng.below(m.len())..]);
                    }
                    _ => {
                        let v = rng.next() as u32;
                        b[..4].copy_from_slice(&v.to_ne_bytes());
                    }
                }
                decode_any(&b);
                cases += 1;
            }
        }
    }
    assert!(cases > 20_000, "{cases}");
}

// ---------------------------------------------------------------------
// Recorder: CTRACK_RECORD=1 cargo test --test expect_captures record

#[test]
fn record_captures() {
    if std::env::var("CTRACK_RECORD").is_err() || !ftplab::can_run() {
        return;
    }
    if cfg!(target_endian = "big") {
        panic!("record on a little-endian host (the files are .le)");
    }
    recorder::record(&data_dir());
}

mod recorder {
    use std::io::Write;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use ctrack::flow::expect::{Expectation, flag};
    use ctrack::flow::{AF_INET, Tuple, proto};
    use ctrack::netlink::Conntrack;
    use ctrack::netlink::ct::{CtRequest, msg};
    use ctrack::netlink::exp;
    use ctrack::netlink::message::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
    use ctrack::netlink::socket::{NETLINK_NETFILTER, NlSocket};

    use crate::ftplab::{FtpLab, Hold};
    use crate::lab::{self, addr};

    fn split(datagram: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut at = 0;
        while at + 16 <= datagram.len() {
            let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4")) as usize;
            if len < 16 || at + len > datagram.len() {
                break;
            }
            out.push(datagram[at..at + len].to_vec());
            at += (len + 3) & !3;
        }
    }

    fn write(path: &Path, what: &str, msgs: &[Vec<u8>]) {
        let mut f = std::fs::File::create(path).expect("create capture");
        let uname = lab::run(std::process::Command::new("uname").arg("-r"));
        writeln!(
            f,
            "# ctrack capture: {what}\n# kernel {}; little-endian; one netlink message per line (hex)",
            String::from_utf8_lossy(&uname.stdout).trim()
        )
        .expect("write");
        for m in msgs {
            writeln!(f, "{}", crate::hex(m)).expect("write");
        }
    }

    /// Sends a dump request and collects its messages up to NLMSG_DONE.
    fn dump(ns: &str, req: &CtRequest) -> Vec<Vec<u8>> {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0, Some(ns)).expect("socket");
        let mut out = Vec::new();
        req.serialize_into(&mut out, NLM_F_REQUEST | NLM_F_DUMP, 1);
        s.send(&out).expect("send");
        let mut msgs = Vec::new();
        loop {
            let d = s.recv().expect("recv").to_vec();
            let before = msgs.len();
            split(&d, &mut msgs);
            if msgs[before..]
                .iter()
                .any(|m| u16::from_ne_bytes([m[4], m[5]]) == 3)
            {
                return msgs;
            }
        }
    }

    fn drain(ev: &mut NlSocket, out: &mut Vec<Vec<u8>>) {
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            match ev.recv() {
                Ok(d) => {
                    let d = d.to_vec();
                    split(&d, out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("event recv: {e}"),
            }
        }
    }

    pub fn record(dir: &Path) {
        let ftp = FtpLab::new("exrec");
        let ns = &ftp.lab.router;
        let mut ev = NlSocket::open(NETLINK_NETFILTER, exp::group::ALL, Some(&ns.name))
            .expect("event socket");
        ev.set_nonblocking(true).expect("nonblocking");
        let mut events = Vec::new();
        // conntrack listens alongside: its lines of the same events
        let listener = ns.spawn(&["conntrack", "-E", "expect"]);
        let bound = lab::wait_until(Duration::from_secs(10), || {
            let o = ns.run(&["cat", "/proc/net/netlink"]);
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.split_whitespace().nth(3) == Some("00000038"))
                .count()
                >= 2
        });
        assert!(bound, "conntrack -E expect did not start");
        // transfers: an expectation made and used each
        for (server, active) in [
            (addr::SERVER, false),
            (addr::SERVER, true),
            (addr::SERVER6, false),
            (addr::SERVER6, true),
        ] {
            assert_eq!(ftp.transfer(server, active), "hello\n");
        }
        // held: PASV/PORT over both families, a held transfer
        let held = [
            ftp.hold(addr::SERVER, Hold::Passive),
            ftp.hold(addr::SERVER, Hold::Active),
            ftp.hold(addr::SERVER6, Hold::Passive),
            ftp.hold(addr::SERVER6, Hold::Active),
            ftp.hold(addr::SERVER, Hold::Transfer),
        ];
        // a TFTP read request: the tftp helper expects the server's answer
        let mut nc = ftp
            .lab
            .client
            .cmd(&["nc", "-u", "-w", "1", "-q", "0", addr::SERVER, "69"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc");
        if let Some(mut i) = nc.stdin.take() {
            let _ = i.write_all(b"\x00\x01f.txt\x00octet\x00");
        }
        let _ = nc.wait();
        // -I expect on an idle master, and one with flags through ctnetlink
        let idle = ftp.hold(addr::SERVER, Hold::Idle);
        let line = format!(
            "conntrack -I expect -s {c} -d {s} -p tcp --sport {p} --dport 21 --tuple-src {c} \
             --tuple-dst {s} --tuple-port-src 0 --tuple-port-dst 1600 --mask-src 255.255.255.255 \
             --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535 -t 60",
            c = addr::CLIENT,
            s = addr::SERVER,
            p = idle.sport
        );
        ns.must(&line.split(' ').collect::<Vec<_>>());
        let idle2 = ftp.hold(addr::SERVER, Hold::Idle);
        let ip = |s: &str| s.parse().expect("ip");
        let t = |src: &str, dst: &str, sport, dport| Tuple {
            src: ip(src),
            dst: ip(dst),
            proto: proto::TCP,
            sport,
            dport,
            ..Tuple::default()
        };
        let e = Expectation {
            family: AF_INET,
            master: Some(t(addr::CLIENT, addr::SERVER, idle2.sport, 21)),
            tuple: Some(t(addr::CLIENT, addr::SERVER, 0, 1650)),
            mask: Some(t("255.255.255.255", "255.255.255.255", 0, 0xffff)),
            timeout: Some(300),
            flags: Some(flag::PERMANENT | flag::INACTIVE),
            ..Expectation::default()
        };
        let mut c = Conntrack::open(Some(&ns.name)).expect("ctnetlink");
        c.request(&exp::create_request(&e), NLM_F_CREATE | NLM_F_EXCL)
            .expect("create the flagged expectation");

        // the expectation dump and conntrack's text and XML of it
        let msgs = dump(&ns.name, &exp::dump_request(0));
        write(
            &dir.join("expect-dump.le.hex"),
            "dump (IPCTNL_MSG_EXP_GET, NLM_F_DUMP, both families) of the FTP lab's router: FTP PASV/EPSV and PORT/EPRT through NAT (IPv4, IPv6), a TFTP read request, conntrack -I expect, one with PERMANENT|INACTIVE made through ctnetlink",
            &msgs,
        );
        let mut text = Vec::new();
        let mut xml = Vec::new();
        for fam in ["ipv4", "ipv6"] {
            text.extend(ns.must(&["conntrack", "-L", "expect", "-f", fam]).stdout);
            xml.extend(
                ns.must(&["conntrack", "-L", "expect", "-f", fam, "-o", "xml"])
                    .stdout,
            );
        }
        std::fs::write(dir.join("expect-dump.conntrack.txt"), text).expect("golden");
        std::fs::write(dir.join("expect-dump.conntrack.xml"), xml).expect("golden");
        // the conntrack table with the RELATED flows
        let msgs = dump(&ns.name, &CtRequest::new(msg::GET, 0));
        let text = ns.must(&["conntrack", "-L", "-o", "extended,id"]);
        write(
            &dir.join("related-router.le.hex"),
            "dump (IPCTNL_MSG_CT_GET, NLM_F_DUMP) of the FTP lab's router: FTP control connections with the ftp helper, their RELATED data connections (status EXPECTED, CTA_TUPLE_MASTER), a held transfer, TFTP",
            &msgs,
        );
        std::fs::write(dir.join("related-router.conntrack.txt"), &text.stdout).expect("golden");

        // -D expect and -F expect: userspace DESTROY events
        let port = ns
            .must(&["conntrack", "-L", "expect"])
            .stdout
            .split(|&b| b == b'\n')
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .find(|l| l.contains(&format!(" sport={} dport=21 ", held[0].sport)))
            .and_then(|l| {
                l.split(' ')
                    .find_map(|w| w.strip_prefix("dport="))
                    .map(str::to_string)
            })
            .expect("the PASV expectation");
        let del = format!(
            "conntrack -D expect -s {} -d {} -p tcp --sport 0 --dport {port} --reply-port-src 0 --reply-port-dst 0",
            addr::CLIENT,
            addr::SERVER
        );
        let _ = ns.run(&del.split(' ').collect::<Vec<_>>());
        ns.must(&["conntrack", "-F", "expect"]);
        drain(&mut ev, &mut events);
        write(
            &dir.join("expect-events.le.hex"),
            "expectation events (groups EXP_NEW/UPDATE/DESTROY) on the FTP lab's router: four transfers, the held sessions, TFTP, conntrack -I expect, a ctnetlink create, conntrack -D expect, -F expect",
            &events,
        );
        // SAFETY: plain kill(2) on a child we started.
        unsafe { libc::kill(listener.id() as i32, libc::SIGINT) };
        let o = listener.wait_with_output().expect("conntrack -E expect");
        std::fs::write(dir.join("expect-events.conntrack.txt"), &o.stdout).expect("golden");
        drop((held, idle, idle2));
    }
}
