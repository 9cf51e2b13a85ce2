//! The daemon's I/O shell around the sans-I/O [`Core`]: it owns the
//! ctnetlink socket, the log and the parts, takes one [`Input`] at a time
//! from the loop's channel, lets the core decide, and carries out what the
//! core decided (dumps for a resync, kernel flushes, log lines, changes to
//! the parts). Control requests are routed here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Instant;

use super::config::CacheFilter;
use super::control::{ControlCounters, Reply, Request, Which};
use super::core::{Core, Resync, now_u32};
use super::input::Input;
use super::log::Logger;
use super::part::{PartCx, Slot};
use super::parts::Parts;
use super::stats;
use crate::netlink::Conntrack;
use crate::netlink::ct::{self, CtRequest, cta, msg};

/// Most kernel events handled as one batch.
const KERNEL_BATCH: usize = 256;

/// The core, its parts and the sockets and log they act through.
pub struct Shell {
    /// The decisions.
    pub core: Core,
    /// The configured parts.
    pub parts: Parts,
    /// The log.
    pub log: Logger,
    /// Requests the control socket refused (shared with its thread).
    pub control_counters: Arc<ControlCounters>,
    ct: Conntrack,
    foreground: bool,
    syslog_socket: Option<PathBuf>,
    /// The reply channel of the control request being handled, lent to
    /// the parts (see [`PartCx::answer`]).
    answer: Option<Sender<Reply>>,
}

/// What a part may use, borrowed from the core and the log.
fn part_cx<'a>(core: &'a mut Core, log: &'a mut Logger) -> PartCx<'a> {
    PartCx {
        internal: &mut core.internal,
        filter: &core.config.general.filter,
        log,
        resync: None,
        answer: None,
    }
}

impl Shell {
    /// A shell for `core`, acting on the kernel through `ct`.
    /// `foreground` and `syslog_socket` are kept for reopening the log on
    /// SIGHUP.
    pub fn new(
        core: Core,
        log: Logger,
        ct: Conntrack,
        foreground: bool,
        syslog_socket: Option<PathBuf>,
    ) -> Shell {
        Shell {
            core,
            parts: Parts::default(),
            control_counters: Arc::default(),
            log,
            ct,
            foreground,
            syslog_socket,
            answer: None,
        }
    }

    /// Writes the core's queued log lines.
    fn write_log(&mut self) {
        for (level, line) in self.core.take_log() {
            self.log.log(level, &line);
        }
    }

    /// Runs a part-facing step with the context, then takes the resync the
    /// part asked for.
    fn with_parts<R>(&mut self, f: impl FnOnce(&mut Parts, &mut PartCx<'_>) -> R) -> R {
        let mut cx = part_cx(&mut self.core, &mut self.log);
        cx.answer = self.answer.take();
        let r = f(&mut self.parts, &mut cx);
        self.answer = cx.answer.take();
        if let Some((at, why)) = cx.resync {
            self.core.schedule_resync(at, why);
        }
        r
    }

    /// Rebuilds the internal cache from a kernel dump (see
    /// [`Core::resync`]) and lets the parts send what it changed.
    pub fn resync(&mut self, why: Resync) {
        let now = Instant::now();
        let ct = &mut self.ct;
        let parts = &mut self.parts;
        let listen = parts.want_changes();
        let req = CtRequest::new(msg::GET, 0);
        self.core.resync(
            why,
            now,
            &mut |visit| {
                ct.dump(&req, &mut |f| {
                    visit(f);
                    Ok(())
                })
                .map(|d| d.malformed)
                .map_err(|e| e.to_string())
            },
            &mut |change| {
                if listen {
                    parts.on_change(now, change)
                }
            },
        );
        self.write_log();
        self.with_parts(|parts, cx| parts.flush(now, cx));
    }

    /// When [`Shell::on_timer`] is next needed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.core.next_deadline(), self.parts.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due.
    pub fn on_timer(&mut self, now: Instant) {
        if let Some(why) = self.core.due(now) {
            self.resync(why);
        }
        self.with_parts(|parts, cx| parts.on_timer(now, cx));
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Kernel(events) => {
                let own = self.parts.own_portids();
                let parts = &mut self.parts;
                let listen = parts.want_changes();
                self.core
                    .apply_events(&events, &own, now_u32(), &mut |change| {
                        if listen {
                            parts.on_change(now, change)
                        }
                    });
                self.with_parts(|parts, cx| parts.flush(now, cx));
            }
            Input::Overrun { buffer, grown } => self.core.on_overrun(now, buffer, grown),
            Input::KernelError(e) => self.core.on_event_error(&e),
            Input::Control(p) => {
                self.answer = Some(p.reply);
                let reply = self.control(&p.request);
                // unless a part took the channel to answer later
                if let Some(tx) = self.answer.take() {
                    let _ = tx.send(reply);
                }
            }
            Input::Signal(sig) => self.signal(sig),
            Input::StatsJson(tx) => {
                let _ = tx.send(self.stats_json());
            }
            Input::Log(m) => self.log.notice(&m),
            #[cfg(feature = "web")]
            Input::WebFlowCounts(tx) => {
                let _ = tx.send(super::webpart::flow_counts(&self.core.internal));
            }
            #[cfg(feature = "wan")]
            Input::Wan(w) => {
                if let Some(wan) = self.parts.wan.as_mut() {
                    wan.on_input(now, w, &mut self.log);
                }
            }
            #[cfg(feature = "sync")]
            Input::Sync(l) => {
                if let Some(sync) = self.parts.sync.as_mut() {
                    sync.on_input(now, l);
                }
                self.with_parts(|parts, cx| parts.flush(now, cx));
            }
        }
        self.write_log();
    }

    fn signal(&mut self, sig: i32) {
        match sig {
            libc::SIGTERM | libc::SIGINT => self
                .core
                .request_stop(&format!("received signal {sig}, shutting down")),
            libc::SIGHUP => self.reload(),
            libc::SIGUSR1 => {
                let s = self.stats_json();
                self.log.notice(&format!("stats: {s}"));
            }
            _ => {}
        }
    }

    /// SIGHUP: reopens the parts' log files (logrotate), then re-reads
    /// the config: a bad file is logged and the old one kept.
    pub fn reload(&mut self) {
        self.parts.reopen_logs(&mut self.log);
        let path = self.core.config.path.clone();
        let new = match super::config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                self.log.error(&format!(
                    "reload failed, keeping the old configuration: {e}"
                ));
                return;
            }
        };
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
        self.parts
            .reload(Instant::now(), &self.core.config, &new, &mut self.log);
        self.core.reload(new);
    }

    /// The counters of the core and every part as one JSON object.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = stats::to_json(
            &self.core.internal,
            &self.core.stats,
            crate::flow::now_secs(),
        );
        self.parts.add_json(&mut v);
        v
    }

    /// `ctrackd -s [section]`.
    fn stats_text(&self, section: Option<&str>) -> Reply {
        let (core, parts) = (&self.core, &self.parts);
        let now = crate::flow::now_secs();
        let text = match section {
            None => {
                let mut s = stats::cache_text(&core.internal);
                parts.write_stats(Slot::AfterCache, &mut s);
                s.push_str(&stats::traffic_text(&core.stats));
                parts.write_stats(Slot::AfterTraffic, &mut s);
                s
            }
            Some("runtime") => stats::runtime_text(&core.stats, now),
            Some("cache") => {
                let mut s = stats::cache_text_extended(&core.internal);
                parts.write_stats(Slot::CacheSection, &mut s);
                s
            }
            // conntrackd answers these with nothing (and success) when it
            // has nothing to show: no child processes, no expectation
            // sync, no Sync block
            Some("process" | "expect") => String::new(),
            Some(name @ ("network" | "link" | "multicast" | "queue" | "rsqueue")) => {
                return Ok(parts.section(name).unwrap_or_default());
            }
            Some("wan") => {
                return parts
                    .section("wan")
                    .ok_or_else(|| "no WAN block is configured: nothing to show for `wan'".into());
            }
            Some(other) => return Err(format!("unknown statistics section `{other}'")),
        };
        Ok(text.into_bytes())
    }

    /// Flushes the kernel table: everything, or with a Filter configured
    /// only the flows the filter accepts (batched deletes).
    fn flush_kernel(&mut self) -> Reply {
        let filter = self.core.filter().clone();
        let failed = |e: &dyn std::fmt::Display| format!("flushing the kernel table failed: {e}");
        if filter == CacheFilter::default() {
            self.ct
                .request(&CtRequest::new(msg::DELETE, 0), 0)
                .map_err(|e| failed(&e))?;
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
                .map_err(|e| failed(&e))?;
            let results = self.ct.batch(&reqs, 0).map_err(|e| failed(&e))?;
            if let Some(Err(e)) = results
                .iter()
                .find(|r| matches!(r, Err(e) if *e != libc::ENOENT))
            {
                return Err(failed(&crate::netlink::client::errno_text(*e)));
            }
        }
        self.core.stats.kernel_flushes += 1;
        self.log.notice("flushed the kernel conntrack table");
        Ok(Vec::new())
    }

    /// Answers a control request.
    pub fn control(&mut self, r: &Request) -> Reply {
        let c = &self.control_counters;
        self.core.stats.local_read_failed = c.read_failed.load(Ordering::Relaxed);
        self.core.stats.local_unknown = c.unknown.load(Ordering::Relaxed);
        match r {
            Request::Stats(section) => self.stats_text(section.as_deref()),
            Request::Dump(Which::Internal, f) => Ok(self.core.dump_cache(*f)),
            // without sync the external cache is empty, as conntrackd's
            // `-e` says without a Sync block: with nothing
            Request::Dump(..) => self
                .with_parts(|parts, cx| parts.control(r, cx))
                .unwrap_or_else(|| Ok(Vec::new())),
            Request::FlushCache(which) => {
                if matches!(which, Which::Internal | Which::All) {
                    self.core.flush_internal();
                    self.write_log();
                }
                match self.with_parts(|parts, cx| parts.control(r, cx)) {
                    Some(reply) => reply,
                    None if *which == Which::External => {
                        Err("no Sync block is configured: there is no external cache".into())
                    }
                    None => Ok(Vec::new()),
                }
            }
            Request::FlushKernel => self.flush_kernel(),
            Request::Resync => {
                self.resync(Resync::Requested);
                Ok(Vec::new())
            }
            Request::Kill => {
                self.core.request_stop("shutdown requested");
                Ok(Vec::new())
            }
            Request::Commit | Request::Bulk | Request::RequestResync | Request::ResetTimers => self
                .with_parts(|parts, cx| parts.control(r, cx))
                .unwrap_or_else(|| Err(needs_sync())),
        }
    }

    /// Handles inputs until the core stops or every sender is gone.
    pub fn run(&mut self, rx: &Receiver<Input>) {
        while !self.core.stopping() {
            let input = match self.next_deadline() {
                Some(t) => {
                    let now = Instant::now();
                    if t <= now {
                        self.on_timer(now);
                        self.write_log();
                        continue;
                    }
                    match rx.recv_timeout(t - now) {
                        Ok(i) => Some(i),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(i) => Some(i),
                    Err(_) => break,
                },
            };
            match input {
                Some(Input::Kernel(mut events)) => {
                    // events already queued are handled as one batch, so
                    // sync packs their messages into shared datagrams (the
                    // reader forwards each netlink datagram on its own)
                    let mut next = None;
                    while events.len() < KERNEL_BATCH {
                        match rx.try_recv() {
                            Ok(Input::Kernel(more)) => events.extend(more),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.handle(Input::Kernel(events));
                    if let Some(i) = next {
                        self.handle(i);
                    }
                }
                Some(i) => self.handle(i),
                None => {
                    self.on_timer(Instant::now());
                    self.write_log();
                }
            }
        }
        self.parts.stop();
    }
}

/// The answer to a sync command when no part takes it.
fn needs_sync() -> String {
    if cfg!(feature = "sync") {
        "no Sync block is configured: this command needs sync".into()
    } else {
        "this ctrackd is built without sync: this command needs it".into()
    }
}
