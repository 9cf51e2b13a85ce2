//! The daemon's log: syslog (RFC 3164 on /dev/log, through the syslog
//! crate, reconnecting when syslogd restarts), a log file, and stderr in
//! the foreground. Lines are short and greppable:
//! `[Wed Nov 25 01:14:50 2026] (pid=9259) [notice] resync: 120 flows`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::flow::addr::push_ctime;

/// Message severity (one scale for the whole crate).
pub use crate::severity::Severity as Level;

/// The word a log line shows for `level` (conntrackd's).
fn word(level: Level) -> &'static str {
    match level {
        Level::Notice => "notice",
        Level::Warning => "WARNING",
        Level::Error => "ERROR",
    }
}

fn facility(name: &str) -> syslog::Facility {
    use syslog::Facility::*;
    match name {
        "user" => LOG_USER,
        "local0" => LOG_LOCAL0,
        "local1" => LOG_LOCAL1,
        "local2" => LOG_LOCAL2,
        "local3" => LOG_LOCAL3,
        "local4" => LOG_LOCAL4,
        "local5" => LOG_LOCAL5,
        "local6" => LOG_LOCAL6,
        "local7" => LOG_LOCAL7,
        _ => LOG_DAEMON,
    }
}

type SyslogWriter = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// A syslog connection that reconnects when a write fails (syslogd or
/// OpenWrt's logd restarted), which the syslog crate does not do itself.
pub struct Syslog {
    facility: syslog::Facility,
    socket: Option<PathBuf>,
    writer: Option<SyslogWriter>,
}

impl Syslog {
    /// A connection to syslog (`socket`, else /dev/log) with the facility
    /// named `facility` (daemon, user, local0..local7).
    pub fn open(facility_name: &str, socket: Option<&Path>) -> Syslog {
        let mut s = Syslog {
            facility: facility(facility_name),
            socket: socket.map(Path::to_path_buf),
            writer: None,
        };
        s.connect();
        s
    }

    /// Sends `msg` at priority info (Stats mode's flow lines).
    pub fn info(&mut self, msg: &str) {
        self.send_with(msg, |w, m| w.info(m));
    }

    fn connect(&mut self) {
        let formatter = syslog::Formatter3164 {
            facility: self.facility,
            hostname: None,
            process: "ctrackd".into(),
            pid: std::process::id(),
        };
        self.writer = match &self.socket {
            Some(p) => syslog::unix_custom(formatter, p).ok(),
            None => syslog::unix(formatter).ok(),
        };
    }

    fn send(&mut self, level: Level, msg: &str) {
        self.send_with(msg, |w, m| match level {
            Level::Notice => w.notice(m),
            Level::Warning => w.warning(m),
            Level::Error => w.err(m),
        });
    }

    fn send_with(
        &mut self,
        msg: &str,
        write: impl Fn(&mut SyslogWriter, &str) -> syslog::Result<()>,
    ) {
        for _attempt in 0..2 {
            if self.writer.is_none() {
                self.connect();
            }
            let Some(w) = self.writer.as_mut() else {
                return;
            };
            if write(w, msg).is_ok() {
                return;
            }
            // the socket went away: drop it and reconnect once
            self.writer = None;
        }
    }
}

/// Where log lines go.
pub struct Logger {
    stderr: bool,
    file: Option<(PathBuf, File)>,
    syslog: Option<Syslog>,
}

impl Logger {
    /// A logger writing to stderr only.
    pub fn stderr() -> Logger {
        Logger {
            stderr: true,
            file: None,
            syslog: None,
        }
    }

    /// A logger for the configuration: stderr when in the foreground, a
    /// file and/or syslog when configured. `syslog_socket` overrides
    /// /dev/log (tests, chroots).
    pub fn new(
        foreground: bool,
        file: Option<&Path>,
        syslog_facility: Option<&str>,
        syslog_socket: Option<&Path>,
    ) -> Result<Logger, String> {
        let file = match file {
            Some(p) => Some((
                p.to_path_buf(),
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open log file {}: {e}", p.display()))?,
            )),
            None => None,
        };
        let syslog = syslog_facility.map(|f| Syslog::open(f, syslog_socket));
        Ok(Logger {
            stderr: foreground,
            file,
            syslog,
        })
    }

    /// Logs one message.
    pub fn log(&mut self, level: Level, msg: &str) {
        if self.stderr || self.file.is_some() {
            let mut line = Vec::with_capacity(msg.len() + 64);
            line.push(b'[');
            push_ctime(&mut line, crate::flow::now_secs());
            line.extend_from_slice(
                format!("] (pid={}) [{}] {msg}\n", std::process::id(), word(level)).as_bytes(),
            );
            if self.stderr {
                let _ = std::io::stderr().write_all(&line);
            }
            if let Some((path, f)) = &mut self.file
                && f.write_all(&line).is_err()
            {
                // rotated or removed: reopen once
                if let Ok(mut nf) = OpenOptions::new().create(true).append(true).open(&*path) {
                    let _ = nf.write_all(&line);
                    *f = nf;
                }
            }
        }
        if let Some(s) = &mut self.syslog {
            s.send(level, msg);
        }
    }

    /// Logs a notice.
    pub fn notice(&mut self, msg: &str) {
        self.log(Level::Notice, msg);
    }

    /// Logs a warning.
    pub fn warning(&mut self, msg: &str) {
        self.log(Level::Warning, msg);
    }

    /// Logs an error.
    pub fn error(&mut self, msg: &str) {
        self.log(Level::Error, msg);
    }
}
