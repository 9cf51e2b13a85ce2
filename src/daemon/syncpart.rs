//! Sync inside ctrackd: the sans-I/O [`Engine`] driven by the core loop
//! as a [`Part`]; one reader thread per link socket forwards datagrams;
//! the part feeds the engine the cache's changes (filled in with what it
//! remembers of each flow, see [`crate::sync::merge`]), carries out the
//! engine's actions (send, inject, bulk dump, log) and answers the sync
//! client commands. Commits and `-t` purges run on the commit
//! [`Worker`]'s thread: the part hands them over and collects the
//! outcome on its timer, answering `-c` when its commit is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::config::CacheFilter;
use super::control::{Format, Reply, Request, Which};
use super::core::{Replicate, Resync};
use super::log::Logger;
use super::part::{Part, PartCx, Slot};
use crate::flow::{EventKind, Flow, ProtoInfo, json, proto, xml};
use crate::netlink::Conntrack;
use crate::netlink::ct::get_request;
use crate::netlink::events::set_conntrack_groups;
use crate::sync::commit::{
    CommitOpts, CommitReport, Committer, CtKernel, Finished, Injector, Job, PurgeReport,
    PurgeTimer, Snapshot, Worker,
};
use crate::sync::config::SyncConfig;
use crate::sync::engine::{Action, Engine, LogLevel, Start};
use crate::sync::external::FlowKey;
use crate::sync::keyfile;
use crate::sync::link::{self, LinkInput, LinkSocket};
use crate::sync::merge::Remembered;
use crate::sync::stats;

/// How often link state is checked.
const LINK_CHECK: Duration = Duration::from_secs(1);
/// How often the part looks for the outcome of a running commit or purge.
const WORKER_POLL: Duration = Duration::from_millis(5);

/// A commit the worker is running.
struct RunningCommit {
    /// Where `-c`'s answer goes when it is done.
    answer: Option<Sender<Reply>>,
    /// Whether the event groups were left for it (joined again after).
    paused: bool,
}

/// Flows of a kernel dump for a bulk send queued before they are sent.
const BULK_CHUNK: usize = 1024;

/// Sends one datagram of the engine's on link `link`.
fn send_one(engine: &mut Engine, socks: &[Arc<LinkSocket>], link: usize, datagram: &[u8]) {
    if !matches!(socks.get(link).map(|s| s.send(datagram)), Some(Ok(()))) {
        engine.note_send_error(link);
    }
}

/// Sends the datagrams the engine has ready; its other actions wait.
fn send_datagrams(engine: &mut Engine, socks: &[Arc<LinkSocket>]) {
    let mut other = Vec::new();
    while let Some(a) = engine.poll_action() {
        match a {
            Action::Send { link, datagram } => send_one(engine, socks, link, &datagram),
            a => other.push(a),
        }
    }
    engine.requeue_actions(other);
}

/// Sync's state in the core.
pub struct SyncPart {
    /// The configuration in effect.
    pub cfg: SyncConfig,
    engine: Engine,
    socks: Vec<Arc<LinkSocket>>,
    /// Dumps the kernel table for a bulk send.
    dumper: Conntrack,
    /// Runs commits and purges.
    worker: Worker,
    /// The commit the worker is running, if any.
    commit: Option<RunningCommit>,
    /// When to look for the outcome of the worker's jobs while it is busy.
    next_worker_poll: Instant,
    injector: Option<Injector>,
    purge: PurgeTimer,
    next_link_check: Instant,
    /// What events carry only when it changed, per flow (see `on_event`);
    /// flows with nothing to remember have no entry.
    remembered: HashMap<FlowKey, Remembered>,
    /// The daemon's event socket (read by its own thread), to leave the
    /// event groups while committing.
    event_fd: Option<i32>,
}

impl SyncPart {
    /// Opens the link sockets (and their reader threads, which pass what
    /// they receive to `deliver`), the commit socket and the engine.
    /// `event_fd` is the daemon's event socket.
    pub fn start(
        cfg: SyncConfig,
        event_fd: Option<i32>,
        deliver: impl Fn(LinkInput) -> bool + Clone + Send + 'static,
        log: &mut Logger,
    ) -> Result<SyncPart, String> {
        let key = match &cfg.auth {
            Some(a) => Some(keyfile::load_key(a)?),
            None => None,
        };
        let mut socks = Vec::new();
        for l in &cfg.links {
            let s = LinkSocket::open(l).map_err(|e| {
                format!(
                    "sync: cannot open the {} link on {}: {e}",
                    l.kind_name(),
                    l.interface
                )
            })?;
            socks.push(Arc::new(s));
        }
        let mtus = socks.iter().map(|s| s.mtu()).collect();
        let mut engine = Engine::new(&cfg, Start::now(mtus, key));
        for (i, l) in cfg.links.iter().enumerate() {
            if let Ok(up) = link::interface_up(&l.interface) {
                engine.set_link_up(i, up);
            }
        }
        let netlink =
            |e: crate::netlink::client::Error| format!("sync: cannot open ctnetlink: {e}");
        let committer = Committer::open(None).map_err(netlink)?;
        let portid = committer.portid();
        let worker = Worker::spawn(committer, portid)
            .map_err(|e| format!("sync: cannot start the commit thread: {e}"))?;
        let dumper = Conntrack::open(None).map_err(netlink)?;
        let opts = commit_opts(&cfg);
        let injector = if cfg.disable_external_cache {
            Some(Injector::open(None, opts).map_err(netlink)?)
        } else {
            None
        };
        for (i, s) in socks.iter().enumerate() {
            link::spawn_reader(i, s.clone(), deliver.clone())
                .map_err(|e| format!("sync: cannot start a link thread: {e}"))?;
        }
        log.notice(&format!(
            "sync: mode {:?}, {} link(s), active {}{}",
            cfg.mode,
            cfg.links.len(),
            cfg.links[cfg.default_link()].interface,
            if cfg.auth.is_some() {
                ", authenticated"
            } else {
                ""
            }
        ));
        Ok(SyncPart {
            cfg,
            engine,
            socks,
            dumper,
            worker,
            commit: None,
            next_worker_poll: Instant::now(),
            injector,
            purge: PurgeTimer::default(),
            next_link_check: Instant::now() + LINK_CHECK,
            remembered: HashMap::new(),
            event_fd,
        })
    }

    /// Port ids of our own ctnetlink sockets: events they cause are never
    /// replicated (commits, purges and injections).
    fn portids(&self) -> Vec<u32> {
        let mut v = vec![self.worker.portid()];
        if let Some(i) = &self.injector {
            v.push(i.portid());
        }
        v
    }

    /// Tells the engine about a change of the internal cache.
    ///
    /// The internal cache keeps a flow's TCP state, status, mark and
    /// timeout; labels, master, SYN proxy state and helper come with an
    /// update event only when they changed (and protocol info beyond the
    /// TCP state likewise). They are remembered here for the flows that
    /// have them, so every message carries the flow's whole state: a
    /// receiver that replaces its entry with an update loses nothing.
    /// Protocol info is remembered only where the cache's TCP state is
    /// not all of it: SCTP, DCCP, and TCP with `TCPWindowTracking`
    /// (whose window scales travel).
    ///
    /// The NAT sequence adjustment a helper makes (FTP's PORT, SIP) is in
    /// no event at all: the kernel changes it without telling. It is read
    /// from the kernel's entry when an event of an adjusted flow (status
    /// SEQ_ADJUST) comes without it, and a new related flow (the data
    /// connection a rewritten command announced) has its master read
    /// again and sent when the adjustment changed.
    pub fn on_event(&mut self, now: Instant, kind: EventKind, f: &Flow) {
        let key = FlowKey::of(f);
        if kind == EventKind::Destroy {
            self.remembered.remove(&key);
            self.engine.on_event(now, kind, f);
            return;
        }
        let mut full = f.clone();
        if adjusted(f)
            && f.seq_adj == [None; 2]
            && let Some(k) = self.kernel_entry(f)
        {
            full.seq_adj = k.seq_adj;
        }
        self.replicate(now, kind, key, full);
        if kind == EventKind::New
            && let Some(m) = f.master
        {
            self.refresh_master(now, m, f);
        }
    }

    /// Sends `full` (the flow with `key`) after filling it in from what is
    /// remembered, and remembers what it carries.
    fn replicate(&mut self, now: Instant, kind: EventKind, key: FlowKey, mut full: Flow) {
        let keeps_protoinfo = match full.orig.proto {
            proto::SCTP | proto::DCCP => true,
            proto::TCP => self.cfg.tcp_window_tracking,
            _ => false,
        };
        let mut known = self.remembered.remove(&key).unwrap_or_default();
        known.fill(&mut full);
        if !keeps_protoinfo {
            known.protoinfo = ProtoInfo::None;
        }
        if !known.is_empty() {
            self.remembered.insert(key, known);
        }
        self.engine.on_event(now, kind, &full);
    }

    /// A related flow appeared: its master's helper has just rewritten a
    /// command, which may have changed the master's sequence adjustment
    /// (no event says so). Reads the master and sends it if it did.
    fn refresh_master(&mut self, now: Instant, master: crate::flow::Tuple, related: &Flow) {
        let probe = Flow {
            family: related.family,
            orig: master,
            zone: related.zone,
            ..Flow::default()
        };
        let key = FlowKey::of(&probe);
        // only a master this part replicates (one it remembers: its
        // helper at least)
        let Some(known) = self.remembered.get(&key).map(|k| k.seq_adj) else {
            return;
        };
        let Some(m) = self.kernel_entry(&probe) else {
            return;
        };
        if adjusted(&m) && m.seq_adj != known {
            self.replicate(now, EventKind::Update, key, m);
        }
    }

    /// The kernel's current entry with `f`'s original tuple and zone.
    fn kernel_entry(&mut self, f: &Flow) -> Option<Flow> {
        CtKernel::get(&mut self.dumper, &get_request(f))
            .ok()
            .flatten()
    }

    /// Handles what a link's reader delivered.
    pub fn on_input(&mut self, now: Instant, input: LinkInput) {
        match input {
            LinkInput::Datagram { link, bytes, src } => {
                if let Some(s) = self.socks.get(link) {
                    s.queue().taken(bytes.len());
                }
                self.engine.on_datagram(now, link, &bytes, src)
            }
            LinkInput::RecvError(link) => self.engine.note_recv_error(link),
            LinkInput::Failing { link, error } => self.engine.note_link_failing(link, &error),
            LinkInput::Recovered(link) => self.engine.note_link_recovered(link),
        }
    }

    /// When the part next needs [`SyncPart::run_timers`].
    fn deadline(&self) -> Instant {
        let mut d = self.next_link_check;
        if self.worker.busy() {
            d = d.min(self.next_worker_poll);
        }
        for t in [self.engine.next_deadline(), self.purge.deadline()]
            .into_iter()
            .flatten()
        {
            d = d.min(t);
        }
        d
    }

    /// Runs what is due: engine timers, the `-t` purge, the outcome of
    /// the worker's jobs, link checks.
    fn run_timers(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        if self.engine.next_deadline().is_some_and(|t| t <= now) {
            self.engine.on_timeout(now);
        }
        if self.purge.take_due(now) {
            cx.log.notice("flushing kernel conntrack table (scheduled)");
            let filter = cx.filter.clone();
            // conntrackd keeps the entries its Filter ignores
            let keep = Box::new(move |f: &Flow| !filter.accepts(f));
            self.next_worker_poll = now + WORKER_POLL;
            if !self.worker.submit(Job::Purge { keep }) {
                cx.log
                    .error("purging the kernel table failed: the commit thread is gone");
            }
        }
        if self.next_worker_poll <= now {
            self.next_worker_poll = now + WORKER_POLL;
            while let Some(done) = self.worker.poll() {
                self.finished(done, cx);
            }
        }
        if self.next_link_check <= now {
            self.next_link_check = now + LINK_CHECK;
            for (i, l) in self.cfg.links.iter().enumerate() {
                if let Ok(up) = link::interface_up(&l.interface) {
                    self.engine.set_link_up(i, up);
                }
            }
            for (i, s) in self.socks.iter().enumerate() {
                let dropped = s.queue().take_dropped();
                if dropped > 0 {
                    self.engine.note_recv_dropped(now, i, dropped);
                }
            }
        }
    }

    /// Takes the outcome of a job of the worker.
    fn finished(&mut self, done: Finished, cx: &mut PartCx<'_>) {
        match done {
            Finished::Commit(r) => {
                let reply = self.commit_done(&r, cx);
                if let Some(tx) = self.commit.take().and_then(|c| c.answer) {
                    let _ = tx.send(reply);
                }
            }
            Finished::Purge(r) => self.purge_done(r, cx),
        }
    }

    /// The end of a `-t` purge: the internal cache starts over.
    fn purge_done(&mut self, r: Result<PurgeReport, String>, cx: &mut PartCx<'_>) {
        match r {
            Ok(r) => cx.log.notice(&format!(
                "kernel table purged: {} entries deleted, {} failed",
                r.deleted, r.failed
            )),
            Err(e) => cx
                .log
                .error(&format!("purging the kernel table failed: {e}")),
        }
        cx.internal.clear();
        self.flush_internal();
    }

    /// Sends what the engine queued and carries out its other actions.
    fn transmit(&mut self, now: Instant, filter: &CacheFilter, log: &mut Logger) {
        // a bulk dump produces more to send: bounded rounds
        for _ in 0..4 {
            self.engine.transmit(now);
            let mut dump = false;
            while let Some(a) = self.engine.poll_action() {
                match a {
                    Action::Send { link, datagram } => {
                        send_one(&mut self.engine, &self.socks, link, &datagram)
                    }
                    Action::Inject { op, flow } => {
                        if let Some(inj) = self.injector.as_mut()
                            && let Err(e) = inj.apply(op, &flow)
                        {
                            let what = match op {
                                EventKind::New => "new",
                                EventKind::Update => "update",
                                EventKind::Destroy => "destroy",
                            };
                            log.warning(&format!(
                                "sync: inject ({what}) failed: {e}: {}",
                                flow_line(&flow)
                            ));
                        }
                    }
                    Action::DumpKernelForBulk => dump = true,
                    Action::Log { level, text } => match level {
                        LogLevel::Notice => log.notice(&text),
                        LogLevel::Warning => log.warning(&text),
                        LogLevel::Error => log.error(&text),
                    },
                }
            }
            if !dump {
                return;
            }
            // sent as it is dumped, a chunk at a time: a big table is
            // never held whole as messages
            let (engine, socks) = (&mut self.engine, &self.socks);
            let mut queued = 0;
            if let Err(e) = CtKernel::dump(&mut self.dumper, &mut |f| {
                if filter.accepts(f) {
                    engine.bulk_flow(f);
                    queued += 1;
                    if queued == BULK_CHUNK {
                        queued = 0;
                        engine.transmit(now);
                        send_datagrams(engine, socks);
                    }
                }
                Ok(())
            }) {
                log.error(&format!("sync: kernel dump for the bulk send failed: {e}"));
                return;
            }
        }
    }

    /// `-c`: hands the external cache as it is now to the worker (the
    /// answer goes out when the commit is done, see
    /// [`SyncPart::commit_done`]). With `DisableExternalCache` there is
    /// nothing to commit.
    fn start_commit(&mut self, cx: &mut PartCx<'_>) -> Reply {
        if self.cfg.disable_external_cache {
            return Ok(Vec::new());
        }
        if self.commit.is_some() {
            return Err("a commit is already in progress".into());
        }
        cx.log.notice("committing external cache");
        self.purge.cancel();
        let opts = commit_opts(&self.cfg);
        let snapshot = Snapshot::of(self.engine.external(), Instant::now());
        // Our own commit would flood our event socket with one NEW per
        // entry (and make the kernel build them: ~50% of the commit's
        // cost). Leave the groups while committing; the resync right
        // after catches up with everything.
        let paused = self
            .event_fd
            .is_some_and(|fd| set_conntrack_groups(fd, false));
        self.next_worker_poll = Instant::now() + WORKER_POLL;
        if !self.worker.submit(Job::Commit { snapshot, opts }) {
            self.rejoin_events(paused);
            return Err("commit failed: the commit thread is gone".into());
        }
        let answer = cx.answer.take();
        let later = answer.is_some();
        self.commit = Some(RunningCommit { answer, paused });
        if later {
            // answered by `finished` when the worker is done
            return Ok(Vec::new());
        }
        // nobody to answer later: wait for it here
        while let Some(done) = self.worker.wait() {
            if let Finished::Commit(r) = done {
                let reply = self.commit_done(&r, cx);
                self.commit = None;
                return reply;
            }
            self.finished(done, cx);
        }
        self.commit = None;
        Err("commit failed: the commit thread is gone".into())
    }

    /// The end of a commit: its log lines, the event groups joined again
    /// and a resync to catch up with them, and `-c`'s answer.
    fn commit_done(&mut self, r: &CommitReport, cx: &mut PartCx<'_>) -> Reply {
        for l in r.log_lines() {
            cx.log.notice(&l);
        }
        for (f, e) in &r.failed {
            cx.log.error(&format!(
                "commit-create: {}: {}",
                crate::netlink::client::errno_text(*e),
                flow_line(f)
            ));
        }
        let paused = self.commit.as_ref().is_some_and(|c| c.paused);
        if self.rejoin_events(paused) {
            cx.resync = Some((Instant::now(), Resync::AfterCommit));
        }
        if r.failed.is_empty() {
            Ok(Vec::new())
        } else {
            Err(format!(
                "{} entries can't be committed (see the log)",
                r.failed.len()
            ))
        }
    }

    /// Joins the event groups left for a commit again; true when they
    /// had been left.
    fn rejoin_events(&self, paused: bool) -> bool {
        if paused && let Some(fd) = self.event_fd {
            set_conntrack_groups(fd, true);
        }
        paused
    }

    /// `-f external` (and the external half of `-f`).
    fn flush_external(&mut self, cancel_purge: bool) {
        self.engine.external_mut().flush();
        if cancel_purge {
            self.purge.cancel();
        }
    }

    /// `-f internal`: the engine forgets the replicated flows too.
    fn flush_internal(&mut self) {
        self.engine.flush_internal();
        self.remembered.clear();
    }

    /// `-n`: asks the peer for a full resync.
    fn request_resync(&mut self) {
        self.engine.request_resync();
    }

    /// `-B`: sends every replicated flow to the peer.
    fn send_bulk(&mut self) {
        self.engine.send_bulk();
    }

    /// `-t`: flush the kernel table after PurgeTimeout.
    fn reset_timers(&mut self, now: Instant, log: &mut Logger) {
        if let Some(line) = self.purge.schedule(now, self.cfg.purge_timeout) {
            log.notice(&line);
        }
    }

    /// `-e`: the external cache in the requested format.
    fn dump_external(&self, format: Format) -> Vec<u8> {
        let now = Instant::now();
        let wall = crate::flow::now_secs();
        let ext = self.engine.external();
        let mut out = Vec::new();
        if format == Format::Xml {
            out.extend_from_slice(xml::HEADER.as_bytes());
        }
        for e in ext.iter() {
            match format {
                Format::Text => ext.dump_line(&e, now, &mut out),
                Format::Xml => xml::write_flow(
                    &mut out,
                    &e.flow,
                    &xml::XmlOptions {
                        now: wall,
                        ..xml::XmlOptions::default()
                    },
                ),
                Format::Json => json::write_flow(
                    &mut out,
                    &e.flow,
                    &json::JsonOptions {
                        now: wall,
                        ..json::JsonOptions::default()
                    },
                ),
            }
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        if format == Format::Xml {
            out.extend_from_slice(xml::FOOTER.as_bytes());
        }
        out
    }

    /// The external cache (or inject) block of `-s`.
    fn external_text(&self, out: &mut String) {
        match &self.injector {
            Some(i) => stats::external_inject(out, &i.stats()),
            None => stats::external_cache(out, self.engine.external()),
        }
    }

    /// Each TCP link's connections (None for the other kinds).
    fn tcp_states(&self) -> Vec<Option<link::tcp::TcpState>> {
        self.socks.iter().map(|s| s.tcp_state()).collect()
    }

    /// What the TCP links hold for their connections, as conntrackd's one
    /// `errorq` (for other links: empty, `ErrorQueueLength` long).
    fn error_queue(&self) -> link::tcp::ErrorQueue {
        let mut q = link::tcp::ErrorQueue {
            max: self.cfg.links.first().map_or(128, |l| l.error_queue),
            ..Default::default()
        };
        for e in self.socks.iter().filter_map(|s| s.error_queue()) {
            q.len += e.len;
            q.dropped += e.dropped;
        }
        q
    }

    /// The sync summary of `-s`.
    fn summary_text(&self, out: &mut String) {
        stats::summary(out, &self.engine, &self.tcp_states());
    }

    /// `-s network|link|queue|rsqueue`.
    fn section_text(&self, section: &str) -> Option<String> {
        let mut s = String::new();
        match section {
            "network" => stats::network(&mut s, &self.engine, &self.tcp_states()),
            "link" | "multicast" => stats::link(&mut s, &self.engine),
            "queue" => stats::queue(&mut s, &self.engine, self.error_queue()),
            "rsqueue" => stats::rsqueue(&mut s, &self.engine),
            _ => return None,
        }
        Some(s)
    }

    /// External cache size and memory (for `-s cache`).
    fn external_size(&self) -> (usize, usize) {
        let e = self.engine.external();
        (e.len(), e.memory())
    }

    /// The counters as JSON (web API).
    fn json(&self) -> serde_json::Value {
        let n = self.engine.net_stats();
        let q = self.engine.queue_stats();
        let tcp = self.tcp_states();
        let links: Vec<serde_json::Value> = self
            .engine
            .links()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut v = serde_json::json!({
                    "interface": l.name, "up": l.up, "active": l.active,
                });
                if let Some(t) = tcp.get(i).copied().flatten() {
                    v["tcp"] = serde_json::json!({ "server": t.server, "client": t.client });
                }
                v
            })
            .collect();
        serde_json::json!({
            "mode": format!("{:?}", self.cfg.mode),
            "external": self.engine.external().len(),
            "network": {
                "malformed": n.malformed, "lost": n.lost,
                "auth_failures": n.auth_missing + n.auth_bad_mac + n.auth_replay,
            },
            "queue": { "tx": q.tx_len, "rs": q.rs_len, "objects": q.objects },
            "links": links,
        })
    }
}

/// True when the kernel adjusts the flow's sequence numbers (a helper
/// rewrote a command through NAT).
fn adjusted(f: &Flow) -> bool {
    f.status
        .is_some_and(|s| s & crate::flow::status::SEQ_ADJUST != 0)
}

/// How received flows are created (commit and injection).
fn commit_opts(cfg: &SyncConfig) -> CommitOpts {
    CommitOpts {
        commit_timeout: cfg.commit_timeout,
        tcp_window_tracking: cfg.tcp_window_tracking,
    }
}

/// A flow as conntrack's text line, for the log.
fn flow_line(f: &Flow) -> String {
    let mut line = Vec::new();
    crate::flow::text::write_line(&mut line, f, &crate::flow::text::TextOptions::default());
    String::from_utf8_lossy(&line).into_owned()
}

/// The flow sync replicates for an event: the cache's merged state plus
/// what the cache does not keep and the event reports (helper, labels,
/// NAT sequence, SYN proxy, master, protocol info beyond the TCP state;
/// [`SyncPart::on_event`] fills in what the event leaves out).
fn sync_view(mut f: Flow, ev: &Flow) -> Flow {
    f.helper = ev.helper;
    f.labels = ev.labels;
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

impl Part for SyncPart {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.deadline())
    }

    fn on_timer(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        self.run_timers(now, cx);
        self.transmit(now, cx.filter, cx.log);
    }

    fn own_portids(&self) -> Vec<u32> {
        self.portids()
    }

    fn wants_changes(&self) -> bool {
        true
    }

    fn on_change(&mut self, now: Instant, change: Replicate<'_>) {
        match change.cached {
            Some(e) => self.on_event(now, change.kind, &sync_view(e.to_flow(), change.flow)),
            None => self.on_event(now, change.kind, change.flow),
        }
    }

    fn flush(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        self.transmit(now, cx.filter, cx.log);
    }

    fn control(&mut self, req: &Request, cx: &mut PartCx<'_>) -> Option<Reply> {
        let now = Instant::now();
        let reply = match req {
            Request::Commit => self.start_commit(cx),
            Request::Bulk => {
                self.send_bulk();
                Ok(Vec::new())
            }
            Request::RequestResync => {
                self.request_resync();
                Ok(Vec::new())
            }
            Request::ResetTimers => {
                self.reset_timers(now, cx.log);
                Ok(Vec::new())
            }
            Request::Dump(Which::External, format) => return Some(Ok(self.dump_external(*format))),
            Request::FlushCache(which) => {
                if matches!(which, Which::Internal | Which::All) {
                    self.flush_internal();
                }
                if matches!(which, Which::External | Which::All) {
                    self.flush_external(*which == Which::All);
                    cx.log.notice("external cache flushed");
                }
                return Some(Ok(Vec::new()));
            }
            _ => return None,
        };
        self.transmit(now, cx.filter, cx.log);
        Some(reply)
    }

    fn write_stats(&self, slot: Slot, out: &mut String) {
        match slot {
            Slot::AfterCache => self.external_text(out),
            Slot::AfterTraffic => self.summary_text(out),
            Slot::CacheSection => {
                let (n, mem) = self.external_size();
                out.push_str(&format!(
                    "cache:external\tactive objects:\t\t{n:>12}\n\tmemory (bytes):\t\t\t{mem:>12}\n\n"
                ));
            }
        }
    }

    fn section(&self, name: &str) -> Option<Vec<u8>> {
        self.section_text(name).map(String::into_bytes)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.json())
    }

    fn stop(&mut self) {
        // a commit in progress ends first; its client is answered by the
        // shutdown
        self.worker.stop();
    }
}
