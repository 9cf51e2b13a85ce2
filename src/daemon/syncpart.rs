//! Sync inside ctrackd: the sans-I/O [`Engine`] lives in the core; one
//! reader thread per link socket forwards datagrams; the core feeds the
//! engine its cache changes, carries out the engine's actions (send,
//! inject, bulk dump, log) and answers the sync client commands.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::cache::Cache;
use super::config::CacheFilter;
use super::control::Format;
use super::core::Input;
use super::log::Logger;
use crate::flow::{EventKind, Flow, ProtoInfo, json, proto, xml};
use crate::sync::commit::{self, CommitOpts, Committer, Injector, PurgeTimer};
use crate::sync::config::SyncConfig;
use crate::sync::engine::{Action, Engine, LogLevel, Start};
use crate::sync::external::FlowKey;
use crate::sync::keyfile;
use crate::sync::link::{self, LinkSocket};
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
}

impl SyncPart {
    /// Opens the link sockets (and their reader threads), the commit
    /// socket and the engine.
    pub fn start(cfg: SyncConfig, tx: Sender<Input>, log: &mut Logger) -> Result<SyncPart, String> {
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
            let (s, tx) = (s.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("sync-link{i}"))
                .spawn(move || reader(i, s, tx))
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
        })
    }

    /// Port ids of our own ctnetlink sockets: events they cause are never
    /// replicated (commits and injections).
    pub fn own_portids(&self) -> Vec<u32> {
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

    /// Handles a datagram from link `link`.
    pub fn on_datagram(&mut self, now: Instant, link: usize, bytes: &[u8], src: Option<IpAddr>) {
        self.engine.on_datagram(now, link, bytes, src);
    }

    /// A link socket failed to receive.
    pub fn on_recv_error(&mut self, link: usize) {
        self.engine.note_recv_error(link);
    }

    /// When the part next needs [`SyncPart::on_timer`].
    pub fn next_deadline(&self) -> Instant {
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
    pub fn on_timer(
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
    pub fn transmit(&mut self, now: Instant, filter: &CacheFilter, log: &mut Logger) {
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
    pub fn commit(&mut self, log: &mut Logger) -> Result<Vec<u8>, String> {
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
    pub fn flush_external(&mut self, cancel_purge: bool) {
        self.engine.external_mut().flush();
        if cancel_purge {
            self.purge.cancel();
        }
    }

    /// `-f internal`: the engine forgets the replicated flows too.
    pub fn flush_internal(&mut self) {
        self.engine.flush_internal();
        self.protoinfo.clear();
    }

    /// `-n`: asks the peer for a full resync.
    pub fn request_resync(&mut self) {
        self.engine.request_resync();
    }

    /// `-B`: sends every replicated flow to the peer.
    pub fn send_bulk(&mut self) {
        self.engine.send_bulk();
    }

    /// `-t`: flush the kernel table after PurgeTimeout.
    pub fn reset_timers(&mut self, now: Instant, log: &mut Logger) {
        if let Some(line) = self.purge.schedule(now, self.cfg.purge_timeout) {
            log.notice(&line);
        }
    }

    /// `-e`: the external cache in the requested format.
    pub fn dump_external(&self, format: Format) -> Vec<u8> {
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
    pub fn external_text(&self, out: &mut String) {
        match &self.injector {
            Some(i) => stats::external_inject(out, &i.stats()),
            None => stats::external_cache(out, self.engine.external()),
        }
    }

    /// The sync summary of `-s`.
    pub fn summary_text(&self, out: &mut String) {
        stats::summary(out, &self.engine);
    }

    /// `-s network|link|queue|rsqueue`.
    pub fn section_text(&self, section: &str) -> Option<String> {
        let mut s = String::new();
        match section {
            "network" => stats::network(&mut s, &self.engine),
            "link" | "multicast" => stats::link(&mut s, &self.engine),
            "queue" => stats::queue(&mut s, &self.engine),
            "rsqueue" => stats::rsqueue(&mut s, &self.engine),
            _ => return None,
        }
        Some(s)
    }

    /// External cache size and memory (for `-s cache`).
    pub fn external_size(&self) -> (usize, usize) {
        let e = self.engine.external();
        (e.len(), e.memory())
    }

    /// The counters as JSON (web API).
    pub fn to_json(&self) -> serde_json::Value {
        let n = self.engine.net_stats();
        let q = self.engine.queue_stats();
        let links: Vec<serde_json::Value> = self
            .engine
            .links()
            .iter()
            .map(|l| {
                serde_json::json!({
                    "interface": l.name, "up": l.up, "active": l.active,
                })
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

/// A link's reader thread.
fn reader(link: usize, sock: Arc<LinkSocket>, tx: Sender<Input>) {
    let mut buf = vec![0u8; 65536];
    let mut failures = 0u32;
    loop {
        let input = match sock.recv(&mut buf) {
            Ok((n, src)) => {
                failures = 0;
                Input::SyncDatagram {
                    link,
                    bytes: buf[..n].to_vec(),
                    src: Some(src),
                }
            }
            Err(_) => {
                failures += 1;
                if failures > 1000 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                Input::SyncRecvError(link)
            }
        };
        if tx.send(input).is_err() {
            return;
        }
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
