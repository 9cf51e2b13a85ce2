//! The WAN-change flush inside ctrackd: an rtnetlink reader thread feeds
//! address and link messages to the core, which drives the sans-I/O
//! [`Tracker`] and runs the flushes it orders.

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::core::Input;
use super::log::Logger;
use crate::netlink::route::{self as rtnl, Recv, RtMsg, RtnlWatch};
use crate::wan::config::WanConfig;
use crate::wan::flush::{Executor, FlushOptions};
use crate::wan::stats::WanStats;
use crate::wan::tracker::{self, Action, Tracker};
use crate::wan::watch::Note;

/// The WAN watch's state in the core.
pub struct WanPart {
    tracker: Tracker,
    exec: Executor,
    /// Counters for `-s wan` and the web API.
    pub stats: WanStats,
}

impl WanPart {
    /// Subscribes to address/link changes (before dumping the baseline,
    /// so nothing is missed), starts the reader thread and returns the
    /// part ready to be driven by the core.
    pub fn start(cfg: WanConfig, tx: Sender<Input>, log: &mut Logger) -> Result<WanPart, String> {
        let mut watch =
            RtnlWatch::open(None).map_err(|e| format!("wan: cannot watch addresses: {e}"))?;
        let mut snap = Vec::new();
        watch
            .dump(&mut snap)
            .map_err(|e| format!("wan: cannot dump addresses: {e}"))?;
        let exec = Executor::open(None).map_err(|e| format!("wan: cannot open ctnetlink: {e}"))?;
        let mut tracker = Tracker::new(cfg);
        let mut part = WanPart {
            tracker: Tracker::new(WanConfig::default()),
            exec,
            stats: WanStats::default(),
        };
        let actions = tracker.handle(Instant::now(), tracker::Input::Snapshot(&snap));
        part.tracker = tracker;
        part.perform(actions, log);
        std::thread::Builder::new()
            .name("rtnetlink".into())
            .spawn(move || reader(watch, tx))
            .map_err(|e| format!("wan: cannot start the rtnetlink thread: {e}"))?;
        let names: Vec<String> = part.tracker.config().interfaces.clone();
        log.notice(&format!(
            "wan: watching {} (Flush {}, Debounce {} ms)",
            names.join(", "),
            part.tracker.config().flush.as_str(),
            part.tracker.config().debounce.as_millis()
        ));
        Ok(part)
    }

    /// When the tracker next needs a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracker.next_deadline()
    }

    /// Feeds rtnetlink messages.
    pub fn on_messages(&mut self, msgs: &[RtMsg], log: &mut Logger) {
        for m in msgs {
            let a = self.tracker.handle(Instant::now(), tracker::Input::Rt(m));
            self.perform(a, log);
        }
    }

    /// The rtnetlink socket overran: the tracker asks for a fresh dump.
    pub fn on_overrun(&mut self, log: &mut Logger) {
        log.warning("wan: rtnetlink overrun, re-reading addresses");
        let a = self.tracker.handle(Instant::now(), tracker::Input::Overrun);
        self.perform(a, log);
    }

    /// Runs what is due.
    pub fn on_timer(&mut self, log: &mut Logger) {
        let a = self.tracker.handle(Instant::now(), tracker::Input::Tick);
        self.perform(a, log);
    }

    /// Applies a new configuration (SIGHUP).
    pub fn reconfigure(&mut self, cfg: WanConfig, log: &mut Logger) {
        let a = self.tracker.reconfigure(cfg);
        self.perform(a, log);
    }

    /// Appends the `wan` section of `-s`.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        self.stats.write_text(out, &self.tracker.status());
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        self.stats.write_json(&mut out, &self.tracker.status());
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
    }

    fn perform(&mut self, mut actions: Vec<Action>, log: &mut Logger) {
        // actions may lead to more (a flush reports back, a resync feeds a
        // snapshot); bounded so a misbehaving kernel cannot spin us
        let mut rounds = 0;
        while !actions.is_empty() && rounds < 16 {
            rounds += 1;
            let mut more = Vec::new();
            for a in actions {
                let wall = crate::flow::now_secs();
                match a {
                    Action::Changed(c) => {
                        self.stats.record_change(wall, &c);
                        log.notice(&Note::Changed(c).log_line());
                    }
                    Action::Resync => {
                        self.stats.record_resync();
                        match rtnl::dump(None) {
                            Ok(snap) => more.extend(
                                self.tracker
                                    .handle(Instant::now(), tracker::Input::Snapshot(&snap)),
                            ),
                            Err(e) => log.error(&format!("wan: cannot re-read addresses: {e}")),
                        }
                    }
                    Action::Flush(order) => {
                        let r =
                            self.exec
                                .run(&order.rule, &FlushOptions::default(), &mut |_, _, _| {});
                        let ok = r.is_ok();
                        match r {
                            Ok(rep) => {
                                self.stats.record_flush(wall, &order, Ok(&rep));
                                log.notice(&Note::Flushed(order, rep).log_line());
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                self.stats.record_flush(wall, &order, Err(msg.clone()));
                                log.error(&Note::FlushFailed(order, msg).log_line());
                            }
                        }
                        more.extend(
                            self.tracker
                                .handle(Instant::now(), tracker::Input::FlushDone { ok }),
                        );
                    }
                }
            }
            actions = more;
        }
    }
}

/// The rtnetlink reader thread.
fn reader(mut watch: RtnlWatch, tx: Sender<Input>) {
    let mut failures = 0u32;
    loop {
        let mut msgs = Vec::new();
        let input = match watch.recv(&mut msgs) {
            Ok(Recv::Messages) => {
                failures = 0;
                if msgs.is_empty() {
                    continue;
                }
                Input::Rtnl(msgs)
            }
            Ok(Recv::Overrun) => Input::RtnlOverrun,
            Ok(Recv::Empty) => continue,
            Err(e) => {
                failures += 1;
                if failures > 100 {
                    let _ = tx.send(Input::KernelError(format!("rtnetlink: {e}; giving up")));
                    return;
                }
                Input::KernelError(format!("rtnetlink: {e}"))
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}
