//! conntrack's default one-line text format (and `-o extended,id,
//! ktimestamp,labels`), byte for byte as libnetfilter_conntrack writes it.

use super::addr::{write_ctime, write_ip};
use super::buf::{Name16, Out};
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

/// A layer-3 or layer-4 name as its column: `%-8s` and a blank.
const fn column(name: &str) -> Name16 {
    Name16::padded(name, 9)
}

/// The layer-4 column of every protocol conntrack names.
fn l4_column(p: u8) -> &'static Name16 {
    static COLUMNS: [Name16; 9] = [
        column(names::l4_name(proto::TCP)),
        column(names::l4_name(proto::UDP)),
        column(names::l4_name(proto::UDPLITE)),
        column(names::l4_name(proto::ICMP)),
        column(names::l4_name(proto::ICMPV6)),
        column(names::l4_name(proto::SCTP)),
        column(names::l4_name(proto::GRE)),
        column(names::l4_name(proto::DCCP)),
        column(names::l4_name(0)),
    ];
    &COLUMNS[match p {
        proto::TCP => 0,
        proto::UDP => 1,
        proto::UDPLITE => 2,
        proto::ICMP => 3,
        proto::ICMPV6 => 4,
        proto::SCTP => 5,
        proto::GRE => 6,
        proto::DCCP => 7,
        _ => 8,
    }]
}

/// The layer-3 column (`-o extended`).
fn l3_column(family: u8) -> &'static Name16 {
    static COLUMNS: [Name16; 3] = [
        column(names::l3_name(super::AF_INET)),
        column(names::l3_name(super::AF_INET6)),
        column(names::l3_name(0)),
    ];
    &COLUMNS[match family {
        super::AF_INET => 0,
        super::AF_INET6 => 1,
        _ => 2,
    }]
}

/// The TCP state names with their blank.
static TCP_STATES: [Name16; 10] = {
    let mut t = [Name16::new(""); 10];
    let mut i = 0;
    while i < 10 {
        t[i] = Name16::padded(names::TCP_STATES[i], names::TCP_STATES[i].len() + 1);
        i += 1;
    }
    t
};

/// The event tag conntrack prints, right-aligned in 9 columns.
pub fn event_tag(e: EventKind) -> &'static str {
    match e {
        EventKind::New => "    [NEW]",
        EventKind::Update => " [UPDATE]",
        EventKind::Destroy => "[DESTROY]",
    }
}

/// Writes the address and port part of a tuple (`src=.. dst=.. sport=..`).
fn write_tuple(o: &mut Out, t: &Tuple) {
    o.lit(b"src=");
    write_ip(o, t.src);
    o.lit(b" dst=");
    write_ip(o, t.dst);
    o.byte(b' ');
    write_l4(o, t);
}

/// Writes a tuple's layer-4 part as libnetfilter_conntrack's
/// `__snprintf_proto` does: ports, GRE keys or ICMP type/code/id (nothing
/// for other protocols), each followed by a blank.
fn write_l4(o: &mut Out, t: &Tuple) {
    match t.proto {
        p if proto::has_ports(p) => {
            o.lit(b"sport=");
            o.u32(t.sport as u32);
            o.lit(b" dport=");
            o.u32(t.dport as u32);
            o.byte(b' ');
        }
        proto::GRE => {
            o.lit(b"srckey=0x");
            o.hex(t.sport as u32);
            o.lit(b" dstkey=0x");
            o.hex(t.dport as u32);
            o.byte(b' ');
        }
        p if proto::is_icmp(p) => {
            o.lit(b"type=");
            o.u32(t.icmp_type as u32);
            o.lit(b" code=");
            o.u32(t.icmp_code as u32);
            o.lit(b" id=");
            o.u32(t.icmp_id as u32);
            o.byte(b' ');
        }
        _ => {}
    }
}

/// Appends a tuple's addresses with the given tags (`src=`, `mask-src=`,
/// `master-src=` ...), each followed by a blank (expectation lines).
pub(crate) fn push_addrs(out: &mut Vec<u8>, t: &Tuple, src_tag: &[u8], dst_tag: &[u8]) {
    let mut o = Out::append(out);
    o.bytes(src_tag);
    write_ip(&mut o, t.src);
    o.byte(b' ');
    o.bytes(dst_tag);
    write_ip(&mut o, t.dst);
    o.byte(b' ');
    o.finish();
}

/// Appends a tuple's layer-4 part (see [`write_l4`]).
pub(crate) fn push_ports(out: &mut Vec<u8>, t: &Tuple) {
    let mut o = Out::append(out);
    write_l4(&mut o, t);
    o.finish();
}

/// Writes `key` (with its `=`), the number and a blank.
#[inline(always)]
fn kv<const N: usize>(o: &mut Out, key: &[u8; N], v: u64) {
    o.lit(key);
    o.u64(v);
    o.byte(b' ');
}

/// Writes `delta-time=N ` the way libnetfilter_conntrack computes it.
fn write_delta_time(o: &mut Out, f: &Flow, now: i64) {
    let Some(start) = f.timestamp_start else {
        return;
    };
    let stop = match f.timestamp_stop {
        Some(s) if s != 0 => (s / 1_000_000_000) as i64,
        _ => now,
    };
    let delta = stop - (start / 1_000_000_000) as i64;
    // printed as unsigned long long, like the C cast
    kv(o, b"delta-time=", delta as u64);
}

/// Appends one flow as conntrack's text line, without the newline.
pub fn write_line(out: &mut Vec<u8>, f: &Flow, opts: &TextOptions) {
    let mut o = Out::append(out);
    write_line_to(&mut o, f, opts);
    o.finish();
}

/// Writes one flow as conntrack's text line, without the newline.
pub fn write_line_to(o: &mut Out, f: &Flow, opts: &TextOptions) {
    let start = o.pos();
    if let Some(e) = opts.event {
        let tag: &[u8; 9] = match e {
            EventKind::New => b"    [NEW]",
            EventKind::Update => b" [UPDATE]",
            EventKind::Destroy => b"[DESTROY]",
        };
        o.lit(tag);
        o.byte(b' ');
    }
    if opts.extended {
        o.name(l3_column(f.family));
        o.u32(f.family as u32);
        o.byte(b' ');
    }
    o.name(l4_column(f.orig.proto));
    o.u32(f.orig.proto as u32);
    o.byte(b' ');
    if opts.show_timeout
        && let Some(t) = f.timeout
    {
        o.u32(t);
        o.byte(b' ');
    }
    match f.protoinfo {
        ProtoInfo::Tcp(t) => {
            if let Some(s) = t.state {
                o.name(TCP_STATES.get(s as usize).unwrap_or(&TCP_STATES[0]));
            }
        }
        ProtoInfo::Sctp { state: Some(s), .. } => {
            o.bytes(names::sctp_state_name(s).as_bytes());
            o.byte(b' ');
        }
        ProtoInfo::Dccp { state: Some(s), .. } => {
            o.bytes(names::dccp_state_name(s).as_bytes());
            o.byte(b' ');
        }
        _ => {}
    }
    if f.has_orig {
        write_tuple(o, &f.orig);
    }
    if let Some(z) = f.orig_zone {
        kv(o, b"zone-orig=", z as u64);
    }
    if let Some(c) = f.counters[0] {
        kv(o, b"packets=", c.packets);
        kv(o, b"bytes=", c.bytes);
    }
    if f.is_unreplied() {
        o.lit(b"[UNREPLIED] ");
    }
    if f.has_reply {
        write_tuple(o, &f.reply);
    }
    if let Some(z) = f.reply_zone {
        kv(o, b"zone-reply=", z as u64);
    }
    if let Some(c) = f.counters[1] {
        kv(o, b"packets=", c.packets);
        kv(o, b"bytes=", c.bytes);
    }
    if let Some(s) = f.status {
        if s & status::HW_OFFLOAD != 0 {
            o.lit(b"[HW_OFFLOAD] ");
        } else if s & status::OFFLOAD != 0 {
            o.lit(b"[OFFLOAD] ");
        } else if s & status::ASSURED != 0 {
            o.lit(b"[ASSURED] ");
        }
    }
    if let Some(m) = f.mark {
        kv(o, b"mark=", m as u64);
    }
    if let Some(m) = f.secmark {
        kv(o, b"secmark=", m as u64);
    }
    if let Some(ctx) = &f.secctx {
        o.lit(b"secctx=");
        o.bytes(ctx.as_bytes());
        o.byte(b' ');
    }
    if let Some(z) = f.zone {
        kv(o, b"zone=", z as u64);
    }
    write_delta_time(o, f, opts.now);
    if opts.ktimestamp {
        if let Some(s) = f.timestamp_start {
            o.lit(b"[start=");
            write_ctime(o, (s / 1_000_000_000) as i64);
            o.lit(b"] ");
        }
        if let Some(s) = f.timestamp_stop {
            o.lit(b"[stop=");
            write_ctime(o, (s / 1_000_000_000) as i64);
            o.lit(b"] ");
        }
    }
    if let Some(h) = &f.helper {
        o.lit(b"helper=");
        o.bytes(h.as_bytes());
        o.byte(b' ');
    }
    if let Some(u) = f.use_count {
        kv(o, b"use=", u as u64);
    }
    if opts.id
        && let Some(id) = f.id
    {
        kv(o, b"id=", id as u64);
    }
    if let (Some(map), Some(l)) = (opts.labels, &f.labels) {
        o.lit(b"labels=");
        for bit in 0..(l.len as usize * 32) {
            if !l.test(bit) {
                continue;
            }
            if let Some(name) = map.name(bit).filter(|n| !n.is_empty()) {
                o.bytes(name.as_bytes());
                o.byte(b',');
            }
        }
        // libnetfilter_conntrack drops the last byte (a comma, or the '=')
        o.unwrite(1);
        o.byte(b' ');
    }
    if o.pos() > start {
        o.unwrite(1); // the trailing blank
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
