//! Starting and stopping the daemon: lock file, control socket,
//! daemonizing, the parts and the reader threads, then the shell's loop.
//! Every way a start can fail is a [`StartError`], printed in one place.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

use super::config::Config;
use super::control;
use super::core::{Core, Resync};
use super::input::Input;
use super::log::Logger;
use super::parts::{EventTap, Parts};
use super::shell::Shell;
use crate::netlink::events::{Received, group};
use crate::netlink::{Conntrack, EventSocket};

/// The daemon lock: a file locked with flock(2), holding our pid. A lock
/// left by a crashed daemon is not held, so it never blocks a restart.
pub struct Lock {
    file: File,
    path: std::path::PathBuf,
}

impl Lock {
    /// Takes the lock or says who holds it.
    pub fn take(path: &Path) -> Result<Lock, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
        // SAFETY: flock only acts on the fd, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(if pid.is_empty() {
                format!(
                    "another ctrackd is running (lock file {} is held)",
                    path.display()
                )
            } else {
                format!(
                    "another ctrackd is running (pid {pid}, lock file {})",
                    path.display()
                )
            });
        }
        Ok(Lock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Records our pid in the lock file.
    pub fn write_pid(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = writeln!(self.file, "{}", std::process::id());
    }

    /// Removes the lock file (still holding the lock while doing it).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Detaches from the terminal: fork (the parent exits 0), new session,
/// cwd `/`, standard streams on /dev/null. Must run before any thread.
fn daemonize() -> io::Result<()> {
    // SAFETY: no other thread exists yet, so fork cannot leave a lock held
    // by a thread that does not exist in the child.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors with a valid source fd.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Why the daemon could not start.
#[derive(Debug)]
pub enum StartError {
    /// Another ctrackd holds the lock file, or it cannot be opened.
    Lock(String),
    /// The control socket cannot be created.
    ControlSocket(std::path::PathBuf, io::Error),
    /// fork/setsid failed.
    Daemonize(io::Error),
    /// The log file cannot be opened.
    Log(String),
    /// A kernel socket cannot be opened or subscribed.
    Kernel(String),
    /// A part (sync, wan, web) cannot start.
    Part(String),
    /// A thread cannot be started.
    Thread(&'static str, io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Lock(m) | StartError::Log(m) | StartError::Kernel(m) => f.write_str(m),
            StartError::Part(m) => f.write_str(m),
            StartError::ControlSocket(path, e) => write!(
                f,
                "cannot create the control socket {}: {e}",
                path.display()
            ),
            StartError::Daemonize(e) => write!(f, "cannot daemonize: {e}"),
            StartError::Thread(what, e) => write!(f, "cannot start the {what}: {e}"),
        }
    }
}

/// A failed start, with the log it is reported to once the log is open
/// (printed by the daemon role's one printer, `daemon::Failure::report`).
pub struct StartFailure {
    /// What failed.
    pub error: StartError,
    /// The log, when it was open by then.
    pub log: Option<Box<Logger>>,
}

impl std::fmt::Debug for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StartFailure({:?})", self.error)
    }
}

impl From<StartError> for StartFailure {
    fn from(error: StartError) -> StartFailure {
        StartFailure { error, log: None }
    }
}

/// Runs the daemon with `config` until it stops.
pub fn run(config: Config, daemon: bool) -> Result<(), StartFailure> {
    for w in &config.warnings {
        eprintln!("ctrackd: warning: {w}");
    }
    start_and_serve(config, daemon)
}

/// Takes the lock, binds the control socket, daemonizes, opens the log
/// and serves. What it made (control socket, pid file, lock file) is
/// removed however it ends; another daemon's are left alone.
fn start_and_serve(config: Config, daemon: bool) -> Result<(), StartFailure> {
    let g = config.general.clone();
    let mut lock = Lock::take(&g.lock_file).map_err(StartError::Lock)?;
    let listener = match control::bind(&g.unix_path) {
        Ok(l) => l,
        Err(e) => {
            lock.remove();
            return Err(StartError::ControlSocket(g.unix_path.clone(), e).into());
        }
    };
    let result = (|| {
        if daemon {
            daemonize().map_err(StartError::Daemonize)?;
            // stderr is /dev/null now: a failure to write the pid file
            // shows only as a missing file
            let _ = std::fs::write(&g.pid_file, format!("{}\n", std::process::id()));
        }
        lock.write_pid();
        let log = Logger::new(
            !daemon,
            g.log.file.as_deref(),
            g.log.syslog.as_deref(),
            g.log.socket.as_deref(),
        )
        .map_err(StartError::Log)?;
        serve(config, log, listener, daemon)
    })();
    let _ = std::fs::remove_file(&g.unix_path);
    if daemon {
        let _ = std::fs::remove_file(&g.pid_file);
    }
    lock.remove();
    result
}

/// Opens ctnetlink, starts the parts and the reader threads, resyncs the
/// cache and runs the shell's loop until it stops.
fn serve(
    config: Config,
    mut log: Logger,
    listener: std::os::unix::net::UnixListener,
    daemon: bool,
) -> Result<(), StartFailure> {
    let g = config.general.clone();
    log.notice(&format!(
        "ctrackd {} starting (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    ));
    let ct = match Conntrack::open(None) {
        Ok(ct) => ct,
        Err(e) => {
            return Err(StartFailure {
                error: StartError::Kernel(format!("cannot open ctnetlink: {e}")),
                log: Some(Box::new(log)),
            });
        }
    };
    let core = Core::new(config, crate::flow::now_secs());
    let mut shell = Shell::new(core, log, ct, !daemon, g.log.socket.clone());
    match start_parts(&mut shell, listener) {
        Ok(rx) => {
            shell.run(&rx);
            shell.log.notice("ctrackd stopped");
            Ok(())
        }
        Err(error) => {
            shell.parts.stop();
            Err(StartFailure {
                error,
                log: Some(Box::new(shell.log)),
            })
        }
    }
}

/// Subscribes to events (before the first dump, so no flow falls in
/// between), starts the web, sync and WAN parts and the reader threads,
/// and resyncs the cache. Returns the loop's channel.
fn start_parts(
    shell: &mut Shell,
    listener: std::os::unix::net::UnixListener,
) -> Result<mpsc::Receiver<Input>, StartError> {
    let g = shell.core.config.general.clone();
    let es = EventSocket::open(group::ALL, None)
        .map_err(|e| StartError::Kernel(format!("cannot subscribe to conntrack events: {e}")))?;
    match es.socket().set_recv_buffer(g.netlink_buffer_size / 2) {
        Ok(n) => {
            shell.core.stats.buffer_size = n;
            shell.log.notice(&format!(
                "netlink event socket buffer size has been set to {n} bytes"
            ));
        }
        Err(e) => shell
            .log
            .warning(&format!("cannot set the event buffer size: {e}")),
    }
    if g.events_reliable {
        let _ = es
            .socket()
            .set_netlink_opt(libc::NETLINK_BROADCAST_ERROR, true);
        let _ = es.socket().set_netlink_opt(libc::NETLINK_NO_ENOBUFS, true);
    }

    let (tx, rx) = mpsc::channel::<Input>();
    let parts = Parts::start(&shell.core.config, &tx, es.socket().fd(), &mut shell.log)
        .map_err(StartError::Part)?;
    shell.parts = parts;
    let tap = shell.parts.event_tap();
    let (ktx, max) = (tx.clone(), g.netlink_buffer_max);
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || event_reader(es, ktx, max, tap))
        .map_err(|e| StartError::Thread("event thread", e))?;
    shell.resync(Resync::Startup);

    let ctx = tx.clone();
    let counters = shell.control_counters.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            control::serve(listener, counters, move |p| {
                ctx.send(Input::Control(p)).is_ok()
            })
        })
        .map_err(|e| StartError::Thread("control thread", e))?;
    let mut signals = signal_hook::iterator::Signals::new([
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ])
    .map_err(|e| StartError::Kernel(format!("cannot install signal handlers: {e}")))?;
    let stx = tx;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if stx.send(Input::Signal(s)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StartError::Thread("signal thread", e))?;
    shell.log.notice(&format!(
        "ready: {} flows cached, control socket {}",
        shell.core.internal.len(),
        g.unix_path.display()
    ));
    Ok(rx)
}

/// The event thread: reads and decodes kernel events, shows them to the
/// parts' tap (the web's event streams) and forwards them to the core; on
/// an overrun doubles the buffer up to `max` and tells the core.
fn event_reader(mut es: EventSocket, tx: mpsc::Sender<Input>, max: usize, tap: EventTap) {
    let mut failures = 0u32;
    loop {
        let mut batch = Vec::new();
        let msg = match es.recv_into(&mut batch) {
            Ok(Received::Events) => {
                failures = 0;
                if batch.is_empty() {
                    continue;
                }
                for ev in &batch {
                    tap.publish(ev);
                }
                Input::Kernel(batch)
            }
            Ok(Received::Overrun) => {
                let cur = es.socket().recv_buffer().unwrap_or(0);
                let grown = cur > 0 && cur * 2 <= max;
                let buffer = if grown {
                    es.socket().set_recv_buffer(cur).unwrap_or(cur)
                } else {
                    cur
                };
                Input::Overrun { buffer, grown }
            }
            Err(e) => {
                failures += 1;
                if failures > 100 {
                    let _ = tx.send(Input::KernelError(format!("{e}; giving up")));
                    return;
                }
                Input::KernelError(e.to_string())
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}
