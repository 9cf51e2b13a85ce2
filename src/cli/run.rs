//! Running a parsed conntrack command against the kernel and reporting as
//! conntrack does (summary line on stderr, exit codes 0/1/2).

use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::args::{self, ArgError, Cmd, CtCommand, PROGNAME_VERSION, Table, exit, opt};
use super::output::{Context, Printer};
use crate::flow::{Flow, TcpInfo, proto};
use crate::netlink::ct::{self, CtRequest, TupleParts, cta, msg};
use crate::netlink::events::{EventSocket, Received, group, poll_readable};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};
use crate::netlink::{Conntrack, Error};

/// Prints an argument error the way conntrack (or ctrack) does; returns
/// its exit code.
pub fn report_arg_error(e: &ArgError) -> i32 {
    if e.conntrack_style {
        eprintln!("{PROGNAME_VERSION}: {}", e.msg);
        if e.code == exit::PARAMETER {
            eprintln!("Try `conntrack -h' or 'conntrack --help' for more information.");
        }
    } else {
        eprintln!("ctrack: {}", e.msg);
    }
    e.code
}

/// conntrack's wording for kernel errors of a command (`err2str`).
pub fn err_text(cmd: Cmd, e: &Error) -> String {
    let Some(n) = e.errno() else {
        return e.to_string();
    };
    let text = match (cmd, n) {
        (Cmd::List, 524) => Some("function not implemented"),
        (_, libc::EINVAL) => Some("invalid parameters"),
        (Cmd::Create, libc::EEXIST) => Some("Such conntrack exists, try -U to update"),
        (Cmd::Create | Cmd::Get | Cmd::Delete | Cmd::Add, libc::ENOENT) => {
            Some("such conntrack doesn't exist")
        }
        (Cmd::Create | Cmd::Get | Cmd::Add, libc::ENOMEM) => Some("not enough memory"),
        (Cmd::Get, libc::EAFNOSUPPORT) => Some("protocol not supported"),
        (Cmd::Create | Cmd::Add, libc::ETIME) => Some("conntrack has expired"),
        (_, libc::EPERM) => {
            Some("sorry, you must be root or get CAP_NET_ADMIN capability to do this")
        }
        _ => None,
    };
    text.map(str::to_string).unwrap_or_else(|| e.to_string())
}

fn fail(cmd: Cmd, e: &Error) -> i32 {
    eprintln!("{PROGNAME_VERSION}: Operation failed: {}", err_text(cmd, e));
    exit::OTHER
}

fn io_fail(e: &io::Error) -> i32 {
    eprintln!("ctrack: {e}");
    exit::OTHER
}

/// The state of a run: the netns and the running count of entries.
pub struct Runner {
    /// `--netns NAME`.
    pub netns: Option<String>,
    /// Entries shown/created/deleted so far (conntrack's `counter`).
    pub counter: u64,
    sock: Option<Conntrack>,
    modifier: Option<Conntrack>,
}

/// The outcome of a command: the exit code (after the summary).
type Outcome = Result<(), i32>;

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

    fn sock(&mut self) -> Result<&mut Conntrack, i32> {
        if self.sock.is_none() {
            let s = Conntrack::open(self.netns.as_deref()).map_err(|e| {
                eprintln!("{PROGNAME_VERSION}: Can't open handler: {e}");
                exit::OTHER
            })?;
            self.sock = Some(s);
        }
        self.sock.as_mut().ok_or(exit::OTHER)
    }

    fn modifier(&mut self) -> Result<&mut Conntrack, i32> {
        if self.modifier.is_none() {
            let s = Conntrack::open(self.netns.as_deref()).map_err(|e| {
                eprintln!("{PROGNAME_VERSION}: Can't open handler: {e}");
                exit::OTHER
            })?;
            self.modifier = Some(s);
        }
        self.modifier.as_mut().ok_or(exit::OTHER)
    }

    /// Runs one command; prints the summary when `summary` is set (not for
    /// `-R` files). Returns the exit code.
    pub fn run(&mut self, c: &CtCommand, summary: bool) -> i32 {
        let Some(cmd) = c.cmd else {
            print!("{}", usage("conntrack"));
            return exit::OK;
        };
        if cmd.is_expect() {
            eprintln!("ctrack: the expectation table is not supported yet");
            return exit::OTHER;
        }
        let r = match cmd {
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
                        "unknown" => args::protocol_name(p).unwrap_or_else(|| "unknown".into()),
                        n => n.to_string(),
                    };
                    print!("Proto `{name}' help:\n{}", args::proto_help(p));
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(code) = r {
            return code;
        }
        if summary && let Some(m) = cmd.exit_msg() {
            eprintln!("{PROGNAME_VERSION}: {} {m}", self.counter);
            if self.counter == 0 && !matches!(cmd, Cmd::List | Cmd::Add) {
                return exit::OTHER;
            }
        }
        exit::OK
    }

    fn dump_request(c: &CtCommand, msg_type: u8, kernel_status: bool) -> CtRequest {
        let mut req = CtRequest::new(msg_type, c.family);
        let mut w = req.writer();
        if let Some((v, m)) = c.filter.mark {
            w.be32(cta::MARK, v);
            w.be32(cta::MARK_MASK, m);
        }
        if kernel_status && let Some(v) = c.filter.status {
            let mask = if c.filter.status_mask == 0 {
                v
            } else {
                c.filter.status_mask
            };
            w.be32(cta::STATUS, v);
            w.be32(cta::STATUS_MASK, mask);
        }
        req
    }

    fn list(&mut self, c: &CtCommand) -> Outcome {
        let msg_type = match c.table {
            Table::Dying => msg::GET_DYING,
            Table::Unconfirmed => msg::GET_UNCONFIRMED,
            _ if c.options & opt::ZERO != 0 => {
                if c.options & opt::COMPARISON != 0 {
                    return Err(report_arg_error(&ArgError {
                        msg: "Can't use -z with filtering parameters".into(),
                        code: exit::PARAMETER,
                        conntrack_style: true,
                    }));
                }
                msg::GET_CTRZERO
            }
            _ => msg::GET,
        };
        let req = if matches!(c.table, Table::Dying | Table::Unconfirmed) {
            CtRequest::new(msg_type, c.family)
        } else {
            Self::dump_request(c, msg_type, true)
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
            return Err(io_fail(&e));
        }
        printer.finish().map_err(|e| io_fail(&e))?;
        report_malformed(res.map_err(|e| fail(Cmd::List, &e))?);
        Ok(())
    }

    fn get(&mut self, c: &CtCommand) -> Outcome {
        let f = &c.filter;
        let mut req = CtRequest::new(msg::GET, c.family);
        let mut w = req.writer();
        if c.options & opt::ORIG != 0 || c.options & opt::REPL == 0 {
            ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &orig_parts(c));
        } else {
            ct::encode_tuple(&mut w, cta::TUPLE_REPLY, &reply_parts(c));
        }
        if let Some(z) = f.zone {
            w.be16(cta::ZONE, z);
        }
        let found = self.sock()?.get(&req).map_err(|e| fail(Cmd::Get, &e))?;
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        if let Some(flow) = found.filter(|fl| c.filter.matches(fl)) {
            self.counter += 1;
            printer
                .flow(&flow, Context::Dump, None, b"")
                .map_err(|e| io_fail(&e))?;
        }
        printer.finish_unclosed().map_err(|e| io_fail(&e))
    }

    fn create(&mut self, c: &CtCommand, cmd: Cmd) -> Outcome {
        let req = build_create(c);
        let r = self.sock()?.request(&req, NLM_F_CREATE | NLM_F_EXCL);
        match r {
            Ok(()) => {
                self.counter += 1;
                Ok(())
            }
            Err(Error::Kernel(libc::EEXIST)) if cmd == Cmd::Add => Ok(()),
            Err(e) => Err(fail(cmd, &e)),
        }
    }

    fn delete(&mut self, c: &CtCommand) -> Outcome {
        let req = Self::dump_request(c, msg::GET, false);
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        let filter = &c.filter;
        let mut pending: Vec<(Flow, CtRequest)> = Vec::new();
        let mut deleted = 0u64;
        let mut failure: Option<i32> = None;
        self.sock()?;
        self.modifier()?;
        let (Some(sock), Some(modifier)) = (self.sock.as_mut(), self.modifier.as_mut()) else {
            return Err(exit::OTHER);
        };
        let mut flush_batch = |pending: &mut Vec<(Flow, CtRequest)>,
                               printer: &mut Printer,
                               failure: &mut Option<i32>|
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
                            failure.get_or_insert(exit::OTHER);
                        }
                    }
                    // vanished meanwhile (timed out, deleted by someone else)
                    Err(libc::ENOENT) => {}
                    Err(e) => {
                        failure.get_or_insert_with(|| fail(Cmd::Delete, &Error::Kernel(e)));
                    }
                }
            }
            Ok(())
        };
        let res = sock.dump(&req, &mut |f| {
            if !filter.matches(f) || failure.is_some() {
                return Ok(());
            }
            let mut del = CtRequest::new(msg::DELETE, f.family);
            let mut w = del.writer();
            ct::encode_identity(&mut w, f);
            if let Some(id) = f.id {
                w.be32(cta::ID, id);
            }
            pending.push((f.clone(), del));
            if pending.len() >= 256 {
                flush_batch(&mut pending, &mut printer, &mut failure)?;
            }
            Ok(())
        });
        let tail = flush_batch(&mut pending, &mut printer, &mut failure);
        self.counter += deleted;
        printer.finish().map_err(|e| io_fail(&e))?;
        if let Some(code) = failure {
            return Err(code);
        }
        report_malformed(res.map_err(|e| fail(Cmd::Delete, &e))?);
        tail.map_err(|e| fail(Cmd::Delete, &e))
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
        report_malformed(res.map_err(|e| fail(Cmd::Update, &e))?);
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        for old in candidates {
            let Some(upd) = build_update(c, &old) else {
                continue;
            };
            let m = self.modifier()?;
            if let Err(e) = m.request(&upd, 0) {
                eprintln!("Operation failed: {}", err_text(Cmd::Update, &e));
            }
            let mut get = CtRequest::new(msg::GET, old.family);
            ct::encode_identity(&mut get.writer(), &old);
            match m.get(&get) {
                Ok(Some(now)) => {
                    printer
                        .flow(&now, Context::Update, None, b"")
                        .map_err(|e| io_fail(&e))?;
                    self.counter += 1;
                }
                Ok(None) | Err(Error::Kernel(libc::ENOENT)) => {}
                Err(e) => return Err(fail(Cmd::Update, &e)),
            }
        }
        printer.finish().map_err(|e| io_fail(&e))
    }

    fn flush(&mut self, c: &CtCommand) -> Outcome {
        let mut req = CtRequest::new(msg::DELETE, c.family);
        // version 1 makes the kernel honour the family (conntrack sends 0
        // and so always flushes both families)
        if c.family != 0 {
            req.version = 1;
        }
        let r = self.sock()?.request(&req, 0);
        eprintln!("{PROGNAME_VERSION}: connection tracking table has been emptied.");
        r.map_err(|e| fail(Cmd::Flush, &e))
    }

    fn count(&mut self) -> Outcome {
        match self.sock()?.count() {
            Ok((n, _)) => {
                println!("{n}");
                Ok(())
            }
            Err(e) => Err(fail(Cmd::Count, &e)),
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
        let cpus = self.sock()?.stats_cpu().map_err(|e| fail(Cmd::Stats, &e))?;
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
        let groups = if c.options & opt::EVENT_MASK != 0 {
            c.event_mask & group::ALL
        } else {
            group::ALL
        };
        let mut es = EventSocket::open(groups, self.netns.as_deref()).map_err(|e| {
            eprintln!("{PROGNAME_VERSION}: Can't open netlink socket: {e}");
            exit::OTHER
        })?;
        let want = c.buffer_size.unwrap_or(DEFAULT_EVENT_BUFFER);
        match es.socket().set_recv_buffer(want) {
            Ok(n) if c.buffer_size.is_some() => {
                eprintln!("NOTICE: Netlink socket buffer size has been set to {n} bytes.")
            }
            Ok(_) => {}
            Err(e) => eprintln!("ctrack: cannot set the event buffer size: {e}"),
        }
        let (sig_read, sig_write) = UnixStream::pair().map_err(|e| io_fail(&e))?;
        for s in [libc::SIGINT, libc::SIGTERM] {
            let w = sig_write.try_clone().map_err(|e| io_fail(&e))?;
            signal_hook::low_level::pipe::register(s, w).map_err(|e| io_fail(&e))?;
        }
        let mut names = ProgNames::new(self.netns.as_deref());
        let mut printer = Printer::new(c.output, c.labelmap.as_ref());
        // drain what is queued without blocking, print it, then flush once
        // before waiting again: lines appear as events come, but a burst
        // costs one write per batch instead of one per event
        if let Err(e) = es.socket().set_nonblocking(true) {
            return Err(io_fail(&e));
        }
        let mut batch = Vec::new();
        let mut overruns = 0u64;
        let mut counter = 0u64;
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
                return Err(io_fail(&e));
            }
            if fds[1].revents != 0 {
                break;
            }
            if fds[0].revents == 0 {
                continue;
            }
            for _ in 0..EVENT_BATCH {
                batch.clear();
                match es.recv_into(&mut batch) {
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
                        eprintln!("{PROGNAME_VERSION}: failed to received netlink event: {e}");
                        return Err(exit::OTHER);
                    }
                }
                for ev in &batch {
                    if c.family != 0 && ev.flow.family != c.family {
                        continue;
                    }
                    if !c.filter.matches(&ev.flow) {
                        continue;
                    }
                    if c.output.timestamp && !c.output.xml && !c.output.save && !c.output.json {
                        let (s, us) = now_timeval();
                        printer.raw(format!("[{s:08}.{us:06}]\t").as_bytes());
                    }
                    let suffix = if ev.portid != 0 && !c.output.json {
                        match names.name(ev.portid) {
                            Some(p) => format!(" [USERSPACE] portid={} progname={p}", ev.portid),
                            None => format!(" [USERSPACE] portid={}", ev.portid),
                        }
                    } else {
                        String::new()
                    };
                    printer
                        .flow(&ev.flow, Context::Event, Some(ev.kind), suffix.as_bytes())
                        .map_err(|e| io_fail(&e))?;
                    counter += 1;
                }
                // a signal ends the loop even in a burst that never drains
                if counter % 64 == 0 && poll_readable(sig_read.as_raw_fd(), 0).unwrap_or(false) {
                    break 'outer;
                }
            }
            printer.flush().map_err(|e| io_fail(&e))?;
        }
        printer.finish().map_err(|e| io_fail(&e))?;
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

fn orig_parts(c: &CtCommand) -> TupleParts {
    let f = &c.filter;
    let p = f.proto;
    TupleParts {
        src: f.orig_src,
        dst: f.orig_dst,
        proto: p,
        sport: f.orig_sport,
        dport: f.orig_dport,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
        icmp_id: f.icmp_id,
        zone: f.orig_zone,
    }
}

fn reply_parts(c: &CtCommand) -> TupleParts {
    let f = &c.filter;
    let icmp = f.proto.is_some_and(proto::is_icmp);
    TupleParts {
        src: f.reply_src,
        dst: f.reply_dst,
        proto: f.proto,
        sport: f.reply_sport,
        dport: f.reply_dport,
        icmp_type: if icmp {
            f.icmp_type
                .map(|t| crate::flow::names::icmp_reply_type(f.proto.unwrap_or(0), t))
        } else {
            None
        },
        icmp_code: if icmp { f.icmp_code } else { None },
        icmp_id: if icmp { f.icmp_id } else { None },
        zone: f.reply_zone,
    }
}

/// Builds the CT_NEW request of `-I`/`-A` from the template: the missing
/// direction is the inverse of the given one, as libnetfilter_conntrack's
/// SETUP_REPLY/SETUP_ORIGINAL do.
fn build_create(c: &CtCommand) -> CtRequest {
    let f = &c.filter;
    let has_orig = c.options & opt::ORIG != 0;
    let has_reply = c.options & opt::REPL != 0;
    let p = f.proto.unwrap_or(0);
    let mut orig = orig_parts(c);
    let mut reply = reply_parts(c);
    let swap = |t: &TupleParts| TupleParts {
        src: t.dst,
        dst: t.src,
        proto: t.proto,
        sport: if proto::has_ports(p) || p == proto::GRE {
            t.dport
        } else {
            None
        },
        dport: if proto::has_ports(p) || p == proto::GRE {
            t.sport
        } else {
            None
        },
        ..*t
    };
    if has_orig && !has_reply {
        reply = TupleParts {
            zone: f.reply_zone,
            ..swap(&orig)
        };
        if proto::is_icmp(p) {
            reply.icmp_type = f
                .icmp_type
                .map(|t| crate::flow::names::icmp_reply_type(p, t));
        }
    } else if has_reply && !has_orig {
        orig = TupleParts {
            zone: f.orig_zone,
            ..swap(&reply)
        };
        if proto::is_icmp(p) {
            orig.icmp_type = f.icmp_type;
        }
    }
    // a direction given in part (`-r A -n B`: NAT completes the reply)
    // gets the missing address as zeros, as conntrack sends it; the
    // kernel wants both addresses and the NAT setup replaces the zeros
    for t in [&mut orig, &mut reply] {
        let zero = |a: IpAddr| match a {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        match (t.src, t.dst) {
            (Some(a), None) => t.dst = Some(zero(a)),
            (None, Some(a)) => t.src = Some(zero(a)),
            _ => {}
        }
    }
    let mut req = CtRequest::new(msg::NEW, c.family);
    let mut w = req.writer();
    ct::encode_tuple(&mut w, cta::TUPLE_ORIG, &orig);
    ct::encode_tuple(&mut w, cta::TUPLE_REPLY, &reply);
    if c.options & opt::STATUS != 0 {
        w.be32(
            cta::STATUS,
            f.status.unwrap_or(0) | crate::flow::status::CONFIRMED,
        );
    }
    if let Some(t) = f.timeout {
        w.be32(cta::TIMEOUT, t);
    }
    if let Some((v, _)) = f.mark {
        w.be32(cta::MARK, v);
    }
    encode_protoinfo(&mut w, c, p);
    if let Some(n) = &c.snat {
        ct::encode_nat(&mut w, cta::NAT_SRC, n);
    }
    if let Some(n) = &c.dnat {
        ct::encode_nat(&mut w, cta::NAT_DST, n);
    }
    if let Some(z) = f.zone {
        w.be16(cta::ZONE, z);
    }
    if let Some(l) = &c.label_modify {
        let mut b = Vec::with_capacity(16);
        for word in l.words {
            b.extend_from_slice(&word.to_ne_bytes());
        }
        w.bytes(cta::LABELS, &b);
    }
    req
}

fn encode_protoinfo(w: &mut crate::netlink::attr::AttrWriter, c: &CtCommand, p: u8) {
    match p {
        proto::TCP => {
            let fl = c.tcp_flags();
            ct::encode_tcp_info(
                w,
                &TcpInfo {
                    state: c.filter.state,
                    wscale: [None; 2],
                    flags: [Some((fl, fl)); 2],
                },
            );
        }
        proto::SCTP => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_SCTP);
            if let Some(s) = c.filter.state {
                w.u8(cta::SCTP_STATE, s);
            }
            // conntrack 1.4.7 byte-swaps the tag on little-endian hosts
            // (htonl twice); its `-o save` dumps print it swapped back,
            // so swapping here keeps dumps of both tools loadable
            for (i, kind) in [cta::SCTP_VTAG_ORIG, cta::SCTP_VTAG_REPLY]
                .into_iter()
                .enumerate()
            {
                if let Some(t) = c.sctp_vtag[i] {
                    w.be32(kind, t.to_be());
                }
            }
            w.end(inner);
            w.end(nest);
        }
        proto::DCCP => {
            let nest = w.begin(cta::PROTOINFO);
            let inner = w.begin(cta::PROTOINFO_DCCP);
            if let Some(s) = c.filter.state {
                w.u8(cta::DCCP_STATE, s);
            }
            if let Some(r) = c.dccp_role {
                w.u8(cta::DCCP_ROLE, r);
            }
            w.end(inner);
            w.end(nest);
        }
        _ => {}
    }
}

/// The update `-U` sends for one entry, or None when nothing would change.
fn build_update(c: &CtCommand, old: &Flow) -> Option<CtRequest> {
    let f = &c.filter;
    let mut changed = false;
    let mut req = CtRequest::new(msg::NEW, old.family);
    let mut w = req.writer();
    ct::encode_identity(&mut w, old);
    if let Some(t) = f.timeout {
        changed |= old.timeout != Some(t);
        w.be32(cta::TIMEOUT, t);
    }
    if c.options & opt::STATUS != 0 {
        let s = old.status.unwrap_or(0) | f.status.unwrap_or(0);
        changed |= old.status != Some(s);
        w.be32(cta::STATUS, s);
    }
    if let Some((v, m)) = f.mark {
        let new = (old.mark.unwrap_or(0) & !m) ^ v;
        changed |= old.mark != Some(new);
        w.be32(cta::MARK, new);
    }
    if let (Some(s), proto::TCP) = (f.state, old.orig.proto) {
        changed |= old.protoinfo.tcp_state() != Some(s);
        let fl = c.tcp_flags();
        ct::encode_tcp_info(
            &mut w,
            &TcpInfo {
                state: Some(s),
                wscale: [None; 2],
                flags: [Some((fl, fl)); 2],
            },
        );
    }
    if c.options & (opt::ADD_LABEL | opt::DEL_LABEL) != 0 {
        let have = old.labels.map(|l| l.words).unwrap_or([0; 4]);
        let modify = c.label_modify.map(|l| l.words);
        let (labels, mask) = if c.options & opt::ADD_LABEL != 0 {
            let m = modify.unwrap_or([0; 4]);
            let mut l = have;
            for i in 0..4 {
                l[i] |= m[i];
            }
            (l, m)
        } else {
            match modify {
                Some(m) => {
                    let mut l = have;
                    for i in 0..4 {
                        l[i] &= !m[i];
                    }
                    (l, m)
                }
                None => ([0; 4], [u32::MAX; 4]),
            }
        };
        changed |= labels != have;
        let enc = |ws: [u32; 4]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        w.bytes(cta::LABELS, &enc(labels));
        w.bytes(cta::LABELS_MASK, &enc(mask));
    }
    changed.then_some(req)
}

/// Finds the program that owns a netlink port id, as conntrack's
/// `[USERSPACE] ... progname=` does, remembering the last answer.
struct ProgNames {
    netlink: Option<std::fs::File>,
    last: Option<(u32, u64, Option<String>)>,
    /// The last answer and when it was found: a burst of events from one
    /// program (a `conntrack -R` of 200k lines) is not one /proc scan each.
    recent: Option<(u32, std::time::Instant, Option<String>)>,
}

impl ProgNames {
    fn new(netns: Option<&str>) -> ProgNames {
        let open = || std::fs::File::open("/proc/thread-self/net/netlink");
        let netlink = match netns {
            Some(n) => crate::netlink::socket::in_netns(n, open).ok(),
            None => open().ok(),
        };
        ProgNames {
            netlink,
            last: None,
            recent: None,
        }
    }

    fn name(&mut self, portid: u32) -> Option<String> {
        if let Some((p, at, n)) = &self.recent
            && *p == portid
            && at.elapsed() < std::time::Duration::from_millis(200)
        {
            return n.clone();
        }
        let n = self.lookup(portid);
        self.recent = Some((portid, std::time::Instant::now(), n.clone()));
        n
    }

    fn lookup(&mut self, portid: u32) -> Option<String> {
        let f = self.netlink.as_mut()?;
        f.rewind().ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        let inode = text.lines().skip(1).find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let proto: i32 = w.get(1)?.parse().ok()?;
            let pid: u32 = w.get(2)?.parse().ok()?;
            let inode: u64 = w.get(9)?.parse().ok()?;
            (proto == 12 && pid == portid).then_some(inode)
        })?;
        if let Some((p, i, n)) = &self.last
            && *p == portid
            && *i == inode
        {
            return n.clone();
        }
        let name = find_socket_owner(portid, inode);
        self.last = Some((portid, inode, name.clone()));
        name
    }
}

fn comm_of(pid: u64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close).map(str::to_string)
}

fn owns_socket(pid: u64, inode: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    dir.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
}

fn find_socket_owner(portid: u32, inode: u64) -> Option<String> {
    if owns_socket(portid as u64, inode) {
        return comm_of(portid as u64);
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if pid <= 1 || pid == portid as u64 {
            continue;
        }
        if owns_socket(pid, inode) {
            return comm_of(pid);
        }
    }
    None
}

/// Splits a `-R` file line into arguments like iptables-restore: blanks
/// separate, double quotes group, backslash escapes inside quotes.
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut have = false;
    for ch in line.chars() {
        if in_quote {
            if escaped {
                cur.push(ch);
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quote = false;
            } else {
                cur.push(ch);
            }
            continue;
        }
        match ch {
            '"' => {
                in_quote = true;
                have = true;
            }
            ' ' | '\t' | '\n' | '\r' => {
                if have || !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => cur.push(c),
        }
        if cur.len() >= 1024 {
            return Err("Parameter too long!".into());
        }
    }
    if have || !cur.is_empty() {
        args.push(cur);
    }
    if args.len() >= 255 {
        return Err("too many arguments".into());
    }
    Ok(args)
}

/// `-R FILE`: runs each line (only -I -A -U -D -F allowed) with no
/// summary, stopping at the first error.
pub fn load_file(runner: &mut Runner, path: &str) -> i32 {
    let text = if path == "-" {
        let mut s = String::new();
        if io::stdin().read_to_string(&mut s).is_err() {
            return report_arg_error(&param(format!("Failed to open file {path} for reading")));
        }
        s
    } else {
        match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(_) => {
                return report_arg_error(&param(format!("Failed to open file {path} for reading")));
            }
        }
    };
    let mut cmds = Vec::new();
    for line in text.lines() {
        let l = line.trim_start_matches([' ', '\t']);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let argv = match split_line(l) {
            Ok(a) => a,
            Err(m) => return report_arg_error(&param(m)),
        };
        match args::parse(argv) {
            Ok((c, warnings)) => {
                for w in warnings {
                    eprintln!("{w}");
                }
                cmds.push(c);
            }
            Err(e) => return report_arg_error(&e),
        }
    }
    for c in &cmds {
        let allowed = matches!(
            c.cmd,
            Some(Cmd::Create | Cmd::Add | Cmd::Update | Cmd::Delete | Cmd::Flush)
        );
        if !allowed {
            let name = match c.cmd {
                Some(Cmd::List) => "-L",
                Some(Cmd::Get) => "-G",
                Some(Cmd::Event) => "-E",
                Some(Cmd::Version) => "-V",
                Some(Cmd::Help) => "-h",
                Some(Cmd::Count) => "-C",
                Some(Cmd::Stats) => "-S",
                Some(Cmd::ExpList) => "-L expect",
                Some(Cmd::ExpCreate) => "-C expect",
                Some(Cmd::ExpDelete) => "-D expect",
                Some(Cmd::ExpGet) => "-G expect",
                Some(Cmd::ExpFlush) => "-F expect",
                Some(Cmd::ExpEvent) => "-E expect",
                Some(Cmd::ExpCount) => "-C expect",
                Some(Cmd::ExpStats) => "-S expect",
                _ => "unknown",
            };
            return report_arg_error(&param(format!(
                "Cannot use command `{name}' with --load-file"
            )));
        }
    }
    for c in &cmds {
        let code = runner.run(c, false);
        if code != exit::OK && !matches!(c.cmd, Some(Cmd::Update | Cmd::Delete)) {
            return code;
        }
    }
    let _ = io::stdout().flush();
    exit::OK
}

fn param(msg: String) -> ArgError {
    ArgError {
        msg,
        code: exit::PARAMETER,
        conntrack_style: true,
    }
}

/// conntrack's usage text (`-h`).
pub fn usage(prog: &str) -> String {
    format!(
        "Command line interface for the connection tracking system. Version 1.4.7\n\
Usage: {prog} [commands] [options]\n\
\n\
Commands:\n\
\x20 -L [table] [options]\t\tList conntrack or expectation table\n\
\x20 -G [table] parameters\t\tGet conntrack or expectation\n\
\x20 -D [table] parameters\t\tDelete conntrack or expectation\n\
\x20 -I [table] parameters\t\tCreate a conntrack or expectation\n\
\x20 -U [table] parameters\t\tUpdate a conntrack\n\
\x20 -E [table] [options]\t\tShow events\n\
\x20 -F [table]\t\t\tFlush table\n\
\x20 -C [table]\t\t\tShow counter\n\
\x20 -S\t\t\t\tShow statistics\n\
\n\
Tables: conntrack, expect, dying, unconfirmed\n\
\n\
Conntrack parameters and options:\n\
\x20 -n, --src-nat ip\t\t\tsource NAT ip\n\
\x20 -g, --dst-nat ip\t\t\tdestination NAT ip\n\
\x20 -j, --any-nat ip\t\t\tsource or destination NAT ip\n\
\x20 -m, --mark mark\t\t\tSet mark\n\
\x20 -c, --secmark secmark\t\t\tSet selinux secmark\n\
\x20 -e, --event-mask eventmask\t\tEvent mask, eg. NEW,DESTROY\n\
\x20 -z, --zero \t\t\t\tZero counters while listing\n\
\x20 -o, --output type[,...]\t\tOutput format, eg. xml\n\
\x20 -l, --label label[,...]\t\tconntrack labels\n\
\n\
Expectation parameters and options:\n\
\x20 --tuple-src ip\tSource address in expect tuple\n\
\x20 --tuple-dst ip\tDestination address in expect tuple\n\
\n\
Updating parameters and options:\n\
\x20 --label-add label\tAdd label\n\
\x20 --label-del label\tDelete label\n\
\n\
Common parameters and options:\n\
\x20 -s, --src, --orig-src ip\t\tSource address from original direction\n\
\x20 -d, --dst, --orig-dst ip\t\tDestination address from original direction\n\
\x20 -r, --reply-src ip\t\tSource addres from reply direction\n\
\x20 -q, --reply-dst ip\t\tDestination address from reply direction\n\
\x20 -p, --protonum proto\t\tLayer 4 Protocol, eg. 'tcp'\n\
\x20 -f, --family proto\t\tLayer 3 Protocol, eg. 'ipv6'\n\
\x20 -t, --timeout timeout\t\tSet timeout\n\
\x20 -u, --status status\t\tSet status, eg. ASSURED\n\
\x20 -w, --zone value\t\tSet conntrack zone\n\
\x20 --orig-zone value\t\tSet zone for original direction\n\
\x20 --reply-zone value\t\tSet zone for reply direction\n\
\x20 -b, --buffer-size\t\tNetlink socket buffer size\n\
\x20 --mask-src ip\t\t\tSource mask address\n\
\x20 --mask-dst ip\t\t\tDestination mask address\n\
\n"
    )
}
