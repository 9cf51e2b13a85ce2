//! The table the page and the API read: every flow of the conntrack
//! table in a compact row, kept current by kernel events, with byte and
//! packet counters (and rates) from the last shared counter snapshot.
//!
//! Events carry a flow's tuples, state, status, mark and timeout but never
//! its counters; only a dump does. So the table is seeded by one dump,
//! follows events from then on (a NEW flow appears, a DESTROY removes it,
//! at once), and takes a dump again at most every few seconds while
//! someone is watching, for counters: [`Table::begin_dump`],
//! [`Table::merge_dumped`] for every dumped flow, [`Table::end_dump`]
//! (mark and sweep, as the daemon's cache resyncs). Rates are the counter
//! differences of two successive dumps.
//!
//! Rows keep their slot while they live (a removed row leaves a hole the
//! next new flow takes), so a long reply can name rows by `(slot, id)`
//! and look them up again chunk by chunk without holding the table.
//! Pure: the caller passes the time ([`Clock`]); no I/O.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::{AF_INET, AF_INET6, Counters, EventKind, Flow, ProtoInfo, TcpInfo, Tuple};

/// The time as the table needs it: wall-clock seconds for expiry and
/// age, a monotonic millisecond count for rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Seconds since the epoch.
    pub epoch: u32,
    /// Milliseconds on a monotonic clock.
    pub mono_ms: u64,
}

/// Addresses of a row: original src/dst, reply src/dst.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addrs {
    V4([[u8; 4]; 4]),
    V6(Box<[[u8; 16]; 4]>),
}

// flag bits
const LIVE: u8 = 1 << 0;
const REPLY: u8 = 1 << 1;
const STATUS: u8 = 1 << 2;
const MARK: u8 = 1 << 3;
const ZONE: u8 = 1 << 4;
const COUNTERS: u8 = 1 << 5;
const RATE: u8 = 1 << 6;
/// Seen by the dump in progress (kept by the sweep).
const SEEN: u8 = 1 << 7;

// the `state` byte: bits 0-3 the state number, 4-5 its protocol, 6 SNAT,
// 7 DNAT
const STATE_NUM: u8 = 0x0f;
const KIND_SHIFT: u8 = 4;
const KIND_TCP: u8 = 1;
const KIND_SCTP: u8 = 2;
const KIND_DCCP: u8 = 3;
const SNAT: u8 = 1 << 6;
const DNAT: u8 = 1 << 7;

/// One flow, compact (104 bytes for IPv4; IPv6 addresses sit in a side
/// allocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    addrs: Addrs,
    bytes: [u64; 2],
    packets: [u64; 2],
    id: u32,
    status: u32,
    mark: u32,
    /// Seconds since the epoch when the flow started; 0 when unknown.
    start: u32,
    /// Seconds since the epoch when its timeout runs out, as last heard.
    expires: u32,
    /// Bytes per second each direction between the last two snapshots.
    rate: [u32; 2],
    /// orig sport, dport, reply sport, dport (ICMP: id, type<<8|code).
    ports: [u16; 4],
    zone: u16,
    proto: u8,
    state: u8,
    flags: u8,
}

/// The state byte of a flow (state number, its protocol, NAT bits).
fn state_byte(f: &Flow) -> u8 {
    let (kind, num) = match f.protoinfo {
        ProtoInfo::Tcp(TcpInfo { state: Some(s), .. }) => (KIND_TCP, s),
        ProtoInfo::Sctp { state: Some(s), .. } => (KIND_SCTP, s),
        ProtoInfo::Dccp { state: Some(s), .. } => (KIND_DCCP, s),
        _ => (0, 0),
    };
    let mut b = (kind << KIND_SHIFT) | num.min(STATE_NUM);
    if f.has_reply {
        if f.is_snat() || f.is_spat() {
            b |= SNAT;
        }
        if f.is_dnat() || f.is_dpat() {
            b |= DNAT;
        }
    }
    b
}

fn addrs_of(f: &Flow, reply: &Tuple) -> Option<Addrs> {
    Some(match (f.orig.src, f.orig.dst, reply.src, reply.dst) {
        (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(c), IpAddr::V4(d)) => {
            Addrs::V4([a.octets(), b.octets(), c.octets(), d.octets()])
        }
        (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(c), IpAddr::V6(d)) => {
            Addrs::V6(Box::new([a.octets(), b.octets(), c.octets(), d.octets()]))
        }
        _ => return None,
    })
}

impl Row {
    /// A row of a flow's tuples, state, status, mark, zone and expiry
    /// (no counters), or None when the flow has no usable original tuple.
    fn from_flow(f: &Flow, now: u32) -> Option<Row> {
        if !f.has_orig {
            return None;
        }
        let reply = if f.has_reply {
            f.reply
        } else {
            f.orig.inverted()
        };
        let (o1, o2) = f.orig.l4_pack();
        let (r1, r2) = reply.l4_pack();
        let mut row = Row {
            addrs: addrs_of(f, &reply)?,
            bytes: [0; 2],
            packets: [0; 2],
            id: f.id.unwrap_or(0),
            status: 0,
            mark: 0,
            start: 0,
            expires: 0,
            rate: [0; 2],
            ports: [o1, o2, r1, r2],
            zone: f.zone.unwrap_or(0),
            proto: f.orig.proto,
            state: 0,
            flags: LIVE | if f.zone.is_some() { ZONE } else { 0 },
        };
        row.take_state(f, now);
        Some(row)
    }

    /// Takes what an event or a dump says of the flow's state: status,
    /// mark, protocol state, expiry, the reply tuple; fields the message
    /// left out keep their values.
    fn take_state(&mut self, f: &Flow, now: u32) {
        if let Some(s) = f.status {
            self.status = s;
            self.flags |= STATUS;
        }
        if let Some(m) = f.mark {
            self.mark = m;
            self.flags |= MARK;
        }
        if let Some(t) = f.timeout {
            self.expires = now.saturating_add(t);
        }
        if f.has_reply {
            if let Some(a) = addrs_of(f, &f.reply) {
                self.addrs = a;
                let (r1, r2) = f.reply.l4_pack();
                self.ports[2] = r1;
                self.ports[3] = r2;
                self.flags |= REPLY;
            }
        }
        let fresh = state_byte(f);
        let keep_state = fresh & !(SNAT | DNAT) == 0;
        let nat = if f.has_reply {
            fresh & (SNAT | DNAT)
        } else {
            self.state & (SNAT | DNAT)
        };
        let base = if keep_state {
            self.state & !(SNAT | DNAT)
        } else {
            fresh & !(SNAT | DNAT)
        };
        self.state = base | nat;
    }

    /// Takes what a dump says of the flow (the fields of `fresh`, a row
    /// made of the same dump message), keeping its counters, rate and
    /// start.
    fn take_fields(&mut self, fresh: &Row) {
        const OWN: u8 = LIVE | REPLY | STATUS | MARK | ZONE;
        self.addrs.clone_from(&fresh.addrs);
        self.ports = fresh.ports;
        self.status = fresh.status;
        self.mark = fresh.mark;
        self.expires = fresh.expires;
        self.zone = fresh.zone;
        self.state = fresh.state;
        self.flags = (self.flags & !OWN) | (fresh.flags & OWN);
    }

    /// Takes a dump's counters, computing the rate against the row's
    /// counters of the previous dump `dt_ms` milliseconds before (none
    /// when `dt_ms` is 0 or the row had no counters from it).
    fn take_counters(&mut self, f: &Flow, dt_ms: u64) {
        let had = self.flags & COUNTERS != 0;
        self.flags &= !RATE;
        let mut any = false;
        for d in 0..2 {
            let Some(c) = f.counters[d] else { continue };
            any = true;
            if had && dt_ms > 0 && c.bytes >= self.bytes[d] {
                let per_s = (c.bytes - self.bytes[d]).saturating_mul(1000) / dt_ms;
                self.rate[d] = per_s.min(u32::MAX as u64) as u32;
                self.flags |= RATE;
            }
            self.bytes[d] = c.bytes;
            self.packets[d] = c.packets;
        }
        if had && self.flags & RATE == 0 {
            self.rate = [0; 2];
        }
        if any {
            self.flags |= COUNTERS;
        } else {
            self.flags &= !COUNTERS;
        }
    }

    /// The kernel's id of the flow.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The address family.
    pub fn family(&self) -> u8 {
        match self.addrs {
            Addrs::V4(_) => AF_INET,
            Addrs::V6(_) => AF_INET6,
        }
    }

    /// Address `i`: 0 orig src, 1 orig dst, 2 reply src, 3 reply dst.
    pub fn addr(&self, i: usize) -> IpAddr {
        match &self.addrs {
            Addrs::V4(a) => IpAddr::V4(Ipv4Addr::from(a[i & 3])),
            Addrs::V6(a) => IpAddr::V6(Ipv6Addr::from(a[i & 3])),
        }
    }

    /// The layer-4 protocol number.
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The original direction's ports (ICMP: id, type<<8|code).
    pub fn to_ports(&self) -> (u16, u16) {
        (self.ports[0], self.ports[1])
    }

    /// The mark, when the kernel reported one.
    pub fn mark(&self) -> Option<u32> {
        (self.flags & MARK != 0).then_some(self.mark)
    }

    /// The zone, when the kernel reported one.
    pub fn zone(&self) -> Option<u16> {
        (self.flags & ZONE != 0).then_some(self.zone)
    }

    /// Whether the flow is source-NATed (address or port).
    pub fn is_snat(&self) -> bool {
        self.state & SNAT != 0
    }

    /// Whether the flow is destination-NATed (address or port).
    pub fn is_dnat(&self) -> bool {
        self.state & DNAT != 0
    }

    /// Counters of direction `d` (0 original, 1 reply), when a snapshot
    /// had them.
    pub fn counters(&self, d: usize) -> Option<Counters> {
        (self.flags & COUNTERS != 0).then(|| Counters {
            packets: self.packets[d & 1],
            bytes: self.bytes[d & 1],
        })
    }

    /// Bytes per second of direction `d` between the last two snapshots.
    pub fn rate(&self, d: usize) -> Option<u32> {
        (self.flags & RATE != 0).then_some(self.rate[d & 1])
    }

    /// Seconds left until the timeout, as last heard.
    pub fn timeout(&self, now: u32) -> u32 {
        self.expires.saturating_sub(now)
    }

    /// Seconds since the flow started, when known.
    pub fn age(&self, now: u32) -> Option<u32> {
        (self.start != 0).then(|| now.saturating_sub(self.start))
    }

    /// The state number and its protocol kind (0 none, 1 TCP, 2 SCTP,
    /// 3 DCCP), for sorting: states order as the kernel numbers them.
    pub fn state_order(&self) -> u8 {
        let kind = (self.state >> KIND_SHIFT) & 3;
        if kind == 0 {
            0
        } else {
            (self.state & STATE_NUM) + 1
        }
    }

    /// The row as a flow, as `now` sees it (timeout left, no helper,
    /// labels, use count or sequence adjustments: the table keeps none).
    pub fn to_flow(&self, now: u32) -> Flow {
        let mut orig = Tuple {
            src: self.addr(0),
            dst: self.addr(1),
            proto: self.proto,
            ..Tuple::default()
        };
        orig.l4_unpack(self.ports[0], self.ports[1]);
        let mut reply = Tuple {
            src: self.addr(2),
            dst: self.addr(3),
            proto: self.proto,
            ..Tuple::default()
        };
        reply.l4_unpack(self.ports[2], self.ports[3]);
        let has = |bit: u8| self.flags & bit != 0;
        let num = Some(self.state & STATE_NUM);
        let protoinfo = match (self.state >> KIND_SHIFT) & 3 {
            KIND_TCP => ProtoInfo::Tcp(TcpInfo {
                state: num,
                ..TcpInfo::default()
            }),
            KIND_SCTP => ProtoInfo::Sctp {
                state: num,
                vtag: [None; 2],
            },
            KIND_DCCP => ProtoInfo::Dccp {
                state: num,
                role: None,
                handshake_seq: None,
            },
            _ => ProtoInfo::None,
        };
        Flow {
            family: self.family(),
            orig,
            reply,
            has_orig: true,
            has_reply: has(REPLY),
            status: has(STATUS).then_some(self.status),
            timeout: (self.expires != 0).then(|| self.timeout(now)),
            mark: has(MARK).then_some(self.mark),
            id: Some(self.id),
            zone: has(ZONE).then_some(self.zone),
            protoinfo,
            counters: [self.counters(0), self.counters(1)],
            timestamp_start: (self.start != 0).then(|| self.start as u64 * 1_000_000_000),
            ..Flow::default()
        }
    }

    fn same_key(&self, other: &Row) -> bool {
        let addrs = match (&self.addrs, &other.addrs) {
            (Addrs::V4(a), Addrs::V4(b)) => a[..2] == b[..2],
            (Addrs::V6(a), Addrs::V6(b)) => a[..2] == b[..2],
            _ => false,
        };
        addrs
            && self.proto == other.proto
            && self.ports[..2] == other.ports[..2]
            && self.zone == other.zone
    }

    /// The keyed hash of the original tuple and zone: one SipHash over
    /// the key's bytes, so crafted tuples cannot aim at one index slot.
    fn key_hash(&self, h: &RandomState) -> u64 {
        let mut key = [0u8; 39];
        let n = match &self.addrs {
            Addrs::V4(a) => {
                key[..4].copy_from_slice(&a[0]);
                key[4..8].copy_from_slice(&a[1]);
                8
            }
            Addrs::V6(a) => {
                key[..16].copy_from_slice(&a[0]);
                key[16..32].copy_from_slice(&a[1]);
                32
            }
        };
        key[n] = self.proto;
        key[n + 1..n + 3].copy_from_slice(&self.ports[0].to_be_bytes());
        key[n + 3..n + 5].copy_from_slice(&self.ports[1].to_be_bytes());
        key[n + 5..n + 7].copy_from_slice(&self.zone.to_be_bytes());
        let mut s = h.build_hasher();
        s.write(&key[..n + 7]);
        s.finish()
    }
}

/// The index's hasher: its keys are already keyed SipHash values, so it
/// takes them as they are instead of hashing them a second time.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // only u64 keys are hashed with it; fold anything else in
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`PreHashed`] hashers.
pub type PreHashedState = std::hash::BuildHasherDefault<PreHashed>;

/// A dump in progress.
#[derive(Debug)]
struct Dumping {
    /// When it started (the time its counters count as taken).
    started_ms: u64,
    /// Keys of flows destroyed since it started: a later dump message of
    /// them is older than the event and must not bring them back.
    gone: HashSet<u64>,
}

/// Most keys remembered as destroyed during one dump (beyond it, a flow
/// may come back until the next dump sweeps it).
const MAX_GONE: usize = 65536;

/// The flows, indexed by their original tuple and zone.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Row>,
    free: Vec<u32>,
    index: HashMap<u64, u32, PreHashedState>,
    hasher: RandomState,
    live: usize,
    acct: bool,
    dumps: u32,
    counters_ms: Option<u64>,
    counters_epoch: u32,
    dumping: Option<Dumping>,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table {
            rows: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            hasher: RandomState::new(),
            live: 0,
            acct: false,
            dumps: 0,
            counters_ms: None,
            counters_epoch: 0,
            dumping: None,
        }
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when there is no flow.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Completed dumps so far (0: not seeded yet).
    pub fn dumps(&self) -> u32 {
        self.dumps
    }

    /// Whether the last dump had counters (`nf_conntrack_acct` on).
    pub fn acct(&self) -> bool {
        self.acct
    }

    /// When the counters were taken (seconds since the epoch), once a
    /// dump completed.
    pub fn counters_epoch(&self) -> Option<u32> {
        self.counters_ms.map(|_| self.counters_epoch)
    }

    /// When the counters were taken, on the monotonic clock.
    pub fn counters_ms(&self) -> Option<u64> {
        self.counters_ms
    }

    /// Bytes the rows and the index take (capacity).
    pub fn memory_bytes(&self) -> usize {
        let v6 = self
            .rows
            .iter()
            .filter(|r| matches!(r.addrs, Addrs::V6(_)))
            .count();
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.free.capacity() * 4
            + self.index.capacity() * 16
            + v6 * 64
    }

    /// The live rows with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Row)> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.flags & LIVE != 0)
            .map(|(i, r)| (i as u32, r))
    }

    /// The live row in `slot`, if it still holds the flow with `id`.
    pub fn get(&self, slot: u32, id: u32) -> Option<&Row> {
        self.rows
            .get(slot as usize)
            .filter(|r| r.flags & LIVE != 0 && r.id == id)
    }

    /// The live row in `slot`.
    pub fn get_slot(&self, slot: u32) -> Option<&Row> {
        self.rows.get(slot as usize).filter(|r| r.flags & LIVE != 0)
    }

    /// The slot of the row with `probe`'s key (whose hash is `h`).
    fn find(&self, h: u64, probe: &Row) -> Option<(u64, u32)> {
        let slot = *self.index.get(&h)?;
        self.rows[slot as usize]
            .same_key(probe)
            .then_some((h, slot))
    }

    fn insert(&mut self, h: u64, row: Row) -> u32 {
        // another flow under the same hash (never seen in practice with a
        // seeded 64-bit hash): it gives way
        if let Some(&old) = self.index.get(&h) {
            self.remove_slot(h, old);
        }
        // the free list may name slots cut off the end since: skip them
        let free = loop {
            match self.free.pop() {
                Some(s) if (s as usize) < self.rows.len() => break Some(s),
                Some(_) => {}
                None => break None,
            }
        };
        let slot = match free {
            Some(s) => {
                self.rows[s as usize] = row;
                s
            }
            None => {
                self.rows.push(row);
                (self.rows.len() - 1) as u32
            }
        };
        self.index.insert(h, slot);
        self.live += 1;
        slot
    }

    fn remove_slot(&mut self, h: u64, slot: u32) {
        self.index.remove(&h);
        let r = &mut self.rows[slot as usize];
        r.flags = 0;
        r.id = 0;
        // a removed IPv6 row gives its side allocation back now
        r.addrs = Addrs::V4([[0; 4]; 4]);
        self.free.push(slot);
        self.live -= 1;
        // holes at the end go; memory goes back once most of it is unused
        while self.rows.last().is_some_and(|r| r.flags & LIVE == 0) {
            self.rows.pop();
        }
        if self.rows.capacity() > 2 * self.rows.len() + 1024 {
            self.rows.shrink_to(self.rows.len() + self.rows.len() / 4);
        }
        let holes = self.rows.len() - self.live;
        if self.free.len() > 2 * holes + 1024 {
            let n = self.rows.len();
            let rows = &self.rows;
            self.free
                .retain(|&s| (s as usize) < n && rows[s as usize].flags & LIVE == 0);
            self.free.shrink_to(self.free.len() * 2);
        }
    }

    /// Slots without a flow below the last live one.
    pub fn holes(&self) -> usize {
        self.rows.len() - self.live
    }

    /// Moves the rows down into the holes (rows change slots: only when no
    /// reply names rows by slot) and gives the memory back.
    pub fn compact(&mut self) {
        self.rows.retain(|r| r.flags & LIVE != 0);
        self.rows.shrink_to_fit();
        self.free = Vec::new();
        self.index.clear();
        for (i, r) in self.rows.iter().enumerate() {
            self.index.insert(r.key_hash(&self.hasher), i as u32);
        }
        self.index.shrink_to_fit();
    }

    /// Applies a kernel event: NEW and UPDATE add or refresh the flow,
    /// DESTROY removes it (unless the row is a newer flow with the same
    /// tuple: the ids differ).
    pub fn apply(&mut self, kind: EventKind, f: &Flow, now: Clock) {
        let Some(probe) = Row::from_flow(f, now.epoch) else {
            return;
        };
        let h = probe.key_hash(&self.hasher);
        let found = self.find(h, &probe);
        if kind == EventKind::Destroy {
            if let Some((h, slot)) = found {
                let r = &self.rows[slot as usize];
                if f.id.is_none_or(|id| id == r.id) {
                    self.remove_slot(h, slot);
                }
            }
            if let Some(d) = self.dumping.as_mut()
                && d.gone.len() < MAX_GONE
            {
                d.gone.insert(h);
            }
            return;
        }
        let dumping = self.dumping.is_some();
        match found {
            Some((_, slot)) => {
                let r = &mut self.rows[slot as usize];
                if f.id.is_some_and(|id| id != r.id) {
                    // the old flow went without our hearing: a new one
                    let mut fresh = probe;
                    fresh.start = if kind == EventKind::New { now.epoch } else { 0 };
                    if dumping {
                        fresh.flags |= SEEN;
                    }
                    self.rows[slot as usize] = fresh;
                } else {
                    r.take_state(f, now.epoch);
                    if dumping {
                        r.flags |= SEEN;
                    }
                }
            }
            None => {
                let mut row = probe;
                if kind == EventKind::New {
                    row.start = now.epoch;
                }
                if dumping {
                    row.flags |= SEEN;
                    if let Some(d) = self.dumping.as_mut() {
                        d.gone.remove(&h);
                    }
                }
                self.insert(h, row);
            }
        }
    }

    /// Starts a dump for counters: flows it does not report (and no event
    /// mentions meanwhile) are dropped by [`Table::end_dump`].
    pub fn begin_dump(&mut self, now: Clock) {
        for r in self.rows.iter_mut() {
            r.flags &= !SEEN;
        }
        self.dumping = Some(Dumping {
            started_ms: now.mono_ms,
            gone: HashSet::new(),
        });
    }

    /// Takes one dumped flow: adds or refreshes it with its counters,
    /// start time and rate.
    pub fn merge_dumped(&mut self, f: &Flow, now: Clock) {
        let Some(d) = &self.dumping else {
            return;
        };
        let dt = match self.counters_ms {
            Some(prev) => d.started_ms.saturating_sub(prev),
            None => 0,
        };
        let Some(probe) = Row::from_flow(f, now.epoch) else {
            return;
        };
        let h = probe.key_hash(&self.hasher);
        if d.gone.contains(&h) {
            return;
        }
        let start = f
            .timestamp_start
            .map(|ns| (ns / 1_000_000_000).min(u32::MAX as u64) as u32);
        let slot = match self.find(h, &probe) {
            Some((_, slot)) if f.id.is_none_or(|id| id == self.rows[slot as usize].id) => {
                self.rows[slot as usize].take_fields(&probe);
                slot
            }
            Some((_, slot)) => {
                // a newer flow with the same tuple
                self.rows[slot as usize] = probe;
                slot
            }
            None => self.insert(h, probe),
        };
        let r = &mut self.rows[slot as usize];
        r.take_counters(f, dt);
        if let Some(s) = start.filter(|&s| s != 0) {
            r.start = s;
        }
        r.flags |= SEEN;
        if r.flags & COUNTERS != 0 {
            self.acct = true;
        }
    }

    /// Ends the dump: on success drops what it did not see and dates the
    /// counters; a failed dump only ends (the rows stay as they were).
    pub fn end_dump(&mut self, ok: bool, now: Clock) {
        let Some(d) = self.dumping.take() else {
            return;
        };
        if !ok {
            return;
        }
        let stale: Vec<(usize, Row)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.flags & LIVE != 0 && r.flags & SEEN == 0)
            .map(|(i, r)| (i, r.clone()))
            .collect();
        for (slot, r) in stale {
            let h = r.key_hash(&self.hasher);
            if self.index.get(&h) == Some(&(slot as u32)) {
                self.remove_slot(h, slot as u32);
            }
        }
        if !self.rows.iter().any(|r| r.flags & COUNTERS != 0) {
            self.acct = false;
        }
        self.counters_ms = Some(d.started_ms);
        self.counters_epoch = now.epoch;
        self.dumps = self.dumps.saturating_add(1);
    }

    /// Whether a dump is in progress.
    pub fn dumping(&self) -> bool {
        self.dumping.is_some()
    }
}

/// A row with everything `f` carries, counters included (for tests of
/// the modules that read rows).
#[cfg(test)]
pub(crate) fn test_row(f: &Flow, now: u32) -> Row {
    let mut r = Row::from_flow(f, now).expect("a usable flow");
    r.take_counters(f, 0);
    if let Some(ns) = f.timestamp_start {
        r.start = (ns / 1_000_000_000) as u32;
    }
    r
}

/// Sets a test row's rates.
#[cfg(test)]
pub(crate) fn set_rate(r: &mut Row, orig: u32, reply: u32) {
    r.rate = [orig, reply];
    r.flags |= RATE;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::proto;
    use crate::flow::testutil::tcp4;

    fn flow(i: u32) -> Flow {
        let mut f = tcp4();
        f.orig.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        f.reply.dst = f.orig.src;
        f.orig.sport = (i % 60000) as u16 + 1;
        f.reply.dport = f.orig.sport;
        f.id = Some(i + 1);
        f
    }

    fn counted(i: u32, orig: u64, reply: u64) -> Flow {
        let mut f = flow(i);
        f.counters = [
            Some(Counters {
                packets: orig / 100,
                bytes: orig,
            }),
            Some(Counters {
                packets: reply / 100,
                bytes: reply,
            }),
        ];
        f
    }

    fn at(epoch: u32, mono_ms: u64) -> Clock {
        Clock { epoch, mono_ms }
    }

    fn dump(t: &mut Table, flows: &[Flow], now: Clock) {
        t.begin_dump(now);
        for f in flows {
            t.merge_dumped(f, now);
        }
        t.end_dump(true, now);
    }

    #[test]
    fn rows_are_compact_and_round_trip() {
        assert!(
            std::mem::size_of::<Row>() <= 104,
            "{}",
            std::mem::size_of::<Row>()
        );
        let mut f = tcp4();
        f.zone = Some(3);
        f.counters = [
            Some(Counters {
                packets: 2,
                bytes: 300,
            }),
            Some(Counters {
                packets: 1,
                bytes: 60,
            }),
        ];
        f.timestamp_start = Some(1_000 * 1_000_000_000);
        let mut t = Table::new();
        dump(&mut t, std::slice::from_ref(&f), at(1_100, 0));
        let (slot, r) = t.iter().next().unwrap();
        let back = r.to_flow(1_110);
        assert_eq!(back.orig, f.orig);
        assert_eq!(back.reply, f.reply);
        assert_eq!(back.status, f.status);
        assert_eq!(back.mark, f.mark);
        assert_eq!(back.zone, Some(3));
        assert_eq!(back.id, f.id);
        assert_eq!(back.counters, f.counters);
        assert_eq!(back.protoinfo.tcp_state(), Some(3));
        assert_eq!(back.timeout, Some(119 - 10));
        assert_eq!(back.timestamp_start, f.timestamp_start);
        assert_eq!(r.age(1_110), Some(110));
        assert_eq!(r.state_order(), 4);
        assert!(t.get(slot, f.id.unwrap()).is_some());
        assert!(t.get(slot, 1).is_none());
        assert!(t.get(slot + 1, f.id.unwrap()).is_none());
        // SCTP and DCCP states, ICMP fields, IPv6, NAT bits survive too
        let mut s = tcp4();
        s.orig.proto = proto::SCTP;
        s.reply.proto = proto::SCTP;
        s.protoinfo = ProtoInfo::Sctp {
            state: Some(3),
            vtag: [None; 2],
        };
        let mut d = tcp4();
        d.orig.proto = proto::DCCP;
        d.reply.proto = proto::DCCP;
        d.orig.sport = 9;
        d.protoinfo = ProtoInfo::Dccp {
            state: Some(4),
            role: None,
            handshake_seq: None,
        };
        let mut i = Flow {
            family: AF_INET6,
            has_orig: true,
            has_reply: true,
            ..Flow::default()
        };
        i.orig = Tuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            proto: proto::ICMPV6,
            icmp_type: 128,
            icmp_code: 0,
            icmp_id: 77,
            ..Tuple::default()
        };
        i.reply = i.orig.inverted();
        i.reply.icmp_id = 77;
        let mut n = tcp4();
        n.orig.sport = 7;
        n.reply.dst = "192.0.2.1".parse().unwrap();
        n.reply.dport = 7;
        n.status = n.status.map(|s| s | crate::flow::status::SRC_NAT_DONE);
        for f in [&s, &d, &i, &n] {
            let r = Row::from_flow(f, 0).unwrap();
            let back = r.to_flow(0);
            assert_eq!(back.orig, f.orig, "{f:?}");
            assert_eq!(back.reply, f.reply, "{f:?}");
            assert_eq!(back.protoinfo, f.protoinfo);
            assert_eq!(r.family(), f.family);
            assert_eq!(r.is_snat(), f.is_snat() || f.is_spat());
            assert_eq!(r.is_dnat(), f.is_dnat() || f.is_dpat());
        }
        assert!(Row::from_flow(&n, 0).unwrap().is_snat());
        // a flow without an original tuple, or with mixed families, has no row
        let mut bad = tcp4();
        bad.has_orig = false;
        assert!(Row::from_flow(&bad, 0).is_none());
        let mut mixed = tcp4();
        mixed.orig.dst = "fd00::1".parse().unwrap();
        assert!(Row::from_flow(&mixed, 0).is_none());
    }

    #[test]
    fn events_add_update_and_remove() {
        let mut t = Table::new();
        let now = at(500, 0);
        for i in 0..1000 {
            t.apply(EventKind::New, &flow(i), now);
        }
        assert_eq!(t.len(), 1000);
        let mut f = flow(7);
        f.mark = Some(99);
        f.timeout = Some(30);
        f.protoinfo = ProtoInfo::Tcp(TcpInfo {
            state: Some(7),
            ..TcpInfo::default()
        });
        t.apply(EventKind::Update, &f, at(510, 0));
        let r = t.iter().find(|(_, r)| r.id() == 8).unwrap().1;
        let back = r.to_flow(510);
        assert_eq!(back.mark, Some(99));
        assert_eq!(back.timeout, Some(30));
        assert_eq!(back.protoinfo.tcp_state(), Some(7));
        assert_eq!(r.age(510), Some(10), "started at its NEW event");
        // an update that says nothing of the state keeps it
        let mut quiet = flow(7);
        quiet.protoinfo = ProtoInfo::None;
        quiet.status = None;
        t.apply(EventKind::Update, &quiet, at(511, 0));
        let r = t.iter().find(|(_, r)| r.id() == 8).unwrap().1;
        assert_eq!(r.to_flow(511).protoinfo.tcp_state(), Some(7));
        // DESTROY of an older flow with the same tuple keeps the newer
        let mut old = flow(3);
        old.id = Some(12345);
        t.apply(EventKind::Destroy, &old, now);
        assert_eq!(t.len(), 1000);
        for i in (0..1000).step_by(2) {
            t.apply(EventKind::Destroy, &flow(i), now);
        }
        assert_eq!(t.len(), 500);
        assert!(t.iter().all(|(_, r)| r.id() % 2 == 0));
        // an UPDATE for a flow we never saw adds it, without a start time
        t.apply(EventKind::Update, &flow(5000), now);
        let r = t.iter().find(|(_, r)| r.id() == 5001).unwrap().1;
        assert_eq!(r.age(600), None);
        // holes are reused
        let before = t.rows.len();
        for i in 10_000..10_400 {
            t.apply(EventKind::New, &flow(i), now);
        }
        assert_eq!(t.rows.len(), before);
        // a NEW with another id replaces a row whose DESTROY we missed
        let mut again = flow(9);
        again.id = Some(777);
        t.apply(EventKind::New, &again, at(900, 0));
        let r = t.iter().find(|(_, r)| r.id() == 777).unwrap().1;
        assert_eq!(r.age(901), Some(1));
        assert!(t.iter().all(|(_, r)| r.id() != 10));
    }

    #[test]
    fn dumps_bring_counters_rates_and_sweep_the_gone() {
        let mut t = Table::new();
        dump(
            &mut t,
            &[counted(1, 1000, 5000), counted(2, 10, 10), counted(3, 0, 0)],
            at(100, 10_000),
        );
        assert_eq!(t.len(), 3);
        assert!(t.acct());
        assert_eq!(t.dumps(), 1);
        assert_eq!(t.counters_epoch(), Some(100));
        assert_eq!(t.counters_ms(), Some(10_000));
        let rate = |t: &Table, id: u32| t.iter().find(|(_, r)| r.id() == id).unwrap().1.rate(0);
        assert_eq!(rate(&t, 2), None, "no rate from one snapshot");
        // flow 4 arrives by event, flow 3 goes without an event
        t.apply(EventKind::New, &flow(4), at(101, 11_000));
        dump(
            &mut t,
            &[
                counted(1, 3000, 5000),
                counted(2, 10, 10),
                counted(4, 50, 50),
            ],
            at(102, 12_000),
        );
        assert_eq!(t.len(), 3);
        let r1 = t.iter().find(|(_, r)| r.id() == 2).unwrap().1;
        assert_eq!(r1.rate(0), Some(1000), "2000 bytes in 2 s");
        assert_eq!(r1.rate(1), Some(0));
        assert_eq!(r1.counters(0).unwrap().bytes, 3000);
        assert_eq!(rate(&t, 3), Some(0));
        assert_eq!(rate(&t, 5), None, "first counters of an event-made row");
        assert!(t.iter().all(|(_, r)| r.id() != 4), "swept");
        // counters that went down (zeroed) give no rate
        dump(&mut t, &[counted(1, 5, 5)], at(104, 14_000));
        assert_eq!(rate(&t, 2), None);
        assert_eq!(t.len(), 1);
        // a failed dump keeps everything
        t.begin_dump(at(105, 15_000));
        t.end_dump(false, at(105, 15_000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.dumps(), 3);
        // no counters at all: acct off
        dump(&mut t, &[flow(1)], at(106, 16_000));
        assert!(!t.acct());
        assert_eq!(t.iter().next().unwrap().1.counters(0), None);
    }

    #[test]
    fn events_during_a_dump_win_over_it() {
        let mut t = Table::new();
        dump(&mut t, &[counted(1, 1, 1), counted(2, 1, 1)], at(1, 1));
        t.begin_dump(at(2, 2000));
        // flow 1 destroyed before the dump's (older) message of it arrives
        t.apply(EventKind::Destroy, &flow(1), at(2, 2001));
        t.merge_dumped(&counted(1, 9, 9), at(2, 2002));
        // flow 5 created during the dump, which never reports it
        t.apply(EventKind::New, &flow(5), at(2, 2003));
        t.merge_dumped(&counted(2, 9, 9), at(2, 2004));
        t.end_dump(true, at(2, 2005));
        let ids: Vec<u32> = t.iter().map(|(_, r)| r.id()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&3) && ids.contains(&6), "{ids:?}");
        // merges outside a dump are ignored
        t.merge_dumped(&counted(8, 1, 1), at(3, 3000));
        assert_eq!(t.len(), 2);
        assert!(!t.dumping());
    }

    #[test]
    fn the_index_takes_keyed_hashes_as_they_are() {
        use std::hash::BuildHasher;
        let b = PreHashedState::default();
        assert_eq!(b.hash_one(0x1234_5678_9abc_def0u64), 0x1234_5678_9abc_def0);
        let mut h = PreHashed::default();
        h.write(&[1, 2]);
        assert_eq!(h.finish(), 0x0102);
        // the key hash: same tuple and zone, same hash; any field differs,
        // another
        let t = Table::new();
        let base = Row::from_flow(&tcp4(), 0).unwrap();
        let hb = base.key_hash(&t.hasher);
        let mut same = tcp4();
        same.mark = Some(1234);
        same.id = Some(1);
        assert_eq!(Row::from_flow(&same, 0).unwrap().key_hash(&t.hasher), hb);
        let variants: [fn(&mut Flow); 6] = [
            |f| f.orig.src = "10.0.0.9".parse().unwrap(),
            |f| f.orig.dst = "10.0.0.9".parse().unwrap(),
            |f| f.orig.sport += 1,
            |f| f.orig.dport += 1,
            |f| f.zone = Some(3),
            |f| {
                f.orig.proto = proto::UDP;
                f.reply.proto = proto::UDP;
            },
        ];
        for v in variants {
            let mut f = tcp4();
            v(&mut f);
            assert_ne!(
                Row::from_flow(&f, 0).unwrap().key_hash(&t.hasher),
                hb,
                "{f:?}"
            );
        }
    }

    #[test]
    fn memory_goes_back_when_flows_go() {
        let mut t = Table::new();
        let now = at(1, 1);
        for i in 0..20_000 {
            t.apply(EventKind::New, &flow(i), now);
        }
        let full = t.memory_bytes();
        for i in 0..20_000 {
            t.apply(EventKind::Destroy, &flow(i), now);
        }
        assert!(t.is_empty());
        assert!(t.rows.is_empty(), "{}", t.rows.len());
        assert!(
            t.memory_bytes() < full / 2,
            "{} >= {full}",
            t.memory_bytes()
        );
        // holes in the middle stay until a compaction
        for i in 0..3000 {
            t.apply(EventKind::New, &flow(i), now);
        }
        for i in 0..2999 {
            t.apply(EventKind::Destroy, &flow(i), now);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.holes(), 2999);
        let (slot, r) = t.iter().next().unwrap();
        assert_eq!(slot, 2999);
        let id = r.id();
        t.compact();
        assert_eq!(t.holes(), 0);
        let (slot, r) = t.iter().next().unwrap();
        assert_eq!((slot, r.id()), (0, id));
        t.apply(EventKind::Destroy, &flow(2999), now);
        assert!(t.is_empty());
        t.apply(EventKind::New, &flow(1), now);
        assert_eq!(t.len(), 1);
    }
}
