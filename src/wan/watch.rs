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
use super::rule::Rule;
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

/// The two things the watch asks of the kernel, behind a trait so its
/// action loop is unit-tested without sockets.
pub trait WanKernel: Send {
    /// Dumps links and addresses again (after an overrun or a new device).
    fn addresses(&mut self) -> Result<Vec<RtMsg>, Error>;
    /// Deletes the flows `rule` selects.
    fn flush(&mut self, rule: &Rule) -> Result<FlushReport, Error>;
}

/// The real kernel of a network namespace: a fresh rtnetlink socket per
/// re-read (the watch socket belongs to the reader thread) and the flush
/// executor.
struct NetnsKernel {
    exec: Executor,
    netns: Option<String>,
}

impl WanKernel for NetnsKernel {
    fn addresses(&mut self) -> Result<Vec<RtMsg>, Error> {
        rtnl::dump(self.netns.as_deref())
    }

    fn flush(&mut self, rule: &Rule) -> Result<FlushReport, Error> {
        self.exec
            .run(rule, &FlushOptions::default(), &mut |_, _, _| {})
    }
}

/// The WAN watch: tracker, kernel and counters.
pub struct WanWatch {
    tracker: Tracker,
    kernel: Box<dyn WanKernel>,
    /// The counters (for `ctrackd -s wan` and the JSON API).
    pub stats: WanStats,
}

impl WanWatch {
    /// Subscribes to link and address changes in this or the named
    /// network namespace, then dumps them as the baseline (in this order,
    /// so no change falls in between), and opens ctnetlink for the
    /// flushes. Returns the watch, the subscribed socket for
    /// [`spawn_reader`], and the notes of the baseline.
    pub fn open(
        cfg: WanConfig,
        netns: Option<&str>,
    ) -> Result<(WanWatch, RtnlWatch, Vec<Note>), Error> {
        let mut socket = RtnlWatch::open(netns)?;
        let mut snap = Vec::new();
        socket.dump(&mut snap)?;
        let kernel = NetnsKernel {
            exec: Executor::open(netns)?,
            netns: netns.map(str::to_string),
        };
        let (watch, notes) = WanWatch::with_kernel(cfg, Box::new(kernel), &snap);
        Ok((watch, socket, notes))
    }

    /// A watch acting through `kernel`, whose links and addresses are
    /// `baseline` now; returns it with the notes of the baseline.
    pub fn with_kernel(
        cfg: WanConfig,
        kernel: Box<dyn WanKernel>,
        baseline: &[RtMsg],
    ) -> (WanWatch, Vec<Note>) {
        let mut watch = WanWatch {
            tracker: Tracker::new(cfg),
            kernel,
            stats: WanStats::default(),
        };
        let now = Instant::now();
        let actions = watch.tracker.handle(now, Input::Snapshot(baseline));
        let notes = watch.run_actions(now, actions);
        (watch, notes)
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
                        match self.kernel.addresses() {
                            Ok(snap) => {
                                notes.push(Note::Resynced);
                                more.extend(self.tracker.handle(now, Input::Snapshot(&snap)));
                            }
                            Err(e) => notes.push(Note::ResyncFailed(e.to_string())),
                        }
                    }
                    Action::Flush(order) => {
                        let result = self.kernel.flush(&order.rule);
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
    use crate::netlink::route::{AddrMsg, LinkMsg, iff};
    use crate::wan::config::FlushMode;
    use std::net::IpAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What the scripted kernel was asked, and what it answers.
    #[derive(Default)]
    struct Script {
        addresses: Vec<Result<Vec<RtMsg>, i32>>,
        flushes: Vec<Result<FlushReport, i32>>,
        asked_addresses: usize,
        flushed: Vec<Rule>,
    }

    /// A kernel that answers from a script shared with the test.
    struct Scripted(Arc<Mutex<Script>>);

    impl WanKernel for Scripted {
        fn addresses(&mut self) -> Result<Vec<RtMsg>, Error> {
            let mut s = self.0.lock().unwrap();
            s.asked_addresses += 1;
            s.addresses.remove(0).map_err(Error::Kernel)
        }

        fn flush(&mut self, rule: &Rule) -> Result<FlushReport, Error> {
            let mut s = self.0.lock().unwrap();
            s.flushed.push(rule.clone());
            s.flushes.remove(0).map_err(Error::Kernel)
        }
    }

    fn link(index: u32, name: &str) -> RtMsg {
        RtMsg::Link(LinkMsg {
            new: true,
            index,
            flags: iff::UP | iff::RUNNING,
            name: Some(name.to_string()),
        })
    }

    fn addr(new: bool, index: u32, a: &str) -> RtMsg {
        RtMsg::Addr(AddrMsg {
            new,
            index,
            addr: a.parse().unwrap(),
            peer: None,
            prefix_len: 24,
            flags: 0,
            scope: 0,
            label: None,
        })
    }

    /// A watch on wan0 (index 2, 10.9.2.1) over a scripted kernel.
    fn watch(interfaces: &[&str]) -> (WanWatch, Arc<Mutex<Script>>) {
        let script = Arc::new(Mutex::new(Script::default()));
        let cfg = WanConfig {
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            flush: FlushMode::Stale,
            debounce: Duration::from_millis(100),
            ..WanConfig::default()
        };
        let baseline = [link(2, "wan0"), addr(true, 2, "10.9.2.1")];
        let (w, notes) = WanWatch::with_kernel(cfg, Box::new(Scripted(script.clone())), &baseline);
        assert!(notes.is_empty(), "the baseline is silent: {notes:?}");
        (w, script)
    }

    /// wan0 moves from 10.9.2.1 to 10.9.2.3; returns when the flush is due.
    fn reconnect(w: &mut WanWatch, now: Instant) -> Instant {
        let notes = w.handle(
            now,
            WatchInput::Messages(vec![addr(true, 2, "10.9.2.3"), addr(false, 2, "10.9.2.1")]),
        );
        assert!(matches!(notes[..], [Note::Changed(_), ..]), "{notes:?}");
        w.next_deadline().expect("a debounced flush")
    }

    #[test]
    fn a_reconnect_flushes_the_old_address_once_settled() {
        let (mut w, script) = watch(&["wan0"]);
        let t0 = Instant::now();
        let due = reconnect(&mut w, t0);
        assert!(w.on_timer(due - Duration::from_millis(1)).is_empty());
        script.lock().unwrap().flushes.push(Ok(FlushReport {
            deleted: 3,
            ..FlushReport::default()
        }));
        let notes = w.on_timer(due);
        assert!(
            matches!(&notes[..], [Note::Flushed(o, r)] if r.deleted == 3 && o.interfaces == ["wan0"]),
            "{notes:?}"
        );
        let s = script.lock().unwrap();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            s.flushed,
            vec![Rule::new(
                FlushMode::Stale,
                &[ip("10.9.2.1")],
                &[ip("10.9.2.3")]
            )]
        );
        assert_eq!((w.stats.flushes, w.stats.flows_deleted), (1, 3));
        assert!(w.stats.changes >= 1);
        assert_eq!(w.next_deadline(), None);
        assert_eq!(
            w.status()[0].addrs,
            vec!["10.9.2.3".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_failed_flush_is_noted_counted_and_retried() {
        let (mut w, script) = watch(&["wan0"]);
        let due = reconnect(&mut w, Instant::now());
        script.lock().unwrap().flushes.push(Err(libc::EPERM));
        let notes = w.on_timer(due);
        assert!(
            matches!(&notes[..], [Note::FlushFailed(_, e)] if e.contains("not permitted")),
            "{notes:?}"
        );
        assert_eq!(w.stats.failed_flushes, 1);
        let retry = w.next_deadline().expect("a retry");
        script
            .lock()
            .unwrap()
            .flushes
            .push(Ok(FlushReport::default()));
        assert!(matches!(w.on_timer(retry)[..], [Note::Flushed(..)]));
        assert_eq!(script.lock().unwrap().flushed.len(), 2);
    }

    #[test]
    fn a_new_device_under_the_watched_name_is_read_again() {
        let (mut w, script) = watch(&["wan0"]);
        // PPP redial: a new wan0 (index 7) whose address predates the message
        script
            .lock()
            .unwrap()
            .addresses
            .push(Ok(vec![link(7, "wan0"), addr(true, 7, "10.9.2.9")]));
        let notes = w.handle(Instant::now(), WatchInput::Messages(vec![link(7, "wan0")]));
        assert!(notes.contains(&Note::Resynced), "{notes:?}");
        assert_eq!(script.lock().unwrap().asked_addresses, 1);
        assert_eq!(w.stats.resyncs, 1);
        assert_eq!(
            w.status()[0].addrs,
            vec!["10.9.2.9".parse::<IpAddr>().unwrap()]
        );
        // a re-read that fails is an error note, and nothing else happens
        script.lock().unwrap().addresses.push(Err(libc::ENOBUFS));
        let notes = w.handle(Instant::now(), WatchInput::Overrun);
        assert_eq!(notes[0], Note::Overrun);
        assert!(matches!(&notes[1], Note::ResyncFailed(_)), "{notes:?}");
    }

    #[test]
    fn reader_failures_are_passed_on_as_notes() {
        let (mut w, _script) = watch(&["wan0"]);
        let notes = w.handle(
            Instant::now(),
            WatchInput::Failed {
                error: "EIO".into(),
                fatal: true,
            },
        );
        assert_eq!(
            notes,
            vec![Note::ReaderFailed {
                error: "EIO".into(),
                fatal: true
            }]
        );
    }

    #[test]
    fn reconfigure_reads_the_baseline_of_a_new_interface() {
        let (mut w, script) = watch(&["wan0"]);
        script.lock().unwrap().addresses.push(Ok(vec![
            link(2, "wan0"),
            addr(true, 2, "10.9.2.1"),
            link(3, "wan1"),
        ]));
        let cfg = WanConfig {
            interfaces: vec!["wan0".into(), "wan1".into()],
            ..w.config().clone()
        };
        let notes = w.reconfigure(Instant::now(), cfg);
        assert_eq!(notes, vec![Note::Resynced]);
        assert_eq!(w.config().interfaces, ["wan0", "wan1"]);
        assert_eq!(w.status().len(), 2);
        assert_eq!(w.status()[1].index, Some(3));
        // nothing changed, nothing to flush
        assert_eq!(w.next_deadline(), None);
    }

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
