//! The WAN-change flush inside ctrackd: the [`WanWatch`] (the one loop
//! that runs the tracker's actions) driven by the core loop, its
//! rtnetlink reader feeding the loop's channel, its notes in the log.

use std::time::Instant;

use super::config::Config;
use super::log::Logger;
use super::part::{Part, PartCx, Slot};
use crate::wan::config::WanConfig;
use crate::wan::watch::{Note, Reader, WanWatch, WatchInput, spawn_reader};

/// The WAN watch's state in the daemon.
pub struct WanPart {
    watch: WanWatch,
    _reader: Reader,
}

/// Writes the watch's notes to the log.
fn log_notes(notes: Vec<Note>, log: &mut Logger) {
    for n in notes {
        log.log(n.severity(), &n.log_line());
    }
}

impl WanPart {
    /// Subscribes to address/link changes (before dumping the baseline,
    /// so nothing is missed) and starts the reader thread, which passes
    /// what it reads to `deliver` (the core loop's channel).
    pub fn start(
        cfg: WanConfig,
        deliver: impl FnMut(WatchInput) -> bool + Send + 'static,
        log: &mut Logger,
    ) -> Result<WanPart, String> {
        let (watch, socket, notes) =
            WanWatch::open(cfg, None).map_err(|e| format!("wan: cannot start the watch: {e}"))?;
        log_notes(notes, log);
        let reader = spawn_reader(socket, deliver)
            .map_err(|e| format!("wan: cannot start the rtnetlink thread: {e}"))?;
        let c = watch.config();
        log.notice(&format!(
            "wan: watching {} (Flush {}, Debounce {} ms)",
            c.interfaces.join(", "),
            c.flush.as_str(),
            c.debounce.as_millis()
        ));
        Ok(WanPart {
            watch,
            _reader: reader,
        })
    }

    /// Handles what the reader delivered.
    pub fn on_input(&mut self, now: Instant, input: WatchInput, log: &mut Logger) {
        log_notes(self.watch.handle(now, input), log);
    }

    fn text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.watch.stats.write_text(&mut out, &self.watch.status());
        out
    }
}

impl Part for WanPart {
    fn name(&self) -> &'static str {
        "wan"
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.watch.next_deadline()
    }

    fn on_timer(&mut self, now: Instant, cx: &mut PartCx<'_>) {
        log_notes(self.watch.on_timer(now), cx.log);
    }

    fn write_stats(&self, slot: Slot, out: &mut String) {
        if slot == Slot::AfterTraffic {
            out.push_str(&String::from_utf8_lossy(&self.text()));
        }
    }

    fn section(&self, name: &str) -> Option<Vec<u8>> {
        (name == "wan").then(|| self.text())
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        let mut out = Vec::new();
        self.watch.stats.write_json(&mut out, &self.watch.status());
        Some(serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null))
    }

    fn reload(&mut self, now: Instant, _old: &Config, new: &Config, log: &mut Logger) {
        if let Some(cfg) = &new.wan_config {
            log_notes(self.watch.reconfigure(now, cfg.clone()), log);
        }
    }
}
