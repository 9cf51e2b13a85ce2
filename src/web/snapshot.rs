//! The shared snapshot: one [`Table`] that every request reads, kept
//! current by kernel events, with counters from one kernel dump at most
//! every `CounterInterval` seconds while someone is watching.
//!
//! Requests never dump the kernel table themselves. A request that finds
//! the counters older than the interval asks the one refresher thread for
//! a dump and is answered at once from what the table holds (the reply
//! says how old its counters are); the next request sees the new ones.
//! However many requests ask at once, the refresher takes one dump. The
//! first request after a quiet spell waits for the seeding dump; with an
//! interval of 0 every request waits for a dump that started after it
//! arrived (fresh counters each time, one dump per request).
//!
//! Nobody watching for [`idle_after`] (at least a minute): the table is
//! dropped, its memory given back, and events are no longer applied.
//! The decisions are the pure functions [`plan`] and [`idle`], unit-tested
//! here; the rest is locking and the dump.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::flow::{EventKind, Flow};
use crate::netlink::ct::{CtRequest, msg};
use crate::netlink::{Conntrack, Event};

use super::query::ApiError;
use super::table::{Clock, Table};

/// What a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: it is answered from the table as it is.
    No,
    /// The first dump into a new table (any, even one already running).
    Seeded,
    /// A dump that started after the request arrived (interval 0).
    Fresh,
}

/// What a request does about the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Ask the refresher for a dump.
    pub ask: bool,
    /// What to wait for before reading.
    pub wait: Wait,
}

/// The decision of a request arriving at `now`: `seeded` once a dump
/// completed since the table was made; `last_start` when the newest dump
/// (running or done) started; `running` while one runs.
pub fn plan(
    now: Instant,
    interval: Duration,
    seeded: bool,
    last_start: Option<Instant>,
    running: bool,
) -> Plan {
    if !seeded {
        // one seeding dump for every request that comes meanwhile
        return Plan {
            ask: !running,
            wait: Wait::Seeded,
        };
    }
    if interval.is_zero() {
        return Plan {
            ask: true,
            wait: Wait::Fresh,
        };
    }
    let due = last_start.is_none_or(|t| now.saturating_duration_since(t) >= interval);
    Plan {
        ask: due && !running,
        wait: Wait::No,
    }
}

/// How long the table is kept without a request: three intervals, and
/// at least a minute.
pub fn idle_after(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(60))
}

/// True when the table should be dropped at `now`: nobody asked since
/// `idle_after(interval)`, and no dump or reply is using it.
pub fn idle(now: Instant, last_watch: Option<Instant>, interval: Duration, busy: bool) -> bool {
    !busy && last_watch.is_none_or(|t| now.saturating_duration_since(t) >= idle_after(interval))
}

/// How long a request waits for a dump it needs before answering 503.
const DUMP_WAIT: Duration = Duration::from_secs(30);

/// Flows merged into the table under one hold of its write lock.
const MERGE_RUN: u32 = 256;

/// Events kept while a request reads the table (the event thread never
/// waits for a reader); past this the table is marked stale and the next
/// request asks for a dump, which repairs it.
const MAX_PENDING: usize = 4096;

/// The refresher's state, under one mutex.
#[derive(Debug, Default)]
struct Ctl {
    last_watch: Option<Instant>,
    /// A dump was asked for.
    wanted: bool,
    running: bool,
    /// When the newest dump (running or done) started.
    last_start: Option<Instant>,
    /// When the newest completed dump started.
    done_start: Option<Instant>,
    /// The outcome of the newest completed dump.
    error: Option<String>,
    stopping: bool,
}

/// Counters of the snapshot, for /api/v1/stats and /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Dumps taken.
    pub dumps: u64,
    /// Dumps that failed.
    pub dump_errors: u64,
    /// Duration of the last dump in milliseconds.
    pub last_dump_ms: u64,
    /// Rows in the table now (0 when dropped).
    pub rows: u64,
    /// Bytes the table takes now.
    pub memory_bytes: u64,
    /// Times the table was dropped for lack of watchers.
    pub drops: u64,
}

/// The shared table, its refresher's state and counters.
pub struct Store {
    table: RwLock<Option<Table>>,
    /// A table exists: events are applied to it.
    live: AtomicBool,
    ctl: Mutex<Ctl>,
    changed: Condvar,
    interval: Duration,
    netns: Option<String>,
    base: Instant,
    /// Replies in progress that name rows by slot (no compaction then).
    pins: AtomicU32,
    stats: Mutex<SnapshotStats>,
    /// Events that came while the table was being read, in order.
    pending: Mutex<Vec<(EventKind, Flow)>>,
    /// Events were lost (more pending than [`MAX_PENDING`]): the next
    /// request asks for a dump.
    stale: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("interval", &self.interval)
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish()
    }
}

/// A read view of the table for one request.
pub struct View<'a> {
    guard: RwLockReadGuard<'a, Option<Table>>,
    /// The time of the view, seconds since the epoch.
    pub now: u32,
}

impl View<'_> {
    /// The table (a view is only made over one; an empty table else).
    pub fn table(&self) -> &Table {
        static EMPTY: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
        match self.guard.as_ref() {
            Some(t) => t,
            None => EMPTY.get_or_init(Table::new),
        }
    }
}

/// Marks a reply that names rows by slot; the table is not compacted
/// while one lives.
pub struct Pin(Arc<Store>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Store {
    /// A store for the table of `netns`, with counters at most every
    /// `interval` while watched.
    pub fn new(netns: Option<String>, interval: Duration) -> Store {
        Store {
            table: RwLock::new(None),
            live: AtomicBool::new(false),
            ctl: Mutex::new(Ctl::default()),
            changed: Condvar::new(),
            interval,
            netns,
            base: Instant::now(),
            pins: AtomicU32::new(0),
            stats: Mutex::new(SnapshotStats::default()),
            pending: Mutex::new(Vec::new()),
            stale: AtomicBool::new(false),
        }
    }

    /// The counter interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn clock(&self) -> Clock {
        Clock {
            epoch: crate::flow::now_secs().clamp(0, u32::MAX as i64) as u32,
            mono_ms: self.base.elapsed().as_millis() as u64,
        }
    }

    /// Applies a kernel event to the table, when there is one. Never
    /// waits for a reader: while one reads, the event is kept for the next
    /// writer (at most `MAX_PENDING`, 4096; past it the table is marked stale
    /// and repaired by the next dump).
    pub fn apply(&self, ev: &Event) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        match self.table.try_write() {
            Ok(mut t) => {
                let now = self.clock();
                if let Some(t) = t.as_mut() {
                    self.drain_into(t, now);
                    t.apply(ev.kind, &ev.flow, now);
                }
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                if let Ok(mut p) = self.pending.lock() {
                    if p.len() < MAX_PENDING {
                        p.push((ev.kind, ev.flow.clone()));
                    } else {
                        p.clear();
                        self.stale.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(std::sync::TryLockError::Poisoned(_)) => {}
        }
    }

    /// Applies the events kept while the table was read.
    fn drain_into(&self, t: &mut Table, now: Clock) {
        let kept = match self.pending.lock() {
            Ok(mut p) if !p.is_empty() => std::mem::take(&mut *p),
            _ => return,
        };
        for (kind, f) in &kept {
            t.apply(*kind, f, now);
        }
    }

    /// Applies the kept events now (a writer of the web's own).
    fn drain(&self) {
        let has = self.pending.lock().is_ok_and(|p| !p.is_empty());
        if has && let Ok(mut t) = self.table.write() {
            let now = self.clock();
            if let Some(t) = t.as_mut() {
                self.drain_into(t, now);
            }
        }
    }

    /// The table for a request: marks someone watching, makes and seeds
    /// the table if there is none (waiting for that dump), asks for
    /// counters when they are older than the interval (waiting only with
    /// an interval of 0), and returns a read view. 503 when the table
    /// cannot be read.
    pub fn view(&self, wants_counters: bool) -> Result<View<'_>, ApiError> {
        let arrived = Instant::now();
        self.drain();
        {
            let mut c = self.lock_ctl()?;
            c.last_watch = Some(arrived);
            if !self.live.load(Ordering::Acquire) {
                if let Ok(mut t) = self.table.write()
                    && t.is_none()
                {
                    *t = Some(Table::new());
                }
                self.live.store(true, Ordering::Release);
            }
            let seeded = self.seeded();
            let p = plan(arrived, self.interval, seeded, c.last_start, c.running);
            let stale = self.stale.swap(false, Ordering::SeqCst);
            let counters = wants_counters || !seeded;
            let wait = if counters { p.wait } else { Wait::No };
            if (p.ask && counters) || (stale && !c.running) {
                c.wanted = true;
                self.changed.notify_all();
            }
            if wait != Wait::No {
                let deadline = arrived + DUMP_WAIT;
                loop {
                    let done = match wait {
                        Wait::Fresh => c.done_start.is_some_and(|s| s >= arrived),
                        _ => self.seeded() || (c.error.is_some() && !c.running && !c.wanted),
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if done || c.stopping || left.is_zero() {
                        break;
                    }
                    c = match self.changed.wait_timeout(c, left) {
                        Ok((c, _)) => c,
                        Err(_) => return Err(ApiError::new(503, "snapshot lock poisoned")),
                    };
                }
                if let Some(e) = &c.error
                    && !self.seeded()
                {
                    return Err(ApiError::new(
                        503,
                        format!("conntrack table not readable: {e}"),
                    ));
                }
            }
        }
        self.read()
            .ok_or_else(|| ApiError::new(503, "the conntrack table is not loaded yet: try again"))
    }

    /// Whether the table exists and a dump completed into it.
    fn seeded(&self) -> bool {
        self.table
            .read()
            .map(|t| t.as_ref().is_some_and(|t| t.dumps() > 0))
            .unwrap_or(false)
    }

    /// A read view of the table as it is, without marking a watcher or
    /// asking for anything (for a reply's later chunks). None when there
    /// is no seeded table.
    pub fn read(&self) -> Option<View<'_>> {
        let guard = self.table.read().ok()?;
        if guard.as_ref().is_none_or(|t| t.dumps() == 0) {
            return None;
        }
        Some(View {
            guard,
            now: self.clock().epoch,
        })
    }

    /// Puts a seeded table in place (tests of the modules reading it).
    #[cfg(test)]
    pub(crate) fn install(&self, t: Table) {
        if let Ok(mut g) = self.table.write() {
            *g = Some(t);
        }
        self.live.store(true, Ordering::Release);
    }

    /// Marks a reply naming rows by slot until the pin is dropped.
    pub fn pin(self: &Arc<Self>) -> Pin {
        self.pins.fetch_add(1, Ordering::SeqCst);
        Pin(self.clone())
    }

    fn lock_ctl(&self) -> Result<std::sync::MutexGuard<'_, Ctl>, ApiError> {
        self.ctl
            .lock()
            .map_err(|_| ApiError::new(503, "snapshot lock poisoned"))
    }

    /// The counters.
    pub fn stats(&self) -> SnapshotStats {
        let mut s = self.stats.lock().map(|s| *s).unwrap_or_default();
        if let Ok(t) = self.table.read()
            && let Some(t) = t.as_ref()
        {
            s.rows = t.len() as u64;
            s.memory_bytes = t.memory_bytes() as u64;
        }
        s
    }

    /// Ends the refresher.
    pub fn stop(&self) {
        if let Ok(mut c) = self.ctl.lock() {
            c.stopping = true;
        }
        self.changed.notify_all();
    }

    /// The refresher thread: takes a dump when asked (one for any number
    /// of requests asking meanwhile), drops the table when nobody
    /// watches. Runs until [`Store::stop`].
    pub fn run_refresher(&self) {
        loop {
            {
                let Ok(mut c) = self.ctl.lock() else { return };
                loop {
                    if c.stopping {
                        return;
                    }
                    if c.wanted {
                        break;
                    }
                    self.drain();
                    let busy = self.pins.load(Ordering::SeqCst) > 0;
                    if self.live.load(Ordering::Acquire)
                        && idle(Instant::now(), c.last_watch, self.interval, busy)
                    {
                        self.drop_table();
                    }
                    c = match self.changed.wait_timeout(c, Duration::from_secs(1)) {
                        Ok((c, _)) => c,
                        Err(_) => return,
                    };
                }
                c.wanted = false;
                c.running = true;
                c.last_start = Some(Instant::now());
            }
            let started = Instant::now();
            let res = self.dump();
            if let Ok(mut s) = self.stats.lock() {
                s.dumps += 1;
                s.dump_errors += res.is_err() as u64;
                s.last_dump_ms = started.elapsed().as_millis() as u64;
            }
            if self.pins.load(Ordering::SeqCst) == 0
                && let Ok(mut t) = self.table.write()
                && let Some(t) = t.as_mut()
                && t.holes() > t.len() / 2 + 4096
            {
                t.compact();
            }
            let Ok(mut c) = self.ctl.lock() else { return };
            c.running = false;
            c.done_start = Some(started);
            c.error = res.err();
            self.changed.notify_all();
        }
    }

    fn drop_table(&self) {
        self.live.store(false, Ordering::Release);
        if let Ok(mut t) = self.table.write() {
            *t = None;
        }
        if let Ok(mut p) = self.pending.lock() {
            *p = Vec::new();
        }
        if let Ok(mut s) = self.stats.lock() {
            s.drops += 1;
        }
    }

    /// One dump merged into the table.
    fn dump(&self) -> Result<(), String> {
        let mut ct = Conntrack::open(self.netns.as_deref()).map_err(|e| e.to_string())?;
        let start = self.clock();
        match self.table.write() {
            Ok(mut t) => match t.as_mut() {
                Some(t) => t.begin_dump(start),
                None => return Ok(()),
            },
            Err(_) => return Err("table lock poisoned".into()),
        }
        // the write lock is taken for a run of flows at a time, not for
        // each: readers and events get in between runs
        let mut guard = None;
        let mut run = 0u32;
        let res = ct.dump(&CtRequest::new(msg::GET, 0), &mut |f| {
            if guard.is_none() {
                guard = self.table.write().ok();
            }
            if let Some(t) = guard.as_mut().and_then(|g| g.as_mut()) {
                t.merge_dumped(f, start);
            }
            run += 1;
            if run % MERGE_RUN == 0 {
                guard = None;
            }
            Ok(())
        });
        drop(guard);
        let end = self.clock();
        if let Ok(mut t) = self.table.write()
            && let Some(t) = t.as_mut()
        {
            t.end_dump(res.is_ok(), end);
        }
        res.map(|_| ()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_ask_for_counters_once_they_are_old() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(30);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let plan_of = |ask, wait| Plan { ask, wait };
        // not seeded: ask (unless the seeding dump runs) and wait for it
        assert_eq!(
            plan(s(0), iv, false, None, false),
            plan_of(true, Wait::Seeded)
        );
        assert_eq!(
            plan(s(0), iv, false, Some(s(0)), true),
            plan_of(false, Wait::Seeded)
        );
        assert_eq!(
            plan(s(0), Duration::ZERO, false, None, true),
            plan_of(false, Wait::Seeded)
        );
        // seeded: ask (without waiting) only when the last dump is old
        assert_eq!(
            plan(s(29), iv, true, Some(s(0)), false),
            plan_of(false, Wait::No)
        );
        assert_eq!(
            plan(s(30), iv, true, Some(s(0)), false),
            plan_of(true, Wait::No)
        );
        assert_eq!(
            plan(s(30), iv, true, Some(s(0)), true),
            plan_of(false, Wait::No)
        );
        assert!(plan(s(31), iv, true, None, false).ask);
        // a clock that went back never asks too early
        assert!(!plan(s(0), iv, true, Some(s(5)), false).ask);
        // interval 0: a dump per request, waited for (one for all who
        // come while another runs)
        assert_eq!(
            plan(s(1), Duration::ZERO, true, Some(s(1)), true),
            plan_of(true, Wait::Fresh)
        );
    }

    #[test]
    fn the_table_goes_after_a_quiet_spell() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let iv = Duration::from_secs(5);
        assert_eq!(idle_after(iv), Duration::from_secs(60));
        assert_eq!(
            idle_after(Duration::from_secs(40)),
            Duration::from_secs(120)
        );
        assert!(!idle(s(59), Some(s(0)), iv, false));
        assert!(idle(s(60), Some(s(0)), iv, false));
        assert!(!idle(s(60), Some(s(0)), iv, true), "a reply still reads it");
        assert!(idle(s(0), None, iv, false));
        assert!(!idle(s(0), Some(s(1)), iv, false));
    }

    #[test]
    fn without_a_table_events_are_ignored_and_views_wait() {
        let st = Store::new(Some("no-such-namespace-ctrack".into()), Duration::ZERO);
        st.apply(&Event {
            kind: EventKind::New,
            flow: crate::flow::testutil::tcp4(),
            portid: 0,
        });
        assert!(st.read().is_none());
        assert_eq!(st.stats().rows, 0);
    }

    #[test]
    fn events_never_wait_for_a_reader() {
        let st = Store::new(None, Duration::from_secs(30));
        let mut t = Table::new();
        t.begin_dump(Clock::default());
        t.end_dump(true, Clock::default());
        st.install(t);
        let ev = |i: u32, kind| {
            let mut f = crate::flow::testutil::tcp4();
            f.orig.sport = i as u16 + 1;
            f.id = Some(i + 1);
            Event {
                kind,
                flow: f,
                portid: 0,
            }
        };
        {
            // a reader holds the table: events wait in order beside it
            let v = st.read().unwrap();
            st.apply(&ev(1, EventKind::New));
            st.apply(&ev(2, EventKind::New));
            st.apply(&ev(1, EventKind::Destroy));
            assert_eq!(v.table().len(), 0);
        }
        // the next writer applies them first, in order
        st.apply(&ev(3, EventKind::New));
        let ids: Vec<u32> = st
            .read()
            .unwrap()
            .table()
            .iter()
            .map(|(_, r)| r.id())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&3) && ids.contains(&4), "{ids:?}");
        // too many while read: the table is stale, a request asks for a dump
        {
            let _v = st.read().unwrap();
            for i in 0..=MAX_PENDING as u32 {
                st.apply(&ev(100 + i, EventKind::New));
            }
        }
        assert!(st.stale.load(Ordering::SeqCst));
        assert!(st.pending.lock().unwrap().is_empty());
        st.drain();
        assert_eq!(st.read().unwrap().table().len(), 2);
    }
}
