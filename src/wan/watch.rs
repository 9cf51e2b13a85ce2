//! The WAN watch as ctrackd runs it: [`WanWatch`] owns the sans-I/O
//! [`Tracker`], the flush [`Executor`] and the counters, and carries out
//! the tracker's actions in one place ([`WanWatch::run_actions`]); a
//! reader thread ([`spawn_reader`]) turns the rtnetlink socket into
//! [`WatchInput`]s for whoever owns the watch.
//!
//! ctrackd's core feeds the reader's inputs to [`WanWatch::handle`] and
//! calls [`WanWatch::on_timer`] at [`WanWatch::next_deadline`]; the
//! namespace tests (tests/wan_watch.rs) drive the same object the same
//! way, so what they prove is what the daemon runs.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use super::config::WanConfig;
use super::flush::{Executor, FlushOptions, FlushReport};
use super::stats::WanStats;
use super::tracker::{Action, Change, FlushOrder, IfaceStatus, Input, Tracker};
use crate::netlink::Error;
use crate::netlink::events::poll_readable;
use crate::netlink::route::{self as rtnl, Recv, RtMsg, RtnlWatch};
use crate::severity::Severity;

/// What the reader thread delivers to the watch's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchInput {
    /// Address and link messages, in the kernel's order.
    Messages(Vec<RtMsg>),
    /// The socket overran (ENOBUFS): messages were lost.
    Overrun,
    /// A receive failed; `fatal` when the reader gave up after too many.
    Failed {
        /// The socket error.
        error: String,
        /// The reader thread has stopped.
        fatal: bool,
    },
}

/// Something that happened, for the log (and the tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A watched interface changed.
    Changed(Change),
    /// A flush ran.
    Flushed(FlushOrder, FlushReport),
    /// A flush failed (the tracker retries it later).
    FlushFailed(FlushOrder, String),
    /// Links and addresses were dumped again (after an overrun or a new
    /// device).
    Resynced,
    /// Links and addresses could not be dumped again.
    ResyncFailed(String),
    /// The rtnetlink socket overran; a dump follows.
    Overrun,
    /// The rtnetlink socket failed to receive.
    ReaderFailed {
        /// The socket error.
        error: String,
        /// The reader thread has stopped: changes are no longer seen.
        fatal: bool,
    },
}

impl Note {
    /// How serious the note is.
    pub fn severity(&self) -> Severity {
        match self {
            Note::Changed(_) | Note::Flushed(..) | Note::Resynced => Severity::Notice,
            Note::Overrun => Severity::Warning,
            Note::FlushFailed(..) | Note::ResyncFailed(_) | Note::ReaderFailed { .. } => {
                Severity::Error
            }
        }
    }

    /// The one-line log message for this note.
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
            Note::ResyncFailed(e) => format!("wan: cannot re-read addresses: {e}"),
            Note::Overrun => "wan: rtnetlink overrun, re-reading addresses".to_string(),
            Note::ReaderFailed { error, fatal } => format!(
                "wan: rtnetlink: {error}{}",
                if *fatal { "; giving up" } else { "" }
            ),
        }
    }
}

/// Rounds of actions one input may lead to: a flush reports back and a
/// resync feeds a snapshot, each of which may order more; the cap keeps a
/// misbehaving kernel from spinning the owner's thread.
const MAX_ROUNDS: usize = 16;

/// The WAN watch: tracker, executor and counters, in this or a named
/// network namespace.
#[derive(Debug)]
pub struct WanWatch {
    tracker: Tracker,
    exec: Executor,
    netns: Option<String>,
    /// The counters (for `ctrackd -s wan` and the JSON API).
    pub stats: WanStats,
}

impl WanWatch {
    /// Subscribes to link and address changes, then dumps them as the
    /// baseline (in this order, so no change falls in between), and opens
    /// ctnetlink for the flushes. Returns the watch, the subscribed socket
    /// for [`spawn_reader`], and the notes of the baseline.
    pub fn open(
        cfg: WanConfig,
        netns: Option<&str>,
    ) -> Result<(WanWatch, RtnlWatch, Vec<Note>), Error> {
        let mut socket = RtnlWatch::open(netns)?;
        let mut snap = Vec::new();
        socket.dump(&mut snap)?;
        let exec = Executor::open(netns)?;
        let mut watch = WanWatch {
            tracker: Tracker::new(cfg),
            exec,
            netns: netns.map(str::to_string),
            stats: WanStats::default(),
        };
        let now = Instant::now();
        let actions = watch.tracker.handle(now, Input::Snapshot(&snap));
        let notes = watch.run_actions(now, actions);
        Ok((watch, socket, notes))
    }

    /// The configuration in effect.
    pub fn config(&self) -> &WanConfig {
        self.tracker.config()
    }

    /// When [`WanWatch::on_timer`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracker.next_deadline()
    }

    /// The watched interfaces now.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.tracker.status()
    }

    /// Handles what the reader delivered.
    pub fn handle(&mut self, now: Instant, input: WatchInput) -> Vec<Note> {
        let mut notes = Vec::new();
        let actions = match input {
            WatchInput::Messages(msgs) => {
                let mut actions = Vec::new();
                for m in &msgs {
                    actions.extend(self.tracker.handle(now, Input::Rt(m)));
                }
                actions
            }
            WatchInput::Overrun => {
                notes.push(Note::Overrun);
                self.tracker.handle(now, Input::Overrun)
            }
            WatchInput::Failed { error, fatal } => {
                notes.push(Note::ReaderFailed { error, fatal });
                Vec::new()
            }
        };
        notes.extend(self.run_actions(now, actions));
        notes
    }

    /// Runs what is due (debounced flushes, retries).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Note> {
        let actions = self.tracker.handle(now, Input::Tick);
        self.run_actions(now, actions)
    }

    /// Applies a new configuration (SIGHUP): interfaces that stay keep
    /// their state.
    pub fn reconfigure(&mut self, now: Instant, cfg: WanConfig) -> Vec<Note> {
        let actions = self.tracker.reconfigure(cfg);
        self.run_actions(now, actions)
    }

    /// Carries out the tracker's actions and what they lead to: the one
    /// place where WAN flushes and re-reads happen.
    fn run_actions(&mut self, now: Instant, mut actions: Vec<Action>) -> Vec<Note> {
        let mut notes = Vec::new();
        let mut rounds = 0;
        while !actions.is_empty() && rounds < MAX_ROUNDS {
            rounds += 1;
            let mut more = Vec::new();
            for action in actions {
                let wall = crate::flow::now_secs();
                match action {
                    Action::Changed(c) => {
                        self.stats.record_change(wall, &c);
                        notes.push(Note::Changed(c));
                    }
                    Action::Resync => {
                        self.stats.record_resync();
                        match rtnl::dump(self.netns.as_deref()) {
                            Ok(snap) => {
                                notes.push(Note::Resynced);
                                more.extend(self.tracker.handle(now, Input::Snapshot(&snap)));
                            }
                            Err(e) => notes.push(Note::ResyncFailed(e.to_string())),
                        }
                    }
                    Action::Flush(order) => {
                        let result =
                            self.exec
                                .run(&order.rule, &FlushOptions::default(), &mut |_, _, _| {});
                        let ok = result.is_ok();
                        match result {
                            Ok(report) => {
                                self.stats.record_flush(wall, &order, Ok(&report));
                                notes.push(Note::Flushed(order, report));
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                self.stats.record_flush(wall, &order, Err(msg.clone()));
                                notes.push(Note::FlushFailed(order, msg));
                            }
                        }
                        more.extend(self.tracker.handle(Instant::now(), Input::FlushDone { ok }));
                    }
                }
            }
            actions = more;
        }
        notes
    }
}

/// Receive failures in a row after which the reader gives up.
const MAX_FAILURES: u32 = 100;

/// How often the reader checks whether it should stop.
const READER_POLL_MS: i32 = 200;

/// The reader thread of a WAN watch.
#[derive(Debug)]
pub struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    /// Stops the thread and waits for it (its socket is closed after).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the thread that reads `socket` and passes each receive to
/// `deliver`, until `deliver` returns false, [`Reader::stop`] is called, or
/// receives failed [`MAX_FAILURES`] times in a row (then it delivers a
/// fatal [`WatchInput::Failed`] and ends).
pub fn spawn_reader(
    mut socket: RtnlWatch,
    mut deliver: impl FnMut(WatchInput) -> bool + Send + 'static,
) -> io::Result<Reader> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = std::thread::Builder::new()
        .name("rtnetlink".into())
        .spawn(move || {
            let mut failures = 0u32;
            while !stopped.load(Ordering::Relaxed) {
                let input = match receive(&mut socket) {
                    Ok(None) => continue,
                    Ok(Some(input)) => {
                        failures = 0;
                        input
                    }
                    Err(e) => {
                        failures += 1;
                        WatchInput::Failed {
                            error: e.to_string(),
                            fatal: failures > MAX_FAILURES,
                        }
                    }
                };
                let fatal = matches!(input, WatchInput::Failed { fatal: true, .. });
                if !deliver(input) || fatal {
                    return;
                }
            }
        })?;
    Ok(Reader {
        stop,
        handle: Some(handle),
    })
}

/// Waits up to [`READER_POLL_MS`] for the socket and receives one
/// datagram: `None` when nothing (or nothing decodable) arrived.
fn receive(socket: &mut RtnlWatch) -> io::Result<Option<WatchInput>> {
    if !poll_readable(socket.fd(), READER_POLL_MS)? {
        return Ok(None);
    }
    let mut msgs = Vec::new();
    Ok(match socket.recv(&mut msgs)? {
        Recv::Messages if !msgs.is_empty() => Some(WatchInput::Messages(msgs)),
        Recv::Overrun => Some(WatchInput::Overrun),
        Recv::Messages | Recv::Empty => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wan::rule::Rule;
    use std::time::Duration;

    fn order() -> FlushOrder {
        FlushOrder {
            rule: Rule::stale(&["10.9.2.1".parse().unwrap()]),
            interfaces: vec!["wan0".into()],
            retry: false,
        }
    }

    #[test]
    fn notes_say_what_happened_in_one_line() {
        let changed = Note::Changed(Change {
            interface: "pppoe-wan".into(),
            added: vec!["10.9.2.3".parse().unwrap()],
            removed: vec!["100.64.0.5".parse().unwrap()],
            link: Some(false),
        });
        assert_eq!(
            changed.log_line(),
            "wan: pppoe-wan link down +10.9.2.3 -100.64.0.5"
        );
        let up = Note::Changed(Change {
            interface: "wan0".into(),
            added: vec![],
            removed: vec![],
            link: Some(true),
        });
        assert_eq!(up.log_line(), "wan: wan0 link up");
        let mut report = FlushReport {
            deleted: 2,
            already_gone: 1,
            errors: 0,
            elapsed: Duration::from_millis(81),
            ..FlushReport::default()
        };
        let rule = order().rule.to_string();
        assert_eq!(
            Note::Flushed(order(), report.clone()).log_line(),
            format!("wan: flushed {rule}: 2 deleted, 1 already gone, 0 errors in 81 ms")
        );
        report.by_reason[0] = 2;
        let with_reasons = Note::Flushed(order(), report.clone()).log_line();
        assert!(
            with_reasons.ends_with(&format!(" ({})", report.reasons_text())),
            "{with_reasons}"
        );
        assert_eq!(
            Note::FlushFailed(order(), "Operation not permitted".into()).log_line(),
            format!("wan: flush of {rule} failed: Operation not permitted")
        );
        assert_eq!(
            Note::ResyncFailed("EPERM".into()).log_line(),
            "wan: cannot re-read addresses: EPERM"
        );
        let failed = |fatal| Note::ReaderFailed {
            error: "EIO".into(),
            fatal,
        };
        assert_eq!(failed(false).log_line(), "wan: rtnetlink: EIO");
        assert_eq!(failed(true).log_line(), "wan: rtnetlink: EIO; giving up");
    }

    #[test]
    fn failures_are_errors_and_overruns_warnings() {
        assert_eq!(Note::Resynced.severity(), Severity::Notice);
        assert_eq!(Note::Overrun.severity(), Severity::Warning);
        assert_eq!(
            Note::FlushFailed(order(), String::new()).severity(),
            Severity::Error
        );
        assert_eq!(
            Note::Flushed(order(), FlushReport::default()).severity(),
            Severity::Notice
        );
        assert_eq!(
            Note::ResyncFailed(String::new()).severity(),
            Severity::Error
        );
    }
}
