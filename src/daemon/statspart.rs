//! Stats mode (conntrackd's `Stats { LogFile; Syslog }`): flow
//! accounting. Every flow the kernel destroys that the cache held is
//! written as one line, with the counters of its destroy event, to a log
//! file and/or syslog (priority info), in conntrackd's format:
//!
//! ```text
//! Thu Dec  3 08:20:16 2026<TAB>tcp      6 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=1000 dport=80 packets=3 bytes=180 src=... [ASSURED] mark=5 delta-time=12
//! ```
//!
//! or, with `LogFormat json` (ctrack), one JSON object a line: the fields
//! of `ctrack -L -o json` plus `time`. The file is reopened on SIGHUP, so
//! logrotate can move it away. The cache is the daemon's own (named
//! `stats`, as conntrackd names it in `-s`); this part only writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::config::{Config, StatsConfig, StatsFormat};
use super::core::Replicate;
use super::log::{Logger, Syslog};
use super::part::Part;
use crate::flow::addr::push_ctime;
use crate::flow::{EventKind, Flow, json, text};

/// Stats mode's writer of destroyed flows.
pub struct StatsPart {
    cfg: StatsConfig,
    file: Option<(PathBuf, File)>,
    syslog: Option<Syslog>,
    syslog_socket: Option<PathBuf>,
    /// Flows written.
    logged: u64,
    /// Lines the file did not take (syslog is best effort, uncounted).
    write_errors: u64,
    /// Whether the last write to the file failed (warn once per outage).
    failing: bool,
}

fn open(path: &PathBuf) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open stats log file {}: {e}", path.display()))
}

/// The line Stats mode writes for a destroyed flow, newline included;
/// `now` is the time it is written (seconds since the epoch).
pub fn flow_line(f: &Flow, format: StatsFormat, now: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match format {
        StatsFormat::Text => {
            push_ctime(&mut out, now);
            out.push(b'\t');
            let opts = text::TextOptions {
                show_timeout: false,
                now,
                ..text::TextOptions::default()
            };
            text::write_line(&mut out, f, &opts);
        }
        StatsFormat::Json => {
            let mut obj = Vec::with_capacity(256);
            let opts = json::JsonOptions {
                event: Some(EventKind::Destroy),
                labels: None,
                now,
                hide_timeout: true,
            };
            json::write_flow(&mut obj, f, &opts);
            out.extend_from_slice(format!("{{\"time\":{now},").as_bytes());
            out.extend_from_slice(obj.get(1..).unwrap_or_default());
        }
    }
    out.push(b'\n');
    out
}

impl StatsPart {
    /// Opens the log file of `cfg` and the syslog connection (`socket`
    /// instead of /dev/log when set).
    pub fn start(cfg: StatsConfig, socket: Option<PathBuf>) -> Result<StatsPart, String> {
        let file = match &cfg.file {
            Some(p) => Some((p.clone(), open(p)?)),
            None => None,
        };
        let syslog = cfg
            .syslog
            .as_deref()
            .map(|f| Syslog::open(f, socket.as_deref()));
        Ok(StatsPart {
            cfg,
            file,
            syslog,
            syslog_socket: socket,
            logged: 0,
            write_errors: 0,
            failing: false,
        })
    }

    /// Writes the line of a destroyed flow.
    fn log_flow(&mut self, f: &Flow, log: Option<&mut Logger>) {
        let line = flow_line(f, self.cfg.format, crate::flow::now_secs());
        self.logged += 1;
        if let Some((path, file)) = &mut self.file {
            let mut ok = file.write_all(&line).is_ok();
            if !ok {
                // removed or on a full disk: reopen once and retry
                if let Ok(mut f) = open(path) {
                    ok = f.write_all(&line).is_ok();
                    *file = f;
                }
            }
            if ok {
                self.failing = false;
            } else {
                self.write_errors += 1;
                if !std::mem::replace(&mut self.failing, true)
                    && let Some(log) = log
                {
                    log.warning(&format!(
                        "stats: cannot write to {}; flows are being lost",
                        path.display()
                    ));
                }
            }
        }
        if let Some(s) = &mut self.syslog {
            // syslog gets the flow without the time, as conntrackd sends it
            let text = String::from_utf8_lossy(&line);
            let body = match self.cfg.format {
                StatsFormat::Text => text.split_once('\t').map_or(&*text, |(_, b)| b),
                StatsFormat::Json => &*text,
            };
            s.info(body.trim_end());
        }
    }

    /// Reopens the log file (logrotate moved it) and syslog.
    fn reopen(&mut self, log: &mut Logger) {
        self.file = match &self.cfg.file {
            Some(p) => match open(p) {
                Ok(f) => Some((p.clone(), f)),
                Err(e) => {
                    log.error(&format!("stats: {e}"));
                    None
                }
            },
            None => None,
        };
        self.syslog = self
            .cfg
            .syslog
            .as_deref()
            .map(|f| Syslog::open(f, self.syslog_socket.as_deref()));
        self.failing = false;
    }
}

impl Part for StatsPart {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn wants_changes(&self) -> bool {
        true
    }

    fn on_change(&mut self, _now: Instant, change: Replicate<'_>) {
        if change.kind == EventKind::Destroy {
            self.log_flow(change.flow, None);
        }
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "logged": self.logged,
            "write_errors": self.write_errors,
        }))
    }

    fn reopen_logs(&mut self, log: &mut Logger) {
        self.reopen(log);
    }

    fn reload(&mut self, _now: Instant, _old: &Config, new: &Config, log: &mut Logger) {
        if let Some(cfg) = &new.stats
            && *cfg != self.cfg
        {
            self.cfg = cfg.clone();
            self.reopen(log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Counters;
    use crate::flow::testutil::tcp4;

    fn destroyed() -> Flow {
        let mut f = tcp4();
        f.timeout = Some(10);
        f.use_count = None;
        f.counters = [
            Some(Counters {
                packets: 3,
                bytes: 180,
            }),
            Some(Counters {
                packets: 2,
                bytes: 120,
            }),
        ];
        f
    }

    #[test]
    fn text_line_is_conntrackds() {
        let line = String::from_utf8(flow_line(&destroyed(), StatsFormat::Text, 0)).unwrap();
        let (when, flow) = line.split_once('\t').unwrap();
        // ctime's shape: "Thu Jan  1 00:00:00 1970" in the local zone
        assert_eq!(when.len(), 24, "{when}");
        assert_eq!(
            flow,
            "tcp      6 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1234 dport=80 packets=3 bytes=180 \
             src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1234 packets=2 bytes=120 [ASSURED] mark=5\n"
        );
    }

    #[test]
    fn delta_time_counts_to_when_the_line_is_written() {
        // a destroy event without a stop time: the age at writing
        let mut f = destroyed();
        f.timestamp_start = Some(1_000 * 1_000_000_000);
        let line = String::from_utf8(flow_line(&f, StatsFormat::Text, 1_007)).unwrap();
        assert!(line.ends_with(" mark=5 delta-time=7\n"), "{line}");
    }

    #[test]
    fn json_line_is_one_object_with_the_time() {
        let line = flow_line(&destroyed(), StatsFormat::Json, 1_700_000_000);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["event"], "destroy");
        assert!(v.get("timeout").is_none(), "{v}");
        assert_eq!(v["orig"]["packets"], 3, "{v}");
    }

    #[test]
    fn destroys_are_logged_and_the_file_reopened() {
        let dir = std::env::temp_dir().join(format!("ctrack-statspart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.log");
        let cfg = StatsConfig {
            file: Some(path.clone()),
            ..StatsConfig::default()
        };
        let mut p = StatsPart::start(cfg, None).unwrap();
        // the core reports changes to it; its counters are `stats` in JSON
        assert!(p.wants_changes());
        assert_eq!(p.name(), "stats");
        let f = destroyed();
        let t = Instant::now();
        for kind in [EventKind::New, EventKind::Update, EventKind::Destroy] {
            p.on_change(
                t,
                Replicate {
                    kind,
                    cached: None,
                    flow: &f,
                },
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // logrotate: the file is moved away, SIGHUP reopens a new one
        let rotated = dir.join("stats.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        let mut log = Logger::stderr();
        p.reopen_logs(&mut log);
        p.log_flow(&f, None);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
        assert_eq!(p.to_json().unwrap()["logged"], 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_refuses_lines_is_counted_and_warned_once() {
        // /dev/full takes the open, refuses every write (ENOSPC)
        let cfg = StatsConfig {
            file: Some(PathBuf::from("/dev/full")),
            format: StatsFormat::Json,
            ..StatsConfig::default()
        };
        let mut p = StatsPart::start(cfg, None).unwrap();
        let dir = std::env::temp_dir().join(format!("ctrack-statsfull-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let logfile = dir.join("log");
        let mut log = Logger::new(false, Some(&logfile), None, None).unwrap();
        for _ in 0..3 {
            p.log_flow(&destroyed(), Some(&mut log));
        }
        let j = p.to_json().unwrap();
        assert_eq!(
            (j["logged"].as_u64(), j["write_errors"].as_u64()),
            (Some(3), Some(3))
        );
        let text = std::fs::read_to_string(&logfile).unwrap();
        assert_eq!(
            text.matches("stats: cannot write to /dev/full").count(),
            1,
            "{text}"
        );
        // reopening (SIGHUP) starts a new outage: one more warning
        p.reopen_logs(&mut log);
        p.log_flow(&destroyed(), Some(&mut log));
        let text = std::fs::read_to_string(&logfile).unwrap();
        assert_eq!(text.matches("stats: cannot write").count(), 2, "{text}");
        // a reload with another file switches to it
        let good = dir.join("stats.log");
        let mut new = crate::daemon::config::parse("c", "").unwrap();
        new.stats = Some(StatsConfig {
            file: Some(good.clone()),
            ..StatsConfig::default()
        });
        let old = new.clone();
        p.reload(Instant::now(), &old, &new, &mut log);
        p.log_flow(&destroyed(), Some(&mut log));
        assert_eq!(std::fs::read_to_string(&good).unwrap().lines().count(), 1);
        // an unwritable path at start is an error that names it
        let e = StatsPart::start(
            StatsConfig {
                file: Some(dir.join("no/such/dir/log")),
                ..StatsConfig::default()
            },
            None,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("cannot open stats log file "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
