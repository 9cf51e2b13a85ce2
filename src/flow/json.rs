//! ctrack's JSON form of a flow: one object per flow (ndjson for `-o json`,
//! and the items of the web API).
//!
//! Field names are the kernel's words (orig, reply, src, dst, sport, dport,
//! state, status, mark, zone, timeout, packets, bytes) and LuCI's where it
//! has one (layer3, layer4). A field is present only when the kernel sent
//! it. The README documents the format.

use super::addr::{push_i64, push_ip, push_u64};
use super::labels::LabelMap;
use super::names;
use super::{EventKind, Flow, ProtoInfo, Tuple, proto};

/// Appends `s` as a JSON string literal, escaping quotes, backslashes and
/// control characters (and `<`, `>`, `&` so the text is safe inside HTML).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let v = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(v >> 4) as usize & 0xf]);
                out.push(HEX[v as usize & 0xf]);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Appends raw bytes from the kernel as a JSON string (lossy UTF-8).
pub fn push_bytes_str(out: &mut Vec<u8>, b: &[u8]) {
    push_str(out, &String::from_utf8_lossy(b));
}

/// A JSON object being written: `key` puts the separator and the key, the
/// caller the value; `end` closes it.
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
        push_u64(self.key(k), v);
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

/// Appends an address as a JSON string.
fn push_ip_str(out: &mut Vec<u8>, a: std::net::IpAddr) {
    out.push(b'"');
    push_ip(out, a);
    out.push(b'"');
}

/// The address and layer-4 members of a tuple: `src`, `dst`, then
/// `sport`/`dport`, `srckey`/`dstkey` or `type`/`code`/`id` as the
/// protocol has them.
fn tuple_members(o: &mut Obj, t: &Tuple) {
    push_ip_str(o.key("src"), t.src);
    push_ip_str(o.key("dst"), t.dst);
    match t.proto {
        p if proto::has_ports(p) => {
            o.num("sport", t.sport as u64);
            o.num("dport", t.dport as u64);
        }
        proto::GRE => {
            o.num("srckey", t.sport as u64);
            o.num("dstkey", t.dport as u64);
        }
        p if proto::is_icmp(p) => {
            o.num("type", t.icmp_type as u64);
            o.num("code", t.icmp_code as u64);
            o.num("id", t.icmp_id as u64);
        }
        _ => {}
    }
}

/// Appends a tuple as a JSON object of its address and layer-4 members
/// (a flow's master, an expectation's tuples).
pub(crate) fn write_tuple_obj(out: &mut Vec<u8>, t: &Tuple) {
    let mut o = Obj::new(out);
    tuple_members(&mut o, t);
    o.end();
}

fn write_tuple(out: &mut Vec<u8>, f: &Flow, t: &Tuple, dir: usize) {
    let mut o = Obj::new(out);
    tuple_members(&mut o, t);
    let zone = if dir == 0 { f.orig_zone } else { f.reply_zone };
    if let Some(z) = zone {
        o.num("zone", z as u64);
    }
    if let Some(c) = f.counters[dir] {
        o.num("packets", c.packets);
        o.num("bytes", c.bytes);
    }
    o.end();
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
    let mut o = Obj::new(out);
    if let Some(e) = opts.event {
        o.str(
            "event",
            match e {
                EventKind::New => "new",
                EventKind::Update => "update",
                EventKind::Destroy => "destroy",
            },
        );
    }
    o.str("layer3", names::l3_name(f.family));
    o.str("layer4", names::l4_name(f.orig.proto));
    o.num("protonum", f.orig.proto as u64);
    if let Some(t) = f.timeout.filter(|_| !opts.hide_timeout) {
        o.num("timeout", t as u64);
    }
    let state = match f.protoinfo {
        ProtoInfo::Tcp(t) => t.state.map(names::tcp_state_name),
        ProtoInfo::Sctp { state, .. } => state.map(names::sctp_state_name),
        ProtoInfo::Dccp { state, .. } => state.map(names::dccp_state_name),
        ProtoInfo::None => None,
    };
    if let Some(s) = state {
        o.str("state", s);
    }
    if f.has_orig {
        write_tuple(o.key("orig"), f, &f.orig, 0);
    }
    if f.has_reply {
        write_tuple(o.key("reply"), f, &f.reply, 1);
    }
    if let Some(m) = &f.master {
        write_tuple_obj(o.key("master"), m);
    }
    if let Some(c) = f.total_counters() {
        o.num("packets", c.packets);
        o.num("bytes", c.bytes);
    }
    if let Some(s) = f.status {
        let out = o.key("status");
        out.push(b'[');
        let mut first = true;
        for (bit, name) in names::STATUS_NAMES {
            if s & bit != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                push_str(out, name);
            }
        }
        out.push(b']');
    }
    if f.has_orig && f.has_reply {
        let nat = match (f.is_snat() || f.is_spat(), f.is_dnat() || f.is_dpat()) {
            (true, true) => Some("both"),
            (true, false) => Some("snat"),
            (false, true) => Some("dnat"),
            _ => None,
        };
        if let Some(n) = nat {
            o.str("nat", n);
        }
    }
    if let Some(v) = f.mark {
        o.num("mark", v as u64);
    }
    if let Some(v) = f.secmark {
        o.num("secmark", v as u64);
    }
    if let Some(ctx) = &f.secctx {
        o.str("secctx", ctx);
    }
    if let Some(v) = f.zone {
        o.num("zone", v as u64);
    }
    if let Some(v) = f.use_count {
        o.num("use", v as u64);
    }
    if let Some(v) = f.id {
        o.num("id", v as u64);
    }
    if let Some(s) = f.timestamp_start {
        o.num("start", s / 1_000_000_000);
        let end = match f.timestamp_stop {
            Some(stop) if stop != 0 => (stop / 1_000_000_000) as i64,
            _ => opts.now,
        };
        push_i64(o.key("age"), end - (s / 1_000_000_000) as i64);
    }
    if let Some(s) = f.timestamp_stop {
        o.num("stop", s / 1_000_000_000);
    }
    if let Some(h) = &f.helper {
        push_bytes_str(o.key("helper"), h.as_bytes());
    }
    if let Some(l) = f.labels.filter(|l| !l.is_empty()) {
        let out = o.key("labels");
        out.push(b'[');
        let mut first = true;
        for bit in 0..(l.len as usize * 32) {
            if !l.test(bit) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            match opts.labels.and_then(|m| m.name(bit)) {
                Some(name) => push_str(out, name),
                None => push_u64(out, bit as u64),
            }
        }
        out.push(b']');
    }
    o.end();
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
