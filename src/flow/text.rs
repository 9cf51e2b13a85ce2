//! conntrack's default one-line text format (and `-o extended,id,
//! ktimestamp,labels`), byte for byte as libnetfilter_conntrack writes it.

use super::addr::{push_ctime, push_hex, push_ip, push_padded, push_u64};
use super::labels::LabelMap;
use super::names;
use super::{EventKind, Flow, ProtoInfo, Tuple, proto, status};

/// Which optional parts of the line to write.
#[derive(Clone, Copy, Debug)]
pub struct TextOptions<'a> {
    /// `-o extended`: the layer-3 name and number first.
    pub extended: bool,
    /// `-o id`: the entry's id at the end.
    pub id: bool,
    /// `-o ktimestamp`: `[start=...]` and `[stop=...]` in local time.
    pub ktimestamp: bool,
    /// `-o labels`: label names from this map.
    pub labels: Option<&'a LabelMap>,
    /// Event tag (`[NEW]` ...) for event lines.
    pub event: Option<EventKind>,
    /// Whether to print the timeout (ctrackd's cache dumps leave it out).
    pub show_timeout: bool,
    /// The current time in seconds, for `delta-time` of live entries.
    pub now: i64,
}

impl Default for TextOptions<'_> {
    fn default() -> Self {
        TextOptions {
            extended: false,
            id: false,
            ktimestamp: false,
            labels: None,
            event: None,
            show_timeout: true,
            now: super::now_secs(),
        }
    }
}

/// The event tag conntrack prints, right-aligned in 9 columns.
pub fn event_tag(e: EventKind) -> &'static str {
    match e {
        EventKind::New => "    [NEW]",
        EventKind::Update => " [UPDATE]",
        EventKind::Destroy => "[DESTROY]",
    }
}

/// Appends the address and port part of a tuple (`src=.. dst=.. sport=..`).
fn push_tuple(out: &mut Vec<u8>, t: &Tuple) {
    push_addrs(out, t, b"src=", b"dst=");
    push_ports(out, t);
}

/// Appends a tuple's addresses with the given tags (`src=`, `mask-src=`,
/// `master-src=` ...), each followed by a blank.
pub(crate) fn push_addrs(out: &mut Vec<u8>, t: &Tuple, src_tag: &[u8], dst_tag: &[u8]) {
    out.extend_from_slice(src_tag);
    push_ip(out, t.src);
    out.push(b' ');
    out.extend_from_slice(dst_tag);
    push_ip(out, t.dst);
    out.push(b' ');
}

/// Appends a tuple's layer-4 part as libnetfilter_conntrack's
/// `__snprintf_proto` does: ports, GRE keys or ICMP type/code/id (nothing
/// for other protocols), each followed by a blank.
pub(crate) fn push_ports(out: &mut Vec<u8>, t: &Tuple) {
    match t.proto {
        p if proto::has_ports(p) => {
            out.extend_from_slice(b"sport=");
            push_u64(out, t.sport as u64);
            out.extend_from_slice(b" dport=");
            push_u64(out, t.dport as u64);
            out.push(b' ');
        }
        proto::GRE => {
            out.extend_from_slice(b"srckey=0x");
            push_hex(out, t.sport as u32);
            out.extend_from_slice(b" dstkey=0x");
            push_hex(out, t.dport as u32);
            out.push(b' ');
        }
        p if proto::is_icmp(p) => {
            out.extend_from_slice(b"type=");
            push_u64(out, t.icmp_type as u64);
            out.extend_from_slice(b" code=");
            push_u64(out, t.icmp_code as u64);
            out.extend_from_slice(b" id=");
            push_u64(out, t.icmp_id as u64);
            out.push(b' ');
        }
        _ => {}
    }
}

fn push_kv(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key);
    push_u64(out, v);
    out.push(b' ');
}

/// Appends `delta-time=N ` the way libnetfilter_conntrack computes it.
fn push_delta_time(out: &mut Vec<u8>, f: &Flow, now: i64) {
    let Some(start) = f.timestamp_start else {
        return;
    };
    let stop = match f.timestamp_stop {
        Some(s) if s != 0 => (s / 1_000_000_000) as i64,
        _ => now,
    };
    let delta = stop - (start / 1_000_000_000) as i64;
    // printed as unsigned long long, like the C cast
    push_kv(out, b"delta-time=", delta as u64);
}

/// Appends one flow as conntrack's text line, without the newline.
pub fn write_line(out: &mut Vec<u8>, f: &Flow, o: &TextOptions) {
    let start = out.len();
    if let Some(e) = o.event {
        out.extend_from_slice(event_tag(e).as_bytes());
        out.push(b' ');
    }
    if o.extended {
        push_padded(out, names::l3_name(f.family), 8);
        out.push(b' ');
        push_u64(out, f.family as u64);
        out.push(b' ');
    }
    push_padded(out, names::l4_name(f.orig.proto), 8);
    out.push(b' ');
    push_u64(out, f.orig.proto as u64);
    out.push(b' ');
    if o.show_timeout
        && let Some(t) = f.timeout
    {
        push_u64(out, t as u64);
        out.push(b' ');
    }
    match f.protoinfo {
        ProtoInfo::Tcp(t) => {
            if let Some(s) = t.state {
                out.extend_from_slice(names::tcp_state_name(s).as_bytes());
                out.push(b' ');
            }
        }
        ProtoInfo::Sctp { state: Some(s), .. } => {
            out.extend_from_slice(names::sctp_state_name(s).as_bytes());
            out.push(b' ');
        }
        ProtoInfo::Dccp { state: Some(s), .. } => {
            out.extend_from_slice(names::dccp_state_name(s).as_bytes());
            out.push(b' ');
        }
        _ => {}
    }
    if f.has_orig {
        push_tuple(out, &f.orig);
    }
    if let Some(z) = f.orig_zone {
        push_kv(out, b"zone-orig=", z as u64);
    }
    if let Some(c) = f.counters[0] {
        push_kv(out, b"packets=", c.packets);
        push_kv(out, b"bytes=", c.bytes);
    }
    if f.is_unreplied() {
        out.extend_from_slice(b"[UNREPLIED] ");
    }
    if f.has_reply {
        push_tuple(out, &f.reply);
    }
    if let Some(z) = f.reply_zone {
        push_kv(out, b"zone-reply=", z as u64);
    }
    if let Some(c) = f.counters[1] {
        push_kv(out, b"packets=", c.packets);
        push_kv(out, b"bytes=", c.bytes);
    }
    if let Some(s) = f.status {
        if s & status::HW_OFFLOAD != 0 {
            out.extend_from_slice(b"[HW_OFFLOAD] ");
        } else if s & status::OFFLOAD != 0 {
            out.extend_from_slice(b"[OFFLOAD] ");
        } else if s & status::ASSURED != 0 {
            out.extend_from_slice(b"[ASSURED] ");
        }
    }
    if let Some(m) = f.mark {
        push_kv(out, b"mark=", m as u64);
    }
    if let Some(m) = f.secmark {
        push_kv(out, b"secmark=", m as u64);
    }
    if let Some(ctx) = &f.secctx {
        out.extend_from_slice(b"secctx=");
        out.extend_from_slice(ctx.as_bytes());
        out.push(b' ');
    }
    if let Some(z) = f.zone {
        push_kv(out, b"zone=", z as u64);
    }
    push_delta_time(out, f, o.now);
    if o.ktimestamp {
        if let Some(s) = f.timestamp_start {
            out.extend_from_slice(b"[start=");
            push_ctime(out, (s / 1_000_000_000) as i64);
            out.extend_from_slice(b"] ");
        }
        if let Some(s) = f.timestamp_stop {
            out.extend_from_slice(b"[stop=");
            push_ctime(out, (s / 1_000_000_000) as i64);
            out.extend_from_slice(b"] ");
        }
    }
    if let Some(h) = &f.helper {
        out.extend_from_slice(b"helper=");
        out.extend_from_slice(h.as_bytes());
        out.push(b' ');
    }
    if let Some(u) = f.use_count {
        push_kv(out, b"use=", u as u64);
    }
    if o.id
        && let Some(id) = f.id
    {
        push_kv(out, b"id=", id as u64);
    }
    if let (Some(map), Some(l)) = (o.labels, &f.labels) {
        out.extend_from_slice(b"labels=");
        for bit in 0..(l.len as usize * 32) {
            if !l.test(bit) {
                continue;
            }
            if let Some(name) = map.name(bit).filter(|n| !n.is_empty()) {
                out.extend_from_slice(name.as_bytes());
                out.push(b',');
            }
        }
        // libnetfilter_conntrack drops the last byte (a comma, or the '=')
        out.pop();
        out.push(b' ');
    }
    if out.len() > start {
        out.pop(); // the trailing blank
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp4;
    use super::super::{AF_INET6, Counters, Labels, Tuple};
    use super::*;

    fn line(f: &Flow, o: &TextOptions) -> String {
        let mut v = Vec::new();
        write_line(&mut v, f, o);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn documented_tcp_line() {
        assert_eq!(
            line(&tcp4(), &TextOptions::default()),
            "tcp      6 119 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1234 dport=80 \
             src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1234 [ASSURED] mark=5 use=1"
        );
    }

    #[test]
    fn extended_id_and_event() {
        let o = TextOptions {
            extended: true,
            id: true,
            event: Some(EventKind::New),
            ..TextOptions::default()
        };
        let mut f = tcp4();
        f.use_count = None;
        assert_eq!(
            line(&f, &o),
            "    [NEW] ipv4     2 tcp      6 119 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 \
             sport=1234 dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1234 [ASSURED] \
             mark=5 id=3597683064"
        );
    }

    #[test]
    fn unreplied_udp6_with_counters_zone_and_delta() {
        let mut f = Flow {
            family: AF_INET6,
            has_orig: true,
            has_reply: true,
            orig: Tuple {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::2".parse().unwrap(),
                proto: proto::TCP,
                sport: 1,
                dport: 2,
                ..Tuple::default()
            },
            status: Some(status::CONFIRMED),
            timeout: Some(59),
            mark: Some(0),
            zone: Some(3),
            use_count: Some(1),
            counters: [Some(Counters::default()), Some(Counters::default())],
            timestamp_start: Some(1_000_000_000_000),
            protoinfo: ProtoInfo::Tcp(crate::flow::TcpInfo {
                state: Some(1),
                ..Default::default()
            }),
            ..Flow::default()
        };
        f.reply = f.orig.inverted();
        let o = TextOptions {
            now: 1000,
            ..TextOptions::default()
        };
        assert_eq!(
            line(&f, &o),
            "tcp      6 59 SYN_SENT src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 packets=0 \
             bytes=0 [UNREPLIED] src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 packets=0 \
             bytes=0 mark=0 zone=3 delta-time=0 use=1"
        );
    }

    #[test]
    fn icmp_gre_and_unknown() {
        let mut f = tcp4();
        f.protoinfo = ProtoInfo::None;
        f.orig = Tuple {
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 77,
            ..f.orig
        };
        f.reply = f.orig.inverted();
        f.status = Some(status::CONFIRMED);
        f.timeout = Some(29);
        f.mark = Some(0);
        assert!(line(&f, &TextOptions::default()).starts_with(
            "icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=77 [UNREPLIED] \
             src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=77 mark=0"
        ));
        f.orig.proto = proto::GRE;
        f.orig.sport = 0x10;
        f.orig.dport = 0x20;
        f.reply = f.orig.inverted();
        assert!(line(&f, &TextOptions::default()).contains("srckey=0x10 dstkey=0x20"));
        f.orig.proto = 50;
        f.reply.proto = 50;
        assert!(line(&f, &TextOptions::default()).starts_with("unknown  50 29 src="));
    }

    #[test]
    fn labels_drop_last_byte_like_conntrack() {
        let map = LabelMap::parse("0 a\n2 b\n");
        let mut f = tcp4();
        f.labels = Some(Labels {
            words: [0b101, 0, 0, 0],
            len: 4,
        });
        let o = TextOptions {
            labels: Some(&map),
            ..TextOptions::default()
        };
        assert!(line(&f, &o).ends_with("use=1 labels=a,b"));
        f.labels = Some(Labels {
            words: [0b10, 0, 0, 0],
            len: 4,
        });
        assert!(line(&f, &o).ends_with("use=1 labels"));
    }
}
