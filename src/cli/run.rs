//! Running a parsed conntrack command against the kernel and reporting as
//! conntrack does (summary line on stderr, exit codes 0/1/2). Requests are
//! built by [`super::request`]; failures go back as [`CliError`] values.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::args::{Cmd, CtCommand, Table};
use super::error::{CliError, PROGNAME_VERSION};
use super::output::{Context, Printer, Userspace};
use super::progname::ProgNames;
use super::request::{self, KernelSelects};
use super::table::KeptTable;
use super::usage::{proto_help, usage};
use crate::flow::Flow;
use crate::netlink::ct::{CtRequest, msg};
use crate::netlink::events::{EventSocket, Received, group, poll_readable};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};
use crate::netlink::{Conntrack, DumpStats, Error};

/// The state of a run: the netns and the running count of entries.
pub struct Runner {
    /// `--netns NAME`.
    pub netns: Option<String>,
    /// Entries shown/created/deleted so far (conntrack's `counter`).
    pub counter: u64,
    sock: Option<Conntrack>,
    modifier: Option<Conntrack>,
    /// Whether commands select from [`Runner::table`] (a `-R` run).
    keep_table: bool,
    /// The table as this run left it, dumped once when a `-D` or a `-U`
    /// with filters first needs it, and kept up to date with what the run
    /// changes: a `-R` file costs one dump however many lines select.
    table: Option<KeptTable>,
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
            keep_table: false,
            table: None,
        }
    }

    /// Makes `-D` and `-U` select from one dump of the table kept for the
    /// whole run (`-R`): changes by others during the run are not seen.
    pub fn keep_table(&mut self) {
        self.keep_table = true;
    }

    /// The entries of the kept table that `c`'s family and `pick` select,
    /// the table dumped first if this run has not yet.
    fn select_kept(
        &mut self,
        c: &CtCommand,
        pick: &dyn Fn(&Flow) -> bool,
    ) -> Result<Vec<Flow>, CliError> {
        if self.table.is_none() {
            let mut all = Vec::new();
            let stats = self
                .sock()?
                .dump(&CtRequest::new(msg::GET, 0), &mut |f| {
                    all.push(f.clone());
                    Ok(())
                })
                .map_err(|e| CliError::kernel(Cmd::List, &e))?;
            report_malformed(stats);
            self.table = Some(KeptTable::new(all));
        }
        let family = c.family;
        Ok(self.table.as_ref().map_or_else(Vec::new, |t| {
            t.select(c.filter.orig_src, &|f| {
                (family == 0 || f.family == family) && pick(f)
            })
        }))
    }

    /// Puts an entry as the kernel now has it into the kept table (the
    /// answer of a get; nothing when there is no table or no answer).
    fn remember(&mut self, got: Result<Option<Flow>, Error>) {
        if let (Some(t), Ok(Some(f))) = (&mut self.table, got) {
            t.put(f);
        }
    }

    /// Drops an entry that is gone from the kept table.
    fn forget(&mut self, f: &Flow) {
        if let Some(t) = &mut self.table {
            t.remove(f);
        }
    }

    /// Drops the entries `c` selected (and deleted) from the kept table.
    fn forget_where(&mut self, c: &CtCommand, pick: &dyn Fn(&Flow) -> bool) {
        let family = c.family;
        if let Some(t) = &mut self.table {
            t.remove_where(c.filter.orig_src, &|f| {
                (family == 0 || f.family == family) && pick(f)
            });
        }
    }

    /// The socket for queries and dumps.
    pub(super) fn sock(&mut self) -> Result<&mut Conntrack, CliError> {
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
        match cmd {
            _ if cmd.is_expect() => super::expect::run(self, c, cmd),
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
            // listing nothing, or listening and seeing nothing, is no failure
            let listing = matches!(cmd, Cmd::List | Cmd::Add | Cmd::ExpList);
            if self.counter == 0 && !listing && !matches!(cmd, Cmd::Event | Cmd::ExpEvent) {
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
        let reqs = if matches!(c.table, Table::Dying | Table::Unconfirmed) {
            vec![CtRequest::new(msg_type, c.family)]
        } else {
            request::dumps(
                c,
                msg_type,
                KernelSelects {
                    mark: true,
                    status: true,
                },
            )
        };
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        let filter = &c.filter;
        let everything = filter.is_empty();
        let mut counter = 0u64;
        let mut out_err = None;
        let res = dump_all(self.sock()?, &reqs, &mut |f| {
            if !everything && !filter.matches(f) {
                return Ok(());
            }
            counter += 1;
            if let Err(e) = printer.flow(f, Context::Dump, None, None) {
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
                .flow(&flow, Context::Dump, None, None)
                .map_err(CliError::system)?;
        }
        printer.finish_unclosed().map_err(CliError::system)
    }

    fn create(&mut self, c: &CtCommand, cmd: Cmd) -> Outcome {
        let req = request::create(c);
        let sock = self.sock()?;
        // -A creates the entry or, as 1.4.9, updates the one that exists
        // (no NLM_F_EXCL) and counts it
        let r = match sock.request(&req, NLM_F_CREATE | NLM_F_EXCL) {
            Err(Error::Kernel(libc::EEXIST)) if cmd == Cmd::Add => {
                match sock.request(&req, NLM_F_CREATE) {
                    // an entry the kernel refuses to change (a NAT set-up,
                    // status bits it cannot clear) stays as it is: -A's
                    // purpose is loading a dump again without failing
                    Err(Error::Kernel(_)) => return Ok(()),
                    r => r,
                }
            }
            r => r,
        };
        r.map_err(|e| CliError::kernel(cmd, &e))?;
        self.counter += 1;
        if self.table.is_some() {
            let got = self.sock()?.get(&request::get(c));
            self.remember(got);
        }
        Ok(())
    }

    fn delete(&mut self, c: &CtCommand) -> Outcome {
        let reqs = request::dumps(
            c,
            msg::GET,
            KernelSelects {
                mark: true,
                status: false,
            },
        );
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        let filter = &c.filter;
        let mut deleter = Deleter::default();
        let res = if self.keep_table {
            let picked = self.select_kept(c, &|f| filter.matches(f))?;
            let modifier = self.modifier()?;
            let mut sent = Ok(());
            for f in &picked {
                sent = deleter.push(modifier, &mut printer, f);
                if sent.is_err() || deleter.failure.is_some() {
                    break;
                }
            }
            sent.map(|()| DumpStats::default())
        } else {
            let sock = handle(&mut self.sock, self.netns.as_deref())?;
            let modifier = handle(&mut self.modifier, self.netns.as_deref())?;
            dump_all(sock, &reqs, &mut |f| {
                if !filter.matches(f) || deleter.failure.is_some() {
                    return Ok(());
                }
                deleter.push(modifier, &mut printer, f)
            })
        };
        let tail = deleter.send(self.modifier()?, &mut printer);
        if self.keep_table {
            if res.is_ok() && tail.is_ok() && deleter.failure.is_none() {
                self.forget_where(c, &|f| filter.matches(f));
            } else {
                // not all were deleted: the next line dumps again
                self.table = None;
            }
        }
        self.counter += deleter.deleted;
        let finished = printer.finish();
        if let Some(e) = deleter.failure {
            return Err(e);
        }
        finished.map_err(CliError::system)?;
        report_malformed(res.map_err(|e| CliError::kernel(Cmd::Delete, &e))?);
        tail.map_err(|e| CliError::kernel(Cmd::Delete, &e))
    }

    fn update(&mut self, c: &CtCommand) -> Outcome {
        let selects = |f: &Flow| update_selects(c, f);
        // an entry named by its whole tuple is got and updated directly;
        // when the default zone has none, the tuple may be in another
        // zone: searched for as with filters
        let direct = match request::get_named(c) {
            Some(get) => match self.sock()?.get(&get) {
                Ok(Some(f)) => Some(if selects(&f) { vec![f] } else { Vec::new() }),
                Ok(None) | Err(Error::Kernel(libc::ENOENT)) => None,
                Err(e) => return Err(CliError::kernel(Cmd::Update, &e)),
            },
            None => None,
        };
        let candidates = match direct {
            Some(found) => found,
            None if self.keep_table => self.select_kept(c, &selects)?,
            None => {
                let reqs = request::dumps(
                    c,
                    msg::GET,
                    KernelSelects {
                        mark: false,
                        status: false,
                    },
                );
                let mut found = Vec::new();
                let res = dump_all(self.sock()?, &reqs, &mut |f| {
                    if selects(f) {
                        found.push(f.clone());
                    }
                    Ok(())
                });
                report_malformed(res.map_err(|e| CliError::kernel(Cmd::Update, &e))?);
                found
            }
        };
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        for old in candidates {
            let Some(upd) = request::update(c, &old) else {
                continue;
            };
            let m = self.modifier()?;
            match m.request(&upd, 0) {
                Ok(()) => {}
                // gone meanwhile; or a label change on an entry without the
                // label extension, which the kernel cannot give it (1.4.9)
                Err(Error::Kernel(libc::ENOENT)) => {
                    self.forget(&old);
                    continue;
                }
                Err(Error::Kernel(libc::ENOSPC))
                    if c.label_change.is_some() && old.labels.is_none() =>
                {
                    continue;
                }
                // as 1.4.9: 1.4.7 went on and showed and counted the entry
                Err(e) => {
                    printer.finish().map_err(CliError::system)?;
                    return Err(CliError::kernel(Cmd::Update, &e));
                }
            }
            match m.get(&request::get_entry(&old)) {
                Ok(Some(now)) => {
                    printer
                        .flow(&now, Context::Update, None, None)
                        .map_err(CliError::system)?;
                    self.counter += 1;
                    self.remember(Ok(Some(now)));
                }
                Ok(None) | Err(Error::Kernel(libc::ENOENT)) => self.forget(&old),
                Err(e) => return Err(CliError::kernel(Cmd::Update, &e)),
            }
        }
        printer.finish().map_err(CliError::system)
    }

    fn flush(&mut self, c: &CtCommand) -> Outcome {
        let r = self.sock()?.request(&request::flush(c), 0);
        if let Some(t) = &mut self.table {
            t.clear(c.family);
        }
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
        let out = cpu_stats_text(&cpus, &NAMES);
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
        let everything = c.filter.is_empty();
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
            // one clock reading per batch: delta-times, program names
            printer.set_now(crate::flow::now_secs());
            let batch_time = std::time::Instant::now();
            for _ in 0..EVENT_BATCH {
                let got = es.recv_each(&mut |kind, flow, portid| {
                    if failed.is_some()
                        || (c.family != 0 && flow.family != c.family)
                        || (!everything && !c.filter.matches(flow))
                    {
                        return;
                    }
                    if timestamps {
                        let (s, us) = event_time(flow);
                        printer.event_time(s, us);
                    }
                    let by = (portid != 0 && userspace).then(|| Userspace {
                        portid,
                        progname: names.name(portid, batch_time),
                    });
                    match printer.flow(flow, Context::Event, Some(kind), by) {
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

/// conntrack's per-CPU statistics lines (`-S`, `-S expect`): `cpu=N` and
/// `name=value ` for each attribute the kernel sent that has a name.
pub(super) fn cpu_stats_text(cpus: &[crate::netlink::client::CpuStats], names: &[&str]) -> String {
    let mut out = String::new();
    for (cpu, vals) in cpus {
        out.push_str(&format!("cpu={cpu:<4}\t"));
        let mut table = vec![None; names.len()];
        for &(k, v) in vals {
            if let Some(slot) = table.get_mut(k as usize) {
                *slot = Some(v);
            }
        }
        for (name, v) in names.iter().zip(&table).skip(1) {
            if let Some(v) = v {
                out.push_str(&format!("{name}={v} "));
            }
        }
        out.push('\n');
    }
    out
}

/// Datagrams read without blocking before the output is flushed.
pub(super) const EVENT_BATCH: usize = 256;

/// Event receive buffer when `-b` is not given: room for a burst of about
/// 200k events while we print.
pub const DEFAULT_EVENT_BUFFER: usize = 64 << 20;

/// Whether `-U`'s selectors pick `f`: its addresses, tuples, NAT, labels
/// and id (its `-m`, `-u`, `-t` are the new values, not selectors).
fn update_selects(c: &CtCommand, f: &Flow) -> bool {
    let s = &c.filter;
    s.matches_nat(f)
        && s.matches_labels(f)
        && s.matches_prefixes(f)
        && s.matches_tuples(f)
        && !(s.id.is_some() && f.id.is_some() && s.id != f.id)
}

/// Entries to delete, sent in batches (many deletes per system call).
#[derive(Default)]
struct Deleter {
    pending: Vec<(Flow, CtRequest)>,
    /// Entries deleted.
    deleted: u64,
    /// The first failure: no more entries are taken once it is set.
    failure: Option<CliError>,
}

impl Deleter {
    /// Entries per batch.
    const BATCH: usize = 256;

    /// Takes an entry to delete; sends the batch once it is full.
    fn push(&mut self, m: &mut Conntrack, printer: &mut Printer, f: &Flow) -> Result<(), Error> {
        self.pending.push((f.clone(), request::delete(f)));
        if self.pending.len() >= Self::BATCH {
            self.send(m, printer)?;
        }
        Ok(())
    }

    /// Sends what is pending and prints what was deleted.
    fn send(&mut self, m: &mut Conntrack, printer: &mut Printer) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let reqs: Vec<CtRequest> = self.pending.iter().map(|(_, r)| r.clone()).collect();
        let results = m.batch(&reqs, 0)?;
        for ((flow, _), r) in self.pending.drain(..).zip(results) {
            match r {
                Ok(()) => {
                    self.deleted += 1;
                    if printer.flow(&flow, Context::Delete, None, None).is_err() {
                        self.failure.get_or_insert_with(CliError::silent);
                    }
                }
                // vanished meanwhile (timed out, deleted by someone else)
                Err(libc::ENOENT) => {}
                Err(e) => {
                    self.failure
                        .get_or_insert_with(|| CliError::kernel(Cmd::Delete, &Error::Kernel(e)));
                }
            }
        }
        Ok(())
    }
}

/// Runs the dumps of one command on `sock`, one after the other, and adds
/// up their counts; stops at the first that fails.
fn dump_all(
    sock: &mut Conntrack,
    reqs: &[CtRequest],
    each: &mut dyn FnMut(&Flow) -> Result<(), Error>,
) -> Result<DumpStats, Error> {
    let mut total = DumpStats::default();
    for req in reqs {
        let s = sock.dump(req, each)?;
        total.entries += s.entries;
        total.malformed += s.malformed;
    }
    Ok(total)
}

pub(super) fn report_malformed(s: DumpStats) {
    if s.malformed > 0 {
        eprintln!(
            "ctrack: warning: {} malformed entries in the kernel's reply were skipped",
            s.malformed
        );
    }
}

/// When an event happened, in seconds and microseconds: the kernel's
/// event time when it sends one (CTA_TIMESTAMP_EVENT, with
/// `nf_conntrack_timestamp=1`; as 1.4.9), else now.
fn event_time(f: &Flow) -> (i64, i64) {
    match f.timestamp_event {
        Some(ns) => (
            (ns / 1_000_000_000) as i64,
            (ns % 1_000_000_000 / 1000) as i64,
        ),
        None => now_timeval(),
    }
}

pub(super) fn now_timeval() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_the_kernels_when_sent() {
        let mut f = Flow {
            timestamp_event: Some(1_795_571_902_123_456_789),
            ..Flow::default()
        };
        assert_eq!(event_time(&f), (1_795_571_902, 123_456));
        f.timestamp_event = None;
        let (now, _) = now_timeval();
        let (s, us) = event_time(&f);
        assert!((s - now).abs() <= 1 && (0..1_000_000).contains(&us));
    }
}
