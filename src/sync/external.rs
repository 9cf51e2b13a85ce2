//! The external cache: flows received from the peer, kept until the
//! standby takes over and commits them to its kernel.
//!
//! Entries are keyed like conntrackd's (original tuple + zone) and hold
//! the received message's attributes as they came (a validated, compact
//! byte string, ~60-120 bytes), decoded into a [`Flow`] only when needed
//! (commit, dump). NEW replaces an entry, UPD updates or creates it, DEL
//! removes it. An update is merged into what the entry has
//! ([`merge_update`]): what it leaves out (labels, NAT sequence
//! adjustment, master, SYN proxy state, mark...) keeps its value. In
//! ALARM mode entries expire `CacheTimeout` seconds after their last
//! refresh.
//!
//! Bounded whatever the peer sends: at most `HashLimit` entries (a new
//! flow beyond that is refused and counted, as in conntrackd), each
//! holding at most [`MAX_STORED_BODY`] bytes of attributes, and (ALARM)
//! at most two expiry records per entry.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::merge::merge_update;
use super::wire::ct::{self, EncodeOpts, QuirkOrder};
use super::wire::ty;
use crate::flow::{Flow, ProtoInfo, Tuple, proto};

/// The identity of a flow for sync: its original tuple and zone, with the
/// fields that do not travel cleared (so both sides compute the same key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Original tuple, normalised.
    pub tuple: Tuple,
    /// Zone (0 = default).
    pub zone: u16,
}

impl FlowKey {
    /// The key of a flow.
    pub fn of(f: &Flow) -> FlowKey {
        let mut t = f.orig;
        if proto::is_icmp(t.proto) {
            t.sport = 0;
            t.dport = 0;
        } else {
            t.icmp_type = 0;
            t.icmp_code = 0;
            t.icmp_id = 0;
            if !proto::has_ports(t.proto) {
                // conntrackd does not send GRE keys or other ports
                t.sport = 0;
                t.dport = 0;
            }
        }
        FlowKey {
            tuple: t,
            zone: f.zone.unwrap_or(0),
        }
    }
}

/// Attributes of a received message are kept as they came up to this
/// size (what conntrackd sends is at most ~350 bytes); a bigger message
/// (only unknown attributes or padding make one) is kept re-encoded from
/// what was understood of it, which is never bigger.
pub const MAX_STORED_BODY: usize = 512;

/// Counters of the external cache, as `conntrackd -s` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExternalStats {
    /// Entries created (NEW, or UPD of an unknown flow).
    pub created: u64,
    /// Entries updated.
    pub updated: u64,
    /// Entries removed by DEL.
    pub destroyed: u64,
    /// Entries expired (ALARM CacheTimeout).
    pub expired: u64,
    /// Messages that could not be applied (undecodable body, or a new
    /// flow when the cache is full).
    pub failed: u64,
    /// New flows refused because the cache held its limit (HashLimit).
    pub full: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    body: Box<[u8]>,
    created: Instant,
    updated: Instant,
    stamp: u64,
}

/// One external flow, decoded, with its ages.
#[derive(Clone, Debug)]
pub struct ExternalFlow {
    /// The flow (reply tuple rebuilt, timeout as last synced).
    pub flow: Flow,
    /// When it entered the cache.
    pub created: Instant,
    /// When it was last refreshed.
    pub updated: Instant,
}

/// Flows received from the peer.
#[derive(Clone, Debug)]
pub struct ExternalCache {
    map: HashMap<FlowKey, Entry>,
    quirk: QuirkOrder,
    lifetime: Option<Duration>,
    /// Most entries (HashLimit).
    limit: usize,
    expiry: VecDeque<(Instant, u64, FlowKey)>,
    stamp: u64,
    stats: ExternalStats,
}

impl ExternalCache {
    /// An empty cache of at most `limit` entries; `lifetime` is ALARM's
    /// CacheTimeout (None: entries live until deleted or flushed).
    pub fn new(quirk: QuirkOrder, lifetime: Option<Duration>, limit: usize) -> ExternalCache {
        ExternalCache {
            map: HashMap::new(),
            quirk,
            lifetime,
            limit: limit.max(1),
            expiry: VecDeque::new(),
            stamp: 0,
            stats: ExternalStats::default(),
        }
    }

    /// Applies a received state message of type `t` (CT_NEW, CT_UPD or
    /// CT_DEL) whose decoded flow is `f` and attributes `body`.
    pub fn apply(&mut self, now: Instant, t: u8, f: &Flow, body: &[u8]) {
        let key = FlowKey::of(f);
        match t {
            ty::CT_DEL if self.map.remove(&key).is_some() => self.stats.destroyed += 1,
            ty::CT_DEL => {}
            ty::CT_NEW | ty::CT_UPD => {
                if self.map.len() >= self.limit && !self.map.contains_key(&key) {
                    self.stats.failed += 1;
                    self.stats.full += 1;
                    return;
                }
                let Some(body) = stored_body(f, body, self.quirk) else {
                    self.stats.failed += 1;
                    return;
                };
                let body = body.as_ref();
                self.stamp += 1;
                let stamp = self.stamp;
                let quirk = self.quirk;
                match self.map.get_mut(&key) {
                    Some(e) if t == ty::CT_UPD => {
                        e.body = merged_body(&e.body, f, body, quirk);
                        e.updated = now;
                        e.stamp = stamp;
                        self.stats.updated += 1;
                    }
                    _ => {
                        self.map.insert(
                            key,
                            Entry {
                                body: body.into(),
                                created: now,
                                updated: now,
                                stamp,
                            },
                        );
                        self.stats.created += 1;
                    }
                }
                if let Some(l) = self.lifetime {
                    self.expiry.push_back((now + l, stamp, key));
                    // each refresh leaves the entry's older record behind:
                    // drop them before they outnumber the entries
                    if self.expiry.len() > 2 * self.map.len() + 64 {
                        let map = &self.map;
                        self.expiry.retain(|(_, stamp, key)| {
                            map.get(key).is_some_and(|e| e.stamp == *stamp)
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Records of the expiry queue (ALARM), stale ones included.
    pub fn expiry_records(&self) -> usize {
        self.expiry.len()
    }

    /// Removes entries whose CacheTimeout passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(at, stamp, key)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            if self.map.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.map.remove(&key);
                n += 1;
            }
        }
        self.stats.expired += n as u64;
        n
    }

    /// When the next entry may expire.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.front().map(|e| e.0)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every entry (`conntrackd -f external`).
    pub fn flush(&mut self) {
        self.map.clear();
        self.expiry.clear();
    }

    /// Counters.
    pub fn stats(&self) -> ExternalStats {
        self.stats
    }

    fn decode(&self, e: &Entry) -> Option<ExternalFlow> {
        ct::decode_attrs(&e.body, self.quirk)
            .ok()
            .map(|flow| ExternalFlow {
                flow,
                created: e.created,
                updated: e.updated,
            })
    }

    /// Every entry as received (its attributes, undecoded) with the time
    /// of its last update: what a commit copies on the daemon's core
    /// thread and decodes on its own ([`super::commit::Snapshot`]).
    pub fn raw_entries(&self) -> impl Iterator<Item = (&[u8], Instant)> + '_ {
        self.map.values().map(|e| (&*e.body, e.updated))
    }

    /// Byte order of the peer's double-swapped fields (to decode
    /// [`ExternalCache::raw_entries`]).
    pub fn quirk(&self) -> QuirkOrder {
        self.quirk
    }

    /// The entry for a key.
    pub fn get(&self, key: &FlowKey) -> Option<ExternalFlow> {
        self.map.get(key).and_then(|e| self.decode(e))
    }

    /// Every entry, decoded (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = ExternalFlow> + '_ {
        self.map.values().filter_map(|e| self.decode(e))
    }

    /// Approximate heap bytes held (for `-s cache`).
    pub fn memory(&self) -> usize {
        let per = std::mem::size_of::<FlowKey>() + std::mem::size_of::<Entry>() + 8;
        self.map.values().map(|e| e.body.len() + per).sum::<usize>()
            + self.expiry.len() * std::mem::size_of::<(Instant, u64, FlowKey)>()
    }

    /// The `conntrackd -e` line of an entry: conntrack's text without
    /// timeout or reply tuple, then ` [expires in Ns]` (ALARM) and
    /// ` [active since Ns]`.
    pub fn dump_line(&self, e: &ExternalFlow, now: Instant, out: &mut Vec<u8>) {
        let mut f = e.flow.clone();
        f.has_reply = false;
        let o = crate::flow::text::TextOptions {
            show_timeout: false,
            ..Default::default()
        };
        crate::flow::text::write_line(out, &f, &o);
        if let Some(l) = self.lifetime {
            let left = (e.updated + l).saturating_duration_since(now).as_secs();
            out.extend_from_slice(format!(" [expires in {left}s]").as_bytes());
        }
        let since = now.saturating_duration_since(e.created).as_secs();
        out.extend_from_slice(format!(" [active since {since}s]\n").as_bytes());
    }
}

/// The body of an entry after the update `f` (received as `body`): the
/// update merged into the entry's flow, or the update as received when
/// it leaves nothing out that the entry has.
fn merged_body(old: &[u8], f: &Flow, body: &[u8], quirk: QuirkOrder) -> Box<[u8]> {
    let Ok(known) = ct::decode_attrs(old, quirk) else {
        return body.into();
    };
    let mut merged = f.clone();
    merge_update(&known, &mut merged);
    if merged == *f {
        return body.into();
    }
    let o = EncodeOpts {
        omit_timeout: false,
        // window scales travel when they are known
        tcp_window_tracking: matches!(merged.protoinfo, ProtoInfo::Tcp(t) if t.wscale != [None; 2]),
        quirk,
    };
    let mut out = Vec::with_capacity(body.len() + 32);
    match ct::encode_attrs(&merged, &o, &mut out) {
        Ok(()) => out.into(),
        Err(_) => body.into(),
    }
}

/// The attributes to keep of a received message: as they came, or
/// re-encoded from the decoded flow when they are bigger than
/// [`MAX_STORED_BODY`] (None: the flow cannot be encoded).
fn stored_body<'a>(f: &Flow, body: &'a [u8], quirk: QuirkOrder) -> Option<Cow<'a, [u8]>> {
    if body.len() <= MAX_STORED_BODY {
        return Some(Cow::Borrowed(body));
    }
    let opts = ct::EncodeOpts {
        omit_timeout: false,
        tcp_window_tracking: matches!(f.protoinfo, crate::flow::ProtoInfo::Tcp(t) if t.wscale[0].is_some()),
        quirk,
    };
    let mut out = Vec::with_capacity(256);
    ct::encode_attrs(f, &opts, &mut out).ok()?;
    Some(Cow::Owned(out))
}

/// The timeout to commit an entry with, as conntrackd computes it:
/// CommitTimeout if set, else the synced timeout minus the seconds since
/// the last update; [`FALLBACK_TIMEOUT`] when that leaves nothing (no
/// timeout was synced, or it ran out): the kernel refuses to create an
/// entry without a timeout.
///
/// [`FALLBACK_TIMEOUT`]: super::commit::FALLBACK_TIMEOUT
pub fn commit_timeout(e: &ExternalFlow, now: Instant, commit_timeout: Option<u32>) -> u32 {
    if let Some(t) = commit_timeout {
        return t;
    }
    let elapsed = now.saturating_duration_since(e.updated).as_secs();
    match u64::from(e.flow.timeout.unwrap_or(0)).checked_sub(elapsed) {
        Some(left) if left > 0 => left as u32,
        _ => super::commit::FALLBACK_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil;
    use crate::sync::wire::ct::EncodeOpts;

    fn body(f: &Flow) -> Vec<u8> {
        let mut b = Vec::new();
        ct::encode_attrs(f, &EncodeOpts::default(), &mut b).unwrap();
        b
    }

    #[test]
    fn new_update_delete() {
        let t0 = Instant::now();
        let mut c = ExternalCache::new(QuirkOrder::Little, None, 1000);
        let mut f = testutil::tcp4();
        c.apply(t0, ty::CT_UPD, &f, &body(&f)); // UPD of unknown creates
        assert_eq!(c.len(), 1);
        f.mark = Some(9);
        let t1 = t0 + Duration::from_secs(5);
        c.apply(t1, ty::CT_UPD, &f, &body(&f));
        let e = c.get(&FlowKey::of(&f)).unwrap();
        assert_eq!(e.flow.mark, Some(9));
        assert_eq!((e.created, e.updated), (t0, t1));
        c.apply(t1, ty::CT_NEW, &f, &body(&f)); // NEW replaces
        assert_eq!(c.get(&FlowKey::of(&f)).unwrap().created, t1);
        let mut other = f.clone();
        other.zone = Some(3); // same tuple, other zone: another entry
        c.apply(t1, ty::CT_NEW, &other, &body(&other));
        assert_eq!(c.len(), 2);
        c.apply(t1, ty::CT_DEL, &f, &body(&f));
        assert_eq!(c.len(), 1);
        let s = c.stats();
        assert_eq!((s.created, s.updated, s.destroyed), (3, 1, 1));
        let mut line = Vec::new();
        c.dump_line(
            &c.iter().next().unwrap(),
            t1 + Duration::from_secs(2),
            &mut line,
        );
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with("tcp      6 ESTABLISHED src=10.0.0.1"),
            "{line}"
        );
        assert!(line.ends_with(" [active since 2s]\n"), "{line}");
        assert!(
            !line.contains("sport=80 dport=1234"),
            "no reply tuple: {line}"
        );
        c.flush();
        assert!(c.is_empty());
    }

    #[test]
    fn an_update_is_merged_into_the_entry() {
        use crate::flow::{Labels, SeqAdj, TcpInfo};
        let t0 = Instant::now();
        let mut c = ExternalCache::new(QuirkOrder::Little, None, 1000);
        let mut f = testutil::tcp4();
        f.labels = Some(Labels {
            words: [1 << 3, 0, 0, 0],
            len: 4,
        });
        f.seq_adj = [Some(SeqAdj {
            correction_pos: 7,
            offset_before: 0,
            offset_after: 2,
        }); 2];
        f.master = Some(testutil::tcp4().orig);
        c.apply(t0, ty::CT_NEW, &f, &body(&f));
        // a TCP state change as the kernel reports it, forwarded as it
        // came (conntrackd with DisableInternalCache)
        let mut u = testutil::tcp4();
        u.mark = None;
        u.protoinfo = ProtoInfo::Tcp(TcpInfo {
            state: Some(5),
            ..TcpInfo::default()
        });
        c.apply(t0, ty::CT_UPD, &u, &body(&u));
        let e = c.get(&FlowKey::of(&f)).unwrap().flow;
        assert_eq!(e.protoinfo.tcp_state(), Some(5));
        assert_eq!(
            (e.labels, e.seq_adj, e.master),
            (f.labels, f.seq_adj, f.master)
        );
        assert_eq!(e.mark, f.mark);
        // NEW replaces
        c.apply(t0, ty::CT_NEW, &u, &body(&u));
        let e = c.get(&FlowKey::of(&f)).unwrap().flow;
        assert_eq!((e.labels, e.master, e.mark), (None, None, None));
    }

    #[test]
    fn alarm_entries_expire_after_their_last_refresh() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = ExternalCache::new(QuirkOrder::Little, Some(s(10)), 1000);
        let a = testutil::tcp4();
        let mut b = testutil::tcp4();
        b.orig.sport = 999;
        c.apply(t0, ty::CT_UPD, &a, &body(&a));
        c.apply(t0, ty::CT_UPD, &b, &body(&b));
        c.apply(t0 + s(6), ty::CT_UPD, &b, &body(&b)); // refreshed
        assert_eq!(c.next_expiry(), Some(t0 + s(10)));
        assert_eq!(c.expire(t0 + s(9)), 0);
        assert_eq!(c.expire(t0 + s(10)), 1);
        assert!(c.get(&FlowKey::of(&b)).is_some());
        assert_eq!(c.expire(t0 + s(16)), 1);
        assert!(c.is_empty());
        assert_eq!(c.stats().expired, 2);
    }

    #[test]
    fn commit_timeout_follows_conntrackd() {
        let t0 = Instant::now();
        let mut f = testutil::tcp4();
        f.timeout = Some(300);
        let e = ExternalFlow {
            flow: f,
            created: t0,
            updated: t0,
        };
        let s = Duration::from_secs;
        assert_eq!(commit_timeout(&e, t0 + s(32), None), 268);
        assert_eq!(commit_timeout(&e, t0 + s(299), None), 1);
        assert_eq!(commit_timeout(&e, t0 + s(400), None), 60);
        // nothing left, or nothing synced: never a create without one
        assert_eq!(commit_timeout(&e, t0 + s(300), None), 60);
        let mut unsynced = e.clone();
        unsynced.flow.timeout = None;
        assert_eq!(commit_timeout(&unsynced, t0, None), 60);
        assert_eq!(commit_timeout(&e, t0, Some(180)), 180);
    }

    #[test]
    fn keys_ignore_what_does_not_travel() {
        let mut g = testutil::tcp4();
        g.orig.proto = proto::GRE;
        g.orig.sport = 0x102;
        let mut k = g.clone();
        k.orig.sport = 0;
        assert_eq!(FlowKey::of(&g), FlowKey::of(&k));
        let mut f = testutil::tcp4();
        f.zone = Some(0);
        assert_eq!(FlowKey::of(&f), FlowKey::of(&testutil::tcp4()));
    }

    #[test]
    fn a_peer_cannot_grow_the_cache_beyond_its_bounds() {
        let t0 = Instant::now();
        let mut c = ExternalCache::new(QuirkOrder::Little, Some(Duration::from_secs(180)), 100);
        let flow = |i: u16| {
            let mut f = testutil::tcp4();
            f.orig.sport = 1000 + i;
            f
        };
        // HashLimit: new flows beyond it are refused and counted; known
        // ones are still updated
        for i in 0..150 {
            c.apply(t0, ty::CT_NEW, &flow(i), &body(&flow(i)));
        }
        assert_eq!(c.len(), 100);
        let s = c.stats();
        assert_eq!((s.created, s.full, s.failed), (100, 50, 50));
        let mut f = flow(7);
        f.mark = Some(77);
        c.apply(t0, ty::CT_UPD, &f, &body(&f));
        assert_eq!(c.get(&FlowKey::of(&f)).unwrap().flow.mark, Some(77));
        // a message padded with 60 KB of attributes nobody knows is kept
        // at the size of what it says
        let mut big = body(&f);
        big.extend_from_slice(&60_004u16.to_be_bytes());
        big.extend_from_slice(&99u16.to_be_bytes());
        big.resize(big.len() + 60_000, 0);
        let before = c.memory();
        c.apply(t0, ty::CT_UPD, &f, &big);
        assert!(
            c.memory() - before < MAX_STORED_BODY,
            "{}",
            c.memory() - before
        );
        assert_eq!(c.get(&FlowKey::of(&f)).unwrap().flow.mark, Some(77));
        // ALARM: refreshing one flow 10000 times keeps a bounded number
        // of expiry records
        for k in 0..10_000u64 {
            c.apply(t0 + Duration::from_millis(k), ty::CT_UPD, &f, &body(&f));
        }
        assert!(
            c.expiry_records() <= 2 * c.len() + 65,
            "{}",
            c.expiry_records()
        );
        // and the records left still expire what they should, when they should
        assert_eq!(c.expire(t0 + Duration::from_secs(180)), 99);
        assert_eq!(c.len(), 1);
        assert_eq!(c.expire(t0 + Duration::from_millis(189_999)), 1);
        assert!(c.is_empty());
    }
}
