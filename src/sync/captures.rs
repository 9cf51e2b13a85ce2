//! Tests on captures of real conntrackd 1.4.7 sync traffic
//! (tests/data/sync, see the README there): every datagram decodes, the
//! flows rebuilt from the messages are the primary's flows (NAT included),
//! and our encoder reproduces conntrackd's messages byte for byte from the
//! primary's kernel entries.

use std::collections::HashMap;
use std::net::IpAddr;

use super::wire::ct::{self, EncodeOpts, QuirkOrder};
use super::wire::{self, Messages, flag, ty};
use crate::flow::{Flow, proto};
use crate::netlink;

/// One UDP datagram of a capture.
pub(crate) struct Datagram {
    pub src: IpAddr,
    pub payload: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(if le {
        u16::from_le_bytes([s[0], s[1]])
    } else {
        u16::from_be_bytes([s[0], s[1]])
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    })
}

/// The UDP payloads of a pcap file (Ethernet, Linux cooked v1/v2 or raw
/// IP link types; IPv4 and IPv6).
pub(crate) fn pcap_udp(file: &[u8]) -> Vec<Datagram> {
    let magic = u32_at(file, 0, true).expect("pcap header");
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => panic!("not a pcap file"),
    };
    let link = u32_at(file, 20, le).expect("link type");
    let mut out = Vec::new();
    let mut pos = 24;
    while let Some(caplen) = u32_at(file, pos + 8, le) {
        let start = pos + 16;
        let end = start + caplen as usize;
        let frame = &file[start..end.min(file.len())];
        pos = end;
        let l3 = match link {
            1 => 14,   // Ethernet
            113 => 16, // Linux cooked
            276 => 20, // Linux cooked v2
            101 => 0,  // raw IP
            _ => panic!("link type {link}"),
        };
        let Some(ip) = frame.get(l3..) else { continue };
        let Some(&v) = ip.first() else { continue };
        let (src, l4) = match v >> 4 {
            4 if ip.get(9) == Some(&17) => {
                let ihl = (v & 0x0f) as usize * 4;
                let a: [u8; 4] = ip[12..16].try_into().unwrap();
                (IpAddr::from(a), ihl)
            }
            6 if ip.get(6) == Some(&17) => {
                let a: [u8; 16] = ip[8..24].try_into().unwrap();
                (IpAddr::from(a), 40)
            }
            _ => continue,
        };
        let Some(ulen) = u16_at(ip, l4 + 4, false) else {
            continue;
        };
        let payload = ip[l4 + 8..(l4 + ulen as usize).min(ip.len())].to_vec();
        out.push(Datagram { src, payload });
    }
    out
}

/// The flows of a `.table` file: length-prefixed ctnetlink payloads,
/// recorded on a little-endian host (attribute headers are host-endian,
/// so on a big-endian host they are swapped before decoding).
pub(crate) fn table(file: &[u8]) -> Vec<Flow> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(n) = u32_at(file, pos, false) {
        let mut p = file[pos + 4..pos + 4 + n as usize].to_vec();
        if cfg!(target_endian = "big") && p.len() > 4 {
            le_attrs_to_native(&mut p[4..], true);
        }
        out.push(netlink::ct::decode_flow(&p).expect("kernel entry"));
        pos += 4 + n as usize;
    }
    out
}

/// Swaps little-endian nla_len/nla_type (recursing into NLA_F_NESTED
/// attributes) and the CTA_LABELS words into the host's order.
fn le_attrs_to_native(b: &mut [u8], top: bool) {
    let mut at = 0;
    while at + 4 <= b.len() {
        let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        let ty = u16::from_le_bytes([b[at + 2], b[at + 3]]);
        b[at..at + 2].reverse();
        b[at + 2..at + 4].reverse();
        if len < 4 || at + len > b.len() {
            return;
        }
        let payload = &mut b[at + 4..at + len];
        if ty & 0x8000 != 0 {
            le_attrs_to_native(payload, false);
        } else if top && ty & 0x3fff == netlink::ct::cta::LABELS {
            for w in payload.chunks_exact_mut(4) {
                w.reverse();
            }
        }
        at += (len + 3) & !3;
    }
}

/// The identity conntrackd keys flows by: original tuple and zone.
fn key(f: &Flow) -> (crate::flow::Tuple, Option<u16>) {
    let mut t = f.orig;
    if !proto::has_ports(t.proto) {
        // conntrackd sends no keys for GRE and such
        t.sport = 0;
        t.dport = 0;
    }
    (t, f.zone)
}

struct Capture {
    name: &'static str,
    pcap: &'static [u8],
    table: &'static [u8],
    /// CommitTimeout was set on the primary.
    commit_timeout: bool,
    /// Mode sends FTFW control traffic.
    ftfw: bool,
}

macro_rules! capture {
    ($name:literal, $ct:expr, $ftfw:expr) => {
        Capture {
            name: $name,
            pcap: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/sync/",
                $name,
                ".pcap"
            )),
            table: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/sync/",
                $name,
                ".table"
            )),
            commit_timeout: $ct,
            ftfw: $ftfw,
        }
    };
}

fn captures() -> [Capture; 4] {
    [
        capture!("ftfw-udp", false, true),
        capture!("notrack-udp", true, false),
        capture!("alarm-udp", false, false),
        capture!("ftfw-mcast", false, true),
    ]
}

const PRIMARY: &str = "10.9.9.1";

/// Replays the primary's state messages into a map like conntrackd's
/// external cache; returns it and the last message seen for each key.
type Key = (crate::flow::Tuple, Option<u16>);

fn replay(c: &Capture) -> (HashMap<Key, Flow>, Vec<Vec<u8>>) {
    let mut ext = HashMap::new();
    let mut last: HashMap<_, Vec<u8>> = HashMap::new();
    let primary: IpAddr = PRIMARY.parse().unwrap();
    for d in pcap_udp(c.pcap) {
        for m in Messages::new(&d.payload) {
            let m = m.unwrap_or_else(|e| panic!("{}: bad datagram: {e:?}", c.name));
            if !m.header.is_data() {
                continue;
            }
            assert_eq!(d.src, primary, "{}: only the primary sends state", c.name);
            let f = ct::decode_msg(m.bytes, QuirkOrder::Little)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let k = key(&f);
            last.insert(k, m.bytes.to_vec());
            match m.header.ty {
                ty::CT_DEL => {
                    ext.remove(&k);
                }
                ty::CT_NEW | ty::CT_UPD => {
                    ext.insert(k, f);
                }
                t => panic!("{}: unexpected type {t}", c.name),
            }
        }
    }
    (ext, last.into_values().collect())
}

fn synced(table: &[Flow]) -> Vec<&Flow> {
    // conntrackd's config ignores flows whose original or reply source is
    // on the sync link (10.9.9.0/24)
    let on_link = |a: IpAddr| matches!(a, IpAddr::V4(v) if v.octets()[..3] == [10, 9, 9]);
    table
        .iter()
        .filter(|f| !on_link(f.orig.src) && !on_link(f.reply.src))
        .collect()
}

/// The kernel leaves a zero mark out of events but puts it in dumps:
/// conntrackd's cache (fed by events) and our dump may differ there.
fn event_mark(kernel: &Flow, msg: &Flow) -> Option<u32> {
    match (kernel.mark, msg.mark) {
        (Some(0), None) => None,
        (m, _) => m,
    }
}

#[test]
fn every_datagram_of_every_capture_decodes() {
    for c in captures() {
        let dgrams = pcap_udp(c.pcap);
        assert!(dgrams.len() > 10, "{}", c.name);
        let (mut data, mut ctl, mut hello) = (0, 0, 0);
        for d in &dgrams {
            for m in Messages::new(&d.payload) {
                let m = m.unwrap();
                if m.header.is_data() {
                    data += 1;
                    ct::decode_msg(m.bytes, QuirkOrder::Little).unwrap();
                } else {
                    ctl += 1;
                    assert_eq!(m.header.ty, ty::CTL);
                }
                hello += m.header.is_hello() as u32;
            }
        }
        assert!(data >= 10, "{}: {data} state messages", c.name);
        if c.ftfw {
            assert!(ctl > 4 && hello > 0, "{}: FTFW control traffic", c.name);
        }
        if c.name.starts_with("alarm") {
            assert_eq!(ctl, 0, "ALARM sends no control messages");
        }
    }
}

#[test]
fn captures_rebuild_the_primary_table() {
    for c in captures() {
        let table = table(c.table);
        let want = synced(&table);
        let (ext, _) = replay(&c);
        assert_eq!(ext.len(), want.len(), "{}: {:#?}", c.name, ext.keys());
        for k in want {
            let got = ext
                .get(&key(k))
                .unwrap_or_else(|| panic!("{}: missing {:?}", c.name, k.orig));
            assert_eq!(got.family, k.family);
            assert_eq!(got.status, k.status, "{}: {:?}", c.name, k.orig);
            assert_eq!(got.mark, event_mark(k, got));
            assert_eq!(got.zone, k.zone);
            assert_eq!(got.protoinfo.tcp_state(), k.protoinfo.tcp_state());
            if proto::has_ports(k.orig.proto) || proto::is_icmp(k.orig.proto) {
                // NAT included: the rebuilt reply is the kernel's
                assert_eq!(got.reply, k.reply, "{}: reply of {:?}", c.name, k.orig);
            }
            if c.commit_timeout {
                assert_eq!(got.timeout, None);
            } else {
                assert!(got.timeout.is_some());
            }
        }
    }
}

#[test]
fn captures_cover_nat_ipv6_icmp_zone_sctp() {
    let c = &captures()[0];
    let (ext, _) = replay(c);
    let flows: Vec<&Flow> = ext.values().collect();
    let has = |p: &dyn Fn(&Flow) -> bool| flows.iter().any(|f| p(f));
    assert!(has(&|f| f.is_snat()
        && f.orig.proto == proto::TCP
        && f.family == 2));
    assert!(has(&|f| f.is_snat() && f.family == crate::flow::AF_INET6));
    assert!(has(&|f| f.is_dnat() && f.is_dpat()));
    assert!(has(
        &|f| f.orig.proto == proto::ICMP && f.orig.icmp_id == 0x1234
    ));
    assert!(has(
        &|f| f.orig.proto == proto::ICMPV6 && f.orig.icmp_id == 0x1235
    ));
    assert!(has(&|f| matches!(
        f.protoinfo,
        crate::flow::ProtoInfo::Sctp { state: Some(_), .. }
    )));
    // the zone-5 entry was deleted: a DEL went out and removed it
    assert!(!has(&|f| f.zone == Some(5)));
    let mut del = 0;
    for d in pcap_udp(c.pcap) {
        for m in Messages::new(&d.payload).flatten() {
            if m.header.ty == ty::CT_DEL {
                del += 1;
                let f = ct::decode_msg(m.bytes, QuirkOrder::Little).unwrap();
                assert_eq!(f.zone, Some(5));
                assert_eq!(f.mark, Some(7));
            }
        }
    }
    assert_eq!(del, 1);
}

#[test]
fn our_encoder_reproduces_conntrackd_messages_byte_for_byte() {
    for c in captures() {
        let table = table(c.table);
        let by_key: HashMap<_, &Flow> = synced(&table).into_iter().map(|f| (key(f), f)).collect();
        let (_, last) = replay(&c);
        let opts = EncodeOpts {
            omit_timeout: c.commit_timeout,
            ..EncodeOpts::default()
        };
        let mut compared = 0;
        for theirs in last {
            let got = ct::decode_msg(&theirs, QuirkOrder::Little).unwrap();
            let Some(k) = by_key.get(&key(&got)) else {
                continue; // the deleted entry
            };
            let mut f = (*k).clone();
            // time passed between conntrackd's message and our dump
            f.timeout = got.timeout.or(f.timeout);
            f.mark = event_mark(k, &got);
            let mut ours = Vec::new();
            ct::encode_msg(theirs[0] & 0x0f, &f, &opts, &mut ours).unwrap();
            let seq = u32::from_be_bytes([theirs[4], theirs[5], theirs[6], theirs[7]]);
            wire::stamp(&mut ours, theirs[1], seq);
            assert_eq!(
                ours, theirs,
                "{}: {:?} differs from conntrackd's message",
                c.name, f.orig
            );
            compared += 1;
        }
        assert!(compared >= 9, "{}: compared {compared}", c.name);
    }
}

#[test]
fn ftfw_control_traffic_follows_the_protocol() {
    let c = &captures()[0];
    let mut first_flags: HashMap<IpAddr, u8> = HashMap::new();
    let mut acks = 0;
    for d in pcap_udp(c.pcap) {
        for m in Messages::new(&d.payload).flatten() {
            first_flags.entry(d.src).or_insert(m.header.flags);
            if m.header.is_ack() {
                acks += 1;
                assert!(!wire::Header::is_data(&m.header));
                assert_eq!(m.header.len as usize, wire::ACK_HDR_LEN);
            }
        }
    }
    // both sides start by saying hello
    assert!(first_flags.values().all(|f| f & flag::HELLO != 0));
    assert!(acks > 2);
}

#[test]
fn truncated_capture_datagrams_never_panic() {
    for c in captures() {
        for d in pcap_udp(c.pcap) {
            for n in 0..d.payload.len() {
                for m in Messages::new(&d.payload[..n]).flatten() {
                    let _ = ct::decode_msg(m.bytes, QuirkOrder::Little);
                }
            }
        }
    }
}

/// Strips the age suffixes (`[expires in Ns]`, `[active since Ns]`) that
/// depend on when the dump was taken.
fn ageless(line: &str) -> String {
    let mut s = line.trim_end().to_string();
    for tag in [" [active since ", " [expires in "] {
        if let Some(i) = s.find(tag) {
            let end = s[i..].find(']').map_or(s.len(), |j| i + j + 1);
            s.replace_range(i..end, "");
        }
    }
    s
}

#[test]
fn external_dump_lines_match_conntrackd_e() {
    let files: [(&str, &str); 4] = [
        (
            "ftfw-udp",
            include_str!("../../tests/data/sync/ftfw-udp.external.txt"),
        ),
        (
            "notrack-udp",
            include_str!("../../tests/data/sync/notrack-udp.external.txt"),
        ),
        (
            "alarm-udp",
            include_str!("../../tests/data/sync/alarm-udp.external.txt"),
        ),
        (
            "ftfw-mcast",
            include_str!("../../tests/data/sync/ftfw-mcast.external.txt"),
        ),
    ];
    for (c, (name, text)) in captures().into_iter().zip(files) {
        assert_eq!(c.name, name);
        let now = std::time::Instant::now();
        let lifetime = name
            .starts_with("alarm")
            .then(|| std::time::Duration::from_secs(10));
        let mut cache = super::external::ExternalCache::new(QuirkOrder::Little, lifetime, 1 << 20);
        for d in pcap_udp(c.pcap) {
            for m in Messages::new(&d.payload).flatten() {
                if m.header.is_data() {
                    let f = ct::decode_msg(m.bytes, QuirkOrder::Little).unwrap();
                    cache.apply(now, m.header.ty, &f, m.body());
                }
            }
        }
        let mut ours: Vec<String> = cache
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                cache.dump_line(&e, now, &mut out);
                ageless(&String::from_utf8(out).unwrap())
            })
            .collect();
        let mut theirs: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(ageless)
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn our_datagrams_equal_conntrackds_bulk_datagrams() {
    for c in captures() {
        let table = table(c.table);
        let by_key: HashMap<_, &Flow> = synced(&table).into_iter().map(|f| (key(f), f)).collect();
        let (_, last) = replay(&c);
        let last: std::collections::HashSet<Vec<u8>> = last.into_iter().collect();
        let opts = EncodeOpts {
            omit_timeout: c.commit_timeout,
            ..EncodeOpts::default()
        };
        let mut rebuilt = 0;
        for d in pcap_udp(c.pcap) {
            let msgs: Vec<_> = Messages::new(&d.payload).flatten().collect();
            // datagrams that carry only final states of live flows (the bulk)
            let all_final = msgs.len() > 1
                && msgs.iter().all(|m| {
                    m.header.is_data()
                        && last.contains(m.bytes)
                        && ct::decode_msg(m.bytes, QuirkOrder::Little)
                            .is_ok_and(|f| by_key.contains_key(&key(&f)))
                });
            if !all_final {
                continue;
            }
            let mut packer = wire::Packer::new(1500 - wire::UDP_IP_OVERHEAD);
            let mut out = Vec::new();
            for m in &msgs {
                let got = ct::decode_msg(m.bytes, QuirkOrder::Little).unwrap();
                let mut f = (*by_key[&key(&got)]).clone();
                f.timeout = got.timeout.or(f.timeout);
                f.mark = event_mark(by_key[&key(&got)], &got);
                let mut one = Vec::new();
                ct::encode_msg(m.header.ty, &f, &opts, &mut one).unwrap();
                wire::stamp(&mut one, m.header.flags, m.header.seq);
                out.extend(packer.push(&one));
            }
            out.extend(packer.take());
            assert_eq!(out.len(), 1, "{}: one datagram", c.name);
            assert_eq!(out[0], d.payload, "{}: datagram differs", c.name);
            rebuilt += 1;
        }
        // ALARM has no bulk send: its refreshes go out one by one
        if !c.name.starts_with("alarm") {
            assert!(rebuilt >= 1, "{}: no bulk datagram found", c.name);
        }
    }
}
