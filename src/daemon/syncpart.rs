//! Sync inside ctrackd: the sans-I/O [`Engine`] driven by the core loop
//! as a [`Part`]; one reader thread per link socket forwards datagrams;
//! the part feeds the engine the cache's changes, carries out the
//! engine's actions (send, inject, bulk dump, log) and answers the sync
//! client commands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::Cache;
use super::config::CacheFilter;
use super::control::{Format, Reply, Request, Which};
use super::core::{Replicate, Resync};
use super::log::Logger;
use super::part::{Part, PartCx, Slot};
use crate::flow::{EventKind, Flow, ProtoInfo, json, proto, xml};
use crate::netlink::events::set_conntrack_groups;
use crate::sync::commit::{self, CommitOpts, Committer, Injector, PurgeTimer};
use crate::sync::config::SyncConfig;
use crate::sync::engine::{Action, Engine, LogLevel, Start};
use crate::sync::external::FlowKey;
use crate::sync::keyfile;
use crate::sync::link::{self, LinkInput, LinkSocket};
use crate::sync::stats;

/// How often link state is checked.
const LINK_CHECK: Duration = Duration::from_secs(1);

/// Sync's state in the core.
pub struct SyncPart {
    /// The configuration in effect.
    pub cfg: SyncConfig,
    engine: Engine,
    socks: Vec<Arc<LinkSocket>>,
    committer: Committer,
    injector: Option<Injector>,
    purge: PurgeTimer,
    next_link_check: Instant,
    /// Protocol info the internal cache does not keep (see `on_event`).
    protoinfo: HashMap<FlowKey, ProtoInfo>,
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
        let committer =
            Committer::open(None).map_err(|e| format!("sync: cannot open ctnetlink: {e}"))?;
        let opts = CommitOpts {
            commit_timeout: cfg.commit_timeout,
            tcp_window_tracking: cfg.tcp_window_tracking,
        };
        let injector = if cfg.disable_external_cache {
            Some(
                Injector::open(None, opts)
                    .map_err(|e| format!("sync: cannot open ctnetlink: {e}"))?,
            )
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
            committer,
            injector,
            purge: PurgeTimer::default(),
            next_link_check: Instant::now() + LINK_CHECK,
            protoinfo: HashMap::new(),
            event_fd,
        })
    }

    /// Port ids of our own ctnetlink sockets: events they cause are never
    /// replicated (commits and injections).
    fn portids(&self) -> Vec<u32> {
        let mut v = vec![self.committer.portid()];
        if let Some(i) = &self.injector {
            v.push(i.portid());
        }
        v
    }

    /// Tells the engine about a change of the internal cache.
    ///
    /// The internal cache keeps only the TCP state of a flow's protocol
    /// info, and update events carry it only when it changed (a mark
    /// change has none): for SCTP and DCCP flows (and TCP with
    /// `TCPWindowTracking`, whose window scales travel), the last known
    /// protocol info is kept here, so every message carries it.
    pub fn on_event(&mut self, now: Instant, kind: EventKind, f: &Flow) {
        let keeps = match f.orig.proto {
            proto::SCTP | proto::DCCP => true,
            proto::TCP => self.cfg.tcp_window_tracking,
            _ => false,
        };
        if !keeps {
            self.engine.on_event(now, kind, f);
            return;
        }
        let key = FlowKey::of(f);
        if kind == EventKind::Destroy {
            self.protoinfo.remove(&key);
            self.engine.on_event(now, kind, f);
            return;
        }
        let known = self.protoinfo.entry(key).or_default();
        *known = merge_protoinfo(*known, f.protoinfo);
        if *known == f.protoinfo {
            self.engine.on_event(now, kind, f);
        } else {
            let mut full = f.clone();
            full.protoinfo = *known;
            self.engine.on_event(now, kind, &full);
        }
    }

    /// Handles what a link's reader delivered.
    pub fn on_input(&mut self, now: Instant, input: LinkInput) {
        match input {
            LinkInput::Datagram { link, bytes, src } => {
                self.engine.on_datagram(now, link, &bytes, src)
            }
            LinkInput::RecvError(link) => self.engine.note_recv_error(link),
        }
    }

    /// When the part next needs [`SyncPart::run_timers`].
    fn deadline(&self) -> Instant {
        let mut d = self.next_link_check;
        for t in [self.engine.next_deadline(), self.purge.deadline()]
            .into_iter()
            .flatten()
        {
            d = d.min(t);
        }
        d
    }

    /// Runs what is due: engine timers, the `-t` purge, link checks.
    fn run_timers(
        &mut self,
        now: Instant,
        filter: &CacheFilter,
        internal: &mut Cache,
        log: &mut Logger,
    ) {
        if self.engine.next_deadline().is_some_and(|t| t <= now) {
            self.engine.on_timeout(now);
        }
        if self.purge.take_due(now) {
            log.notice("flushing kernel conntrack table (scheduled)");
            match commit::purge_kernel_table(&mut self.committer, &|f| !filter.accepts(f)) {
                Ok((n, failed)) => log.notice(&format!(
                    "kernel table purged: {n} entries deleted, {failed} failed"
                )),
                Err(e) => log.error(&format!("purging the kernel table failed: {e}")),
            }
            internal.clear();
            self.flush_internal();
        }
        if self.next_link_check <= now {
            self.next_link_check = now + LINK_CHECK;
            for (i, l) in self.cfg.links.iter().enumerate() {
                if let Ok(up) = link::interface_up(&l.interface) {
                    self.engine.set_link_up(i, up);
                }
            }
        }
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
                        let sent = self.socks.get(link).map(|s| s.send(&datagram));
                        if !matches!(sent, Some(Ok(()))) {
                            self.engine.note_send_error(link);
                        }
                    }
                    Action::Inject { op, flow } => {
                        if let Some(inj) = self.injector.as_mut()
                            && let Err(e) = inj.apply(op, &flow)
                        {
                            log.warning(&format!("sync: inject failed: {e}"));
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
            let engine = &mut self.engine;
            if let Err(e) = self.committer.dump(&mut |f| {
                if filter.accepts(f) {
                    engine.bulk_flow(f);
                }
                Ok(())
            }) {
                log.error(&format!("sync: kernel dump for the bulk send failed: {e}"));
                return;
            }
        }
    }

    /// `-c`: commits the external cache into the kernel.
    fn commit(&mut self, log: &mut Logger) -> Result<Vec<u8>, String> {
        if self.cfg.disable_external_cache {
            return Ok(Vec::new());
        }
        log.notice("committing external cache");
        self.purge.cancel();
        let opts = CommitOpts {
            commit_timeout: self.cfg.commit_timeout,
            tcp_window_tracking: self.cfg.tcp_window_tracking,
        };
        let r = commit::commit_external(
            &mut self.committer,
            self.engine.external(),
            Instant::now(),
            &opts,
        )
        .map_err(|e| format!("commit failed: {e}"))?;
        for l in r.log_lines() {
            log.notice(&l);
        }
        for (f, e) in &r.failed {
            let mut line = Vec::new();
            crate::flow::text::write_line(&mut line, f, &crate::flow::text::TextOptions::default());
            log.error(&format!(
                "commit-create: {}: {}",
                crate::netlink::client::errno_text(*e),
                String::from_utf8_lossy(&line)
            ));
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
        self.protoinfo.clear();
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

/// The flow sync replicates for an event: the cache's merged state plus
/// what the cache does not keep (helper, labels, NAT sequence, SYN proxy,
/// protocol info beyond the TCP state: SCTP/DCCP state, verification
/// tags, window scales; sync remembers those across events that omit
/// them).
fn sync_view(mut f: Flow, ev: &Flow) -> Flow {
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

impl Part for SyncPart {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.deadline())
    }

    fn on_timer(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        self.run_timers(now, cx.filter, cx.internal, cx.log);
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
            Request::Commit => {
                // Our own commit would flood our event socket with one NEW
                // per entry (and make the kernel build them: ~50% of the
                // commit's cost). Leave the groups while committing; the
                // resync right after catches up with everything.
                let paused = self
                    .event_fd
                    .is_some_and(|fd| set_conntrack_groups(fd, false));
                let r = self.commit(cx.log);
                if paused {
                    if let Some(fd) = self.event_fd {
                        set_conntrack_groups(fd, true);
                    }
                    cx.resync = Some((Instant::now(), Resync::AfterCommit));
                }
                r
            }
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
}

/// Protocol info after an event: what the event reports, over what was
/// known (fields the event leaves out keep their old values).
fn merge_protoinfo(known: ProtoInfo, ev: ProtoInfo) -> ProtoInfo {
    match (known, ev) {
        (k, ProtoInfo::None) => k,
        (ProtoInfo::Tcp(k), ProtoInfo::Tcp(e)) => ProtoInfo::Tcp(crate::flow::TcpInfo {
            state: e.state.or(k.state),
            wscale: [e.wscale[0].or(k.wscale[0]), e.wscale[1].or(k.wscale[1])],
            flags: [e.flags[0].or(k.flags[0]), e.flags[1].or(k.flags[1])],
        }),
        (
            ProtoInfo::Sctp {
                state: ks,
                vtag: kv,
            },
            ProtoInfo::Sctp { state, vtag },
        ) => ProtoInfo::Sctp {
            state: state.or(ks),
            vtag: [vtag[0].or(kv[0]), vtag[1].or(kv[1])],
        },
        (
            ProtoInfo::Dccp {
                state: ks,
                role: kr,
                handshake_seq: kh,
            },
            ProtoInfo::Dccp {
                state,
                role,
                handshake_seq,
            },
        ) => ProtoInfo::Dccp {
            state: state.or(ks),
            role: role.or(kr),
            handshake_seq: handshake_seq.or(kh),
        },
        (_, e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protoinfo_merges_what_events_leave_out() {
        let sctp = ProtoInfo::Sctp {
            state: Some(3),
            vtag: [Some(0x1122), Some(0x3344)],
        };
        // a mark-only update has no protocol info: the known one stays
        assert_eq!(merge_protoinfo(sctp, ProtoInfo::None), sctp);
        // a state change without tags keeps the tags
        let moved = ProtoInfo::Sctp {
            state: Some(4),
            vtag: [None, None],
        };
        assert_eq!(
            merge_protoinfo(sctp, moved),
            ProtoInfo::Sctp {
                state: Some(4),
                vtag: [Some(0x1122), Some(0x3344)],
            }
        );
        let tcp = |state, ws| {
            ProtoInfo::Tcp(crate::flow::TcpInfo {
                state,
                wscale: [ws, ws],
                ..Default::default()
            })
        };
        assert_eq!(
            merge_protoinfo(tcp(Some(3), Some(7)), tcp(Some(5), None)),
            tcp(Some(5), Some(7))
        );
        assert_eq!(merge_protoinfo(ProtoInfo::None, sctp), sctp);
    }
}
