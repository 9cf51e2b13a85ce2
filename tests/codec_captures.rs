//! The ctnetlink attribute codec on byte captures of real kernel messages
//! (tests/data/, see its README): every message decodes, the decoded
//! flows print exactly as conntrack printed the same table, our decode
//! agrees with netlink-packet-netfilter's typed parse (the oracle), and
//! no truncation or corruption of any capture panics.
//!
//! The captures were recorded on a little-endian machine. Netlink headers
//! (nlmsghdr, nla_len/nla_type) are host-endian, so on a big-endian host
//! the tests first convert them (and the host-order label words), which
//! keeps the same captures meaningful on 32-bit MIPS routers.
//!
//! `CTRACK_RECORD=1 cargo test --test codec_captures record` records new
//! captures from a lab router (root needed).

mod lab;
mod support;

use std::net::IpAddr;

use ctrack::flow::text::{self, TextOptions};
use ctrack::flow::{EventKind, Flow, ProtoInfo, proto};
use ctrack::netlink::ct;
use ctrack::netlink::message::NlMsgs;
use support::captures::{Capture, Rng, data_dir, hex, le_to_native, load, payload};
use support::flowline::PRINT_TIME;

/// Flows of a capture (data messages only), with their event kinds.
fn flows(c: &Capture) -> Vec<(Option<EventKind>, u32, Flow)> {
    let mut out = Vec::new();
    for m in &c.msgs {
        let (ty, flags, pid, p) = payload(m);
        if ty >> 8 != ct::SUBSYS_CTNETLINK as u16 {
            continue;
        }
        let kind = match (ty & 0xff) as u8 {
            ct::msg::NEW if flags & 0x400 != 0 => Some(EventKind::New),
            ct::msg::NEW => Some(EventKind::Update),
            ct::msg::DELETE => Some(EventKind::Destroy),
            _ => None,
        };
        let f = ct::decode_flow(p).unwrap_or_else(|e| panic!("{}: {e} in {}", c.name, hex(m)));
        out.push((kind, pid, f));
    }
    out
}

#[test]
fn router_dump_prints_as_conntrack_printed_it() {
    let c = load("dump-router");
    let golden =
        std::fs::read_to_string(data_dir().join("dump-router.conntrack.txt")).expect("golden text");
    let fl = flows(&c);
    assert!(fl.len() >= 20, "only {} flows", fl.len());
    let mut ours = Vec::new();
    for (_, _, f) in &fl {
        let mut line = Vec::new();
        text::write_line(
            &mut line,
            f,
            &TextOptions {
                extended: true,
                id: true,
                now: 0,
                ..TextOptions::default()
            },
        );
        ours.push(PRINT_TIME.apply(&String::from_utf8(line).expect("utf8")));
    }
    let theirs: Vec<String> = golden.lines().map(|l| PRINT_TIME.apply(l)).collect();
    assert_eq!(ours, theirs);
}

#[test]
fn router_dump_fields() {
    let fl = flows(&load("dump-router"));
    let find = |pred: &dyn Fn(&Flow) -> bool| -> &Flow {
        &fl.iter()
            .find(|(_, _, f)| pred(f))
            .expect("flow in capture")
            .2
    };
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    // masqueraded TCP with counters, timestamps, protoinfo
    let t = find(&|f| f.orig.proto == proto::TCP && f.orig.dst == ip("10.9.2.2"));
    assert_eq!(t.reply.dst, ip("10.9.2.1"));
    assert!(t.is_snat());
    assert!(t.counters[0].is_some_and(|c| c.packets > 0 && c.bytes > 0));
    assert!(t.counters[1].is_some());
    assert!(
        t.timestamp_start
            .is_some_and(|s| s > 1_600_000_000_000_000_000)
    );
    assert!(
        matches!(t.protoinfo, ProtoInfo::Tcp(i) if i.state.is_some() && i.wscale[0].is_some() && i.flags[0].is_some())
    );
    assert!(t.id.is_some() && t.use_count.is_some() && t.mark == Some(0));
    // DNAT port forward
    let d = find(&|f| f.orig.dport == 2222 && f.orig.src == ip("10.9.2.2"));
    assert!(d.is_dnat() && d.is_dpat());
    assert_eq!((d.reply.src, d.reply.sport), (ip("10.9.1.2"), 22));
    // ICMP and ICMPv6 tuple fields
    let i = find(&|f| f.orig.proto == proto::ICMP && f.orig.icmp_id == 77);
    assert_eq!(
        (i.orig.icmp_type, i.reply.icmp_type, i.orig.icmp_code),
        (8, 0, 0)
    );
    let i6 = find(&|f| f.orig.proto == proto::ICMPV6 && f.orig.icmp_id == 5);
    assert_eq!((i6.orig.icmp_type, i6.reply.icmp_type), (128, 129));
    assert_eq!(i6.family, ctrack::flow::AF_INET6);
    // zones: entry, original and reply direction
    assert_eq!(find(&|f| f.orig.src == ip("10.9.1.62")).zone, Some(7));
    assert_eq!(find(&|f| f.orig.src == ip("10.9.1.55")).orig_zone, Some(4));
    assert_eq!(find(&|f| f.orig.src == ip("10.9.1.56")).reply_zone, Some(5));
    // GRE keys, unknown protocol, SCTP state and vtags, marks
    let g = find(&|f| f.orig.proto == proto::GRE);
    assert_eq!(
        (g.orig.sport, g.orig.dport, g.reply.sport),
        (0x10, 0x20, 0x20)
    );
    let u = find(&|f| f.orig.proto == 50);
    assert_eq!(u.reply.src, ip("10.9.2.66"));
    let s = find(&|f| f.orig.proto == proto::SCTP);
    assert!(
        matches!(
            s.protoinfo,
            ProtoInfo::Sctp {
                state: Some(4),
                vtag: [Some(_), Some(_)]
            }
        ),
        "{:?}",
        s.protoinfo
    );
    assert_eq!(find(&|f| f.orig.src == ip("10.9.1.51")).mark, Some(0x107));
    // labels and helper
    let l = find(&|f| f.labels.is_some());
    let labels = l.labels.expect("labels");
    assert!(labels.test(0) && labels.test(5) && labels.test(33) && !labels.test(1));
    if let Some((_, _, h)) = fl.iter().find(|(_, _, f)| f.helper.is_some()) {
        assert_eq!(
            h.helper.map(|h| h.to_string_lossy()).as_deref(),
            Some("ftp")
        );
    }
}

#[test]
fn events_decode_with_kinds() {
    let fl = flows(&load("events-router"));
    let kinds: Vec<EventKind> = fl.iter().filter_map(|(k, _, _)| *k).collect();
    for k in [EventKind::New, EventKind::Update, EventKind::Destroy] {
        assert!(kinds.contains(&k), "no {k:?} event in {kinds:?}");
    }
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    // the entry made by conntrack -I: NEW from userspace, UPDATE to mark 6,
    // DESTROY with counters and a stop time
    let ours: Vec<&(Option<EventKind>, u32, Flow)> = fl
        .iter()
        .filter(|(_, _, f)| f.orig.src == ip("10.9.1.90"))
        .collect();
    assert_eq!(
        ours.iter()
            .map(|(k, _, _)| k.expect("kind"))
            .collect::<Vec<_>>(),
        [EventKind::New, EventKind::Update, EventKind::Destroy]
    );
    assert!(
        ours.iter().all(|(_, pid, _)| *pid != 0),
        "userspace events carry the port id"
    );
    assert_eq!(ours[0].2.mark, Some(5));
    assert_eq!(ours[1].2.mark, Some(6));
    let destroy = &ours[2].2;
    assert!(destroy.timestamp_stop.is_some() && destroy.counters[0].is_some());
    // kernel events from real traffic have port id 0
    assert!(
        fl.iter().any(|(k, pid, f)| *pid == 0
            && *k == Some(EventKind::New)
            && f.orig.proto == proto::ICMP)
    );
}

/// netlink-packet-netfilter's typed parse of the same bytes.
#[test]
fn decode_agrees_with_netlink_packet_netfilter() {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_netfilter::NetfilterMessage;
    use netlink_packet_netfilter::NetfilterMessageInner;
    use netlink_packet_netfilter::conntrack::{
        ConntrackAttribute as A, ConntrackMessage, IPTuple, ProtoInfo as P, ProtoInfoTCP,
        ProtoTuple, Tuple,
    };

    type Parts = (
        Option<IpAddr>,
        Option<IpAddr>,
        Option<u8>,
        Option<u16>,
        Option<u16>,
    );
    fn tuple(parts: &[Tuple]) -> Parts {
        let (mut s, mut d, mut p, mut sp, mut dp) = (None, None, None, None, None);
        for t in parts {
            match t {
                Tuple::Ip(ips) => {
                    for i in ips {
                        match i {
                            IPTuple::SourceAddress(a) => s = Some(*a),
                            IPTuple::DestinationAddress(a) => d = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(ps) => {
                    for x in ps {
                        match x {
                            ProtoTuple::Protocol(n) => p = Some(u8::from(*n)),
                            ProtoTuple::SourcePort(v) => sp = Some(*v),
                            ProtoTuple::DestinationPort(v) => dp = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        (s, d, p, sp, dp)
    }

    let mut checked = 0;
    for name in ["dump-router", "events-router"] {
        let c = load(name);
        for m in &c.msgs {
            let (ty, _, _, p) = payload(m);
            if ty >> 8 != ct::SUBSYS_CTNETLINK as u16 {
                continue;
            }
            let ours = ct::decode_flow(p).expect("decodes");
            let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(m)
                .unwrap_or_else(|e| panic!("oracle refused {}: {e}", hex(m)));
            let NetlinkPayload::InnerMessage(nf) = parsed.payload else {
                panic!("oracle: not an inner message");
            };
            let attrs = match nf.inner {
                NetfilterMessageInner::Conntrack(ConntrackMessage::New(a))
                | NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(a))
                | NetfilterMessageInner::Conntrack(ConntrackMessage::Get(a)) => a,
                other => panic!("oracle: {other:?}"),
            };
            let ports = |t: &ctrack::flow::Tuple| {
                if proto::has_ports(t.proto) {
                    (Some(t.sport), Some(t.dport))
                } else {
                    (None, None)
                }
            };
            for a in &attrs {
                match a {
                    A::CtaTupleOrig(t) | A::CtaTupleReply(t) => {
                        let mine = if matches!(a, A::CtaTupleOrig(_)) {
                            &ours.orig
                        } else {
                            &ours.reply
                        };
                        let (s, d, pr, sp, dp) = tuple(t);
                        assert_eq!(
                            (s, d, pr),
                            (Some(mine.src), Some(mine.dst), Some(mine.proto)),
                            "{name}"
                        );
                        if proto::has_ports(mine.proto) {
                            // no port attributes (DCCP on 6.16+) decode as 0
                            let (osp, odp) = ports(mine);
                            assert_eq!((sp.or(Some(0)), dp.or(Some(0))), (osp, odp), "{name}");
                        }
                    }
                    A::CtaStatus(s) => assert_eq!(Some(s.bits()), ours.status, "{name}"),
                    A::CtaTimeout(t) => assert_eq!(Some(*t), ours.timeout, "{name}"),
                    A::CtaMark(m) => assert_eq!(Some(*m), ours.mark, "{name}"),
                    A::CtaProtoInfo(infos) => {
                        for i in infos {
                            if let P::TCP(tcp) = i {
                                for x in tcp {
                                    if let ProtoInfoTCP::State(s) = x {
                                        assert_eq!(Some(*s), ours.protoinfo.tcp_state(), "{name}");
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} messages checked");
}

/// Decodes bytes as the dump and event paths do; the result does not
/// matter, only that it returns.
fn decode_any(bytes: &[u8]) {
    for m in NlMsgs::new(bytes) {
        let Ok(m) = m else { break };
        if let Ok(f) = ct::decode_flow(m.payload) {
            // formatting a decoded flow must not panic either
            let mut out = Vec::new();
            text::write_line(&mut out, &f, &TextOptions::default());
        }
    }
    let _ = ct::decode_flow(bytes);
}

#[test]
fn truncation_and_corruption_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0u64;
    for name in ["dump-router", "events-router"] {
        for m in &load(name).msgs {
            // every truncation, of the message and of its payload
            for cut in 0..m.len() {
                decode_any(&m[..cut]);
                if cut >= 16 {
                    let _ = ct::decode_flow(&m[16..cut]);
                }
                cases += 1;
            }
            // random corruption: flipped bytes, rewritten lengths, splices
            for _ in 0..200 {
                let mut b = m.clone();
                match rng.below(4) {
                    0 => {
                        for _ in 0..=rng.below(4) {
                            let i = rng.below(b.len());
                            b[i] ^= (rng.next() as u8) | 1;
                        }
                    }
                    1 => {
                        // an attribute length field somewhere after the headers
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
    assert!(cases > 10_000, "{cases}");
}

#[test]
fn captures_convert_to_big_endian_and_back() {
    // the conversion the big-endian path uses keeps a message decodable
    // when applied to a little-endian message read as big-endian: check
    // that it is its own inverse on the header fields we swap
    let c = load("dump-router");
    let m = &c.msgs[0];
    let mut twice = m.clone();
    if cfg!(target_endian = "little") {
        // on little-endian, pretend: swap (to BE), then the length field
        // reads back as the original when byte-reversed
        le_to_native(&mut twice);
        assert_eq!(
            u32::from_be_bytes([twice[0], twice[1], twice[2], twice[3]]) as usize,
            m.len()
        );
    }
}

// ---------------------------------------------------------------------
// Recorder: CTRACK_RECORD=1 cargo test --test codec_captures record

#[test]
fn record_captures() {
    if std::env::var("CTRACK_RECORD").is_err() || !lab::can_run() {
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
    use std::time::{Duration, Instant};

    use ctrack::netlink::Conntrack;
    use ctrack::netlink::ct::{CtRequest, TupleParts, cta, msg};
    use ctrack::netlink::message::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
    use ctrack::netlink::socket::{NETLINK_NETFILTER, NlSocket};

    use crate::lab::{self, RouterLab, addr};
    use crate::support::TempDir;

    const ENTRIES: &str = include_str!("data/entries.txt");

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
            writeln!(f, "{}", crate::support::captures::hex(m)).expect("write");
        }
    }

    fn load(lab: &RouterLab, script: &str) {
        let dir = TempDir::new("rec");
        let path = dir.join("script");
        std::fs::write(&path, script).expect("script");
        lab.router
            .must(&["conntrack", "-R", path.to_str().expect("path")]);
    }

    /// An entry created through ctnetlink directly, for what conntrack
    /// cannot set without config files: labels and a helper.
    fn create(
        c: &mut Conntrack,
        src: &str,
        dport: u16,
        extra: impl FnOnce(&mut ctrack::netlink::attr::AttrWriter),
    ) -> bool {
        let t = ctrack::flow::Tuple {
            src: src.parse().expect("ip"),
            dst: "10.9.2.80".parse().expect("ip"),
            proto: ctrack::flow::proto::TCP,
            sport: 40000,
            dport,
            ..Default::default()
        };
        let mut r = CtRequest::new(msg::NEW, ctrack::flow::AF_INET);
        let mut w = r.writer();
        ctrack::netlink::ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&t, None));
        ctrack::netlink::ct::encode_tuple(
            &mut w,
            cta::TUPLE_REPLY,
            &TupleParts::full(&t.inverted(), None),
        );
        w.be32(cta::TIMEOUT, 5000);
        extra(&mut w);
        match c.request(&r, NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("recorder: cannot create {src}: {e}");
                false
            }
        }
    }

    pub fn record(dir: &Path) {
        let lab = RouterLab::new("rec");
        lab.ping(addr::SERVER);
        lab.ping(addr::SERVER6);
        lab.tcp(addr::SERVER, 8080);
        lab.tcp(addr::SERVER6, 8081);
        lab.udp(addr::SERVER, 5353);
        lab::dnat_flow(&lab);
        for fam in ["ipv4", "ipv6"] {
            lab.router
                .must(&["conntrack", "-U", "-f", fam, "-t", "3000"]);
        }
        load(&lab, ENTRIES);
        // the kernel keeps labels only once something uses them: an
        // nftables rule that sets one (it never matches)
        lab.router.nft(
            "table ip ctlabels {\n chain c {\n type filter hook prerouting priority 0;\n meta mark 0xdead ct label set 127\n }\n}\n",
        );
        let mut c = Conntrack::open(Some(&lab.router.name)).expect("ctnetlink");
        create(&mut c, "10.9.1.91", 443, |w| {
            // label bits 0, 5 and 33 (host-order words)
            let words: [u32; 4] = [1 | 1 << 5, 1 << 1, 0, 0];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            w.bytes(cta::LABELS, &bytes);
        });
        create(&mut c, "10.9.1.92", 21, |w| {
            let n = w.begin(cta::HELP);
            w.strz(cta::HELP_NAME, b"ftp");
            w.end(n);
        });

        // the dump, and conntrack's text of the same table right after
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0, Some(&lab.router.name)).expect("socket");
        let req = CtRequest::new(msg::GET, 0);
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
                break;
            }
        }
        let text = lab.router.must(&["conntrack", "-L", "-o", "extended,id"]);
        write(
            &dir.join("dump-router.le.hex"),
            "dump (IPCTNL_MSG_CT_GET, NLM_F_DUMP) of a lab router: NATed TCP/UDP/ICMP/ICMPv6 traffic with counters and timestamps, a DNAT port forward, conntrack -I entries (zones, marks, GRE, protocol 50, SCTP, UDP-Lite, DCCP), labels and an ftp helper set through ctnetlink",
            &msgs,
        );
        std::fs::write(dir.join("dump-router.conntrack.txt"), &text.stdout).expect("golden");

        // events: traffic (kernel) and -I/-U/-D (userspace)
        let mut ev =
            NlSocket::open(NETLINK_NETFILTER, 0x7, Some(&lab.router.name)).expect("event socket");
        ev.set_nonblocking(true).expect("nonblocking");
        lab.ping(addr::SERVER);
        lab.udp(addr::SERVER6, 5354);
        for line in [
            "-I -s 10.9.1.90 -d 10.9.2.90 -p tcp --sport 5 --dport 80 --state ESTABLISHED -t 100 -u ASSURED,SEEN_REPLY -m 5",
            "-U -s 10.9.1.90 -f ipv4 -m 6",
            "-D -s 10.9.1.90",
        ] {
            let mut argv = vec!["conntrack"];
            argv.extend(line.split(' '));
            lab.router.must(&argv);
        }
        lab.router.must(&["conntrack", "-D", "-p", "icmp"]);
        let mut evs = Vec::new();
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            match ev.recv() {
                Ok(d) => {
                    let d = d.to_vec();
                    split(&d, &mut evs);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("event recv: {e}"),
            }
        }
        write(
            &dir.join("events-router.le.hex"),
            "events (NEW/UPDATE/DESTROY groups) on a lab router: ping and UDP through NAT, conntrack -I/-U/-D of one entry, -D of the ICMP flows",
            &evs,
        );
    }
}
