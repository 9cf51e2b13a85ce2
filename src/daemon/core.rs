//! The daemon's core, sans-I/O: the internal flow cache, the counters and
//! the decisions made on them. It opens no socket and reads no file: the
//! shell (`shell.rs`) feeds it kernel events, dumps and timer ticks and
//! carries out what it decides (a resync it asks for, the log lines it
//! writes, the changes it reports to the parts), so every decision is
//! unit-tested here with plain values.

use std::time::{Duration, Instant};

use super::cache::{Cache, Entry, Upsert};
use super::config::{CacheFilter, Config};
use super::control::Format;
use super::stats::RuntimeStats;
use crate::flow::{EventKind, Flow, json, text, xml};
use crate::netlink::Event;
use crate::severity::Severity;

/// What an event did to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing (filtered, or a destroy of an unknown flow).
    Nothing,
    /// A flow was added.
    Created,
    /// A flow was changed.
    Updated,
    /// A flow was removed.
    Removed,
}

/// Why the cache is rebuilt from a dump; it decides what the parts are
/// told about each dumped flow ([`Resync::announce`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// The first dump: every flow is new to the peer.
    Startup,
    /// Events were lost: every flow may have changed.
    Overrun,
    /// After our own commit (its events were not listened to).
    AfterCommit,
    /// `ctrackd -R`.
    Requested,
    /// The periodic safety net: only what events missed.
    Periodic,
}

impl Resync {
    /// The reason as the log line says it.
    pub fn reason(self) -> &'static str {
        match self {
            Resync::Startup => "startup",
            Resync::Overrun => "after netlink overrun",
            Resync::AfterCommit => "after commit",
            Resync::Requested => "requested",
            Resync::Periodic => "periodic",
        }
    }

    /// What the parts hear of a dumped flow the cache took as `up`:
    /// at startup every flow is new; the periodic net reports only flows
    /// the cache lacked; every other resync reports each flow as updated.
    pub fn announce(self, up: Upsert) -> Option<EventKind> {
        match (self, up) {
            (_, Upsert::Refused) => None,
            (Resync::Startup, _) | (Resync::Periodic, Upsert::Created) => Some(EventKind::New),
            (Resync::Periodic, _) => None,
            (Resync::Overrun | Resync::AfterCommit | Resync::Requested, _) => {
                Some(EventKind::Update)
            }
        }
    }
}

/// A cache change reported to the parts (sync replicates it).
#[derive(Clone, Copy, Debug)]
pub struct Replicate<'a> {
    /// New, update or destroy.
    pub kind: EventKind,
    /// The cache's entry after the change (events that created or updated
    /// one); `None` for destroys and for dumped flows.
    pub cached: Option<&'a Entry>,
    /// The flow as the kernel reported it (event or dump).
    pub flow: &'a Flow,
}

/// Where a dump for a resync comes from: it calls the visitor for every
/// flow and returns the number of entries it could not decode.
pub type DumpSource<'a> = dyn FnMut(&mut dyn FnMut(&Flow)) -> Result<u64, String> + 'a;

/// The core's state.
pub struct Core {
    /// The configuration in effect.
    pub config: Config,
    /// The internal cache: this router's flows.
    pub internal: Cache,
    /// Counters.
    pub stats: RuntimeStats,
    resync_at: Option<(Instant, Resync)>,
    next_periodic: Option<Instant>,
    warned_max_growth: bool,
    stop: bool,
    log: Vec<(Severity, String)>,
}

/// Seconds since the epoch as the cache keeps them.
pub fn now_u32() -> u32 {
    crate::flow::now_secs().clamp(0, u32::MAX as i64) as u32
}

/// Applies one kernel event to the cache under the Filter, counting it.
pub fn apply_event(
    cache: &mut Cache,
    filter: &CacheFilter,
    stats: &mut RuntimeStats,
    kind: EventKind,
    flow: &Flow,
    now: u32,
) -> Change {
    stats.events_received += 1;
    if kind == EventKind::Destroy {
        if !cache.remove(flow) {
            return Change::Nothing;
        }
        // "traffic processed" counts the flows the cache held, as
        // conntrackd's does
        if let Some(c) = flow.counters[0] {
            stats.bytes_orig = stats.bytes_orig.saturating_add(c.bytes);
            stats.packets_orig = stats.packets_orig.saturating_add(c.packets);
        }
        if let Some(c) = flow.counters[1] {
            stats.bytes_repl = stats.bytes_repl.saturating_add(c.bytes);
            stats.packets_repl = stats.packets_repl.saturating_add(c.packets);
        }
        return Change::Removed;
    }
    if !filter.accepts(flow) {
        stats.events_filtered += 1;
        // a flow that no longer passes (say, a TCP state the filter ignores)
        if cache.get(flow).is_some() && cache.remove(flow) {
            return Change::Removed;
        }
        return Change::Nothing;
    }
    match cache.upsert(flow, now) {
        Upsert::Created => Change::Created,
        Upsert::Updated => Change::Updated,
        Upsert::Refused => Change::Nothing,
    }
}

impl Core {
    /// A core for the configuration, started at `started` (seconds since
    /// the epoch).
    pub fn new(config: Config, started: i64) -> Core {
        let g = &config.general;
        // conntrackd calls its one cache `stats` in Stats mode (`-s`
        // prints `cache stats:`)
        let name = if config.stats.is_some() {
            "stats"
        } else {
            "internal"
        };
        let internal = Cache::new(name, g.hash_size as usize, g.hash_limit as usize);
        Core {
            stats: RuntimeStats {
                started,
                buffer_size: g.netlink_buffer_size,
                ..RuntimeStats::default()
            },
            config,
            internal,
            resync_at: None,
            next_periodic: None,
            warned_max_growth: false,
            stop: false,
            log: Vec::new(),
        }
    }

    /// The Filter in effect.
    pub fn filter(&self) -> &CacheFilter {
        &self.config.general.filter
    }

    /// Queues a log line for the shell.
    pub fn log(&mut self, level: Severity, line: impl Into<String>) {
        self.log.push((level, line.into()));
    }

    /// The log lines queued since the last call, oldest first.
    pub fn take_log(&mut self) -> Vec<(Severity, String)> {
        std::mem::take(&mut self.log)
    }

    /// Whether the daemon should stop.
    pub fn stopping(&self) -> bool {
        self.stop
    }

    /// Asks the daemon to stop, saying why in the log.
    pub fn request_stop(&mut self, why: &str) {
        self.log(Severity::Notice, why);
        self.stop = true;
    }

    /// When the core next needs [`Core::due`].
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.resync_at.map(|(t, _)| t), self.next_periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The resync that is due at `now`, if any (a scheduled one before
    /// the periodic net).
    pub fn due(&mut self, now: Instant) -> Option<Resync> {
        if let Some((t, why)) = self.resync_at
            && t <= now
        {
            self.resync_at = None;
            return Some(why);
        }
        if self.next_periodic.is_some_and(|t| t <= now) {
            return Some(Resync::Periodic);
        }
        None
    }

    /// Schedules a resync at `at` (replacing one already scheduled).
    pub fn schedule_resync(&mut self, at: Instant, why: Resync) {
        self.resync_at = Some((at, why));
    }

    /// Applies kernel events in order and reports each change to
    /// `replicate`, except those of events caused by the sockets in `own`
    /// (our own commits and injections are never sent back).
    pub fn apply_events(
        &mut self,
        events: &[Event],
        own: &[u32],
        now: u32,
        replicate: &mut dyn FnMut(Replicate<'_>),
    ) {
        for ev in events {
            let change = apply_event(
                &mut self.internal,
                &self.config.general.filter,
                &mut self.stats,
                ev.kind,
                &ev.flow,
                now,
            );
            if own.contains(&ev.portid) {
                continue;
            }
            let kind = match change {
                Change::Nothing => continue,
                Change::Created => EventKind::New,
                Change::Updated => EventKind::Update,
                Change::Removed => EventKind::Destroy,
            };
            let cached = match kind {
                EventKind::Destroy => None,
                _ => match self.internal.get(&ev.flow) {
                    Some(e) => Some(e),
                    None => continue,
                },
            };
            replicate(Replicate {
                kind,
                cached,
                flow: &ev.flow,
            });
        }
    }

    /// The event socket overran: counts it, warns, and schedules a resync
    /// once events are quiet for `NetlinkOverrunResync` seconds.
    pub fn on_overrun(&mut self, now: Instant, buffer: usize, grown: bool) {
        self.stats.overruns += 1;
        self.stats.buffer_size = buffer;
        if grown {
            self.log(
                Severity::Warning,
                format!(
                    "netlink event socket overrun: buffer size has been doubled to {buffer} bytes"
                ),
            );
        } else if !self.warned_max_growth {
            self.warned_max_growth = true;
            let max = self.config.general.netlink_buffer_max;
            self.log(
                Severity::Warning,
                format!(
                    "netlink event socket overrun: buffer size cannot be doubled further since it would exceed NetlinkBufferSizeMaxGrowth ({max} bytes); events are being lost"
                ),
            );
        }
        match self.config.general.overrun_resync {
            Some(secs) => {
                self.schedule_resync(now + Duration::from_secs(secs as u64), Resync::Overrun)
            }
            None => self.log(
                Severity::Warning,
                "NetlinkOverrunResync is off: the cache may miss flows until -R",
            ),
        }
    }

    /// The event socket failed to receive.
    pub fn on_event_error(&mut self, error: &str) {
        self.stats.catch_event_failed += 1;
        self.log(Severity::Error, format!("netlink event socket: {error}"));
    }

    /// Rebuilds the cache from a dump by mark and sweep (no per-entry
    /// requests): every flow `dump` yields is upserted, what it did not
    /// yield is removed. The parts hear of each flow as
    /// [`Resync::announce`] decides and of each removed one as a destroy.
    pub fn resync(
        &mut self,
        why: Resync,
        now: Instant,
        dump: &mut DumpSource<'_>,
        replicate: &mut dyn FnMut(Replicate<'_>),
    ) {
        let started = Instant::now();
        let wall = now_u32();
        self.internal.begin_resync();
        let filter = &self.config.general.filter;
        let cache = &mut self.internal;
        let mut seen = 0u64;
        // flows the dump found that the cache lacked (their events were lost)
        let mut created = 0usize;
        let res = dump(&mut |f| {
            seen += 1;
            if !filter.accepts(f) {
                return;
            }
            let up = cache.upsert(f, wall);
            if up == Upsert::Created {
                created += 1;
            }
            if let Some(kind) = why.announce(up) {
                replicate(Replicate {
                    kind,
                    cached: None,
                    flow: f,
                });
            }
        });
        match res {
            Ok(malformed) => {
                self.stats.dump_unknown = self
                    .stats
                    .dump_unknown
                    .saturating_add(malformed.min(u32::MAX as u64) as u32);
                let removed = self.internal.sweep();
                for e in &removed {
                    replicate(Replicate {
                        kind: EventKind::Destroy,
                        cached: None,
                        flow: &e.to_flow(),
                    });
                }
                self.stats.resyncs += 1;
                let removed = removed.len();
                // only the periodic net reports flows it found missing (in
                // the others every flow is announced anyway); one that
                // found nothing is not news
                let missing = if why == Resync::Periodic { created } else { 0 };
                if why != Resync::Periodic || removed > 0 || missing > 0 {
                    let line = format!(
                        "resync with kernel table ({}): {seen} flows in the table, {} cached, {removed} stale removed, {missing} missing added, {:.3}s",
                        why.reason(),
                        self.internal.len(),
                        started.elapsed().as_secs_f64()
                    );
                    self.log(Severity::Notice, line);
                }
            }
            Err(e) => self.log(
                Severity::Error,
                format!("resync with kernel table failed: {e}"),
            ),
        }
        self.next_periodic = match self.config.general.resync_interval {
            0 => None,
            s => Some(now + started.elapsed() + Duration::from_secs(s as u64)),
        };
    }

    /// Empties the internal cache (`ctrackd -f internal`).
    pub fn flush_internal(&mut self) {
        let n = self.internal.len();
        self.internal.clear();
        self.log(
            Severity::Notice,
            format!("internal cache flushed ({n} flows)"),
        );
    }

    /// Takes a new configuration (SIGHUP): drops the cached flows its
    /// Filter rejects and says what only a restart changes.
    pub fn reload(&mut self, new: Config) {
        for w in &new.warnings {
            self.log(Severity::Warning, w.clone());
        }
        let g = &new.general;
        let old = &self.config.general;
        if old.unix_path != g.unix_path || old.lock_file != g.lock_file {
            self.log(
                Severity::Warning,
                "UNIX Path and LockFile changes take effect at the next restart",
            );
        }
        let rejected: Vec<Flow> = self
            .internal
            .iter()
            .map(|e| e.to_flow())
            .filter(|f| !g.filter.accepts(f))
            .collect();
        for f in &rejected {
            self.internal.remove(f);
        }
        let line = format!(
            "configuration reloaded from {} ({} flows dropped by the new filter)",
            new.path.display(),
            rejected.len()
        );
        self.config = new;
        self.log(Severity::Notice, line);
    }

    /// `ctrackd -i`: the internal cache in the requested format.
    pub fn dump_cache(&self, format: Format) -> Vec<u8> {
        let now = crate::flow::now_secs();
        let mut out = Vec::with_capacity(self.internal.len() * 200 + 64);
        if format == Format::Xml {
            out.extend_from_slice(xml::HEADER.as_bytes());
        }
        for e in self.internal.iter() {
            let f = e.to_flow();
            match format {
                Format::Text => {
                    text::write_line(
                        &mut out,
                        &f,
                        &text::TextOptions {
                            show_timeout: false,
                            now,
                            ..text::TextOptions::default()
                        },
                    );
                    out.extend_from_slice(
                        format!(" [active since {}s]", (now - e.since() as i64).max(0)).as_bytes(),
                    );
                }
                Format::Xml => xml::write_flow(
                    &mut out,
                    &f,
                    &xml::XmlOptions {
                        now,
                        ..xml::XmlOptions::default()
                    },
                ),
                Format::Json => json::write_flow(
                    &mut out,
                    &f,
                    &json::JsonOptions {
                        now,
                        hide_timeout: true,
                        ..json::JsonOptions::default()
                    },
                ),
            }
            out.push(b'\n');
        }
        if format == Format::Xml {
            out.extend_from_slice(xml::FOOTER.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::flow::{Counters, proto};

    fn config(filter: CacheFilter, resync_interval: u32) -> Config {
        let mut c = super::super::config::parse("test.conf", "").expect("empty config");
        c.general.filter = filter;
        c.general.resync_interval = resync_interval;
        c.general.hash_size = 16;
        c.general.hash_limit = 100;
        c
    }

    fn event(kind: EventKind, flow: &Flow, portid: u32) -> Event {
        Event {
            kind,
            flow: flow.clone(),
            portid,
        }
    }

    fn udp4() -> Flow {
        let mut f = tcp4();
        f.orig.proto = proto::UDP;
        f.reply.proto = proto::UDP;
        f.protoinfo = crate::flow::ProtoInfo::None;
        f
    }

    fn other_port(mut f: Flow, port: u16) -> Flow {
        f.orig.sport = port;
        f.reply.dport = port;
        f
    }

    /// (kind, cached?) of each replicated change.
    fn replicated(core: &mut Core, events: &[Event], own: &[u32]) -> Vec<(EventKind, bool)> {
        let mut seen = Vec::new();
        core.apply_events(events, own, 1, &mut |r| {
            seen.push((r.kind, r.cached.is_some()))
        });
        seen
    }

    fn dump_of(flows: Vec<Flow>) -> Box<DumpSource<'static>> {
        Box::new(move |visit| {
            for f in &flows {
                visit(f);
            }
            Ok(0)
        })
    }

    fn resync_announces(core: &mut Core, why: Resync, flows: Vec<Flow>) -> Vec<EventKind> {
        let mut seen = Vec::new();
        core.resync(why, Instant::now(), &mut dump_of(flows), &mut |r| {
            seen.push(r.kind)
        });
        seen
    }

    #[test]
    fn cache_time_is_the_wall_clock() {
        let before = crate::flow::now_secs();
        let t = now_u32() as i64;
        assert!(t >= before && t <= crate::flow::now_secs(), "{t}");
    }

    #[test]
    fn events_drive_the_cache_through_the_filter() {
        let mut cache = Cache::new("internal", 16, 100);
        let mut stats = RuntimeStats::default();
        let filter = CacheFilter {
            protocols: Some((true, vec![proto::TCP])),
            ..CacheFilter::default()
        };
        let f = tcp4();
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::New, &f, 1),
            Change::Created
        );
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::Update, &f, 2),
            Change::Updated
        );
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::New, &udp4(), 2),
            Change::Nothing
        );
        assert_eq!(stats.events_filtered, 1);
        let mut gone = f.clone();
        gone.counters = [
            Some(Counters {
                packets: 2,
                bytes: 100,
            }),
            Some(Counters {
                packets: 1,
                bytes: 60,
            }),
        ];
        assert_eq!(
            apply_event(
                &mut cache,
                &filter,
                &mut stats,
                EventKind::Destroy,
                &gone,
                3
            ),
            Change::Removed
        );
        assert_eq!(cache.len(), 0);
        assert_eq!(
            (
                stats.bytes_orig,
                stats.bytes_repl,
                stats.packets_orig,
                stats.packets_repl,
                stats.events_received
            ),
            (100, 60, 2, 1, 4)
        );
        // an update for an unknown flow creates it (events may be lost)
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::Update, &f, 4),
            Change::Created
        );
        // a destroy of an unknown flow changes nothing, its traffic is
        // not counted (conntrackd's "traffic processed")
        let mut unknown = udp4();
        unknown.counters = gone.counters;
        assert_eq!(
            apply_event(
                &mut cache,
                &filter,
                &mut stats,
                EventKind::Destroy,
                &unknown,
                5
            ),
            Change::Nothing
        );
        assert_eq!((stats.bytes_orig, stats.packets_repl), (100, 1));
    }

    #[test]
    fn stats_mode_names_the_cache_stats() {
        let mut c = config(CacheFilter::default(), 0);
        assert_eq!(Core::new(c.clone(), 0).internal.name(), "internal");
        c.stats = Some(Default::default());
        assert_eq!(Core::new(c, 0).internal.name(), "stats");
    }

    #[test]
    fn state_filter_drops_flows_that_move_out() {
        let mut cache = Cache::new("internal", 16, 100);
        let mut stats = RuntimeStats::default();
        let filter = CacheFilter {
            states: Some((false, vec![7])), // ignore TIME_WAIT
            ..CacheFilter::default()
        };
        let mut f = tcp4();
        apply_event(&mut cache, &filter, &mut stats, EventKind::New, &f, 1);
        f.protoinfo = crate::flow::ProtoInfo::Tcp(crate::flow::TcpInfo {
            state: Some(7),
            ..Default::default()
        });
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::Update, &f, 2),
            Change::Removed
        );
        assert!(cache.is_empty());
        // a filtered flow the cache never had is not "removed"
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::Update, &f, 3),
            Change::Nothing
        );
    }

    #[test]
    fn parts_hear_every_change_but_their_own() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        let f = tcp4();
        let g = other_port(tcp4(), 40001);
        let events = [
            event(EventKind::New, &f, 0),
            event(EventKind::Update, &f, 0),
            // our own commit created g: cached, never sent back
            event(EventKind::New, &g, 77),
            event(EventKind::Destroy, &f, 0),
            // a destroy of an unknown flow is nothing to replicate
            event(EventKind::Destroy, &f, 0),
        ];
        assert_eq!(
            replicated(&mut core, &events, &[77]),
            vec![
                (EventKind::New, true),
                (EventKind::Update, true),
                (EventKind::Destroy, false)
            ]
        );
        assert_eq!(core.internal.len(), 1);
        assert!(core.internal.get(&g).is_some());
        assert_eq!(core.stats.events_received, 5);
    }

    #[test]
    fn a_flow_leaving_the_filter_is_replicated_as_a_destroy() {
        let filter = CacheFilter {
            states: Some((false, vec![7])),
            ..CacheFilter::default()
        };
        let mut core = Core::new(config(filter, 0), 0);
        let mut f = tcp4();
        let mut closing = f.clone();
        closing.protoinfo = crate::flow::ProtoInfo::Tcp(crate::flow::TcpInfo {
            state: Some(7),
            ..Default::default()
        });
        f.mark = Some(1);
        let events = [
            event(EventKind::New, &f, 0),
            event(EventKind::Update, &closing, 0),
        ];
        assert_eq!(
            replicated(&mut core, &events, &[]),
            vec![(EventKind::New, true), (EventKind::Destroy, false)]
        );
        assert_eq!(core.stats.events_filtered, 1);
    }

    #[test]
    fn resync_announces_by_its_reason() {
        use EventKind::{Destroy, New, Update};
        let (a, b, c) = (tcp4(), other_port(tcp4(), 40001), other_port(tcp4(), 40002));
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        // startup: everything is new
        assert_eq!(
            resync_announces(&mut core, Resync::Startup, vec![a.clone(), b.clone()]),
            vec![New, New]
        );
        // periodic: only the flow the cache lacked, and the one it lost
        assert_eq!(
            resync_announces(&mut core, Resync::Periodic, vec![a.clone(), c.clone()]),
            vec![New, Destroy]
        );
        assert_eq!(core.internal.len(), 2);
        // after an overrun (and after commit, and on request): every flow
        for why in [Resync::Overrun, Resync::AfterCommit, Resync::Requested] {
            assert_eq!(
                resync_announces(&mut core, why, vec![a.clone(), c.clone()]),
                vec![Update, Update]
            );
        }
        assert_eq!(core.stats.resyncs, 5);
    }

    #[test]
    fn resync_applies_the_filter_and_logs_what_it_found() {
        let filter = CacheFilter {
            protocols: Some((true, vec![proto::TCP])),
            ..CacheFilter::default()
        };
        let mut core = Core::new(config(filter, 0), 0);
        let seen = resync_announces(&mut core, Resync::Startup, vec![tcp4(), udp4()]);
        assert_eq!(seen, vec![EventKind::New]);
        let log = core.take_log();
        assert_eq!(log.len(), 1);
        assert!(
            log[0]
                .1
                .starts_with("resync with kernel table (startup): 2 flows in the table, 1 cached, 0 stale removed, 0 missing added"),
            "{log:?}"
        );
        // a periodic resync that found nothing is quiet
        resync_announces(&mut core, Resync::Periodic, vec![tcp4()]);
        assert!(core.take_log().is_empty());
        // one that removed a stale flow says so
        let extra = other_port(tcp4(), 8);
        resync_announces(&mut core, Resync::Periodic, vec![tcp4(), extra]);
        core.take_log();
        resync_announces(&mut core, Resync::Periodic, vec![tcp4()]);
        let log = core.take_log();
        assert!(
            log[0].1.contains(
                "(periodic): 1 flows in the table, 1 cached, 1 stale removed, 0 missing added"
            ),
            "{log:?}"
        );
        // one that found a missing flow says so
        resync_announces(
            &mut core,
            Resync::Periodic,
            vec![tcp4(), other_port(tcp4(), 9)],
        );
        let log = core.take_log();
        assert!(
            log[0].1.contains(
                "(periodic): 2 flows in the table, 2 cached, 0 stale removed, 1 missing added"
            ),
            "{log:?}"
        );
    }

    #[test]
    fn a_failed_dump_keeps_the_cache() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        resync_announces(&mut core, Resync::Startup, vec![tcp4()]);
        core.take_log();
        let mut seen = 0;
        core.resync(
            Resync::Requested,
            Instant::now(),
            &mut |_visit| Err("no buffer space".to_string()),
            &mut |_| seen += 1,
        );
        assert_eq!(seen, 0);
        assert_eq!(core.internal.len(), 1);
        assert_eq!(core.stats.resyncs, 1);
        assert_eq!(
            core.take_log(),
            vec![(
                Severity::Error,
                "resync with kernel table failed: no buffer space".to_string()
            )]
        );
    }

    #[test]
    fn malformed_dump_entries_are_counted() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        core.resync(
            Resync::Startup,
            Instant::now(),
            &mut |_visit| Ok(3),
            &mut |_| {},
        );
        core.resync(
            Resync::Requested,
            Instant::now(),
            &mut |_visit| Ok(2),
            &mut |_| {},
        );
        assert_eq!(core.stats.dump_unknown, 5);
    }

    #[test]
    fn overruns_schedule_a_resync_and_warn_once_at_the_limit() {
        let mut c = config(CacheFilter::default(), 0);
        c.general.overrun_resync = Some(5); // the default, said here
        let mut core = Core::new(c, 0);
        let t0 = Instant::now();
        assert_eq!(core.next_deadline(), None);
        core.on_overrun(t0, 4096, true);
        assert_eq!(core.stats.buffer_size, 4096);
        assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(core.due(t0 + Duration::from_secs(4)), None);
        core.on_overrun(t0 + Duration::from_secs(1), 4096, false);
        core.on_overrun(t0 + Duration::from_secs(2), 4096, false);
        let log = core.take_log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].1.contains("doubled to 4096 bytes"));
        assert!(log[1].1.contains("cannot be doubled further"));
        assert_eq!(core.stats.overruns, 3);
        // quiet for 5 s after the last overrun
        assert_eq!(core.due(t0 + Duration::from_secs(6)), None);
        assert_eq!(core.due(t0 + Duration::from_secs(7)), Some(Resync::Overrun));
        assert_eq!(core.due(t0 + Duration::from_secs(8)), None);
    }

    #[test]
    fn overrun_resync_off_only_warns() {
        let mut c = config(CacheFilter::default(), 0);
        c.general.overrun_resync = None;
        let mut core = Core::new(c, 0);
        core.on_overrun(Instant::now(), 1, true);
        assert_eq!(core.next_deadline(), None);
        assert!(core.take_log()[1].1.contains("NetlinkOverrunResync is off"));
    }

    #[test]
    fn the_periodic_net_follows_each_resync() {
        let mut core = Core::new(config(CacheFilter::default(), 120), 0);
        let t0 = Instant::now();
        core.resync(Resync::Startup, t0, &mut dump_of(vec![]), &mut |_| {});
        let next = core.next_deadline().expect("periodic deadline");
        assert!(next >= t0 + Duration::from_secs(120));
        assert!(next < t0 + Duration::from_secs(121));
        assert_eq!(core.due(next - Duration::from_millis(1)), None);
        assert_eq!(core.due(next), Some(Resync::Periodic));
        // a scheduled resync comes first
        core.schedule_resync(t0, Resync::AfterCommit);
        assert_eq!(core.next_deadline(), Some(t0));
        assert_eq!(core.due(next), Some(Resync::AfterCommit));
        // 0 turns the net off
        let mut off = Core::new(config(CacheFilter::default(), 0), 0);
        off.resync(Resync::Startup, t0, &mut dump_of(vec![]), &mut |_| {});
        assert_eq!(off.next_deadline(), None);
    }

    #[test]
    fn event_errors_are_counted_and_logged() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        core.on_event_error("boom");
        assert_eq!(core.stats.catch_event_failed, 1);
        assert_eq!(
            core.take_log(),
            vec![(Severity::Error, "netlink event socket: boom".to_string())]
        );
        assert!(!core.stopping());
        core.request_stop("shutdown requested");
        assert!(core.stopping());
    }

    #[test]
    fn reload_drops_what_the_new_filter_rejects() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        let tcp2 = other_port(tcp4(), 7);
        resync_announces(&mut core, Resync::Startup, vec![tcp4(), tcp2, udp4()]);
        core.take_log();
        let mut new = config(
            CacheFilter {
                protocols: Some((true, vec![proto::TCP])),
                ..CacheFilter::default()
            },
            0,
        );
        new.general.unix_path = "/elsewhere.ctl".into();
        new.warnings.push("key `Nice' is ignored".into());
        core.reload(new);
        assert_eq!(core.internal.len(), 2);
        assert!(core.internal.get(&tcp4()).is_some());
        let log: Vec<String> = core.take_log().into_iter().map(|(_, l)| l).collect();
        assert_eq!(log[0], "key `Nice' is ignored");
        assert_eq!(
            log[1],
            "UNIX Path and LockFile changes take effect at the next restart"
        );
        assert!(
            log[2].ends_with("(1 flows dropped by the new filter)"),
            "{log:?}"
        );
        assert_eq!(core.filter().protocols, Some((true, vec![proto::TCP])));
        // the same paths again: nothing to restart for
        let mut same = core.config.clone();
        same.warnings.clear();
        core.reload(same);
        let log: Vec<String> = core.take_log().into_iter().map(|(_, l)| l).collect();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].ends_with("(0 flows dropped by the new filter)"));
    }

    #[test]
    fn flushing_the_internal_cache_says_how_much() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        resync_announces(&mut core, Resync::Startup, vec![tcp4(), udp4()]);
        core.take_log();
        core.flush_internal();
        assert!(core.internal.is_empty());
        assert_eq!(
            core.take_log(),
            vec![(
                Severity::Notice,
                "internal cache flushed (2 flows)".to_string()
            )]
        );
    }

    #[test]
    fn cache_dumps_in_each_format() {
        let mut core = Core::new(config(CacheFilter::default(), 0), 0);
        resync_announces(&mut core, Resync::Startup, vec![tcp4()]);
        let text = String::from_utf8(core.dump_cache(Format::Text)).unwrap();
        assert!(text.contains("[active since "), "{text}");
        // conntrackd's -i shows no timeout (the cached one is stale)
        assert_eq!(tcp4().timeout, Some(119));
        assert!(!text.contains(" 119 "), "{text}");
        assert_eq!(text.lines().count(), 1);
        let xml = String::from_utf8(core.dump_cache(Format::Xml)).unwrap();
        assert!(xml.starts_with(xml::HEADER) && xml.ends_with(xml::FOOTER));
        let json = String::from_utf8(core.dump_cache(Format::Json)).unwrap();
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert!(v.get("timeout").is_none(), "{json}");
    }
}
