//! Starting and stopping the daemon: lock file, control socket,
//! daemonizing, the reader threads and the core loop.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use super::config::Config;
use super::control;
use super::core::{Core, Input};
use super::log::Logger;
use crate::netlink::EventSocket;
use crate::netlink::events::{Received, group};

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

/// Runs the daemon with `config`; returns the exit code.
pub fn run(config: Config, daemon: bool) -> i32 {
    for w in &config.warnings {
        eprintln!("ctrackd: warning: {w}");
    }
    let g = config.general.clone();
    let mut lock = match Lock::take(&g.lock_file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ctrackd: {e}");
            return 1;
        }
    };
    let listener = match control::bind(&g.unix_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ctrackd: cannot create the control socket {}: {e}",
                g.unix_path.display()
            );
            lock.remove();
            return 1;
        }
    };
    if daemon {
        if let Err(e) = daemonize() {
            eprintln!("ctrackd: cannot daemonize: {e}");
            return 1;
        }
        if let Err(e) = std::fs::write(&g.pid_file, format!("{}\n", std::process::id())) {
            // stderr is /dev/null now; the log below reports it
            let _ = e;
        }
    }
    lock.write_pid();
    let log = match Logger::new(
        !daemon,
        g.log.file.as_deref(),
        g.log.syslog.as_deref(),
        g.log.socket.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ctrackd: {e}");
            let _ = std::fs::remove_file(&g.unix_path);
            lock.remove();
            return 1;
        }
    };
    let code = serve(config, log, listener, daemon);
    let _ = std::fs::remove_file(&g.unix_path);
    if daemon {
        let _ = std::fs::remove_file(&g.pid_file);
    }
    lock.remove();
    code
}

fn serve(
    config: Config,
    log: Logger,
    listener: std::os::unix::net::UnixListener,
    daemon: bool,
) -> i32 {
    let g = config.general.clone();
    let mut core = match Core::new(config, log, !daemon) {
        Ok(c) => c,
        Err(e) => {
            let mut l = Logger::stderr();
            l.error(&e);
            return 1;
        }
    };
    core.syslog_socket = g.log.socket.clone();
    core.log.notice(&format!(
        "ctrackd {} starting (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    ));

    // subscribe before the first dump, so no flow falls in between
    let es = match EventSocket::open(group::ALL, None) {
        Ok(s) => s,
        Err(e) => {
            core.log
                .error(&format!("cannot subscribe to conntrack events: {e}"));
            return 1;
        }
    };
    match es.socket().set_recv_buffer(g.netlink_buffer_size / 2) {
        Ok(n) => {
            core.stats.buffer_size = n;
            core.log.notice(&format!(
                "netlink event socket buffer size has been set to {n} bytes"
            ));
        }
        Err(e) => core
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
    let max = g.netlink_buffer_max;
    let ktx = tx.clone();

    #[cfg(feature = "web")]
    let hub = match core.config.web_config.clone() {
        Some(wcfg) => {
            let addr = wcfg.socket_addr();
            match super::webpart::WebPart::start(wcfg, tx.clone()) {
                Ok(w) => {
                    let hub = w.hub.clone();
                    core.web = Some(w);
                    core.log
                        .notice(&format!("web: listening on http://{addr}/"));
                    Some(hub)
                }
                Err(e) => {
                    core.log.error(&e);
                    return 1;
                }
            }
        }
        None => None,
    };
    #[cfg(not(feature = "web"))]
    let hub: Option<()> = None;

    core.event_fd = Some(es.socket().fd());
    let spawned = std::thread::Builder::new()
        .name("events".into())
        .spawn(move || event_reader(es, ktx, max, hub));
    if let Err(e) = spawned {
        core.log
            .error(&format!("cannot start the event thread: {e}"));
        return 1;
    }

    #[cfg(feature = "sync")]
    if let Some(scfg) = core.config.sync_config.clone() {
        match super::syncpart::SyncPart::start(scfg, tx.clone(), &mut core.log) {
            Ok(s) => core.sync = Some(s),
            Err(e) => {
                core.log.error(&e);
                return 1;
            }
        }
    }

    core.resync("startup");

    #[cfg(feature = "wan")]
    if let Some(wcfg) = core.config.wan_config.clone() {
        match super::wanpart::WanPart::start(wcfg, tx.clone(), &mut core.log) {
            Ok(w) => core.wan = Some(w),
            Err(e) => {
                core.log.error(&e);
                return 1;
            }
        }
    }

    let ctx = tx.clone();
    let control = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control::serve(listener, |p| ctx.send(Input::Control(p)).is_ok()));
    if let Err(e) = control {
        core.log
            .error(&format!("cannot start the control thread: {e}"));
        return 1;
    }
    match signal_hook::iterator::Signals::new([
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ]) {
        Ok(mut signals) => {
            let stx = tx.clone();
            let r = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for s in signals.forever() {
                        if stx.send(Input::Signal(s)).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = r {
                core.log
                    .error(&format!("cannot start the signal thread: {e}"));
                return 1;
            }
        }
        Err(e) => {
            core.log
                .error(&format!("cannot install signal handlers: {e}"));
            return 1;
        }
    }
    drop(tx);
    core.log.notice(&format!(
        "ready: {} flows cached, control socket {}",
        core.internal.len(),
        g.unix_path.display()
    ));

    while !core.stop {
        let input = match core.next_deadline() {
            Some(t) => {
                let now = Instant::now();
                if t <= now {
                    core.on_timer(now);
                    continue;
                }
                match rx.recv_timeout(t - now) {
                    Ok(i) => Some(i),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(i) => Some(i),
                Err(_) => break,
            },
        };
        match input {
            Some(Input::Kernel(mut events)) => {
                // events already queued are handled as one batch, so sync
                // packs their messages into shared datagrams (the reader
                // forwards each netlink datagram, one event, on its own)
                let mut next = None;
                while events.len() < KERNEL_BATCH {
                    match rx.try_recv() {
                        Ok(Input::Kernel(more)) => events.extend(more),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                core.handle(Input::Kernel(events));
                if let Some(i) = next {
                    core.handle(i);
                }
            }
            Some(i) => core.handle(i),
            None => core.on_timer(Instant::now()),
        }
    }
    #[cfg(feature = "web")]
    if let Some(w) = core.web.as_mut() {
        w.stop();
    }
    core.log.notice("ctrackd stopped");
    0
}

/// Most kernel events handled as one batch.
const KERNEL_BATCH: usize = 256;

#[cfg(feature = "web")]
type EventHub = Option<crate::web::Hub>;
#[cfg(not(feature = "web"))]
type EventHub = Option<()>;

/// The event thread: reads and decodes kernel events, shows them to the
/// web's event streams and forwards them to the core; on an overrun
/// doubles the buffer up to `max` and tells the core.
fn event_reader(mut es: EventSocket, tx: mpsc::Sender<Input>, max: usize, hub: EventHub) {
    let mut failures = 0u32;
    loop {
        let mut batch = Vec::new();
        let msg = match es.recv_into(&mut batch) {
            Ok(Received::Events) => {
                failures = 0;
                if batch.is_empty() {
                    continue;
                }
                #[cfg(feature = "web")]
                if let Some(h) = &hub {
                    for ev in &batch {
                        h.publish(ev);
                    }
                }
                #[cfg(not(feature = "web"))]
                let _ = &hub;
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
