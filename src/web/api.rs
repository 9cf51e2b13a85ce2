//! The JSON API's handlers: connections (list, delete), hosts, stats and
//! Prometheus metrics. Every list comes from a fresh kernel dump.
//!
//! Large tables are the normal case (65,536 flows): nothing builds a JSON
//! value per flow. Unsorted lists stream from the dump through a small
//! bounded channel; sorted lists keep compact sort keys and only the
//! `offset + limit` best flows (a bounded heap), then write JSON for the
//! requested window only.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::flow::addr::{push_ip, push_u64};
use crate::flow::json::{JsonOptions, push_str, write_flow};
use crate::flow::{Flow, names as fnames, now_secs};
use crate::netlink::ct::{self, CtRequest, cta, msg};
use crate::netlink::{Conntrack, Error as NlError};

use super::names::Names;
use super::query::{ApiError, FlowQuery, SortKey, state_name};

/// Bytes per chunk of a streamed reply.
const CHUNK: usize = 64 * 1024;
/// Hosts kept by /api/v1/hosts (the rest are counted as `other_hosts`).
const MAX_HOSTS: usize = 4096;

/// Appends `"names":{"addr":"name",...}` to a just-written flow object
/// (replacing its closing brace), when any address has a name.
pub fn append_names(out: &mut Vec<u8>, f: &Flow, names: &Names) {
    if names.is_empty() || out.last() != Some(&b'}') {
        return;
    }
    let addrs = [f.orig.src, f.orig.dst, f.reply.src, f.reply.dst];
    let mut first = true;
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i].contains(a) {
            continue;
        }
        let Some(n) = names.get(a) else { continue };
        if first {
            out.pop();
            out.extend_from_slice(b",\"names\":{");
            first = false;
        } else {
            out.push(b',');
        }
        out.push(b'"');
        push_ip(out, *a);
        out.extend_from_slice(b"\":");
        push_str(out, n);
    }
    if !first {
        out.extend_from_slice(b"}}");
    }
}

fn kernel_error(e: &NlError) -> ApiError {
    ApiError::new(503, format!("conntrack table not readable: {e}"))
}

/// Opens ctnetlink in the configured namespace, as a 503 when it fails.
pub fn open(netns: Option<&str>) -> Result<Conntrack, ApiError> {
    Conntrack::open(netns).map_err(|e| kernel_error(&e))
}

fn dump_all() -> CtRequest {
    CtRequest::new(msg::GET, 0)
}

fn write_item(out: &mut Vec<u8>, f: &Flow, names: &Names, now: i64) {
    let opts = JsonOptions {
        now,
        ..JsonOptions::default()
    };
    write_flow(out, f, &opts);
    append_names(out, f, names);
}

/// Counts of one dump: every entry, the selected ones, and whether any
/// carried counters (nf_conntrack_acct).
#[derive(Default, Clone, Copy)]
struct Tally {
    total: u64,
    matched: u64,
    acct: bool,
}

impl Tally {
    /// Counts `f` and says whether the query selects it.
    fn see(&mut self, f: &Flow, q: &FlowQuery, names: &Names) -> bool {
        self.total += 1;
        self.acct |= f.counters.iter().any(Option::is_some);
        let hit = q.filter.matches(f, names);
        self.matched += hit as u64;
        hit
    }
}

fn trailer(out: &mut Vec<u8>, t: Tally, q: &FlowQuery) {
    let (total, matched, acct) = (t.total, t.matched, t.acct);
    out.extend_from_slice(b"],\"total\":");
    push_u64(out, total);
    out.extend_from_slice(b",\"matched\":");
    push_u64(out, matched);
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, q.offset as u64);
    if let Some(l) = q.limit {
        out.extend_from_slice(b",\"limit\":");
        push_u64(out, l as u64);
    }
    out.extend_from_slice(b",\"acct\":");
    out.extend_from_slice(if acct { b"true" } else { b"false" });
    out.extend_from_slice(b",\"source\":\"kernel\"}");
}

/// A `Read` over chunks a producer thread sends; ends when it hangs up.
pub struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChanReader {
    /// Reads what `rx` delivers, in order.
    pub fn new(rx: Receiver<Vec<u8>>) -> ChanReader {
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The unsorted list, streamed in dump order: flows are written as the
/// kernel delivers them and sent in 64 KiB chunks; a slow reader pauses
/// the dump (bounded channel), a gone reader ends it.
pub fn stream_list(mut ct: Conntrack, q: &FlowQuery, names: &Names, tx: SyncSender<Vec<u8>>) {
    let now = now_secs();
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(b"{\"items\":[");
    let mut tally = Tally::default();
    let mut shown = 0u64;
    let limit = q.limit.map_or(u64::MAX, |l| l as u64);
    let mut gone = false;
    let res = ct.dump(&dump_all(), &mut |f| {
        if !tally.see(f, q, names) {
            return Ok(());
        }
        if tally.matched <= q.offset as u64 || shown >= limit {
            return Ok(());
        }
        if shown > 0 {
            buf.push(b',');
        }
        shown += 1;
        write_item(&mut buf, f, names, now);
        if buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096));
            if tx.send(chunk).is_err() {
                gone = true;
                return Err(NlError::Io(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
        }
        Ok(())
    });
    if gone {
        return;
    }
    trailer(&mut buf, tally, q);
    if let Err(e) = res {
        // the status line is gone already: say it in the body
        buf.pop();
        buf.extend_from_slice(b",\"error\":");
        push_str(&mut buf, &format!("dump failed: {e}"));
        buf.push(b'}');
    }
    let _ = tx.send(buf);
}

struct Ranked {
    key: SortKey,
    seq: u32,
    flow: Flow,
}

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key && self.seq == o.seq
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (self.key, self.seq).cmp(&(o.key, o.seq))
    }
}

/// Windows up to this many flows keep whole flows in a heap; larger ones
/// keep each flow's JSON in one arena (about the size of the reply).
pub const HEAP_WINDOW: usize = 4096;

/// A sorted reply: small windows as bytes, large ones as a reader over
/// the arena (so the reply is not copied a second time).
pub enum Sorted {
    /// The whole reply.
    Bytes(Vec<u8>),
    /// A reply streamed from the arena in sorted order.
    Stream(ArenaReader),
}

/// The sorted list. Small windows (`offset + limit` up to
/// [`HEAP_WINDOW`]): one dump, a heap of the best flows by compact key
/// (the heap's top is the worst kept, replaced when a better one comes),
/// JSON only for the window. Larger windows: each matching flow's JSON
/// goes into one arena with a 64-byte index entry; the index is ordered
/// (`select_nth_unstable` for the window, then a sort of the window) and
/// the reply is read straight out of the arena.
pub fn sorted_list(ct: &mut Conntrack, q: &FlowQuery, names: &Names) -> Result<Sorted, ApiError> {
    let keep = q.limit.map_or(usize::MAX, |l| q.offset.saturating_add(l));
    if keep > HEAP_WINDOW {
        return arena_list(ct, q, names, keep).map(Sorted::Stream);
    }
    let now = now_secs();
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
    let mut tally = Tally::default();
    let mut seq = 0u32;
    ct.dump(&dump_all(), &mut |f| {
        if !tally.see(f, q, names) || keep == 0 {
            return Ok(());
        }
        let key = q.sort.key(f, now);
        seq = seq.wrapping_add(1);
        if heap.len() < keep {
            heap.push(Ranked {
                key,
                seq,
                flow: f.clone(),
            });
        } else if let Some(mut top) = heap.peek_mut()
            && (key, seq) < (top.key, top.seq)
        {
            top.key = key;
            top.seq = seq;
            top.flow.clone_from(f);
        }
        Ok(())
    })
    .map_err(|e| kernel_error(&e))?;
    let ranked = heap.into_sorted_vec();
    let mut out = Vec::with_capacity(1024 + ranked.len().saturating_sub(q.offset) * 600);
    out.extend_from_slice(b"{\"items\":[");
    for (i, r) in ranked.iter().skip(q.offset).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(&mut out, &r.flow, names, now);
    }
    trailer(&mut out, tally, q);
    Ok(Sorted::Bytes(out))
}

#[derive(Clone, Copy)]
struct Slot {
    key: SortKey,
    seq: u32,
    off: u32,
    len: u32,
}

fn arena_list(
    ct: &mut Conntrack,
    q: &FlowQuery,
    names: &Names,
    keep: usize,
) -> Result<ArenaReader, ApiError> {
    let now = now_secs();
    let mut arena: Vec<u8> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut tally = Tally::default();
    ct.dump(&dump_all(), &mut |f| {
        if !tally.see(f, q, names) {
            return Ok(());
        }
        let off = arena.len();
        if off > u32::MAX as usize / 2 {
            return Ok(());
        }
        write_item(&mut arena, f, names, now);
        slots.push(Slot {
            key: q.sort.key(f, now),
            seq: slots.len() as u32,
            off: off as u32,
            len: (arena.len() - off) as u32,
        });
        Ok(())
    })
    .map_err(|e| kernel_error(&e))?;
    let order = |a: &Slot, b: &Slot| (a.key, a.seq).cmp(&(b.key, b.seq));
    let end = keep.min(slots.len());
    if end < slots.len() && end > 0 {
        slots.select_nth_unstable_by(end - 1, order);
    }
    slots.truncate(end);
    slots.sort_unstable_by(order);
    let start = q.offset.min(slots.len());
    let mut tail = Vec::with_capacity(160);
    trailer(&mut tail, tally, q);
    Ok(ArenaReader {
        arena,
        slots,
        next: start,
        first: start,
        head: b"{\"items\":[".to_vec(),
        tail,
        buf: Vec::with_capacity(CHUNK + 4096),
        pos: 0,
        done: false,
    })
}

/// Reads a sorted reply out of the arena, a chunk at a time.
pub struct ArenaReader {
    arena: Vec<u8>,
    slots: Vec<Slot>,
    next: usize,
    first: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ArenaReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            self.buf.append(&mut self.head);
            while self.buf.len() < CHUNK && self.next < self.slots.len() {
                let s = self.slots[self.next];
                if self.next > self.first {
                    self.buf.push(b',');
                }
                let (a, b) = (s.off as usize, s.off as usize + s.len as usize);
                self.buf
                    .extend_from_slice(self.arena.get(a..b).unwrap_or_default());
                self.next += 1;
            }
            if self.next >= self.slots.len() {
                self.buf.append(&mut self.tail);
                self.done = true;
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Deletes the selected flows (batched, many per syscall); returns the
/// reply body `{"deleted":N,"matched":M}`.
pub fn delete(netns: Option<&str>, q: &FlowQuery, names: &Names) -> Result<Vec<u8>, ApiError> {
    if q.filter.is_empty() && !q.all {
        return Err(ApiError::new(
            400,
            "refusing to delete every flow without a filter: add all=1 to mean it",
        ));
    }
    let mut dumper = open(netns)?;
    let mut modifier = open(netns)?;
    let (mut matched, mut deleted) = (0u64, 0u64);
    let mut pending: Vec<CtRequest> = Vec::new();
    let mut failure: Option<NlError> = None;
    let mut flush = |pending: &mut Vec<CtRequest>, deleted: &mut u64| -> Result<(), NlError> {
        if pending.is_empty() {
            return Ok(());
        }
        for r in modifier.batch(pending, 0)? {
            match r {
                Ok(()) => *deleted += 1,
                Err(libc::ENOENT) => {}
                Err(e) => return Err(NlError::Kernel(e)),
            }
        }
        pending.clear();
        Ok(())
    };
    let res = dumper.dump(&dump_all(), &mut |f| {
        if failure.is_some() || !q.filter.matches(f, names) {
            return Ok(());
        }
        matched += 1;
        let mut del = CtRequest::new(msg::DELETE, f.family);
        let mut w = del.writer();
        ct::encode_identity(&mut w, f);
        if let Some(id) = f.id {
            w.be32(cta::ID, id);
        }
        pending.push(del);
        if pending.len() >= 256
            && let Err(e) = flush(&mut pending, &mut deleted)
        {
            failure = Some(e);
        }
        Ok(())
    });
    res.map_err(|e| kernel_error(&e))?;
    if let Some(e) = failure {
        return Err(ApiError::new(500, format!("delete failed: {e}")));
    }
    flush(&mut pending, &mut deleted)
        .map_err(|e| ApiError::new(500, format!("delete failed: {e}")))?;
    let mut out = b"{\"deleted\":".to_vec();
    push_u64(&mut out, deleted);
    out.extend_from_slice(b",\"matched\":");
    push_u64(&mut out, matched);
    out.push(b'}');
    Ok(out)
}

#[derive(Default, Clone, Copy)]
struct HostAgg {
    flows: u64,
    up_bytes: u64,
    up_packets: u64,
    down_bytes: u64,
    down_packets: u64,
}

fn is_lan_like(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_private() || v.is_link_local(),
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// The LAN host of a flow and whether it is the original direction's
/// sender: the port-forward target of a DNAT flow (reply source), else the
/// initiator, when it is behind SNAT, has a name, or has a private,
/// unique-local or link-local address.
fn lan_host(f: &Flow, names: &Names) -> Option<(IpAddr, bool)> {
    let (h, orig) = if f.is_dnat() {
        (f.reply.src, false)
    } else {
        (f.orig.src, true)
    };
    if h.is_loopback() || h.is_unspecified() {
        return None;
    }
    let known = f.is_snat() || f.is_dnat() || names.get(&h).is_some() || is_lan_like(h);
    known.then_some((h, orig))
}

/// Per-LAN-host totals: flows, bytes and packets up (from the host) and
/// down (to it), largest first.
pub fn hosts(
    ct: &mut Conntrack,
    q: &FlowQuery,
    names: &Names,
    acct_sysctl: Option<bool>,
) -> Result<Vec<u8>, ApiError> {
    let mut map: HashMap<IpAddr, HostAgg> = HashMap::new();
    let mut tally = Tally::default();
    let mut other = 0u64;
    ct.dump(&dump_all(), &mut |f| {
        if !tally.see(f, q, names) {
            return Ok(());
        }
        let Some((h, orig)) = lan_host(f, names) else {
            return Ok(());
        };
        let len = map.len();
        let agg = match map.get_mut(&h) {
            Some(a) => a,
            None if len >= MAX_HOSTS => {
                other += 1;
                return Ok(());
            }
            None => map.entry(h).or_default(),
        };
        let (up, down) = if orig { (0, 1) } else { (1, 0) };
        let u = f.counters[up].unwrap_or_default();
        let d = f.counters[down].unwrap_or_default();
        agg.flows += 1;
        agg.up_bytes = agg.up_bytes.saturating_add(u.bytes);
        agg.up_packets = agg.up_packets.saturating_add(u.packets);
        agg.down_bytes = agg.down_bytes.saturating_add(d.bytes);
        agg.down_packets = agg.down_packets.saturating_add(d.packets);
        Ok(())
    })
    .map_err(|e| kernel_error(&e))?;
    let mut list: Vec<(IpAddr, HostAgg)> = map.into_iter().collect();
    list.sort_by(|a, b| {
        let ta = a.1.up_bytes.saturating_add(a.1.down_bytes);
        let tb = b.1.up_bytes.saturating_add(b.1.down_bytes);
        tb.cmp(&ta)
            .then(b.1.flows.cmp(&a.1.flows))
            .then(a.0.cmp(&b.0))
    });
    let (total, acct) = (tally.total, tally.acct);
    let acct_on = acct_sysctl.unwrap_or(acct || total == 0);
    let mut out = Vec::with_capacity(256 + list.len() * 160);
    out.extend_from_slice(b"{\"hosts\":[");
    for (i, (a, g)) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"addr\":\"");
        push_ip(&mut out, *a);
        out.push(b'"');
        if let Some(n) = names.get(a) {
            out.extend_from_slice(b",\"name\":");
            push_str(&mut out, n);
        }
        out.extend_from_slice(b",\"flows\":");
        push_u64(&mut out, g.flows);
        out.extend_from_slice(b",\"up\":{\"bytes\":");
        push_u64(&mut out, g.up_bytes);
        out.extend_from_slice(b",\"packets\":");
        push_u64(&mut out, g.up_packets);
        out.extend_from_slice(b"},\"down\":{\"bytes\":");
        push_u64(&mut out, g.down_bytes);
        out.extend_from_slice(b",\"packets\":");
        push_u64(&mut out, g.down_packets);
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"],\"total\":");
    push_u64(&mut out, total);
    out.extend_from_slice(b",\"other_hosts_flows\":");
    push_u64(&mut out, other);
    out.extend_from_slice(b",\"acct\":");
    out.extend_from_slice(if acct_on { b"true" } else { b"false" });
    if !acct_on {
        out.extend_from_slice(
            b",\"note\":\"byte and packet counters are off: set net.netfilter.nf_conntrack_acct=1\"",
        );
    }
    out.push(b'}');
    Ok(out)
}

/// Reads `net.netfilter.nf_conntrack_acct` in the namespace (None when it
/// cannot be read).
pub fn acct_sysctl(netns: Option<&str>) -> Option<bool> {
    let read = || std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_acct");
    let text = match netns {
        Some(ns) => crate::netlink::socket::in_netns(ns, read).ok()?,
        None => read().ok()?,
    };
    Some(text.trim() != "0")
}

/// Family, protocol number and state name of a flow, for /metrics.
pub type FlowClass = (u8, u8, &'static str);

/// Flow counts by (family, protocol, state), for /metrics.
pub fn flow_counts(ct: &mut Conntrack) -> Result<Vec<(FlowClass, u64)>, ApiError> {
    let mut map: HashMap<FlowClass, u64> = HashMap::new();
    ct.dump(&dump_all(), &mut |f| {
        *map.entry((f.family, f.orig.proto, state_name(f).unwrap_or("")))
            .or_default() += 1;
        Ok(())
    })
    .map_err(|e| kernel_error(&e))?;
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort();
    Ok(v)
}

/// Appends a Prometheus metric name part: `[a-zA-Z0-9_]`, others as `_`.
pub fn push_metric_name(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' {
            b
        } else {
            b'_'
        });
    }
}

/// Writes every number in `v` as a gauge named by its path under
/// `prefix` (`ctrack_sync_sent`), booleans as 0/1; strings are skipped.
pub fn flatten_metrics(out: &mut Vec<u8>, prefix: &str, v: &serde_json::Value, depth: u32) {
    use serde_json::Value;
    if depth > 4 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let mut p = String::with_capacity(prefix.len() + k.len() + 1);
                p.push_str(prefix);
                p.push('_');
                p.push_str(k);
                flatten_metrics(out, &p, x, depth + 1);
            }
        }
        Value::Number(n) => {
            push_metric_name(out, prefix);
            out.push(b' ');
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(b'\n');
        }
        Value::Bool(b) => {
            push_metric_name(out, prefix);
            out.extend_from_slice(if *b { b" 1\n" } else { b" 0\n" });
        }
        _ => {}
    }
}

/// The label values of a flow-count line.
pub fn push_flow_labels(out: &mut Vec<u8>, family: u8, proto: u8, state: &str) {
    out.extend_from_slice(b"{family=\"");
    out.extend_from_slice(fnames::l3_name(family).as_bytes());
    out.extend_from_slice(b"\",proto=\"");
    let name = fnames::l4_name(proto);
    if name == "unknown" {
        push_u64(out, proto as u64);
    } else {
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(b"\",state=\"");
    out.extend_from_slice(state.as_bytes());
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;

    #[test]
    fn names_are_appended_escaped() {
        let f = tcp4();
        let mut n = Names::default();
        n.add_leases("1 m 10.0.0.2 <b>x</b> id\n");
        let mut out = Vec::new();
        write_item(&mut out, &f, &n, 0);
        let s = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["names"]["10.0.0.2"], "<b>x</b>");
        assert!(!s.contains('<'));
        let mut plain = Vec::new();
        write_item(&mut plain, &f, &Names::default(), 0);
        assert!(!String::from_utf8(plain).unwrap().contains("names"));
    }

    #[test]
    fn metrics_flatten_numbers_only() {
        let v = serde_json::json!({"sync": {"sent": 3, "peer": "x", "up": true}, "a-b": 1.5});
        let mut out = Vec::new();
        flatten_metrics(&mut out, "ctrack", &v, 0);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("ctrack_sync_sent 3\n"), "{s}");
        assert!(s.contains("ctrack_sync_up 1\n"));
        assert!(s.contains("ctrack_a_b 1.5\n"));
        assert!(!s.contains("peer"));
    }

    #[test]
    fn chan_reader_concatenates() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(b"ab".to_vec()).unwrap();
        tx.send(Vec::new()).unwrap();
        tx.send(b"cde".to_vec()).unwrap();
        drop(tx);
        let mut s = String::new();
        ChanReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "abcde");
    }
}
