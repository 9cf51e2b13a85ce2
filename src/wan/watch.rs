//! The whole WAN watch in one object: the rtnetlink watch feeding the
//! tracker, the tracker's flush orders run by the executor, the stats kept
//! up to date. It owns its sockets and can run on its own thread
//! ([`Watcher::run`]) or be stepped from an event loop ([`Watcher::step`],
//! with [`Watcher::fd`] and [`Watcher::next_deadline`] for poll).
//!
//! The daemon may instead drive [`Tracker`] itself from its core loop and
//! run flushes wherever it likes; this module is the reference wiring (and
//! what the namespace tests run).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::WanConfig;
use super::flush::{Executor, FlushOptions, FlushReport};
use super::stats::WanStats;
use super::tracker::{Action, Change, FlushOrder, IfaceStatus, Input, Tracker};
use crate::netlink::Error;
use crate::netlink::events::poll_readable;
use crate::netlink::route::{Recv, RtMsg, RtnlWatch};

/// Something the owner may want to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A watched interface changed.
    Changed(Change),
    /// A flush ran.
    Flushed(FlushOrder, FlushReport),
    /// A flush failed (it is retried later).
    FlushFailed(FlushOrder, String),
    /// Links and addresses were dumped again (after an overrun or a new
    /// device).
    Resynced,
}

impl Note {
    /// The one-line log message for this note (without a prefix).
    pub fn log_line(&self) -> String {
        match self {
            Note::Changed(c) => {
                let mut s = format!("wan: {}", c.interface);
                match c.link {
                    Some(true) => s.push_str(" link up"),
                    Some(false) => s.push_str(" link down"),
                    None => {}
                }
                for a in &c.added {
                    s.push_str(&format!(" +{}", crate::flow::addr::ip_to_string(*a)));
                }
                for a in &c.removed {
                    s.push_str(&format!(" -{}", crate::flow::addr::ip_to_string(*a)));
                }
                s
            }
            Note::Flushed(o, r) => {
                let mut s = format!(
                    "wan: flushed {}: {} deleted, {} already gone, {} errors in {} ms",
                    o.rule,
                    r.deleted,
                    r.already_gone,
                    r.errors,
                    r.elapsed.as_millis()
                );
                let why = r.reasons_text();
                if !why.is_empty() {
                    s.push_str(&format!(" ({why})"));
                }
                s
            }
            Note::FlushFailed(o, e) => format!("wan: flush of {} failed: {e}", o.rule),
            Note::Resynced => "wan: links and addresses dumped again".to_string(),
        }
    }
}

/// Seconds since the epoch, for the stats.
fn wall() -> i64 {
    crate::flow::now_secs()
}

/// The WAN watch.
#[derive(Debug)]
pub struct Watcher {
    rtnl: RtnlWatch,
    tracker: Tracker,
    exec: Executor,
    opts: FlushOptions,
    msgs: Vec<RtMsg>,
    /// The counters (for `ctrackd -s` and the JSON API).
    pub stats: WanStats,
}

impl Watcher {
    /// Subscribes to link and address changes, dumps the current state as
    /// the baseline and opens the ctnetlink sockets, in this or the named
    /// network namespace.
    pub fn open(cfg: WanConfig, netns: Option<&str>) -> Result<Watcher, Error> {
        let mut rtnl = RtnlWatch::open(netns)?;
        rtnl.set_nonblocking(true)?;
        let exec = Executor::open(netns)?;
        let mut tracker = Tracker::new(cfg);
        let mut snap = Vec::new();
        rtnl.dump(&mut snap)?;
        tracker.handle(Instant::now(), Input::Snapshot(&snap));
        Ok(Watcher {
            rtnl,
            tracker,
            exec,
            opts: FlushOptions::default(),
            msgs: Vec::new(),
            stats: WanStats::default(),
        })
    }

    /// Changes how flushes run (dry run, kernel-side filtering).
    pub fn set_options(&mut self, opts: FlushOptions) {
        self.opts = opts;
    }

    /// The rtnetlink socket to poll for readability.
    pub fn fd(&self) -> i32 {
        self.rtnl.fd()
    }

    /// When [`Watcher::step`] has work even without events.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracker.next_deadline()
    }

    /// The watched interfaces now.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.tracker.status()
    }

    /// Applies a new configuration (SIGHUP).
    pub fn reconfigure(&mut self, cfg: WanConfig, notes: &mut Vec<Note>) -> Result<(), Error> {
        let actions = self.tracker.reconfigure(cfg);
        self.perform(Instant::now(), actions, notes)
    }

    /// Waits up to `max_wait` (less if a deadline comes first) for events,
    /// handles what arrived and what is due, and appends what happened to
    /// `notes`. Errors are socket errors; a failed flush is a note.
    pub fn step(&mut self, max_wait: Duration, notes: &mut Vec<Note>) -> Result<(), Error> {
        let now = Instant::now();
        let wait = match self.tracker.next_deadline() {
            Some(d) => d.saturating_duration_since(now).min(max_wait),
            None => max_wait,
        };
        // round up so we do not wake just before the deadline
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut actions = Vec::new();
        if poll_readable(self.rtnl.fd(), ms)? {
            loop {
                self.msgs.clear();
                match self.rtnl.recv(&mut self.msgs)? {
                    Recv::Empty => break,
                    Recv::Overrun => {
                        actions.extend(self.tracker.handle(Instant::now(), Input::Overrun))
                    }
                    Recv::Messages => {
                        let now = Instant::now();
                        for m in &self.msgs {
                            actions.extend(self.tracker.handle(now, Input::Rt(m)));
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        actions.extend(self.tracker.handle(now, Input::Tick));
        self.perform(now, actions, notes)
    }

    fn perform(
        &mut self,
        now: Instant,
        actions: Vec<Action>,
        notes: &mut Vec<Note>,
    ) -> Result<(), Error> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Changed(c) => {
                    self.stats.record_change(wall(), &c);
                    notes.push(Note::Changed(c));
                }
                Action::Resync => {
                    let mut snap = Vec::new();
                    self.rtnl.dump(&mut snap)?;
                    self.stats.record_resync();
                    notes.push(Note::Resynced);
                    queue.extend(self.tracker.handle(now, Input::Snapshot(&snap)));
                }
                Action::Flush(order) => {
                    let result = self.exec.run(&order.rule, &self.opts, &mut |_, _, _| {});
                    let ok = result.is_ok();
                    match result {
                        Ok(r) => {
                            self.stats.record_flush(wall(), &order, Ok(&r));
                            notes.push(Note::Flushed(order, r));
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            self.stats.record_flush(wall(), &order, Err(msg.clone()));
                            notes.push(Note::FlushFailed(order, msg));
                        }
                    }
                    queue.extend(self.tracker.handle(Instant::now(), Input::FlushDone { ok }));
                }
            }
        }
        Ok(())
    }

    /// Runs until `stop` is set (checked at least every 200 ms), passing
    /// every note to `on_note`. For a dedicated thread.
    pub fn run(&mut self, stop: &AtomicBool, on_note: &mut dyn FnMut(&Note)) -> Result<(), Error> {
        let mut notes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            self.step(Duration::from_millis(200), &mut notes)?;
            for n in notes.drain(..) {
                on_note(&n);
            }
        }
        Ok(())
    }
}
