//! The daemon's core: one thread owns the flow cache and the counters and
//! handles every input (kernel events, control requests, signals, timers)
//! in turn. Reader threads only decode and forward; nothing else touches
//! the state, so there are no locks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cache::{Cache, Upsert};
use super::config::{CacheFilter, Config};
use super::control::{Format, Pending, Reply, Request, Which};
use super::log::Logger;
use super::stats::{self, RuntimeStats};
use crate::flow::{EventKind, Flow, json, text, xml};
use crate::netlink::ct::{self, CtRequest, cta, msg};
use crate::netlink::{Conntrack, Event};

/// Something for the core to handle.
#[derive(Debug)]
pub enum Input {
    /// Kernel events, in order.
    Kernel(Vec<Event>),
    /// The event socket overran; `buffer` is its size now, `grown` whether
    /// it was doubled (false: at NetlinkBufferSizeMaxGrowth already).
    Overrun {
        /// Current buffer size in bytes.
        buffer: usize,
        /// Whether the buffer was doubled.
        grown: bool,
    },
    /// The event socket failed.
    KernelError(String),
    /// A control request.
    Control(Pending),
    /// A signal number.
    Signal(i32),
    /// rtnetlink address/link messages (WAN watch).
    #[cfg(feature = "wan")]
    Rtnl(Vec<crate::netlink::route::RtMsg>),
    /// The rtnetlink socket overran.
    #[cfg(feature = "wan")]
    RtnlOverrun,
    /// A request for the counters as JSON (web API).
    StatsJson(std::sync::mpsc::Sender<serde_json::Value>),
    /// A line for the log from another thread.
    Log(String),
    /// A datagram from a sync link.
    #[cfg(feature = "sync")]
    SyncDatagram {
        /// Link index.
        link: usize,
        /// The datagram.
        bytes: Vec<u8>,
        /// Its source address.
        src: Option<std::net::IpAddr>,
    },
    /// A sync link failed to receive.
    #[cfg(feature = "sync")]
    SyncRecvError(usize),
}

/// What an event did to the cache (for hooks such as sync).
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Applies one kernel event to the cache under the Filter, counting it.
/// Pure logic: no sockets, so it is unit-tested directly.
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
        if let Some(c) = flow.counters[0] {
            stats.bytes_orig = stats.bytes_orig.saturating_add(c.bytes);
            stats.packets_orig = stats.packets_orig.saturating_add(c.packets);
        }
        if let Some(c) = flow.counters[1] {
            stats.bytes_repl = stats.bytes_repl.saturating_add(c.bytes);
            stats.packets_repl = stats.packets_repl.saturating_add(c.packets);
        }
        return if cache.remove(flow) {
            Change::Removed
        } else {
            Change::Nothing
        };
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

/// The flow sync replicates for an event: the cache's merged state plus
/// what the cache does not keep (helper, labels, NAT sequence, SYN proxy,
/// protocol info beyond the TCP state: SCTP/DCCP state, verification
/// tags, window scales; sync remembers those across events that omit
/// them).
#[cfg(feature = "sync")]
fn sync_view(mut f: Flow, ev: &Flow) -> Flow {
    use crate::flow::ProtoInfo;
    f.helper = ev.helper.or(f.helper);
    f.labels = ev.labels.or(f.labels);
    f.seq_adj = ev.seq_adj;
    f.synproxy = ev.synproxy;
    f.master = ev.master;
    match (ev.protoinfo, &mut f.protoinfo) {
        (ProtoInfo::None, _) => {}
        (ProtoInfo::Tcp(t), ProtoInfo::Tcp(cached)) => {
            let state = cached.state;
            *cached = t;
            cached.state = t.state.or(state);
        }
        (p, slot) => *slot = p,
    }
    f
}

/// Why the cache is rebuilt from a dump (what sync is told differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resync {
    /// The first dump: every flow is new to the peer.
    Startup,
    /// After lost events or on request: every flow may have changed.
    Full,
    /// The periodic safety net: only what events missed.
    Periodic,
}

/// Leaves (or joins again) the conntrack NEW/UPDATE/DESTROY groups on the
/// event socket `fd`. Returns whether every call succeeded.
#[cfg(feature = "sync")]
fn set_event_groups(fd: i32, join: bool) -> bool {
    let opt = if join {
        libc::NETLINK_ADD_MEMBERSHIP
    } else {
        libc::NETLINK_DROP_MEMBERSHIP
    };
    let mut ok = true;
    for group in [1u32, 2, 3] {
        // SAFETY: setsockopt reads a u32 of the given size from a live local.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_NETLINK,
                opt,
                &group as *const u32 as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        ok &= rc == 0;
    }
    ok
}

/// The core's state.
pub struct Core {
    /// The configuration in effect.
    pub config: Config,
    /// The internal cache: this router's flows.
    pub internal: Cache,
    /// Counters.
    pub stats: RuntimeStats,
    /// The log.
    pub log: Logger,
    ct: Conntrack,
    resync_at: Option<Instant>,
    next_periodic: Option<Instant>,
    /// The event socket's descriptor (owned by the event thread), to pause
    /// the subscription while we commit.
    pub event_fd: Option<i32>,
    resync_why: &'static str,
    /// Set when the daemon should stop.
    pub stop: bool,
    /// Whether it runs in the foreground (logs to stderr).
    pub foreground: bool,
    /// Overrides /dev/log (from the environment, for tests).
    pub syslog_socket: Option<PathBuf>,
    warned_max_growth: bool,
    /// The WAN watch, when configured.
    #[cfg(feature = "wan")]
    pub wan: Option<super::wanpart::WanPart>,
    /// The web server, when configured.
    #[cfg(feature = "web")]
    pub web: Option<super::webpart::WebPart>,
    /// Sync, when configured.
    #[cfg(feature = "sync")]
    pub sync: Option<super::syncpart::SyncPart>,
}

fn now_u32() -> u32 {
    crate::flow::now_secs().clamp(0, u32::MAX as i64) as u32
}

impl Core {
    /// A core for the configuration, with its own ctnetlink socket for
    /// dumps and requests.
    pub fn new(config: Config, log: Logger, foreground: bool) -> Result<Core, String> {
        let ct = Conntrack::open(None).map_err(|e| format!("cannot open ctnetlink: {e}"))?;
        let g = &config.general;
        let internal = Cache::new("internal", g.hash_size as usize, g.hash_limit as usize);
        Ok(Core {
            stats: RuntimeStats {
                started: crate::flow::now_secs(),
                buffer_size: g.netlink_buffer_size,
                ..RuntimeStats::default()
            },
            config,
            internal,
            log,
            ct,
            resync_at: None,
            next_periodic: None,
            event_fd: None,
            resync_why: "after netlink overrun",
            stop: false,
            foreground,
            syslog_socket: None,
            warned_max_growth: false,
            #[cfg(feature = "wan")]
            wan: None,
            #[cfg(feature = "web")]
            web: None,
            #[cfg(feature = "sync")]
            sync: None,
        })
    }

    /// When the core next needs [`Core::on_timer`].
    pub fn next_deadline(&self) -> Option<Instant> {
        #[allow(unused_mut)]
        let mut d = match (self.resync_at, self.next_periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        #[cfg(feature = "wan")]
        if let Some(t) = self.wan.as_ref().and_then(|w| w.next_deadline()) {
            d = Some(d.map_or(t, |x| x.min(t)));
        }
        #[cfg(feature = "sync")]
        if let Some(t) = self.sync.as_ref().map(|s| s.next_deadline()) {
            d = Some(d.map_or(t, |x| x.min(t)));
        }
        d
    }

    /// Runs what is due.
    pub fn on_timer(&mut self, now: Instant) {
        if self.resync_at.is_some_and(|t| t <= now) {
            self.resync_at = None;
            let why = std::mem::replace(&mut self.resync_why, "after netlink overrun");
            self.resync(why);
        } else if self.next_periodic.is_some_and(|t| t <= now) {
            self.resync("periodic");
        }
        #[cfg(feature = "wan")]
        if let Some(w) = self.wan.as_mut()
            && w.next_deadline().is_some_and(|t| t <= now)
        {
            w.on_timer(&mut self.log);
        }
        #[cfg(feature = "sync")]
        if let Some(s) = self.sync.as_mut()
            && s.next_deadline() <= now
        {
            let filter = &self.config.general.filter;
            s.on_timer(now, filter, &mut self.internal, &mut self.log);
            s.transmit(now, filter, &mut self.log);
        }
    }

    /// The counters of every part as one JSON object.
    pub fn stats_json(&self) -> serde_json::Value {
        #[allow(unused_mut)]
        let mut v = stats::to_json(&self.internal, &self.stats, crate::flow::now_secs());
        #[cfg(feature = "wan")]
        if let (Some(w), Some(o)) = (&self.wan, v.as_object_mut()) {
            o.insert("wan".into(), w.to_json());
        }
        #[cfg(feature = "sync")]
        if let (Some(s), Some(o)) = (&self.sync, v.as_object_mut()) {
            o.insert("sync".into(), s.to_json());
        }
        v
    }

    /// Replaces the cache content with a fresh kernel dump (mark and
    /// sweep: no per-entry requests).
    pub fn resync(&mut self, why: &str) {
        let kind = match why {
            "startup" => Resync::Startup,
            "periodic" => Resync::Periodic,
            _ => Resync::Full,
        };
        let started = Instant::now();
        self.internal.begin_resync();
        let now = now_u32();
        let filter = &self.config.general.filter;
        let cache = &mut self.internal;
        let req = CtRequest::new(msg::GET, 0);
        let mut seen = 0u64;
        // flows the dump found that the cache lacked (their events were lost)
        let mut created = 0usize;
        // sync is told about the flows as dumped: complete, protocol info
        // included (the cache keeps only the TCP state)
        #[cfg(feature = "sync")]
        let mut sync = self.sync.as_mut();
        #[cfg(feature = "sync")]
        let t = Instant::now();
        let res = self.ct.dump(&req, &mut |f| {
            seen += 1;
            if !filter.accepts(f) {
                return Ok(());
            }
            let up = cache.upsert(f, now);
            if up == Upsert::Created && kind == Resync::Periodic {
                created += 1;
            }
            #[cfg(feature = "sync")]
            if let Some(s) = sync.as_mut() {
                match (kind, up) {
                    (_, Upsert::Refused) => {}
                    (Resync::Startup, _) | (Resync::Periodic, Upsert::Created) => {
                        s.on_event(t, EventKind::New, f)
                    }
                    (Resync::Full, _) => s.on_event(t, EventKind::Update, f),
                    (Resync::Periodic, _) => {}
                }
            }
            Ok(())
        });
        match res {
            Ok(d) => {
                self.stats.dump_unknown += d.malformed as u32;
                let removed = self.internal.sweep();
                #[cfg(feature = "sync")]
                if let Some(s) = self.sync.as_mut() {
                    for e in &removed {
                        s.on_event(t, EventKind::Destroy, &e.to_flow());
                    }
                    s.transmit(t, &self.config.general.filter, &mut self.log);
                }
                let removed = removed.len();
                self.stats.resyncs += 1;
                let line = format!(
                    "resync with kernel table ({why}): {seen} flows in the table, {} cached, {removed} stale removed, {} missing added, {:.3}s",
                    self.internal.len(),
                    created,
                    started.elapsed().as_secs_f64()
                );
                // a periodic resync that found nothing is not news
                if kind != Resync::Periodic || removed > 0 || created > 0 {
                    self.log.notice(&line);
                }
            }
            Err(e) => self
                .log
                .error(&format!("resync with kernel table failed: {e}")),
        }
        self.next_periodic = self.periodic_deadline();
    }

    fn periodic_deadline(&self) -> Option<Instant> {
        match self.config.general.resync_interval {
            0 => None,
            s => Some(Instant::now() + Duration::from_secs(s as u64)),
        }
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Kernel(events) => {
                let now = now_u32();
                #[cfg(feature = "sync")]
                let own = self
                    .sync
                    .as_ref()
                    .map(|s| s.own_portids())
                    .unwrap_or_default();
                for ev in &events {
                    let change = apply_event(
                        &mut self.internal,
                        &self.config.general.filter,
                        &mut self.stats,
                        ev.kind,
                        &ev.flow,
                        now,
                    );
                    #[cfg(feature = "sync")]
                    if let Some(s) = self.sync.as_mut()
                        && !own.contains(&ev.portid)
                    {
                        let t = Instant::now();
                        match change {
                            Change::Created | Change::Updated => {
                                if let Some(e) = self.internal.get(&ev.flow) {
                                    let kind = if change == Change::Created {
                                        EventKind::New
                                    } else {
                                        EventKind::Update
                                    };
                                    s.on_event(t, kind, &sync_view(e.to_flow(), &ev.flow));
                                }
                            }
                            Change::Removed => s.on_event(t, EventKind::Destroy, &ev.flow),
                            Change::Nothing => {}
                        }
                    }
                    #[cfg(not(feature = "sync"))]
                    let _ = change;
                }
                #[cfg(feature = "sync")]
                if let Some(s) = self.sync.as_mut() {
                    s.transmit(Instant::now(), &self.config.general.filter, &mut self.log);
                }
            }
            #[cfg(feature = "sync")]
            Input::SyncDatagram { link, bytes, src } => {
                if let Some(s) = self.sync.as_mut() {
                    let now = Instant::now();
                    s.on_datagram(now, link, &bytes, src);
                    s.transmit(now, &self.config.general.filter, &mut self.log);
                }
            }
            #[cfg(feature = "sync")]
            Input::SyncRecvError(link) => {
                if let Some(s) = self.sync.as_mut() {
                    s.on_recv_error(link);
                }
            }
            Input::Overrun { buffer, grown } => {
                self.stats.overruns += 1;
                self.stats.buffer_size = buffer;
                if grown {
                    self.log.warning(&format!(
                        "netlink event socket overrun: buffer size has been doubled to {buffer} bytes"
                    ));
                } else if !self.warned_max_growth {
                    self.warned_max_growth = true;
                    self.log.warning(&format!(
                        "netlink event socket overrun: buffer size cannot be doubled further since it would exceed NetlinkBufferSizeMaxGrowth ({} bytes); events are being lost",
                        self.config.general.netlink_buffer_max
                    ));
                }
                match self.config.general.overrun_resync {
                    Some(secs) => {
                        self.resync_at = Some(Instant::now() + Duration::from_secs(secs as u64))
                    }
                    None => self
                        .log
                        .warning("NetlinkOverrunResync is off: the cache may miss flows until -R"),
                }
            }
            Input::KernelError(e) => {
                self.stats.catch_event_failed += 1;
                self.log.error(&format!("netlink event socket: {e}"));
            }
            Input::Control(p) => {
                let reply = self.control(&p.request);
                let _ = p.reply.send(reply);
            }
            Input::Signal(sig) => self.signal(sig),
            #[cfg(feature = "wan")]
            Input::Rtnl(msgs) => {
                if let Some(w) = self.wan.as_mut() {
                    w.on_messages(&msgs, &mut self.log);
                }
            }
            #[cfg(feature = "wan")]
            Input::RtnlOverrun => {
                if let Some(w) = self.wan.as_mut() {
                    w.on_overrun(&mut self.log);
                }
            }
            Input::StatsJson(tx) => {
                let _ = tx.send(self.stats_json());
            }
            Input::Log(m) => self.log.notice(&m),
        }
    }

    fn signal(&mut self, sig: i32) {
        match sig {
            libc::SIGTERM | libc::SIGINT => {
                self.log
                    .notice(&format!("received signal {sig}, shutting down"));
                self.stop = true;
            }
            libc::SIGHUP => self.reload(),
            libc::SIGUSR1 => {
                let s = self.stats_json();
                self.log.notice(&format!("stats: {s}"));
            }
            _ => {}
        }
    }

    /// Re-reads the config: a bad file is logged and the old one kept.
    pub fn reload(&mut self) {
        let path = self.config.path.clone();
        let new = match super::config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                self.log.error(&format!(
                    "reload failed, keeping the old configuration: {e}"
                ));
                return;
            }
        };
        for w in &new.warnings {
            self.log.warning(w);
        }
        let g = &new.general;
        match Logger::new(
            self.foreground,
            g.log.file.as_deref(),
            g.log.syslog.as_deref(),
            self.syslog_socket.as_deref(),
        ) {
            Ok(l) => self.log = l,
            Err(e) => {
                self.log.error(&format!(
                    "reload failed, keeping the old configuration: {e}"
                ));
                return;
            }
        }
        let old = &self.config.general;
        if old.unix_path != g.unix_path || old.lock_file != g.lock_file {
            self.log
                .warning("UNIX Path and LockFile changes take effect at the next restart");
        }
        // drop what the new filter rejects
        let rejected: Vec<Flow> = self
            .internal
            .iter()
            .map(|e| e.to_flow())
            .filter(|f| !g.filter.accepts(f))
            .collect();
        for f in &rejected {
            self.internal.remove(f);
        }
        #[cfg(feature = "wan")]
        match (self.wan.as_mut(), &new.wan_config) {
            (Some(w), Some(cfg)) => w.reconfigure(cfg.clone(), &mut self.log),
            (None, None) => {}
            _ => self
                .log
                .warning("adding or removing the WAN block takes effect at the next restart"),
        }
        #[cfg(feature = "sync")]
        if self.config.sync_config != new.sync_config {
            self.log
                .warning("Sync block changes take effect at the next restart");
        }
        #[cfg(feature = "web")]
        if self.config.web_config != new.web_config {
            self.log
                .warning("Web block changes take effect at the next restart");
        }
        self.config = new;
        self.log.notice(&format!(
            "configuration reloaded from {} ({} flows dropped by the new filter)",
            path.display(),
            rejected.len()
        ));
    }

    fn stats_text(&self, section: Option<&str>) -> Reply {
        let now = crate::flow::now_secs();
        Ok(match section {
            None => {
                let mut s = stats::cache_text(&self.internal);
                #[cfg(feature = "sync")]
                if let Some(sp) = &self.sync {
                    sp.external_text(&mut s);
                }
                s.push_str(&stats::traffic_text(&self.stats));
                #[cfg(feature = "sync")]
                if let Some(sp) = &self.sync {
                    sp.summary_text(&mut s);
                }
                #[cfg(feature = "wan")]
                if let Some(w) = &self.wan {
                    let mut out = Vec::new();
                    w.write_text(&mut out);
                    s.push_str(&String::from_utf8_lossy(&out));
                }
                s
            }
            Some("runtime") => stats::runtime_text(&self.stats, now),
            Some("cache") => {
                #[allow(unused_mut)]
                let mut s = stats::cache_text_extended(&self.internal);
                #[cfg(feature = "sync")]
                if let Some(sp) = &self.sync {
                    let (n, mem) = sp.external_size();
                    s.push_str(&format!(
                        "cache:external\tactive objects:\t\t{n:>12}\n\tmemory (bytes):\t\t\t{mem:>12}\n\n"
                    ));
                }
                s
            }
            Some("process") => String::new(),
            #[cfg(feature = "wan")]
            Some("wan") => match &self.wan {
                Some(w) => {
                    let mut out = Vec::new();
                    w.write_text(&mut out);
                    return Ok(out);
                }
                None => return Err("no WAN block is configured: nothing to show for `wan'".into()),
            },
            Some(sec @ ("network" | "link" | "multicast" | "queue" | "rsqueue")) => {
                #[cfg(feature = "sync")]
                if let Some(text) = self.sync.as_ref().and_then(|s| s.section_text(sec)) {
                    return Ok(text.into_bytes());
                }
                let _ = sec;
                return Err(format!(
                    "no Sync block is configured: nothing to show for `{}'",
                    section.unwrap_or("")
                ));
            }
            Some(other) => return Err(format!("unknown statistics section `{other}'")),
        }
        .into_bytes())
    }

    fn dump_cache(&self, format: Format) -> Vec<u8> {
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

    /// Flushes the kernel table: everything, or with a Filter configured
    /// only the flows the filter accepts (batched deletes).
    fn flush_kernel(&mut self) -> Reply {
        let filter = self.config.general.filter.clone();
        if filter == CacheFilter::default() {
            let req = CtRequest::new(msg::DELETE, 0);
            self.ct
                .request(&req, 0)
                .map_err(|e| format!("flushing the kernel table failed: {e}"))?;
        } else {
            let mut reqs = Vec::new();
            self.ct
                .dump(&CtRequest::new(msg::GET, 0), &mut |f| {
                    if filter.accepts(f) {
                        let mut r = CtRequest::new(msg::DELETE, f.family);
                        ct::encode_identity(&mut r.writer(), f);
                        if let Some(id) = f.id {
                            r.writer().be32(cta::ID, id);
                        }
                        reqs.push(r);
                    }
                    Ok(())
                })
                .map_err(|e| format!("flushing the kernel table failed: {e}"))?;
            let results = self
                .ct
                .batch(&reqs, 0)
                .map_err(|e| format!("flushing the kernel table failed: {e}"))?;
            if let Some(Err(e)) = results
                .iter()
                .find(|r| matches!(r, Err(e) if *e != libc::ENOENT))
            {
                return Err(format!(
                    "flushing the kernel table failed: {}",
                    crate::netlink::client::errno_text(*e)
                ));
            }
        }
        self.stats.kernel_flushes += 1;
        self.log.notice("flushed the kernel conntrack table");
        Ok(Vec::new())
    }

    #[cfg(feature = "sync")]
    fn sync_command(&mut self, r: &Request) -> Reply {
        let Some(s) = self.sync.as_mut() else {
            return Err("no Sync block is configured: this command needs sync".into());
        };
        let now = Instant::now();
        let reply = match r {
            Request::Commit => {
                // Our own commit would flood our event socket with one NEW
                // per entry (and make the kernel build them: ~50% of the
                // commit's cost). Leave the groups while committing; the
                // resync right after catches up with everything.
                let paused = self.event_fd.is_some_and(|fd| set_event_groups(fd, false));
                let r = s.commit(&mut self.log);
                if paused {
                    if let Some(fd) = self.event_fd {
                        set_event_groups(fd, true);
                    }
                    self.resync_at = Some(Instant::now());
                    self.resync_why = "after commit";
                }
                r
            }
            Request::Bulk => {
                s.send_bulk();
                Ok(Vec::new())
            }
            Request::RequestResync => {
                s.request_resync();
                Ok(Vec::new())
            }
            Request::ResetTimers => {
                s.reset_timers(now, &mut self.log);
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        };
        s.transmit(now, &self.config.general.filter, &mut self.log);
        reply
    }

    #[cfg(not(feature = "sync"))]
    fn sync_command(&mut self, _r: &Request) -> Reply {
        Err("this ctrackd is built without sync: this command needs it".into())
    }

    /// Answers a control request.
    pub fn control(&mut self, r: &Request) -> Reply {
        match r {
            Request::Stats(section) => self.stats_text(section.as_deref()),
            Request::Dump(Which::Internal, f) => Ok(self.dump_cache(*f)),
            Request::Dump(_, _f) => {
                #[cfg(feature = "sync")]
                if let Some(s) = &self.sync {
                    return Ok(s.dump_external(*_f));
                }
                Err("no Sync block is configured: there is no external cache".into())
            }
            Request::FlushCache(w) => {
                if matches!(w, Which::Internal | Which::All) {
                    let n = self.internal.len();
                    self.internal.clear();
                    self.log
                        .notice(&format!("internal cache flushed ({n} flows)"));
                    #[cfg(feature = "sync")]
                    if let Some(s) = self.sync.as_mut() {
                        s.flush_internal();
                    }
                }
                if matches!(w, Which::External | Which::All) {
                    #[cfg(feature = "sync")]
                    if let Some(s) = self.sync.as_mut() {
                        s.flush_external(*w == Which::All);
                        self.log.notice("external cache flushed");
                        return Ok(Vec::new());
                    }
                    if *w == Which::External {
                        return Err(
                            "no Sync block is configured: there is no external cache".into()
                        );
                    }
                }
                Ok(Vec::new())
            }
            Request::FlushKernel => self.flush_kernel(),
            Request::Resync => {
                self.resync("requested");
                Ok(Vec::new())
            }
            Request::Kill => {
                self.log.notice("shutdown requested");
                self.stop = true;
                Ok(Vec::new())
            }
            Request::Commit | Request::Bulk | Request::RequestResync | Request::ResetTimers => {
                self.sync_command(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::flow::{Counters, proto};

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
        let mut udp = f.clone();
        udp.orig.proto = proto::UDP;
        udp.reply.proto = proto::UDP;
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::New, &udp, 2),
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
            (stats.bytes_orig + stats.bytes_repl, stats.events_received),
            (160, 4)
        );
        // an update for an unknown flow creates it (events may be lost)
        assert_eq!(
            apply_event(&mut cache, &filter, &mut stats, EventKind::Update, &f, 4),
            Change::Created
        );
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
    }
}
