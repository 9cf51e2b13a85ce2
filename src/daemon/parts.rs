//! The configured parts, and each step of the shell's applied to all of
//! them: the one place that names the cargo features of the parts.

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::config::Config;
use super::control::{Reply, Request};
use super::core::Replicate;
use super::input::Input;
use super::log::Logger;
use super::part::{Part, PartCx, Slot};

/// The configured parts.
#[derive(Default)]
pub struct Parts {
    /// Sync, when a Sync block is configured.
    #[cfg(feature = "sync")]
    pub sync: Option<super::syncpart::SyncPart>,
    /// Stats mode, when a Stats block is configured (always built: it is
    /// small).
    pub stats: Option<super::statspart::StatsPart>,
    /// The WAN watch, when a WAN block is configured.
    #[cfg(feature = "wan")]
    pub wan: Option<super::wanpart::WanPart>,
    /// The web server, when a Web block is configured.
    #[cfg(feature = "web")]
    pub web: Option<super::webpart::WebPart>,
}

/// What the event reader shows each kernel event to as it arrives, before
/// the core sees it: the web's event streams, when the web part runs.
pub struct EventTap {
    #[cfg(feature = "web")]
    hub: Option<crate::web::Hub>,
}

impl EventTap {
    /// Shows one event to whoever listens.
    pub fn publish(&self, _ev: &crate::netlink::Event) {
        #[cfg(feature = "web")]
        if let Some(h) = &self.hub {
            h.publish(_ev);
        }
    }
}

impl Parts {
    /// Starts the parts `config` asks for (web, sync, WAN, in this
    /// order). Their threads send to the loop through `tx`; `event_fd` is
    /// the daemon's event socket (sync leaves its groups while it
    /// commits).
    pub fn start(
        config: &Config,
        tx: &Sender<Input>,
        event_fd: i32,
        log: &mut Logger,
    ) -> Result<Parts, String> {
        #[allow(unused_mut)] // without features there is nothing to start
        let mut parts = Parts::default();
        // each is used only by the parts this build has
        let _ = (tx, event_fd, &log);
        #[cfg(feature = "web")]
        if let Some(cfg) = config.web_config.clone() {
            let addr = cfg.socket_addr();
            parts.web = Some(super::webpart::WebPart::start(cfg, tx.clone())?);
            log.notice(&format!("web: listening on http://{addr}/"));
        }
        #[cfg(feature = "sync")]
        if let Some(cfg) = config.sync_config.clone() {
            let stx = tx.clone();
            let deliver = move |l| stx.send(Input::Sync(l)).is_ok();
            parts.sync = Some(super::syncpart::SyncPart::start(
                cfg,
                Some(event_fd),
                deliver,
                log,
            )?);
        }
        if let Some(cfg) = config.stats.clone() {
            parts.stats = Some(super::statspart::StatsPart::start(
                cfg,
                config.general.log.socket.clone(),
            )?);
        }
        #[cfg(feature = "wan")]
        if let Some(cfg) = config.wan_config.clone() {
            let wtx = tx.clone();
            let deliver = move |i| wtx.send(Input::Wan(i)).is_ok();
            parts.wan = Some(super::wanpart::WanPart::start(cfg, deliver, log)?);
        }
        let _ = config; // likewise
        Ok(parts)
    }

    /// The tap for the event reader.
    pub fn event_tap(&self) -> EventTap {
        EventTap {
            #[cfg(feature = "web")]
            hub: self.web.as_ref().map(|w| w.hub.clone()),
        }
    }

    /// Every configured part, in a fixed order (sync, stats, wan, web: the
    /// order of their lines in `-s`).
    pub fn iter(&self) -> impl Iterator<Item = &dyn Part> {
        let mut all: Vec<&dyn Part> = Vec::with_capacity(4);
        #[cfg(feature = "sync")]
        if let Some(p) = &self.sync {
            all.push(p);
        }
        if let Some(p) = &self.stats {
            all.push(p);
        }
        #[cfg(feature = "wan")]
        if let Some(p) = &self.wan {
            all.push(p);
        }
        #[cfg(feature = "web")]
        if let Some(p) = &self.web {
            all.push(p);
        }
        all.into_iter()
    }

    /// Every configured part, mutable, in the order of [`Parts::iter`].
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut dyn Part> {
        let mut all: Vec<&mut dyn Part> = Vec::with_capacity(4);
        #[cfg(feature = "sync")]
        if let Some(p) = &mut self.sync {
            all.push(p);
        }
        if let Some(p) = &mut self.stats {
            all.push(p);
        }
        #[cfg(feature = "wan")]
        if let Some(p) = &mut self.wan {
            all.push(p);
        }
        #[cfg(feature = "web")]
        if let Some(p) = &mut self.web {
            all.push(p);
        }
        all.into_iter()
    }

    /// The earliest deadline of any part.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.iter().filter_map(|p| p.next_deadline()).min()
    }

    /// Port ids whose events no part wants back.
    pub fn own_portids(&self) -> Vec<u32> {
        self.iter().flat_map(|p| p.own_portids()).collect()
    }

    /// Whether any part wants cache changes.
    pub fn want_changes(&self) -> bool {
        self.iter().any(|p| p.wants_changes())
    }

    /// Reports one change to every part that wants it.
    pub fn on_change(&mut self, now: Instant, change: Replicate<'_>) {
        for p in self.iter_mut().filter(|p| p.wants_changes()) {
            p.on_change(now, change);
        }
    }

    /// Lets every part send what the last changes produced.
    pub fn flush(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        for p in self.iter_mut() {
            p.flush(now, cx);
        }
    }

    /// Runs what is due in every part.
    pub fn on_timer(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        for p in self.iter_mut() {
            if p.next_deadline().is_some_and(|t| t <= now) {
                p.on_timer(now, cx);
            }
        }
    }

    /// The first answer a part gives to `req`.
    pub fn control(&mut self, req: &Request, cx: &mut PartCx<'_>) -> Option<Reply> {
        self.iter_mut().find_map(|p| p.control(req, cx))
    }

    /// Every part's lines at `slot`.
    pub fn write_stats(&self, slot: Slot, out: &mut String) {
        for p in self.iter() {
            p.write_stats(slot, out);
        }
    }

    /// The `-s NAME` section, from the part that owns it.
    pub fn section(&self, name: &str) -> Option<Vec<u8>> {
        self.iter().find_map(|p| p.section(name))
    }

    /// Adds every part's counters to the JSON object `v`.
    pub fn add_json(&self, v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            for p in self.iter() {
                if let Some(j) = p.to_json() {
                    o.insert(p.name().into(), j);
                }
            }
        }
    }

    /// Has every part reopen its log files (SIGHUP).
    pub fn reopen_logs(&mut self, log: &mut Logger) {
        for p in self.iter_mut() {
            p.reopen_logs(log);
        }
    }

    /// Passes the reloaded configuration to every part, and says which
    /// block changes need a restart (a part is added or removed only at
    /// start).
    pub fn reload(&mut self, now: Instant, old: &Config, new: &Config, log: &mut Logger) {
        for p in self.iter_mut() {
            p.reload(now, old, new, log);
        }
        if self.stats.is_some() != new.stats.is_some() {
            log.warning("adding or removing the Stats block takes effect at the next restart");
        }
        #[cfg(feature = "wan")]
        if self.wan.is_some() != new.wan_config.is_some() {
            log.warning("adding or removing the WAN block takes effect at the next restart");
        }
        #[cfg(feature = "sync")]
        if old.sync_config != new.sync_config {
            log.warning("Sync block changes take effect at the next restart");
        }
        #[cfg(feature = "web")]
        if old.web_config != new.web_config {
            log.warning("Web block changes take effect at the next restart");
        }
    }

    /// Stops every part.
    pub fn stop(&mut self) {
        for p in self.iter_mut() {
            p.stop();
        }
    }
}
