//! The connections API over the shared table ([`super::snapshot`]): the
//! selection of a list request (filter, order, window), its JSON or CSV
//! rendering a chunk at a time, and DELETE.
//!
//! Nothing is built for the whole table: a request keeps the slots of the
//! rows it selects (8 bytes a row at most, 512 KiB for 65,536), sorts them
//! in place with keys read from the rows, and renders its window a chunk
//! at a time, taking the table's read lock for each chunk only, so a slow
//! reader holds no lock and no copy of the table.

use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::flow::addr::{push_ip, push_u64};
use crate::flow::json::{JsonOptions, push_str, write_flow};
use crate::flow::names as fnames;
use crate::flow::{Flow, proto};
use crate::netlink::ct::{self, CtRequest, cta, msg};
use crate::netlink::{Conntrack, Error as NlError};

use super::names::Names;
use super::query::{ApiError, FlowQuery, SortKey};
use super::snapshot::{Pin, Store};
use super::table::{Row, Table};

/// Bytes per chunk of a rendered reply.
pub const CHUNK: usize = 32 * 1024;

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

/// One row as a JSON object: `ctrack -o json`'s fields, `names`, and
/// `rate` (bytes per second each way, once two snapshots had the flow).
pub fn write_item(out: &mut Vec<u8>, r: &Row, names: &Names, now: u32) {
    let f = r.to_flow(now);
    let opts = JsonOptions {
        now: now as i64,
        ..JsonOptions::default()
    };
    write_flow(out, &f, &opts);
    append_names(out, &f, names);
    if let (Some(o), Some(p)) = (r.rate(0), r.rate(1))
        && out.last() == Some(&b'}')
    {
        out.pop();
        out.extend_from_slice(b",\"rate\":{\"orig\":");
        push_u64(out, o as u64);
        out.extend_from_slice(b",\"reply\":");
        push_u64(out, p as u64);
        out.extend_from_slice(b"}}");
    }
}

/// The header line of the CSV form.
pub const CSV_HEADER: &str = "proto,state,src,sport,dst,dport,src_name,dst_name,nat,\
reply_src,reply_sport,reply_dst,reply_dport,bytes_orig,packets_orig,bytes_reply,\
packets_reply,rate_orig,rate_reply,age,timeout,mark,zone,id\r\n";

/// Appends a CSV field: quoted when it holds a comma, quote or line end,
/// and with a leading `'` when a spreadsheet would take it for a formula
/// (a lease name like `=HYPERLINK(...)`).
pub fn push_csv_text(out: &mut Vec<u8>, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || s.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quote {
        out.push(b'"');
    }
}

/// One row as a CSV line (see [`CSV_HEADER`]).
pub fn write_csv(out: &mut Vec<u8>, r: &Row, names: &Names, now: u32) {
    let f = r.to_flow(now);
    let num = |out: &mut Vec<u8>, v: Option<u64>| {
        if let Some(v) = v {
            push_u64(out, v);
        }
        out.push(b',');
    };
    let port = |t: &crate::flow::Tuple, src: bool| {
        if proto::has_ports(t.proto) {
            Some(if src { t.sport } else { t.dport } as u64)
        } else {
            None
        }
    };
    out.extend_from_slice(fnames::l4_name(f.orig.proto).as_bytes());
    out.push(b',');
    out.extend_from_slice(super::query::state_name(&f).unwrap_or("").as_bytes());
    out.push(b',');
    push_ip(out, f.orig.src);
    out.push(b',');
    num(out, port(&f.orig, true));
    push_ip(out, f.orig.dst);
    out.push(b',');
    num(out, port(&f.orig, false));
    for a in [f.orig.src, f.orig.dst] {
        push_csv_text(out, names.get(&a).unwrap_or(""));
        out.push(b',');
    }
    out.extend_from_slice(match (r.is_snat(), r.is_dnat()) {
        (true, true) => b"both,",
        (true, false) => b"snat,",
        (false, true) => b"dnat,",
        _ => b",",
    });
    push_ip(out, f.reply.src);
    out.push(b',');
    num(out, port(&f.reply, true));
    push_ip(out, f.reply.dst);
    out.push(b',');
    num(out, port(&f.reply, false));
    for d in 0..2 {
        let c = f.counters[d];
        num(out, c.map(|c| c.bytes));
        num(out, c.map(|c| c.packets));
    }
    num(out, r.rate(0).map(u64::from));
    num(out, r.rate(1).map(u64::from));
    num(out, r.age(now).map(u64::from));
    num(out, f.timeout.map(u64::from));
    num(out, f.mark.map(u64::from));
    num(out, f.zone.map(u64::from));
    push_u64(out, r.id() as u64);
    out.extend_from_slice(b"\r\n");
}

/// Counts of a selection: rows in the table, rows selected, whether the
/// counters are on, and when they were taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows in the table.
    pub total: u64,
    /// Rows the filter selects.
    pub matched: u64,
    /// Whether the last snapshot had counters (`nf_conntrack_acct`).
    pub acct: bool,
    /// Seconds since the counters were taken.
    pub counters_age: Option<u32>,
}

/// What a list request selected: the rows of its window in order, named
/// by (slot, id), and the counts.
#[derive(Debug, Default)]
pub struct Selection {
    /// The window's rows, in order.
    pub picks: Vec<(u32, u32)>,
    /// The counts.
    pub tally: Tally,
}

/// Windows up to this many rows (`offset + limit`) are ordered with a
/// bounded heap of keys, one key per row; larger ones sort the slots.
pub const HEAP_WINDOW: usize = 4096;

/// Selects the rows of `q`'s window: the filter's rows, ordered by `q`'s
/// sort (ties by slot, so paging is stable), from `offset`, at most
/// `limit`. A small window keeps a heap of its best keys (each row's key
/// computed once); a large one orders the slots (4 bytes a row) with
/// keys read from the rows, fully ordering only the window.
pub fn select(t: &Table, q: &FlowQuery, names: &Names, now: u32) -> Selection {
    let filtered = !q.filter.is_empty();
    let hit = |r: &Row| !filtered || q.filter.matches(&r.to_flow(now), names);
    let mut tally = Tally {
        total: t.len() as u64,
        matched: 0,
        acct: t.acct(),
        counters_age: t.counters_epoch().map(|e| now.saturating_sub(e)),
    };
    let end = q.limit.map_or(usize::MAX, |l| q.offset.saturating_add(l));
    let pick = |s: u32| t.get_slot(s).map(|r| (s, r.id()));
    if q.sort.is_empty() {
        // table order: the window as it comes
        let mut picks = Vec::new();
        for (s, r) in t.iter() {
            if !hit(r) {
                continue;
            }
            let i = tally.matched as usize;
            tally.matched += 1;
            if i >= q.offset && i < end {
                picks.push((s, r.id()));
            }
        }
        return Selection { picks, tally };
    }
    if end <= HEAP_WINDOW {
        // the heap's top is the worst kept: a better row replaces it
        let mut heap: BinaryHeap<(SortKey, u32)> = BinaryHeap::with_capacity(end + 1);
        for (s, r) in t.iter() {
            if !hit(r) {
                continue;
            }
            tally.matched += 1;
            if end == 0 {
                continue;
            }
            let k = (q.sort.key(r, now), s);
            if heap.len() < end {
                heap.push(k);
            } else if let Some(mut top) = heap.peek_mut()
                && k < *top
            {
                *top = k;
            }
        }
        let ranked = heap.into_sorted_vec();
        let picks = ranked
            .iter()
            .skip(q.offset)
            .filter_map(|&(_, s)| pick(s))
            .collect();
        return Selection { picks, tally };
    }
    let mut slots: Vec<u32> = t.iter().filter(|(_, r)| hit(r)).map(|(s, _)| s).collect();
    tally.matched = slots.len() as u64;
    let start = q.offset.min(slots.len());
    let end = end.min(slots.len());
    if start < end {
        let order = |a: &u32, b: &u32| match (t.get_slot(*a), t.get_slot(*b)) {
            (Some(x), Some(y)) => q.sort.cmp(x, y, now).then(a.cmp(b)),
            _ => a.cmp(b),
        };
        if end < slots.len() {
            slots.select_nth_unstable_by(end - 1, order);
        }
        slots.truncate(end);
        slots.sort_unstable_by(order);
    }
    slots.truncate(end);
    let picks = slots[start.min(slots.len())..]
        .iter()
        .filter_map(|&s| pick(s))
        .collect();
    Selection { picks, tally }
}

/// The end of a JSON list reply: counts, window, counter age and source.
fn trailer(out: &mut Vec<u8>, t: Tally, q: &FlowQuery, interval: u64) {
    out.extend_from_slice(b"],\"total\":");
    push_u64(out, t.total);
    out.extend_from_slice(b",\"matched\":");
    push_u64(out, t.matched);
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, q.offset as u64);
    if let Some(l) = q.limit {
        out.extend_from_slice(b",\"limit\":");
        push_u64(out, l as u64);
    }
    out.extend_from_slice(b",\"acct\":");
    out.extend_from_slice(if t.acct { b"true" } else { b"false" });
    out.extend_from_slice(b",\"counters_age\":");
    match t.counters_age {
        Some(a) => push_u64(out, a as u64),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"counter_interval\":");
    push_u64(out, interval);
    out.extend_from_slice(b",\"source\":\"table\"}");
}

/// A reply body produced a chunk at a time.
pub trait Chunks: Send {
    /// Appends the next chunk (about [`CHUNK`] bytes) to `out`; false once
    /// the body is complete (nothing more will be appended).
    fn fill(&mut self, out: &mut Vec<u8>) -> bool;
}

/// A list reply (JSON or CSV) rendered from the table a chunk at a time;
/// rows gone since the selection are left out.
pub struct ListBody {
    store: Arc<Store>,
    picks: Vec<(u32, u32)>,
    next: usize,
    names: Arc<Names>,
    csv: bool,
    started: bool,
    tail: Vec<u8>,
    done: bool,
    _pin: Pin,
}

impl ListBody {
    /// The body of `sel` for `q`.
    pub fn new(store: &Arc<Store>, sel: Selection, q: &FlowQuery, names: Arc<Names>) -> ListBody {
        let mut tail = Vec::new();
        if !q.csv {
            trailer(&mut tail, sel.tally, q, store.interval().as_secs());
        }
        ListBody {
            _pin: store.pin(),
            store: store.clone(),
            picks: sel.picks,
            next: 0,
            names,
            csv: q.csv,
            started: false,
            tail,
            done: false,
        }
    }
}

impl Chunks for ListBody {
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        let goal = out.len() + CHUNK;
        if !self.started {
            self.started = true;
            out.extend_from_slice(if self.csv {
                CSV_HEADER.as_bytes()
            } else {
                b"{\"items\":["
            });
        }
        if let Some(view) = self.store.read() {
            let t = view.table();
            while out.len() < goal && self.next < self.picks.len() {
                let (slot, id) = self.picks[self.next];
                self.next += 1;
                let Some(r) = t.get(slot, id) else { continue };
                if self.csv {
                    write_csv(out, r, &self.names, view.now);
                } else {
                    if out.last() != Some(&b'[') {
                        out.push(b',');
                    }
                    write_item(out, r, &self.names, view.now);
                }
            }
        } else {
            // the table is gone (the server stops): end the reply
            self.next = self.picks.len();
        }
        if self.next >= self.picks.len() {
            out.append(&mut self.tail);
            self.done = true;
            self.picks = Vec::new();
        }
        true
    }
}

/// A body already in memory, handed out a chunk at a time.
pub struct BytesBody {
    data: Vec<u8>,
    pos: usize,
}

impl BytesBody {
    /// A body of `data`.
    pub fn new(data: Vec<u8>) -> BytesBody {
        BytesBody { data, pos: 0 }
    }
}

impl Chunks for BytesBody {
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        if self.pos >= self.data.len() {
            return false;
        }
        let end = (self.pos + CHUNK).min(self.data.len());
        out.extend_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        true
    }
}

/// Deletes the selected flows (batched, many per syscall) from a fresh
/// kernel dump, each by its tuple and id, so a flow that took the id of
/// a gone one since is not touched; returns `{"deleted":N,"matched":M}`.
/// With `id=` exactly one flow must match (404 none, 409 several: name
/// its tuple too).
pub fn delete(netns: Option<&str>, q: &FlowQuery, names: &Names) -> Result<Vec<u8>, ApiError> {
    if q.filter.is_empty() && !q.all {
        return Err(ApiError::new(
            400,
            "refusing to delete every flow without a filter: add all=1 to mean it",
        ));
    }
    let one = q.filter.id.is_some();
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
    let res = dumper.dump(&CtRequest::new(msg::GET, 0), &mut |f| {
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
        if !one
            && pending.len() >= 256
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
    if one && matched == 0 {
        return Err(ApiError::new(404, "no flow with this id matches"));
    }
    if one && matched > 1 {
        return Err(ApiError::new(
            409,
            "several flows have this id: add their tuple (proto, src, dst, sport, dport)",
        ));
    }
    flush(&mut pending, &mut deleted)
        .map_err(|e| ApiError::new(500, format!("delete failed: {e}")))?;
    if one && deleted == 0 {
        return Err(ApiError::new(404, "the flow is gone"));
    }
    let mut out = b"{\"deleted\":".to_vec();
    push_u64(&mut out, deleted);
    out.extend_from_slice(b",\"matched\":");
    push_u64(&mut out, matched);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::flow::{Counters, EventKind};
    use crate::web::query::Endpoint;
    use crate::web::table::{Clock, test_row};

    #[test]
    fn names_and_rates_are_appended_escaped() {
        let f = tcp4();
        let mut n = Names::default();
        n.add_leases("1 m 10.0.0.2 <b>x</b> id\n");
        let mut r = test_row(&f, 0);
        let mut out = Vec::new();
        write_item(&mut out, &r, &n, 0);
        let s = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["names"]["10.0.0.2"], "<b>x</b>");
        assert!(v.get("rate").is_none());
        assert!(!s.contains('<'));
        crate::web::table::set_rate(&mut r, 5, 7);
        let mut plain = Vec::new();
        write_item(&mut plain, &r, &Names::default(), 0);
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert!(v.get("names").is_none());
        assert_eq!(v["rate"]["orig"], 5);
        assert_eq!(v["rate"]["reply"], 7);
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let mut out = Vec::new();
        for s in [
            "plain",
            "a,b",
            "say \"hi\"",
            "=1+2",
            "-x",
            "@a",
            "line\nend",
            "",
        ] {
            push_csv_text(&mut out, s);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"'=1+2\"|\"'-x\"|\"'@a\"|\"line\nend\"||"
        );
        let mut f = tcp4();
        f.counters = [
            Some(Counters {
                packets: 1,
                bytes: 10,
            }),
            Some(Counters {
                packets: 2,
                bytes: 20,
            }),
        ];
        let mut n = Names::default();
        n.add_hosts("10.0.0.1 =cmd\n");
        let mut line = Vec::new();
        write_csv(&mut line, &test_row(&f, 0), &n, 0);
        let line = String::from_utf8(line).unwrap();
        let cols = line.trim_end().split(',').count();
        assert_eq!(cols, CSV_HEADER.trim_end().split(',').count(), "{line}");
        assert!(
            line.starts_with(
                "tcp,ESTABLISHED,10.0.0.1,1234,10.0.0.2,80,\"'=cmd\",,,10.0.0.2,80,10.0.0.1,1234,10,1,20,2,,,,119,5,,3597683064\r\n"
            ),
            "{line}"
        );
    }

    fn table_of(n: u32) -> Table {
        let mut t = Table::new();
        let now = Clock {
            epoch: 100,
            mono_ms: 0,
        };
        t.begin_dump(now);
        for i in 0..n {
            let mut f = tcp4();
            f.orig.src = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0100 + i));
            f.reply.dst = f.orig.src;
            f.orig.sport = 1000 + (i % 7) as u16;
            f.id = Some(i + 1);
            f.mark = Some(i % 3);
            f.counters = [
                Some(Counters {
                    packets: 1,
                    bytes: (i as u64 * 37) % 101,
                }),
                None,
            ];
            t.merge_dumped(&f, now);
        }
        t.end_dump(true, now);
        t
    }

    fn ids(t: &Table, qs: &str) -> (Vec<u32>, Tally) {
        let q = FlowQuery::parse(qs, Endpoint::List).unwrap();
        let sel = select(t, &q, &Names::default(), 100);
        (sel.picks.iter().map(|p| p.1).collect(), sel.tally)
    }

    #[test]
    fn selections_filter_order_and_page() {
        let t = table_of(500);
        let (all, tally) = ids(&t, "");
        assert_eq!(all.len(), 500);
        assert_eq!(tally.total, 500);
        assert_eq!(tally.matched, 500);
        assert!(tally.acct);
        assert_eq!(tally.counters_age, Some(0));
        let (marked, tally) = ids(&t, "mark=1");
        assert_eq!(marked.len(), 167);
        assert_eq!(tally.matched, 167);
        assert_eq!(tally.total, 500);
        // the whole order, then pages of it
        let (whole, _) = ids(&t, "sort=-bytes,sport");
        let bytes = |id: u32| ((id as u64 - 1) * 37) % 101;
        assert!(whole.windows(2).all(|w| bytes(w[0]) >= bytes(w[1])));
        let mut paged = Vec::new();
        for off in (0..500).step_by(70) {
            paged.extend(ids(&t, &format!("sort=-bytes,sport&limit=70&offset={off}")).0);
        }
        assert_eq!(paged, whole);
        let (top, _) = ids(&t, "sort=-bytes,sport&limit=3");
        assert_eq!(top, whole[..3].to_vec());
        // unsorted paging and the edges
        let (p, _) = ids(&t, "limit=10&offset=495");
        assert_eq!(p, all[495..].to_vec());
        assert!(ids(&t, "limit=0").0.is_empty());
        assert!(ids(&t, "offset=900").0.is_empty());
        assert!(ids(&t, "sort=id&offset=900&limit=5").0.is_empty());
        let (one, _) = ids(&t, "sort=id&limit=1");
        assert_eq!(one, vec![1]);
        let (last, _) = ids(&t, "sort=-id&limit=1&offset=499");
        assert_eq!(last, vec![1]);
        let (filtered, tally) = ids(&t, "mark=2&limit=5&offset=3");
        assert_eq!(filtered.len(), 5);
        assert_eq!(tally.matched, 166);
        let (sorted, tally) = ids(&t, "mark=2&sort=id&limit=5&offset=3");
        assert_eq!(sorted, vec![12, 15, 18, 21, 24]);
        assert_eq!(tally.matched, 166);
    }

    #[test]
    fn heap_and_full_orders_agree() {
        // windows on both sides of HEAP_WINDOW give the same order
        let t = table_of(HEAP_WINDOW as u32 + 900);
        let (whole, _) = ids(&t, "sort=-bytes,sport");
        let (small, _) = ids(&t, &format!("sort=-bytes,sport&limit={}", HEAP_WINDOW));
        let (big, _) = ids(&t, &format!("sort=-bytes,sport&limit={}", HEAP_WINDOW + 1));
        assert_eq!(small, whole[..HEAP_WINDOW].to_vec());
        assert_eq!(big, whole[..HEAP_WINDOW + 1].to_vec());
        let (tail, _) = ids(
            &t,
            &format!("sort=-bytes,sport&offset={}&limit=10", HEAP_WINDOW - 5),
        );
        assert_eq!(tail, whole[HEAP_WINDOW - 5..HEAP_WINDOW + 5].to_vec());
    }

    #[test]
    fn list_bodies_render_in_chunks_and_skip_gone_rows() {
        let store = Arc::new(Store::new(None, std::time::Duration::from_secs(30)));
        store.install(table_of(300));
        let q = FlowQuery::parse("sort=id", Endpoint::List).unwrap();
        let sel = {
            let v = store.read().unwrap();
            select(v.table(), &q, &Names::default(), v.now)
        };
        // a row goes after the selection
        let mut gone = tcp4();
        gone.orig.src = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0100 + 4));
        gone.reply.dst = gone.orig.src;
        gone.orig.sport = 1000 + 4;
        gone.id = Some(5);
        store.apply(&crate::netlink::Event {
            kind: EventKind::Destroy,
            flow: gone,
            portid: 0,
        });
        let mut body = ListBody::new(&store, sel, &q, Arc::new(Names::default()));
        let mut out = Vec::new();
        let mut chunks = 0;
        while body.fill(&mut out) {
            chunks += 1;
        }
        assert!(chunks > 1, "{chunks}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 299);
        assert!(items.iter().all(|i| i["id"] != 5));
        assert_eq!(items[0]["id"], 1);
        assert_eq!(v["matched"], 300);
        assert_eq!(v["source"], "table");
        assert_eq!(v["counter_interval"], 30);
        // CSV: the header, then a line a row
        let q = FlowQuery::parse("format=csv&limit=2", Endpoint::List).unwrap();
        let sel = {
            let v = store.read().unwrap();
            select(v.table(), &q, &Names::default(), v.now)
        };
        let mut body = ListBody::new(&store, sel, &q, Arc::new(Names::default()));
        let mut out = Vec::new();
        while body.fill(&mut out) {}
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with(CSV_HEADER));
        // an empty list is still a whole document
        let q = FlowQuery::parse("limit=0", Endpoint::List).unwrap();
        let mut body = ListBody::new(&store, Selection::default(), &q, Arc::new(Names::default()));
        let mut out = Vec::new();
        while body.fill(&mut out) {}
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["items"].as_array().unwrap().is_empty());
        // bytes bodies too
        let mut b = BytesBody::new(vec![7; CHUNK + 5]);
        let mut out = Vec::new();
        assert!(b.fill(&mut out));
        assert_eq!(out.len(), CHUNK);
        assert!(b.fill(&mut out));
        assert!(!b.fill(&mut out));
        assert_eq!(out.len(), CHUNK + 5);
    }
}
