//! The daemon's flow cache: a compact mirror of the kernel table.
//!
//! Entries live in one dense vector (64 bytes for an IPv4 flow: addresses,
//! ports, protocol, state, status, mark, zone, id, timeout, times); IPv6
//! addresses sit in a side allocation so IPv4 flows do not pay for them.
//! The index is an open-addressing table of `u32` positions (8 bytes per
//! flow at the usual load), hashed with the standard library's seeded
//! SipHash so crafted tuples cannot force collisions. Removal swaps the
//! last entry into the hole, so the vector stays dense.
//!
//! Resync is mark-and-sweep: [`Cache::begin_resync`] starts a generation,
//! every dumped flow is upserted (marking it), and [`Cache::sweep`] drops
//! what the dump did not see.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::{Flow, ProtoInfo, TcpInfo, Tuple};

/// Addresses of an entry: original src/dst, reply src/dst.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addrs {
    V4([[u8; 4]; 4]),
    V6(Box<[[u8; 16]; 4]>),
}

const NO_STATE: u8 = u8::MAX;
const F_ZONE: u8 = 1 << 0;
const F_MARK: u8 = 1 << 1;
const F_ID: u8 = 1 << 2;
const F_STATUS: u8 = 1 << 3;
const F_TIMEOUT: u8 = 1 << 4;
const F_REPLY: u8 = 1 << 5;

/// One cached flow, compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    addrs: Addrs,
    /// orig sport, dport, reply sport, dport (ICMP: id, type<<8|code).
    ports: [u16; 4],
    proto: u8,
    tcp_state: u8,
    flags: u8,
    generation: u8,
    status: u32,
    mark: u32,
    zone: u16,
    orig_zone: u16,
    id: u32,
    timeout: u32,
    /// Seconds since the epoch when the entry entered the cache.
    since: u32,
}

impl Entry {
    /// A compact entry from a decoded flow, or None when the flow has no
    /// usable original tuple (mixed or missing addresses).
    pub fn from_flow(f: &Flow, now: u32) -> Option<Entry> {
        if !f.has_orig {
            return None;
        }
        let reply = if f.has_reply {
            f.reply
        } else {
            f.orig.inverted()
        };
        let addrs = match (f.orig.src, f.orig.dst, reply.src, reply.dst) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(c), IpAddr::V4(d)) => {
                Addrs::V4([a.octets(), b.octets(), c.octets(), d.octets()])
            }
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(c), IpAddr::V6(d)) => {
                Addrs::V6(Box::new([a.octets(), b.octets(), c.octets(), d.octets()]))
            }
            _ => return None,
        };
        let (o1, o2) = f.orig.l4_pack();
        let (r1, r2) = reply.l4_pack();
        let mut flags = 0;
        let mut set = |bit: u8, on: bool| {
            if on {
                flags |= bit;
            }
        };
        set(F_ZONE, f.zone.is_some());
        set(F_MARK, f.mark.is_some());
        set(F_ID, f.id.is_some());
        set(F_STATUS, f.status.is_some());
        set(F_TIMEOUT, f.timeout.is_some());
        set(F_REPLY, f.has_reply);
        Some(Entry {
            addrs,
            ports: [o1, o2, r1, r2],
            proto: f.orig.proto,
            tcp_state: f.protoinfo.tcp_state().unwrap_or(NO_STATE),
            flags,
            generation: 0,
            status: f.status.unwrap_or(0),
            mark: f.mark.unwrap_or(0),
            zone: f.zone.unwrap_or(0),
            orig_zone: f.orig_zone.unwrap_or(0),
            id: f.id.unwrap_or(0),
            timeout: f.timeout.unwrap_or(0),
            since: now,
        })
    }

    /// Updates this entry with what an event or dump reported; fields the
    /// message left out keep their old values.
    fn merge(&mut self, f: &Flow) {
        if let Some(s) = f.protoinfo.tcp_state() {
            self.tcp_state = s;
        }
        if let Some(s) = f.status {
            self.status = s;
            self.flags |= F_STATUS;
        }
        if let Some(m) = f.mark {
            self.mark = m;
            self.flags |= F_MARK;
        }
        if let Some(t) = f.timeout {
            self.timeout = t;
            self.flags |= F_TIMEOUT;
        }
        if let Some(id) = f.id {
            self.id = id;
            self.flags |= F_ID;
        }
        if f.has_reply
            && let Some(fresh) = Entry::from_flow(f, self.since)
        {
            self.addrs = fresh.addrs;
            self.ports = fresh.ports;
            self.flags |= F_REPLY;
        }
    }

    /// The address family.
    pub fn family(&self) -> u8 {
        match self.addrs {
            Addrs::V4(_) => crate::flow::AF_INET,
            Addrs::V6(_) => crate::flow::AF_INET6,
        }
    }

    fn addr(&self, i: usize) -> IpAddr {
        match &self.addrs {
            Addrs::V4(a) => IpAddr::V4(Ipv4Addr::from(a[i])),
            Addrs::V6(a) => IpAddr::V6(Ipv6Addr::from(a[i])),
        }
    }

    /// The entry as a flow (without counters, timestamps and use count,
    /// which the cache does not keep).
    pub fn to_flow(&self) -> Flow {
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
        Flow {
            family: self.family(),
            orig,
            reply,
            has_orig: true,
            has_reply: has(F_REPLY),
            orig_zone: (self.orig_zone != 0).then_some(self.orig_zone),
            status: has(F_STATUS).then_some(self.status),
            timeout: has(F_TIMEOUT).then_some(self.timeout),
            mark: has(F_MARK).then_some(self.mark),
            id: has(F_ID).then_some(self.id),
            zone: has(F_ZONE).then_some(self.zone),
            protoinfo: if self.tcp_state != NO_STATE {
                ProtoInfo::Tcp(TcpInfo {
                    state: Some(self.tcp_state),
                    ..TcpInfo::default()
                })
            } else {
                ProtoInfo::None
            },
            ..Flow::default()
        }
    }

    /// Seconds since the epoch when the entry entered the cache.
    pub fn since(&self) -> u32 {
        self.since
    }

    fn same_key(&self, other: &Entry) -> bool {
        let a_key = match (&self.addrs, &other.addrs) {
            (Addrs::V4(a), Addrs::V4(b)) => a[0] == b[0] && a[1] == b[1],
            (Addrs::V6(a), Addrs::V6(b)) => a[0] == b[0] && a[1] == b[1],
            _ => false,
        };
        a_key
            && self.proto == other.proto
            && self.ports[0] == other.ports[0]
            && self.ports[1] == other.ports[1]
            && self.zone == other.zone
            && self.orig_zone == other.orig_zone
    }

    fn hash_with(&self, h: &RandomState) -> u64 {
        let mut s = h.build_hasher();
        match &self.addrs {
            Addrs::V4(a) => {
                s.write(&a[0]);
                s.write(&a[1]);
            }
            Addrs::V6(a) => {
                s.write(&a[0]);
                s.write(&a[1]);
            }
        }
        s.write_u8(self.proto);
        s.write_u16(self.ports[0]);
        s.write_u16(self.ports[1]);
        s.write_u16(self.zone);
        s.write_u16(self.orig_zone);
        s.finish()
    }
}

/// Counters of cache operations, as conntrackd reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries added.
    pub add_ok: u32,
    /// Additions refused (cache full or unusable flow).
    pub add_fail: u32,
    /// Entries updated.
    pub upd_ok: u32,
    /// Updates that failed.
    pub upd_fail: u32,
    /// Entries removed.
    pub del_ok: u32,
    /// Removals of entries not in the cache.
    pub del_fail: u32,
}

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// A new entry.
    Created,
    /// An existing entry was updated.
    Updated,
    /// Refused: the cache is full (HashLimit) or the flow unusable.
    Refused,
}

const EMPTY: u32 = u32::MAX;

/// The flow cache.
#[derive(Debug)]
pub struct Cache {
    name: &'static str,
    entries: Vec<Entry>,
    table: Vec<u32>,
    hasher: RandomState,
    limit: usize,
    generation: u8,
    /// Operation counters.
    pub stats: CacheStats,
}

impl Cache {
    /// A cache named for stats output ("internal", "external"), sized for
    /// `hash_size` entries and holding at most `limit`.
    pub fn new(name: &'static str, hash_size: usize, limit: usize) -> Cache {
        let cap = (hash_size.max(16) * 2).next_power_of_two();
        Cache {
            name,
            entries: Vec::new(),
            table: vec![EMPTY; cap],
            hasher: RandomState::new(),
            limit: limit.max(1),
            generation: 0,
            stats: CacheStats::default(),
        }
    }

    /// The cache's name ("internal" or "external").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Bytes used by entries and index (capacity, not just length).
    pub fn memory_bytes(&self) -> usize {
        let v6 = self
            .entries
            .iter()
            .filter(|e| matches!(e.addrs, Addrs::V6(_)))
            .count();
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.table.capacity() * 4
            + v6 * std::mem::size_of::<[[u8; 16]; 4]>()
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// Position in `table` holding `e`'s key, or the empty slot to use.
    fn probe(&self, e: &Entry) -> (usize, bool) {
        let mut i = e.hash_with(&self.hasher) as usize & self.mask();
        loop {
            let slot = self.table[i];
            if slot == EMPTY {
                return (i, false);
            }
            if self.entries[slot as usize].same_key(e) {
                return (i, true);
            }
            i = (i + 1) & self.mask();
        }
    }

    fn grow_if_needed(&mut self) {
        // keep the load factor at or below 1/2
        if (self.entries.len() + 1) * 2 <= self.table.len() {
            return;
        }
        let cap = self.table.len() * 2;
        self.table = vec![EMPTY; cap];
        for idx in 0..self.entries.len() {
            let (slot, _) = self.probe(&self.entries[idx]);
            self.table[slot] = idx as u32;
        }
    }

    /// Inserts or updates the flow's entry (marking it for a resync sweep).
    pub fn upsert(&mut self, f: &Flow, now: u32) -> Upsert {
        let Some(mut fresh) = Entry::from_flow(f, now) else {
            self.stats.add_fail += 1;
            return Upsert::Refused;
        };
        let (slot, found) = self.probe(&fresh);
        if found {
            let idx = self.table[slot] as usize;
            let current = self.generation;
            let e = &mut self.entries[idx];
            e.merge(f);
            e.generation = current;
            self.stats.upd_ok += 1;
            return Upsert::Updated;
        }
        if self.entries.len() >= self.limit {
            self.stats.add_fail += 1;
            return Upsert::Refused;
        }
        fresh.generation = self.generation;
        self.grow_if_needed();
        let (slot, _) = self.probe(&fresh);
        self.table[slot] = self.entries.len() as u32;
        self.entries.push(fresh);
        self.stats.add_ok += 1;
        Upsert::Created
    }

    /// Removes the flow's entry. When both the event and the entry carry a
    /// kernel id and they differ, the entry is a newer connection with the
    /// same tuple and is kept. Returns whether an entry was removed.
    pub fn remove(&mut self, f: &Flow) -> bool {
        let Some(probe) = Entry::from_flow(f, 0) else {
            self.stats.del_fail += 1;
            return false;
        };
        let (slot, found) = self.probe(&probe);
        if !found {
            self.stats.del_fail += 1;
            return false;
        }
        let idx = self.table[slot] as usize;
        let e = &self.entries[idx];
        if let Some(id) = f.id
            && e.flags & F_ID != 0
            && e.id != id
        {
            self.stats.del_fail += 1;
            return false;
        }
        self.remove_at(slot);
        self.stats.del_ok += 1;
        true
    }

    /// Removes the entry whose index sits at table position `slot`.
    fn remove_at(&mut self, slot: usize) {
        let idx = self.table[slot] as usize;
        self.table[slot] = EMPTY;
        // re-place the rest of the probe cluster (backward-shift deletion)
        let mask = self.mask();
        let mut i = (slot + 1) & mask;
        while self.table[i] != EMPTY {
            let moved = self.table[i];
            self.table[i] = EMPTY;
            let (dst, _) = self.probe(&self.entries[moved as usize]);
            self.table[dst] = moved;
            i = (i + 1) & mask;
        }
        // move the last entry into the hole and repoint its slot
        let last = self.entries.len() - 1;
        if idx != last {
            let (lslot, found) = self.probe(&self.entries[last]);
            debug_assert!(found);
            if found {
                self.table[lslot] = idx as u32;
            }
        }
        self.entries.swap_remove(idx);
    }

    /// Looks up the entry of a flow's original tuple and zone.
    pub fn get(&self, f: &Flow) -> Option<&Entry> {
        let probe = Entry::from_flow(f, 0)?;
        let (slot, found) = self.probe(&probe);
        found.then(|| &self.entries[self.table[slot] as usize])
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.table.iter_mut().for_each(|s| *s = EMPTY);
    }

    /// Starts a resync: entries not upserted before [`Cache::sweep`] go.
    pub fn begin_resync(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Drops the entries the resync did not see and returns them.
    pub fn sweep(&mut self) -> Vec<Entry> {
        let current = self.generation;
        if self.entries.iter().all(|e| e.generation == current) {
            return Vec::new();
        }
        let (keep, stale): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.generation == current);
        let n = stale.len();
        self.entries = keep;
        self.table.iter_mut().for_each(|s| *s = EMPTY);
        for idx in 0..self.entries.len() {
            let (slot, _) = self.probe(&self.entries[idx]);
            self.table[slot] = idx as u32;
        }
        self.stats.del_ok += n as u32;
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;

    fn flow(i: u32) -> Flow {
        let mut f = tcp4();
        f.orig.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        f.reply.dst = f.orig.src;
        f.orig.sport = (i % 60000) as u16;
        f.reply.dport = f.orig.sport;
        f.id = Some(i);
        f
    }

    #[test]
    fn entry_is_compact_and_roundtrips() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
            "{}",
            std::mem::size_of::<Entry>()
        );
        let f = tcp4();
        let e = Entry::from_flow(&f, 5).unwrap();
        let back = e.to_flow();
        assert_eq!(back.orig, f.orig);
        assert_eq!(back.reply, f.reply);
        assert_eq!(back.status, f.status);
        assert_eq!(back.mark, f.mark);
        assert_eq!(back.protoinfo.tcp_state(), Some(3));
        let mut v6 = f.clone();
        v6.orig.src = "fd00::1".parse().unwrap();
        v6.orig.dst = "fd00::2".parse().unwrap();
        v6.reply = v6.orig.inverted();
        let e6 = Entry::from_flow(&v6, 0).unwrap();
        assert_eq!(e6.to_flow().reply.dst, v6.orig.src);
    }

    #[test]
    fn insert_update_remove_many() {
        let mut c = Cache::new("internal", 16, 100_000);
        for i in 0..5000 {
            assert_eq!(c.upsert(&flow(i), 0), Upsert::Created);
        }
        assert_eq!(c.len(), 5000);
        let mut f = flow(42);
        f.mark = Some(99);
        assert_eq!(c.upsert(&f, 0), Upsert::Updated);
        assert_eq!(c.get(&f).unwrap().to_flow().mark, Some(99));
        for i in (0..5000).step_by(2) {
            assert!(c.remove(&flow(i)), "remove {i}");
        }
        assert_eq!(c.len(), 2500);
        for i in 0..5000 {
            assert_eq!(c.get(&flow(i)).is_some(), i % 2 == 1, "lookup {i}");
        }
        assert!(!c.remove(&flow(0)));
    }

    #[test]
    fn destroy_of_an_older_connection_keeps_the_newer() {
        let mut c = Cache::new("internal", 16, 10);
        let mut new = flow(1);
        new.id = Some(7);
        c.upsert(&new, 0);
        let mut old = flow(1);
        old.id = Some(6);
        assert!(!c.remove(&old));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn limit_and_sweep() {
        let mut c = Cache::new("internal", 16, 3);
        for i in 0..5 {
            c.upsert(&flow(i), 0);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats.add_fail, 2);
        c.begin_resync();
        c.upsert(&flow(1), 0);
        assert_eq!(c.sweep().len(), 2);
        assert_eq!(c.len(), 1);
        assert!(c.get(&flow(1)).is_some());
    }

    #[test]
    fn bytes_per_ipv4_flow_at_scale() {
        let mut c = Cache::new("internal", 65536, 300_000);
        for i in 0..200_000 {
            c.upsert(&flow(i), 0);
        }
        let per = c.memory_bytes() / c.len();
        assert!(per <= 128, "{per} bytes per flow");
    }
}
