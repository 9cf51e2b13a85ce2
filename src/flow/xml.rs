//! conntrack's `-o xml` format, byte for byte as libnetfilter_conntrack
//! writes it (including its quirks: SCTP/DCCP states use the TCP names).

use super::addr::{local_time, push_2digits, push_hex, push_i64, push_ip, push_u64};
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

fn push_elem(out: &mut Vec<u8>, tag: &str, v: u64) {
    out.push(b'<');
    out.extend_from_slice(tag.as_bytes());
    out.push(b'>');
    push_u64(out, v);
    out.extend_from_slice(b"</");
    out.extend_from_slice(tag.as_bytes());
    out.push(b'>');
}

fn push_tuple(out: &mut Vec<u8>, f: &Flow, t: &Tuple, present: bool, dir: usize) {
    out.extend_from_slice(if dir == 0 {
        b"<meta direction=\"original\">"
    } else {
        b"<meta direction=\"reply\">"
    });
    // an absent tuple (ctrackd's external cache) has family and protocol 0
    let (family, l4) = if present { (f.family, t.proto) } else { (0, 0) };
    out.extend_from_slice(b"<layer3 protonum=\"");
    push_u64(out, family as u64);
    out.extend_from_slice(b"\" protoname=\"");
    out.extend_from_slice(names::l3_name(family).as_bytes());
    out.extend_from_slice(b"\"><src>");
    if present {
        push_ip(out, t.src);
    }
    out.extend_from_slice(b"</src><dst>");
    if present {
        push_ip(out, t.dst);
    }
    out.extend_from_slice(b"</dst></layer3><layer4 protonum=\"");
    push_u64(out, l4 as u64);
    out.extend_from_slice(b"\" protoname=\"");
    out.extend_from_slice(names::l4_name(l4).as_bytes());
    out.extend_from_slice(b"\">");
    match l4 {
        p if proto::has_ports(p) => {
            push_elem(out, "sport", t.sport as u64);
            push_elem(out, "dport", t.dport as u64);
        }
        proto::GRE => {
            out.extend_from_slice(b"<srckey>0x");
            push_hex(out, t.sport as u32);
            out.extend_from_slice(b"</srckey><dstkey>0x");
            push_hex(out, t.dport as u32);
            out.extend_from_slice(b"</dstkey>");
        }
        _ => {}
    }
    out.extend_from_slice(b"</layer4>");
    let zone = if dir == 0 { f.orig_zone } else { f.reply_zone };
    if let Some(z) = zone {
        push_elem(out, "zone", z as u64);
    }
    // libnetfilter_conntrack tests the original counters for both directions
    if f.counters[0].is_some() {
        let c = f.counters[dir].unwrap_or_default();
        out.extend_from_slice(b"<counters>");
        push_elem(out, "packets", c.packets);
        push_elem(out, "bytes", c.bytes);
        out.extend_from_slice(b"</counters>");
    }
    out.extend_from_slice(b"</meta>");
}

/// Appends `<when>` with the local time of `now` (`-o timestamp` on
/// events), as libnetfilter_conntrack's `__snprintf_localtime_xml`.
pub(crate) fn push_when(out: &mut Vec<u8>, now: i64) {
    let tm = local_time(now);
    out.extend_from_slice(b"<when><hour>");
    push_i64(out, tm.hour as i64);
    out.extend_from_slice(b"</hour><min>");
    push_2digits(out, tm.min);
    out.extend_from_slice(b"</min><sec>");
    push_2digits(out, tm.sec);
    out.extend_from_slice(b"</sec><wday>");
    push_i64(out, tm.wday as i64 + 1);
    out.extend_from_slice(b"</wday><day>");
    push_i64(out, tm.mday as i64);
    out.extend_from_slice(b"</day><month>");
    push_i64(out, tm.mon as i64 + 1);
    out.extend_from_slice(b"</month><year>");
    push_i64(out, 1900 + tm.year as i64);
    out.extend_from_slice(b"</year></when>");
}

/// Appends one flow as a `<flow>` element, without the newline.
pub fn write_flow(out: &mut Vec<u8>, f: &Flow, o: &XmlOptions) {
    out.extend_from_slice(match o.event {
        Some(EventKind::New) => b"<flow type=\"new\">".as_slice(),
        Some(EventKind::Update) => b"<flow type=\"update\">",
        Some(EventKind::Destroy) => b"<flow type=\"destroy\">",
        None => b"<flow>",
    });
    push_tuple(out, f, &f.orig, f.has_orig, 0);
    push_tuple(out, f, &f.reply, f.has_reply, 1);

    let state = match f.protoinfo {
        ProtoInfo::Tcp(t) => t.state,
        ProtoInfo::Sctp { state, .. } => state,
        ProtoInfo::Dccp { state, .. } => state,
        ProtoInfo::None => None,
    };
    let labels = o.labels.and(f.labels.as_ref());
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
        out.extend_from_slice(b"<meta direction=\"independent\">");
    }
    if let Some(s) = state {
        // the C code indexes the TCP table for every protocol
        out.extend_from_slice(b"<state>");
        out.extend_from_slice(names::tcp_state_name(s).as_bytes());
        out.extend_from_slice(b"</state>");
    }
    if let Some(t) = f.timeout {
        push_elem(out, "timeout", t as u64);
    }
    if let Some(m) = f.mark {
        push_elem(out, "mark", m as u64);
    }
    if let (Some(map), Some(l)) = (o.labels, labels) {
        out.extend_from_slice(b"<labels>");
        for bit in 0..(l.len as usize * 32) {
            if let Some(name) = map.name(bit).filter(|n| l.test(bit) && !n.is_empty()) {
                out.extend_from_slice(b"<label>");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"</label>");
            }
        }
        out.extend_from_slice(b"</labels>");
    }
    if let Some(m) = f.secmark {
        push_elem(out, "secmark", m as u64);
    }
    if let Some(ctx) = &f.secctx {
        out.extend_from_slice(b"<secctx>");
        out.extend_from_slice(ctx.as_bytes());
        out.extend_from_slice(b"</secctx>");
    }
    if let Some(z) = f.zone {
        push_elem(out, "zone", z as u64);
    }
    if let Some(u) = f.use_count {
        push_elem(out, "use", u as u64);
    }
    if let Some(id) = f.id {
        push_elem(out, "id", id as u64);
    }
    if let Some(s) = f.status {
        if s & status::ASSURED != 0 {
            out.extend_from_slice(b"<assured/>");
        }
        if s & status::SEEN_REPLY == 0 {
            out.extend_from_slice(b"<unreplied/>");
        }
    }
    if o.ktimestamp && (f.timestamp_start.is_some() || f.timestamp_stop.is_some()) {
        out.extend_from_slice(b"<timestamp>");
        if let Some(s) = f.timestamp_start {
            push_elem(out, "start", s);
        }
        if let Some(s) = f.timestamp_stop {
            push_elem(out, "stop", s);
        }
        out.extend_from_slice(b"</timestamp>");
    }
    match (f.timestamp_start, f.timestamp_stop) {
        (Some(start), Some(stop)) => {
            let d = (stop.wrapping_sub(start) / 1_000_000_000) as i64;
            out.extend_from_slice(b"<deltatime>");
            push_u64(out, d as u64);
            out.extend_from_slice(b"</deltatime>");
        }
        (Some(start), None) => {
            let d = o.now - (start / 1_000_000_000) as i64;
            out.extend_from_slice(b"<deltatime>");
            push_u64(out, d as u64);
            out.extend_from_slice(b"</deltatime>");
        }
        _ => {}
    }
    if independent {
        out.extend_from_slice(b"</meta>");
    }
    if o.when {
        push_when(out, o.now);
    }
    if let Some(h) = &f.helper {
        out.extend_from_slice(b"<helper>");
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"</helper>");
    }
    out.extend_from_slice(b"</flow>");
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
