//! conntrack's `-o xml` format, byte for byte as libnetfilter_conntrack
//! writes it (including its quirks: SCTP/DCCP states use the TCP names).

use super::addr::{local_time, write_2digits, write_ip};
use super::buf::Out;
use super::labels::LabelMap;
use super::names;
use super::{EventKind, Flow, ProtoInfo, Tuple, proto, status};

/// The document header conntrack prints before the first flow.
pub const HEADER: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>\n";
/// The closing tag conntrack prints after the last flow.
pub const FOOTER: &str = "</conntrack>\n";

/// Which optional parts to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct XmlOptions<'a> {
    /// Event type attribute of `<flow>`.
    pub event: Option<EventKind>,
    /// `-o timestamp` on events: a `<when>` element with local time.
    pub when: bool,
    /// `-o ktimestamp`: `<timestamp><start>..</start><stop>..</stop></timestamp>`.
    pub ktimestamp: bool,
    /// `-o labels`: label names from this map.
    pub labels: Option<&'a LabelMap>,
    /// The current time in seconds (for `<deltatime>` and `<when>`).
    pub now: i64,
}

fn push_elem(o: &mut Out, tag: &str, v: u64) {
    o.byte(b'<');
    o.bytes(tag.as_bytes());
    o.byte(b'>');
    o.u64(v);
    o.lit(b"</");
    o.bytes(tag.as_bytes());
    o.byte(b'>');
}

fn push_tuple(o: &mut Out, f: &Flow, t: &Tuple, present: bool, dir: usize) {
    o.bytes(if dir == 0 {
        b"<meta direction=\"original\">"
    } else {
        b"<meta direction=\"reply\">"
    });
    // an absent tuple (ctrackd's external cache) has family and protocol 0
    let (family, l4) = if present { (f.family, t.proto) } else { (0, 0) };
    o.lit(b"<layer3 protonum=\"");
    o.u64(family as u64);
    o.lit(b"\" protoname=\"");
    o.bytes(names::l3_name(family).as_bytes());
    o.lit(b"\"><src>");
    if present {
        write_ip(o, t.src);
    }
    o.lit(b"</src><dst>");
    if present {
        write_ip(o, t.dst);
    }
    o.lit(b"</dst></layer3><layer4 protonum=\"");
    o.u64(l4 as u64);
    o.lit(b"\" protoname=\"");
    o.bytes(names::l4_name(l4).as_bytes());
    o.lit(b"\">");
    match l4 {
        p if proto::has_ports(p) => {
            push_elem(o, "sport", t.sport as u64);
            push_elem(o, "dport", t.dport as u64);
        }
        proto::GRE => {
            o.lit(b"<srckey>0x");
            o.hex(t.sport as u32);
            o.lit(b"</srckey><dstkey>0x");
            o.hex(t.dport as u32);
            o.lit(b"</dstkey>");
        }
        _ => {}
    }
    o.lit(b"</layer4>");
    let zone = if dir == 0 { f.orig_zone } else { f.reply_zone };
    if let Some(z) = zone {
        push_elem(o, "zone", z as u64);
    }
    // libnetfilter_conntrack tests the original counters for both directions
    if f.counters[0].is_some() {
        let c = f.counters[dir].unwrap_or_default();
        o.lit(b"<counters>");
        push_elem(o, "packets", c.packets);
        push_elem(o, "bytes", c.bytes);
        o.lit(b"</counters>");
    }
    o.lit(b"</meta>");
}

/// Writes `<when>` with the local time of `now` (`-o timestamp` on
/// events), as libnetfilter_conntrack's `__snprintf_localtime_xml`.
fn write_when(o: &mut Out, now: i64) {
    let tm = local_time(now);
    o.lit(b"<when><hour>");
    o.i64(tm.hour as i64);
    o.lit(b"</hour><min>");
    write_2digits(o, tm.min);
    o.lit(b"</min><sec>");
    write_2digits(o, tm.sec);
    o.lit(b"</sec><wday>");
    o.i64(tm.wday as i64 + 1);
    o.lit(b"</wday><day>");
    o.i64(tm.mday as i64);
    o.lit(b"</day><month>");
    o.i64(tm.mon as i64 + 1);
    o.lit(b"</month><year>");
    o.i64(1900 + tm.year as i64);
    o.lit(b"</year></when>");
}

/// Appends `<when>` (see [`write_when`]) to `out` (expectation events).
pub(crate) fn push_when(out: &mut Vec<u8>, now: i64) {
    let mut o = Out::append(out);
    write_when(&mut o, now);
    o.finish();
}

/// Appends one flow as a `<flow>` element, without the newline.
pub fn write_flow(out: &mut Vec<u8>, f: &Flow, opts: &XmlOptions) {
    let mut o = Out::append(out);
    write_flow_to(&mut o, f, opts);
    o.finish();
}

/// Writes one flow as a `<flow>` element (see [`write_flow`]).
pub fn write_flow_to(o: &mut Out, f: &Flow, opts: &XmlOptions) {
    o.bytes(match opts.event {
        Some(EventKind::New) => b"<flow type=\"new\">".as_slice(),
        Some(EventKind::Update) => b"<flow type=\"update\">",
        Some(EventKind::Destroy) => b"<flow type=\"destroy\">",
        None => b"<flow>",
    });
    push_tuple(o, f, &f.orig, f.has_orig, 0);
    push_tuple(o, f, &f.reply, f.has_reply, 1);

    let state = match f.protoinfo {
        ProtoInfo::Tcp(t) => t.state,
        ProtoInfo::Sctp { state, .. } => state,
        ProtoInfo::Dccp { state, .. } => state,
        ProtoInfo::None => None,
    };
    let labels = opts.labels.and(f.labels.as_ref());
    let independent = state.is_some()
        || f.timeout.is_some()
        || f.mark.is_some()
        || f.secmark.is_some()
        || f.zone.is_some()
        || f.use_count.is_some()
        || f.status.is_some()
        || f.id.is_some()
        || f.labels.is_some()
        || f.timestamp_start.is_some()
        || f.timestamp_stop.is_some();
    if independent {
        o.lit(b"<meta direction=\"independent\">");
    }
    if let Some(s) = state {
        // the C code indexes the TCP table for every protocol
        o.lit(b"<state>");
        o.bytes(names::tcp_state_name(s).as_bytes());
        o.lit(b"</state>");
    }
    if let Some(t) = f.timeout {
        push_elem(o, "timeout", t as u64);
    }
    if let Some(m) = f.mark {
        push_elem(o, "mark", m as u64);
    }
    if let (Some(map), Some(l)) = (opts.labels, labels) {
        o.lit(b"<labels>");
        for bit in 0..(l.len as usize * 32) {
            if let Some(name) = map.name(bit).filter(|n| l.test(bit) && !n.is_empty()) {
                o.lit(b"<label>");
                o.bytes(name.as_bytes());
                o.lit(b"</label>");
            }
        }
        o.lit(b"</labels>");
    }
    if let Some(m) = f.secmark {
        push_elem(o, "secmark", m as u64);
    }
    if let Some(ctx) = &f.secctx {
        o.lit(b"<secctx>");
        o.bytes(ctx.as_bytes());
        o.lit(b"</secctx>");
    }
    if let Some(z) = f.zone {
        push_elem(o, "zone", z as u64);
    }
    if let Some(u) = f.use_count {
        push_elem(o, "use", u as u64);
    }
    if let Some(id) = f.id {
        push_elem(o, "id", id as u64);
    }
    if let Some(s) = f.status {
        if s & status::ASSURED != 0 {
            o.lit(b"<assured/>");
        }
        if s & status::SEEN_REPLY == 0 {
            o.lit(b"<unreplied/>");
        }
    }
    if opts.ktimestamp && (f.timestamp_start.is_some() || f.timestamp_stop.is_some()) {
        o.lit(b"<timestamp>");
        if let Some(s) = f.timestamp_start {
            push_elem(o, "start", s);
        }
        if let Some(s) = f.timestamp_stop {
            push_elem(o, "stop", s);
        }
        o.lit(b"</timestamp>");
    }
    match (f.timestamp_start, f.timestamp_stop) {
        (Some(start), Some(stop)) => {
            let d = (stop.wrapping_sub(start) / 1_000_000_000) as i64;
            o.lit(b"<deltatime>");
            o.u64(d as u64);
            o.lit(b"</deltatime>");
        }
        (Some(start), None) => {
            let d = opts.now - (start / 1_000_000_000) as i64;
            o.lit(b"<deltatime>");
            o.u64(d as u64);
            o.lit(b"</deltatime>");
        }
        _ => {}
    }
    if independent {
        o.lit(b"</meta>");
    }
    if opts.when {
        write_when(o, opts.now);
    }
    if let Some(h) = &f.helper {
        o.lit(b"<helper>");
        o.bytes(h.as_bytes());
        o.lit(b"</helper>");
    }
    o.lit(b"</flow>");
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp4;
    use super::*;

    #[test]
    fn tcp_flow_xml() {
        let mut v = Vec::new();
        write_flow(&mut v, &tcp4(), &XmlOptions::default());
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "<flow><meta direction=\"original\"><layer3 protonum=\"2\" protoname=\"ipv4\">\
             <src>10.0.0.1</src><dst>10.0.0.2</dst></layer3><layer4 protonum=\"6\" \
             protoname=\"tcp\"><sport>1234</sport><dport>80</dport></layer4></meta>\
             <meta direction=\"reply\"><layer3 protonum=\"2\" protoname=\"ipv4\"><src>10.0.0.2\
             </src><dst>10.0.0.1</dst></layer3><layer4 protonum=\"6\" protoname=\"tcp\">\
             <sport>80</sport><dport>1234</dport></layer4></meta><meta direction=\"independent\">\
             <state>ESTABLISHED</state><timeout>119</timeout><mark>5</mark><use>1</use>\
             <id>3597683064</id><assured/></meta></flow>"
        );
    }
}
