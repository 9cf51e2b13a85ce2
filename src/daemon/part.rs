//! The daemon's optional parts (sync, Stats mode, WAN watch, web server) as one
//! trait, so the shell drives whichever are configured without a
//! `#[cfg(feature)]` at every step: the features are named only in
//! `parts.rs` (which parts exist) and where each part's own input arrives.

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::cache::Cache;
use super::config::{CacheFilter, Config};
use super::control::{Reply, Request};
use super::core::{Replicate, Resync};
use super::log::Logger;

/// What a part may use of the daemon while it works.
pub struct PartCx<'a> {
    /// The internal cache (sync's scheduled purge empties it).
    pub internal: &'a mut Cache,
    /// The Filter in effect.
    pub filter: &'a CacheFilter,
    /// The log.
    pub log: &'a mut Logger,
    /// A resync of the internal cache the part asks for, and when.
    pub resync: Option<(Instant, Resync)>,
    /// Where the answer to the control request being handled goes. A
    /// part that answers later (a commit running on another thread)
    /// takes it; the reply it returns is then not sent.
    pub answer: Option<Sender<Reply>>,
}

/// Where a part's lines go in the `ctrackd -s` summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// After the internal cache's block (sync: the external cache).
    AfterCache,
    /// After the traffic counters (sync's summary, the WAN block).
    AfterTraffic,
    /// Inside `-s cache`, after the internal cache.
    CacheSection,
}

/// One optional part of the daemon. Every method has a do-nothing
/// default, so a part implements only what it takes part in.
pub trait Part {
    /// Its name: the key of its counters in the JSON stats.
    fn name(&self) -> &'static str;

    /// When it next needs [`Part::on_timer`].
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Runs what is due at `now`.
    fn on_timer(&mut self, _now: Instant, _cx: &mut PartCx<'_>) {}

    /// Port ids of its own ctnetlink sockets: the events they cause are
    /// not reported back to it.
    fn own_portids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Whether it wants [`Part::on_change`] (reporting costs a lookup).
    fn wants_changes(&self) -> bool {
        false
    }

    /// A change of the internal cache (from an event or a resync).
    fn on_change(&mut self, _now: Instant, _change: Replicate<'_>) {}

    /// After a batch of changes or inputs: send what they produced.
    fn flush(&mut self, _now: Instant, _cx: &mut PartCx<'_>) {}

    /// Answers a control request it owns; `None` when it does not.
    fn control(&mut self, _req: &Request, _cx: &mut PartCx<'_>) -> Option<Reply> {
        None
    }

    /// Appends its lines at `slot` of the `-s` output.
    fn write_stats(&self, _slot: Slot, _out: &mut String) {}

    /// The `-s NAME` section it owns, if `name` is one.
    fn section(&self, _name: &str) -> Option<Vec<u8>> {
        None
    }

    /// Its counters as JSON.
    fn to_json(&self) -> Option<serde_json::Value> {
        None
    }

    /// Reopens its log files (SIGHUP, after logrotate moved them).
    fn reopen_logs(&mut self, _log: &mut Logger) {}

    /// Takes the reloaded configuration (SIGHUP).
    fn reload(&mut self, _now: Instant, _old: &Config, _new: &Config, _log: &mut Logger) {}

    /// Stops its threads and releases its sockets.
    fn stop(&mut self) {}
}
