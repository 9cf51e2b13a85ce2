//! ctrack's JSON form of a flow: one object per flow (ndjson for `-o json`,
//! and the items of the web API).
//!
//! Field names are the kernel's words (orig, reply, src, dst, sport, dport,
//! state, status, mark, zone, timeout, packets, bytes) and LuCI's where it
//! has one (layer3, layer4). A field is present only when the kernel sent
//! it. The README documents the format.

use super::addr::write_ip;
use super::buf::{Name16, Out};
use super::labels::LabelMap;
use super::names;
use super::{AF_INET, AF_INET6, EventKind, Flow, ProtoInfo, Tuple, proto};

/// True for the characters [`write_str`] escapes.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&')
}

/// Writes `s` as a JSON string literal, escaping quotes, backslashes and
/// control characters (and `<`, `>`, `&` so the text is safe inside HTML).
pub fn write_str(o: &mut Out, s: &str) {
    o.byte(b'"');
    if !s.bytes().any(needs_escape) {
        o.bytes(s.as_bytes());
    } else {
        for c in s.chars() {
            match c {
                '"' => o.lit(b"\\\""),
                '\\' => o.lit(b"\\\\"),
                '\n' => o.lit(b"\\n"),
                '\r' => o.lit(b"\\r"),
                '\t' => o.lit(b"\\t"),
                c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let v = c as u32;
                    o.lit(b"\\u00");
                    o.byte(HEX[(v >> 4) as usize & 0xf]);
                    o.byte(HEX[v as usize & 0xf]);
                }
                c => {
                    let mut b = [0u8; 4];
                    o.bytes(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    o.byte(b'"');
}

/// Appends `s` as a JSON string literal (see [`write_str`]).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let mut o = Out::append(out);
    write_str(&mut o, s);
    o.finish();
}

/// Appends raw bytes from the kernel as a JSON string (lossy UTF-8).
pub fn push_bytes_str(out: &mut Vec<u8>, b: &[u8]) {
    push_str(out, &String::from_utf8_lossy(b));
}

/// The quoted layer-3 and layer-4 names.
fn l3_quoted(family: u8) -> &'static Name16 {
    static NAMES: [Name16; 3] = [
        Name16::quoted(names::l3_name(AF_INET)),
        Name16::quoted(names::l3_name(AF_INET6)),
        Name16::quoted(names::l3_name(0)),
    ];
    &NAMES[match family {
        AF_INET => 0,
        AF_INET6 => 1,
        _ => 2,
    }]
}

fn l4_quoted(p: u8) -> &'static Name16 {
    static NAMES: [Name16; 9] = [
        Name16::quoted(names::l4_name(proto::TCP)),
        Name16::quoted(names::l4_name(proto::UDP)),
        Name16::quoted(names::l4_name(proto::UDPLITE)),
        Name16::quoted(names::l4_name(proto::ICMP)),
        Name16::quoted(names::l4_name(proto::ICMPV6)),
        Name16::quoted(names::l4_name(proto::SCTP)),
        Name16::quoted(names::l4_name(proto::GRE)),
        Name16::quoted(names::l4_name(proto::DCCP)),
        Name16::quoted(names::l4_name(0)),
    ];
    &NAMES[match p {
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

/// The quoted TCP state names.
static TCP_STATES: [Name16; 10] = {
    let mut t = [Name16::new(""); 10];
    let mut i = 0;
    while i < 10 {
        t[i] = Name16::quoted(names::TCP_STATES[i]);
        i += 1;
    }
    t
};

/// The quoted status names, in bit order.
static STATUS_NAMES: [(u32, Name16); 16] = {
    let mut t = [(0, Name16::new("")); 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (
            names::STATUS_NAMES[i].0,
            Name16::quoted(names::STATUS_NAMES[i].1),
        );
        i += 1;
    }
    t
};

/// Writes `key` (quoted, with its colon and the comma before it) and a
/// number.
#[inline(always)]
fn num<const N: usize>(o: &mut Out, key: &[u8; N], v: u64) {
    o.lit(key);
    o.u64(v);
}

/// Writes an address as a JSON string.
fn write_ip_str(o: &mut Out, a: std::net::IpAddr) {
    o.byte(b'"');
    write_ip(o, a);
    o.byte(b'"');
}

/// Writes a tuple's address and layer-4 members: `src`, `dst`, then
/// `sport`/`dport`, `srckey`/`dstkey` or `type`/`code`/`id` as the
/// protocol has them (after the opening brace).
fn write_tuple_members(o: &mut Out, t: &Tuple) {
    o.lit(b"\"src\":");
    write_ip_str(o, t.src);
    o.lit(b",\"dst\":");
    write_ip_str(o, t.dst);
    match t.proto {
        p if proto::has_ports(p) => {
            num(o, b",\"sport\":", t.sport as u64);
            num(o, b",\"dport\":", t.dport as u64);
        }
        proto::GRE => {
            num(o, b",\"srckey\":", t.sport as u64);
            num(o, b",\"dstkey\":", t.dport as u64);
        }
        p if proto::is_icmp(p) => {
            num(o, b",\"type\":", t.icmp_type as u64);
            num(o, b",\"code\":", t.icmp_code as u64);
            num(o, b",\"id\":", t.icmp_id as u64);
        }
        _ => {}
    }
}

/// Appends a tuple as a JSON object of its address and layer-4 members
/// (an expectation's tuples).
pub(crate) fn write_tuple_obj(out: &mut Vec<u8>, t: &Tuple) {
    let mut o = Out::append(out);
    o.byte(b'{');
    write_tuple_members(&mut o, t);
    o.byte(b'}');
    o.finish();
}

/// A JSON object being written into a `Vec` (expectations, which are not
/// a hot path): `key` puts the separator and the key, the caller the
/// value; `end` closes it.
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `out`.
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }
    /// Writes the next key; the value goes into the returned buffer.
    pub(crate) fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }
    /// A number member.
    pub(crate) fn num(&mut self, k: &str, v: u64) {
        super::addr::push_u64(self.key(k), v);
    }
    /// A string member.
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        push_str(self.key(k), v);
    }
    /// Closes the object.
    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

fn write_tuple(o: &mut Out, f: &Flow, t: &Tuple, dir: usize) {
    o.byte(b'{');
    write_tuple_members(o, t);
    let zone = if dir == 0 { f.orig_zone } else { f.reply_zone };
    if let Some(z) = zone {
        num(o, b",\"zone\":", z as u64);
    }
    if let Some(c) = f.counters[dir] {
        num(o, b",\"packets\":", c.packets);
        num(o, b",\"bytes\":", c.bytes);
    }
    o.byte(b'}');
}

/// Which optional parts to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonOptions<'a> {
    /// Event type (`"event":"new"` ...).
    pub event: Option<EventKind>,
    /// Label names for the `labels` array (bit numbers without a map).
    pub labels: Option<&'a LabelMap>,
    /// The current time in seconds, for `age` of live entries.
    pub now: i64,
    /// Leave out the timeout (ctrackd's cache dumps).
    pub hide_timeout: bool,
}

/// Appends one flow as a JSON object, without a newline.
pub fn write_flow(out: &mut Vec<u8>, f: &Flow, opts: &JsonOptions) {
    let mut o = Out::append(out);
    write_flow_to(&mut o, f, opts);
    o.finish();
}

/// Writes one flow as a JSON object, without a newline.
pub fn write_flow_to(o: &mut Out, f: &Flow, opts: &JsonOptions) {
    o.byte(b'{');
    match opts.event {
        Some(EventKind::New) => o.lit(b"\"event\":\"new\","),
        Some(EventKind::Update) => o.lit(b"\"event\":\"update\","),
        Some(EventKind::Destroy) => o.lit(b"\"event\":\"destroy\","),
        None => {}
    }
    o.lit(b"\"layer3\":");
    o.name(l3_quoted(f.family));
    o.lit(b",\"layer4\":");
    o.name(l4_quoted(f.orig.proto));
    num(o, b",\"protonum\":", f.orig.proto as u64);
    if let Some(t) = f.timeout.filter(|_| !opts.hide_timeout) {
        num(o, b",\"timeout\":", t as u64);
    }
    match f.protoinfo {
        ProtoInfo::Tcp(t) => {
            if let Some(s) = t.state {
                o.lit(b",\"state\":");
                o.name(TCP_STATES.get(s as usize).unwrap_or(&TCP_STATES[0]));
            }
        }
        ProtoInfo::Sctp { state: Some(s), .. } => {
            o.lit(b",\"state\":");
            write_str(o, names::sctp_state_name(s));
        }
        ProtoInfo::Dccp { state: Some(s), .. } => {
            o.lit(b",\"state\":");
            write_str(o, names::dccp_state_name(s));
        }
        _ => {}
    }
    if f.has_orig {
        o.lit(b",\"orig\":");
        write_tuple(o, f, &f.orig, 0);
    }
    if f.has_reply {
        o.lit(b",\"reply\":");
        write_tuple(o, f, &f.reply, 1);
    }
    if let Some(m) = &f.master {
        o.lit(b",\"master\":{");
        write_tuple_members(o, m);
        o.byte(b'}');
    }
    if let Some(c) = f.total_counters() {
        num(o, b",\"packets\":", c.packets);
        num(o, b",\"bytes\":", c.bytes);
    }
    if let Some(s) = f.status {
        o.lit(b",\"status\":[");
        let mut first = true;
        for (bit, name) in &STATUS_NAMES {
            if s & bit != 0 {
                if !first {
                    o.byte(b',');
                }
                first = false;
                o.name(name);
            }
        }
        o.byte(b']');
    }
    if f.has_orig && f.has_reply {
        match (f.is_snat() || f.is_spat(), f.is_dnat() || f.is_dpat()) {
            (true, true) => o.lit(b",\"nat\":\"both\""),
            (true, false) => o.lit(b",\"nat\":\"snat\""),
            (false, true) => o.lit(b",\"nat\":\"dnat\""),
            _ => {}
        }
    }
    if let Some(v) = f.mark {
        num(o, b",\"mark\":", v as u64);
    }
    if let Some(v) = f.secmark {
        num(o, b",\"secmark\":", v as u64);
    }
    if let Some(ctx) = &f.secctx {
        o.lit(b",\"secctx\":");
        write_str(o, ctx);
    }
    if let Some(v) = f.zone {
        num(o, b",\"zone\":", v as u64);
    }
    if let Some(v) = f.use_count {
        num(o, b",\"use\":", v as u64);
    }
    if let Some(v) = f.id {
        num(o, b",\"id\":", v as u64);
    }
    if let Some(s) = f.timestamp_start {
        num(o, b",\"start\":", s / 1_000_000_000);
        let end = match f.timestamp_stop {
            Some(stop) if stop != 0 => (stop / 1_000_000_000) as i64,
            _ => opts.now,
        };
        o.lit(b",\"age\":");
        o.i64(end - (s / 1_000_000_000) as i64);
    }
    if let Some(s) = f.timestamp_stop {
        num(o, b",\"stop\":", s / 1_000_000_000);
    }
    if let Some(h) = &f.helper {
        o.lit(b",\"helper\":");
        write_str(o, &String::from_utf8_lossy(h.as_bytes()));
    }
    if let Some(l) = f.labels.filter(|l| !l.is_empty()) {
        o.lit(b",\"labels\":[");
        let mut first = true;
        for bit in 0..(l.len as usize * 32) {
            if !l.test(bit) {
                continue;
            }
            if !first {
                o.byte(b',');
            }
            first = false;
            match opts.labels.and_then(|m| m.name(bit)) {
                Some(name) => write_str(o, name),
                None => o.u32(bit as u32),
            }
        }
        o.byte(b']');
    }
    o.byte(b'}');
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp4;
    use super::*;

    #[test]
    fn flow_json_is_valid_and_named_by_kernel_words() {
        let mut v = Vec::new();
        let mut f = tcp4();
        f.helper = Some(super::super::HelperName::from_bytes(b"<x>\"q"));
        write_flow(&mut v, &f, &JsonOptions::default());
        let s = String::from_utf8(v).unwrap();
        let j: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(j["layer4"], "tcp");
        assert_eq!(j["state"], "ESTABLISHED");
        assert_eq!(j["orig"]["sport"], 1234);
        assert_eq!(j["reply"]["dst"], "10.0.0.1");
        assert_eq!(j["status"][0], "SEEN_REPLY");
        assert_eq!(j["helper"], "<x>\"q");
        assert!(!s.contains('<'), "angle brackets escaped: {s}");
    }

    #[test]
    fn related_flow_carries_its_master() {
        let mut f = tcp4();
        let mut v = Vec::new();
        write_flow(&mut v, &f, &JsonOptions::default());
        assert!(!String::from_utf8(v).unwrap().contains("master"));
        let mut m = f.orig;
        m.dport = 21;
        f.master = Some(m);
        let mut v = Vec::new();
        write_flow(&mut v, &f, &JsonOptions::default());
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            j["master"],
            serde_json::json!({"src":"10.0.0.1","dst":"10.0.0.2","sport":1234,"dport":21})
        );
    }

    #[test]
    fn strings_escape_controls() {
        let mut v = Vec::new();
        push_str(&mut v, "a\u{1}b\\");
        assert_eq!(v, b"\"a\\u0001b\\\\\"");
    }
}
