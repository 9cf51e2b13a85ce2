//! The expectation table commands (`-L/-G/-D/-I/-F/-C/-S/-E expect`), run
//! as conntrack 1.4.7 runs them: the same requests (through
//! `netlink::exp`), the same lines (`flow::expect`), summaries and exit
//! codes. Two deliberate differences (README): `-I expect` puts the `-p`
//! protocol in the expected tuple (1.4.7 puts the high byte of a TCP,
//! SCTP or DCCP `--tuple-port-*` there), and `-E expect` takes `-e`.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::args::{Cmd, CtCommand, Output};
use super::error::{CliError, PROGNAME_VERSION};
use super::run::{
    DEFAULT_EVENT_BUFFER, EVENT_BATCH, Runner, cpu_stats_text, now_timeval, report_malformed,
};
use crate::flow::expect::{
    self, ExpJsonOptions, ExpTextOptions, ExpXmlOptions, Expectation, write_json, write_line,
    write_xml,
};
use crate::flow::{AF_INET6, EventKind, Tuple};
use crate::netlink::events::{EventSocket, poll_readable};
use crate::netlink::exp::{self, ExpEvent, decode_events};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};

type Outcome = Result<(), CliError>;

/// Runs expectation command `cmd`; the caller prints the summary.
pub(super) fn run(r: &mut Runner, c: &CtCommand, cmd: Cmd) -> Outcome {
    match cmd {
        Cmd::ExpList => list(r, c),
        Cmd::ExpGet => get(r, c),
        Cmd::ExpDelete => delete(r, c),
        Cmd::ExpCreate => create(r, c),
        Cmd::ExpFlush => flush(r, c),
        Cmd::ExpCount => count(r, c),
        Cmd::ExpStats => stats(r),
        Cmd::ExpEvent => events(r, c),
        _ => Ok(()),
    }
}

/// Writes expectations in the format `-o` picked, through one buffer.
struct ExpPrinter {
    out: Vec<u8>,
    output: Output,
    xml_open: bool,
}

/// Bytes buffered before they are written out.
const FLUSH_AT: usize = 256 * 1024;

impl ExpPrinter {
    fn new(output: Output) -> ExpPrinter {
        ExpPrinter {
            out: Vec::with_capacity(4096),
            output,
            xml_open: false,
        }
    }

    /// One expectation: an XML element (the document opened first), a
    /// JSON object, or conntrack's line behind a `-o timestamp` prefix.
    fn exp(&mut self, e: &Expectation, event: Option<EventKind>) -> io::Result<()> {
        let o = self.output;
        if o.xml {
            if !self.xml_open {
                self.out.extend_from_slice(expect::XML_HEADER.as_bytes());
                self.xml_open = true;
            }
            write_xml(
                &mut self.out,
                e,
                &ExpXmlOptions {
                    event,
                    when: o.timestamp,
                    now: crate::flow::now_secs(),
                },
            );
        } else if o.json {
            write_json(
                &mut self.out,
                e,
                &ExpJsonOptions {
                    event,
                    hide_timeout: false,
                },
            );
        } else {
            if o.timestamp {
                // conntrack's "[%-8ld.%-6ld]\t": left-aligned, blank-padded
                let (s, us) = now_timeval();
                self.out
                    .extend_from_slice(format!("[{s:<8}.{us:<6}]\t").as_bytes());
            }
            write_line(
                &mut self.out,
                e,
                &ExpTextOptions {
                    event,
                    hide_timeout: false,
                },
            );
        }
        self.out.push(b'\n');
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Closes the XML document if one was opened, and writes everything.
    fn finish(&mut self) -> io::Result<()> {
        if self.xml_open {
            self.out.extend_from_slice(expect::XML_FOOTER.as_bytes());
            self.xml_open = false;
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let mut so = io::stdout().lock();
            so.write_all(&self.out)?;
            so.flush()?;
            self.out.clear();
        }
        Ok(())
    }
}

/// The unspecified address of the command's family (a tuple part the
/// command line did not give is zeros, as conntrack sends it).
fn unspecified(family: u8) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The tuple `-s -d -p --sport --dport` (ICMP, GRE fields) name: the
/// master of `-I`/`-G expect`, the expected tuple of `-D expect`.
fn named_tuple(c: &CtCommand) -> Tuple {
    let f = &c.filter;
    let none = unspecified(c.family);
    Tuple {
        src: f.orig_src.or(f.src_prefix.map(|p| p.addr)).unwrap_or(none),
        dst: f.orig_dst.or(f.dst_prefix.map(|p| p.addr)).unwrap_or(none),
        proto: f.proto.unwrap_or(0),
        sport: f.orig_sport.unwrap_or(0),
        dport: f.orig_dport.unwrap_or(0),
        icmp_type: f.icmp_type.unwrap_or(0),
        icmp_code: f.icmp_code.unwrap_or(0),
        icmp_id: f.icmp_id.unwrap_or(0),
    }
}

/// The expectation `-I expect` creates: the master from `-s -d -p
/// --sport --dport`, the expected tuple and mask from `--tuple-*` and
/// `--mask-*`, in the `-p` protocol, and `-t`.
pub fn create_template(c: &CtCommand) -> Expectation {
    let none = unspecified(c.family);
    let a = &c.expect;
    let p = c.filter.proto.unwrap_or(0);
    let part = |addrs: [Option<IpAddr>; 2], ports: [Option<u16>; 2]| Tuple {
        src: addrs[0].unwrap_or(none),
        dst: addrs[1].unwrap_or(none),
        proto: p,
        sport: ports[0].unwrap_or(0),
        dport: ports[1].unwrap_or(0),
        ..Tuple::default()
    };
    Expectation {
        family: c.family,
        master: Some(named_tuple(c)),
        tuple: Some(part(a.tuple, a.tuple_ports)),
        mask: Some(part(a.mask, a.mask_ports)),
        timeout: c.filter.timeout,
        ..Expectation::default()
    }
}

fn list(r: &mut Runner, c: &CtCommand) -> Outcome {
    let mut printer = ExpPrinter::new(c.output);
    let mut shown = 0u64;
    let mut out_err = None;
    let res = r
        .sock()?
        .dump_expectations(&exp::dump_request(c.family), &mut |e| {
            shown += 1;
            if let Err(err) = printer.exp(e, None) {
                out_err.get_or_insert(err);
            }
            Ok(())
        });
    r.counter += shown;
    if let Some(e) = out_err {
        return Err(CliError::system(e));
    }
    printer.finish().map_err(CliError::system)?;
    report_malformed(res.map_err(|e| CliError::kernel(Cmd::ExpList, &e))?);
    Ok(())
}

fn get(r: &mut Runner, c: &CtCommand) -> Outcome {
    let e = Expectation {
        family: c.family,
        master: Some(named_tuple(c)),
        ..Expectation::default()
    };
    let found = r
        .sock()?
        .get_expectation(&exp::get_request(&e))
        .map_err(|e| CliError::kernel(Cmd::ExpGet, &e))?;
    let mut printer = ExpPrinter::new(c.output);
    if let Some(e) = found {
        r.counter += 1;
        printer.exp(&e, None).map_err(CliError::system)?;
    }
    printer.finish().map_err(CliError::system)
}

/// `-D expect`: deletes the expectation whose tuple the command names.
/// Like conntrack it counts nothing, so its summary says 0 and it exits 1
/// also when it deleted.
fn delete(r: &mut Runner, c: &CtCommand) -> Outcome {
    let e = Expectation {
        family: c.family,
        tuple: Some(named_tuple(c)),
        ..Expectation::default()
    };
    r.sock()?
        .request(&exp::delete_request(&e), 0)
        .map_err(|e| CliError::kernel(Cmd::ExpDelete, &e))
}

fn create(r: &mut Runner, c: &CtCommand) -> Outcome {
    let req = exp::create_request(&create_template(c));
    r.sock()?
        .request(&req, NLM_F_CREATE | NLM_F_EXCL)
        .map_err(|e| CliError::kernel(Cmd::ExpCreate, &e))
}

fn flush(r: &mut Runner, c: &CtCommand) -> Outcome {
    let res = r.sock()?.request(&exp::flush_request(c.family), 0);
    eprintln!("{PROGNAME_VERSION}: expectation table has been emptied.");
    res.map_err(|e| CliError::kernel(Cmd::ExpFlush, &e))
}

/// `-C expect`: counts by dumping (the kernel has no expectation count),
/// so only the default family's expectations, as in conntrack.
fn count(r: &mut Runner, c: &CtCommand) -> Outcome {
    let mut n = 0u64;
    let res = r
        .sock()?
        .dump_expectations(&exp::dump_request(c.family), &mut |_| {
            n += 1;
            Ok(())
        });
    println!("{n}");
    res.map(|_| ())
        .map_err(|e| CliError::kernel(Cmd::ExpCount, &e))
}

fn stats(r: &mut Runner) -> Outcome {
    const NAMES: [&str; 4] = ["", "expect_new", "expect_create", "expect_delete"];
    let cpus = r
        .sock()?
        .expect_stats_cpu()
        .map_err(|e| CliError::kernel(Cmd::ExpStats, &e))?;
    print!("{}", cpu_stats_text(&cpus, &NAMES));
    Ok(())
}

/// `-E expect`: the expectation event groups (`-e` picks among them)
/// until SIGINT or SIGTERM.
fn events(r: &mut Runner, c: &CtCommand) -> Outcome {
    // -e's NEW, UPDATES, DESTROY bits are the conntrack groups' (1, 2,
    // 4); the expectation groups are the next three
    let groups = (c.event_mask & 0x7) << 3;
    let mut es = EventSocket::open(groups, r.netns.as_deref())
        .map_err(|_| CliError::other("Can't open handler"))?;
    if let Err(e) = es.socket().set_recv_buffer(DEFAULT_EVENT_BUFFER) {
        eprintln!("ctrack: cannot set the event buffer size: {e}");
    }
    let (sig_read, sig_write) = UnixStream::pair().map_err(CliError::system)?;
    for s in [libc::SIGINT, libc::SIGTERM] {
        let w = sig_write.try_clone().map_err(CliError::system)?;
        signal_hook::low_level::pipe::register(s, w).map_err(CliError::system)?;
    }
    es.socket()
        .set_nonblocking(true)
        .map_err(CliError::system)?;
    let mut printer = ExpPrinter::new(c.output);
    let mut batch: Vec<ExpEvent> = Vec::new();
    let (mut shown, mut overruns) = (0u64, 0u64);
    let sig_fd = sig_read.as_raw_fd();
    'outer: loop {
        match wait_either(es.socket().fd(), sig_fd) {
            Ok(Ready::Signal) => break,
            Ok(Ready::Events) => {}
            Err(e) => return Err(CliError::system(e)),
        }
        for _ in 0..EVENT_BATCH {
            batch.clear();
            match es.recv_datagram() {
                Ok(Some(data)) => {
                    decode_events(data, &mut batch);
                }
                Ok(None) => {
                    overruns += 1;
                    let _ = printer.flush();
                    eprintln!(
                        "WARNING: event buffer overrun (ENOBUFS), events were lost; overruns so far: {overruns}"
                    );
                    continue;
                }
                Err(crate::netlink::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(e) => {
                    let _ = printer.flush();
                    return Err(CliError::other(format!(
                        "failed to received netlink event: {e}"
                    )));
                }
            }
            for ev in &batch {
                printer
                    .exp(&ev.exp, Some(ev.kind))
                    .map_err(CliError::system)?;
                shown += 1;
            }
            // a signal ends the loop even in a burst that never drains
            if poll_readable(sig_fd, 0).unwrap_or(false) {
                break 'outer;
            }
        }
        printer.flush().map_err(CliError::system)?;
    }
    printer.finish().map_err(CliError::system)?;
    r.counter += shown;
    Ok(())
}

/// What woke [`wait_either`].
enum Ready {
    /// The event socket has data.
    Events,
    /// A signal arrived on the signal pipe.
    Signal,
}

/// Waits until the event socket `events` or the signal pipe `signals` is
/// readable; a signal wins.
fn wait_either(events: i32, signals: i32) -> io::Result<Ready> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: events,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals,
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
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(Ready::Signal);
        }
        if fds[0].revents != 0 {
            return Ok(Ready::Events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::proto;

    fn parse(s: &str) -> CtCommand {
        super::super::args::parse(s.split_whitespace().map(str::to_string).collect())
            .unwrap()
            .0
    }

    #[test]
    fn create_template_from_the_command_line() {
        let c = parse(
            "-I expect -s 10.9.1.2 -d 10.9.2.2 -p tcp --sport 4000 --dport 21 \
             --tuple-src 10.9.1.2 --tuple-dst 10.9.2.0/24 --tuple-port-src 0 --tuple-port-dst 5000 \
             --mask-src 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535 -t 60",
        );
        assert_eq!(c.cmd, Some(Cmd::ExpCreate));
        let e = create_template(&c);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let m = e.master.unwrap();
        assert_eq!(
            (m.src, m.dst, m.proto, m.sport, m.dport),
            (ip("10.9.1.2"), ip("10.9.2.2"), proto::TCP, 4000, 21)
        );
        let t = e.tuple.unwrap();
        assert_eq!(
            (t.src, t.dst, t.proto, t.sport, t.dport),
            (ip("10.9.1.2"), ip("10.9.2.0"), proto::TCP, 0, 5000)
        );
        let k = e.mask.unwrap();
        assert_eq!(
            (k.src, k.dst, k.sport, k.dport),
            (ip("255.255.255.255"), ip("255.255.255.0"), 0, 65535)
        );
        assert_eq!(e.timeout, Some(60));
        // a CIDR master address is the address, its prefix the mask
        let c = parse(
            "-I expect -s 10.9.1.2/16 -d 10.9.2.2 -p udp --sport 1 --dport 69 \
             --tuple-src 10.9.1.2 --tuple-dst 10.9.2.2 --tuple-port-src 0 --tuple-port-dst 7 \
             --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535 -t 60",
        );
        let e = create_template(&c);
        assert_eq!(e.master.unwrap().src, ip("10.9.1.2"));
        assert_eq!(e.mask.unwrap().src, ip("255.255.0.0"));
    }

    #[test]
    fn get_and_delete_name_one_tuple() {
        let c = parse(
            "-D expect -s fd00::1 -d fd00::2 -p udp --sport 1 --dport 2 \
             --reply-port-src 2 --reply-port-dst 1",
        );
        let t = named_tuple(&c);
        assert_eq!(c.family, AF_INET6);
        assert_eq!((t.sport, t.dport, t.proto), (1, 2, proto::UDP));
        let c = parse(
            "-G expect -s 1.1.1.1 -d 2.2.2.2 -p gre --srckey 0x10 --dstkey 2 \
             --reply-key-src 2 --reply-key-dst 0x10",
        );
        let t = named_tuple(&c);
        assert_eq!((t.sport, t.dport, t.proto), (0x10, 2, proto::GRE));
        assert_eq!(
            unspecified(crate::flow::AF_INET),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }
}
