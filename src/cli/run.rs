//! Running a parsed conntrack command against the kernel and reporting as
//! conntrack does (summary line on stderr, exit codes 0/1/2). Requests are
//! built by [`super::request`]; failures go back as [`CliError`] values.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::args::{Cmd, CtCommand, Table};
use super::error::{CliError, PROGNAME_VERSION, err_text};
use super::output::{Context, Printer};
use super::progname::ProgNames;
use super::request;
use super::usage::{proto_help, usage};
use crate::flow::Flow;
use crate::netlink::ct::{CtRequest, msg};
use crate::netlink::events::{EventSocket, Received, group, poll_readable};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};
use crate::netlink::{Conntrack, Error};

/// The state of a run: the netns and the running count of entries.
pub struct Runner {
    /// `--netns NAME`.
    pub netns: Option<String>,
    /// Entries shown/created/deleted so far (conntrack's `counter`).
    pub counter: u64,
    sock: Option<Conntrack>,
    modifier: Option<Conntrack>,
}

/// The outcome of a command.
type Outcome = Result<(), CliError>;

/// The ctnetlink socket in `slot`, opened in `netns` on first use.
fn handle<'a>(
    slot: &'a mut Option<Conntrack>,
    netns: Option<&str>,
) -> Result<&'a mut Conntrack, CliError> {
    let sock = match slot.take() {
        Some(s) => s,
        None => Conntrack::open(netns)
            .map_err(|e| CliError::other(format!("Can't open handler: {e}")))?,
    };
    Ok(slot.insert(sock))
}

impl Runner {
    /// A runner for the given namespace.
    pub fn new(netns: Option<String>) -> Runner {
        Runner {
            netns,
            counter: 0,
            sock: None,
            modifier: None,
        }
    }

    /// The socket for queries and dumps.
    fn sock(&mut self) -> Result<&mut Conntrack, CliError> {
        handle(&mut self.sock, self.netns.as_deref())
    }

    /// A second socket for changes made while a dump runs on the first.
    fn modifier(&mut self) -> Result<&mut Conntrack, CliError> {
        handle(&mut self.modifier, self.netns.as_deref())
    }

    /// Runs one command; prints the summary when `summary` is set (not for
    /// `-R` files).
    pub fn run(&mut self, c: &CtCommand, summary: bool) -> Result<(), CliError> {
        let Some(cmd) = c.cmd else {
            print!("{}", usage("conntrack"));
            return Ok(());
        };
        if cmd.is_expect() {
            return Err(CliError::system(
                "the expectation table is not supported yet",
            ));
        }
        match cmd {
            Cmd::List => self.list(c),
            Cmd::Get => self.get(c),
            Cmd::Create | Cmd::Add => self.create(c, cmd),
            Cmd::Delete => self.delete(c),
            Cmd::Update => self.update(c),
            Cmd::Flush => self.flush(c),
            Cmd::Event => self.events(c),
            Cmd::Count => self.count(),
            Cmd::Stats => self.stats(),
            Cmd::Version => {
                println!("{PROGNAME_VERSION}");
                Ok(())
            }
            Cmd::Help => {
                print!("{}", usage("conntrack"));
                if let Some(p) = c.help_proto {
                    let name = match crate::flow::names::l4_name(p) {
                        "unknown" => crate::protocols::name(p).unwrap_or_else(|| "unknown".into()),
                        n => n.to_string(),
                    };
                    print!("Proto `{name}' help:\n{}", proto_help(p));
                }
                Ok(())
            }
            _ => Ok(()),
        }?;
        if summary && let Some(m) = cmd.exit_msg() {
            eprintln!("{PROGNAME_VERSION}: {} {m}", self.counter);
            if self.counter == 0 && !matches!(cmd, Cmd::List | Cmd::Add) {
                return Err(CliError::silent());
            }
        }
        Ok(())
    }

    fn list(&mut self, c: &CtCommand) -> Outcome {
        let msg_type = match c.table {
            Table::Dying => msg::GET_DYING,
            Table::Unconfirmed => msg::GET_UNCONFIRMED,
            _ if c.zero => {
                if c.compares {
                    return Err(CliError::param("Can't use -z with filtering parameters"));
                }
                msg::GET_CTRZERO
            }
            _ => msg::GET,
        };
        let req = if matches!(c.table, Table::Dying | Table::Unconfirmed) {
            CtRequest::new(msg_type, c.family)
        } else {
            request::dump(c, msg_type, true)
        };
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        let filter = &c.filter;
        let mut counter = 0u64;
        let mut out_err = None;
        let res = self.sock()?.dump(&req, &mut |f| {
            if !filter.matches(f) {
                return Ok(());
            }
            counter += 1;
            if let Err(e) = printer.flow(f, Context::Dump, None, b"") {
                out_err.get_or_insert(e);
            }
            Ok(())
        });
        self.counter += counter;
        if let Some(e) = out_err {
            return Err(CliError::system(e));
        }
        printer.finish().map_err(CliError::system)?;
        report_malformed(res.map_err(|e| CliError::kernel(Cmd::List, &e))?);
        Ok(())
    }

    fn get(&mut self, c: &CtCommand) -> Outcome {
        let req = request::get(c);
        let found = self
            .sock()?
            .get(&req)
            .map_err(|e| CliError::kernel(Cmd::Get, &e))?;
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        if let Some(flow) = found.filter(|fl| c.filter.matches(fl)) {
            self.counter += 1;
            printer
                .flow(&flow, Context::Dump, None, b"")
                .map_err(CliError::system)?;
        }
        printer.finish_unclosed().map_err(CliError::system)
    }

    fn create(&mut self, c: &CtCommand, cmd: Cmd) -> Outcome {
        let req = request::create(c);
        let r = self.sock()?.request(&req, NLM_F_CREATE | NLM_F_EXCL);
        match r {
            Ok(()) => {
                self.counter += 1;
                Ok(())
            }
            Err(Error::Kernel(libc::EEXIST)) if cmd == Cmd::Add => Ok(()),
            Err(e) => Err(CliError::kernel(cmd, &e)),
        }
    }

    fn delete(&mut self, c: &CtCommand) -> Outcome {
        let req = request::dump(c, msg::GET, false);
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        let filter = &c.filter;
        let mut pending: Vec<(Flow, CtRequest)> = Vec::new();
        let mut deleted = 0u64;
        let mut failure: Option<CliError> = None;
        let sock = handle(&mut self.sock, self.netns.as_deref())?;
        let modifier = handle(&mut self.modifier, self.netns.as_deref())?;
        let mut flush_batch = |pending: &mut Vec<(Flow, CtRequest)>,
                               printer: &mut Printer,
                               failure: &mut Option<CliError>|
         -> Result<(), Error> {
            if pending.is_empty() {
                return Ok(());
            }
            let reqs: Vec<CtRequest> = pending.iter().map(|(_, r)| r.clone()).collect();
            let results = modifier.batch(&reqs, 0)?;
            for ((flow, _), r) in pending.drain(..).zip(results) {
                match r {
                    Ok(()) => {
                        deleted += 1;
                        if printer.flow(&flow, Context::Delete, None, b"").is_err() {
                            failure.get_or_insert_with(CliError::silent);
                        }
                    }
                    // vanished meanwhile (timed out, deleted by someone else)
                    Err(libc::ENOENT) => {}
                    Err(e) => {
                        failure.get_or_insert_with(|| {
                            CliError::kernel(Cmd::Delete, &Error::Kernel(e))
                        });
                    }
                }
            }
            Ok(())
        };
        let res = sock.dump(&req, &mut |f| {
            if !filter.matches(f) || failure.is_some() {
                return Ok(());
            }
            pending.push((f.clone(), request::delete(f)));
            if pending.len() >= 256 {
                flush_batch(&mut pending, &mut printer, &mut failure)?;
            }
            Ok(())
        });
        let tail = flush_batch(&mut pending, &mut printer, &mut failure);
        self.counter += deleted;
        let finished = printer.finish();
        if let Some(e) = failure {
            return Err(e);
        }
        finished.map_err(CliError::system)?;
        report_malformed(res.map_err(|e| CliError::kernel(Cmd::Delete, &e))?);
        tail.map_err(|e| CliError::kernel(Cmd::Delete, &e))
    }

    fn update(&mut self, c: &CtCommand) -> Outcome {
        let req = CtRequest::new(msg::GET, c.family);
        let mut candidates = Vec::new();
        let filter = &c.filter;
        let res = self.sock()?.dump(&req, &mut |f| {
            if !filter.matches_nat(f)
                || !filter.matches_labels(f)
                || !filter.matches_prefixes(f)
                || !filter.matches_tuples(f)
                || (filter.id.is_some() && f.id.is_some() && filter.id != f.id)
            {
                return Ok(());
            }
            candidates.push(f.clone());
            Ok(())
        });
        report_malformed(res.map_err(|e| CliError::kernel(Cmd::Update, &e))?);
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        for old in candidates {
            let Some(upd) = request::update(c, &old) else {
                continue;
            };
            let m = self.modifier()?;
            if let Err(e) = m.request(&upd, 0) {
                eprintln!("Operation failed: {}", err_text(Cmd::Update, &e));
            }
            match m.get(&request::get_entry(&old)) {
                Ok(Some(now)) => {
                    printer
                        .flow(&now, Context::Update, None, b"")
                        .map_err(CliError::system)?;
                    self.counter += 1;
                }
                Ok(None) | Err(Error::Kernel(libc::ENOENT)) => {}
                Err(e) => return Err(CliError::kernel(Cmd::Update, &e)),
            }
        }
        printer.finish().map_err(CliError::system)
    }

    fn flush(&mut self, c: &CtCommand) -> Outcome {
        let r = self.sock()?.request(&request::flush(c), 0);
        eprintln!("{PROGNAME_VERSION}: connection tracking table has been emptied.");
        r.map_err(|e| CliError::kernel(Cmd::Flush, &e))
    }

    fn count(&mut self) -> Outcome {
        match self.sock()?.count() {
            Ok((n, _)) => {
                println!("{n}");
                Ok(())
            }
            Err(e) => Err(CliError::kernel(Cmd::Count, &e)),
        }
    }

    fn stats(&mut self) -> Outcome {
        const NAMES: [&str; 20] = [
            "",
            "searched",
            "found",
            "new",
            "invalid",
            "ignore",
            "delete",
            "delete_list",
            "insert",
            "insert_failed",
            "drop",
            "early_drop",
            "error",
            "search_restart",
            "clash_resolve",
            "chaintoolong",
            "unknown1",
            "unknown2",
            "unknown3",
            "unknown4",
        ];
        let cpus = self
            .sock()?
            .stats_cpu()
            .map_err(|e| CliError::kernel(Cmd::Stats, &e))?;
        let mut out = String::new();
        for (cpu, vals) in cpus {
            out.push_str(&format!("cpu={cpu:<4}\t"));
            let mut table = [None; 20];
            for (k, v) in vals {
                if let Some(slot) = table.get_mut(k as usize) {
                    *slot = Some(v);
                }
            }
            for (i, v) in table.iter().enumerate().skip(1) {
                if let Some(v) = v {
                    out.push_str(&format!("{}={} ", NAMES[i], v));
                }
            }
            out.push('\n');
        }
        print!("{out}");
        Ok(())
    }

    fn events(&mut self, c: &CtCommand) -> Outcome {
        let mut es = EventSocket::open(c.event_mask & group::ALL, self.netns.as_deref())
            .map_err(|e| CliError::other(format!("Can't open netlink socket: {e}")))?;
        let want = c.buffer_size.unwrap_or(DEFAULT_EVENT_BUFFER);
        match es.socket().set_recv_buffer(want) {
            Ok(n) if c.buffer_size.is_some() => {
                eprintln!("NOTICE: Netlink socket buffer size has been set to {n} bytes.")
            }
            Ok(_) => {}
            Err(e) => eprintln!("ctrack: cannot set the event buffer size: {e}"),
        }
        let (sig_read, sig_write) = UnixStream::pair().map_err(CliError::system)?;
        for s in [libc::SIGINT, libc::SIGTERM] {
            let w = sig_write.try_clone().map_err(CliError::system)?;
            signal_hook::low_level::pipe::register(s, w).map_err(CliError::system)?;
        }
        let mut names = ProgNames::new(self.netns.as_deref());
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        // drain what is queued without blocking, print it, then flush once
        // before waiting again: lines appear as events come, but a burst
        // costs one write per batch instead of one per event
        if let Err(e) = es.socket().set_nonblocking(true) {
            return Err(CliError::system(e));
        }
        let mut overruns = 0u64;
        let mut counter = 0u64;
        let mut suffix = Vec::new();
        let mut failed: Option<io::Error> = None;
        let timestamps = c.output.timestamp && !c.output.xml && !c.output.save && !c.output.json;
        // 1.4.9 leaves the [USERSPACE] suffix out of XML (a fix of 1.4.7,
        // whose XML then is not well-formed)
        let userspace = !c.output.json && !c.output.xml;
        'outer: loop {
            let mut fds = [
                libc::pollfd {
                    fd: es.socket().fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sig_read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is an array of two valid pollfds for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(CliError::system(e));
            }
            if fds[1].revents != 0 {
                break;
            }
            if fds[0].revents == 0 {
                continue;
            }
            for _ in 0..EVENT_BATCH {
                let got = es.recv_each(&mut |kind, flow, portid| {
                    if failed.is_some()
                        || (c.family != 0 && flow.family != c.family)
                        || !c.filter.matches(flow)
                    {
                        return;
                    }
                    if timestamps {
                        // the kernel's event time when it sends one (1.4.9),
                        // else the time it is printed
                        let (s, us) = match flow.timestamp_event {
                            Some(ns) => (
                                (ns / 1_000_000_000) as i64,
                                (ns % 1_000_000_000 / 1000) as i64,
                            ),
                            None => now_timeval(),
                        };
                        printer.event_time(s, us);
                    }
                    suffix.clear();
                    if portid != 0 && userspace {
                        suffix.extend_from_slice(b" [USERSPACE] portid=");
                        crate::flow::addr::push_u64(&mut suffix, portid as u64);
                        if let Some(p) = names.name(portid) {
                            suffix.extend_from_slice(b" progname=");
                            suffix.extend_from_slice(p.as_bytes());
                        }
                    }
                    match printer.flow(flow, Context::Event, Some(kind), &suffix) {
                        Ok(()) => counter += 1,
                        Err(e) => failed = Some(e),
                    }
                });
                if let Some(e) = failed.take() {
                    return Err(CliError::system(e));
                }
                match got {
                    Ok(Received::Overrun) => {
                        overruns += 1;
                        let _ = printer.flush();
                        eprintln!(
                            "WARNING: event buffer overrun (ENOBUFS), events were lost; overruns so far: {overruns}; raise --buffer-size"
                        );
                        continue;
                    }
                    Ok(Received::Events) => {}
                    Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        let _ = printer.flush();
                        return Err(CliError::other(format!(
                            "failed to received netlink event: {e}"
                        )));
                    }
                }
                // a signal ends the loop even in a burst that never drains
                if counter % 64 == 0 && poll_readable(sig_read.as_raw_fd(), 0).unwrap_or(false) {
                    break 'outer;
                }
            }
            printer.flush().map_err(CliError::system)?;
        }
        printer.finish().map_err(CliError::system)?;
        self.counter += counter;
        Ok(())
    }
}

/// Datagrams read without blocking before the output is flushed.
const EVENT_BATCH: usize = 256;

/// Event receive buffer when `-b` is not given: room for a burst of about
/// 200k events while we print.
pub const DEFAULT_EVENT_BUFFER: usize = 64 << 20;

fn report_malformed(s: crate::netlink::DumpStats) {
    if s.malformed > 0 {
        eprintln!(
            "ctrack: warning: {} malformed entries in the kernel's reply were skipped",
            s.malformed
        );
    }
}

fn now_timeval() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_micros() as i64)
}
