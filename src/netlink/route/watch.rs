//! The rtnetlink sockets of the WAN watch: a NETLINK_ROUTE socket bound
//! to the link and IPv4/IPv6 address groups, and the initial dump of
//! links and addresses (on a second socket, so dump replies and events
//! never mix).

use std::io;

use super::{NLM_F_DUMP_INTR, RtMsg, dump_request, group, parse_datagram, parse_message, rtm};
use crate::netlink::attr::WireError;
use crate::netlink::client::Error;
use crate::netlink::message::{NLMSG_DONE, NLMSG_ERROR, NlMsgs};
use crate::netlink::socket::{NETLINK_ROUTE, NlSocket};

/// What one receive on the watch socket produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// Messages were appended (possibly none).
    Messages,
    /// The socket overran (ENOBUFS): events were lost, dump again.
    Overrun,
    /// Nothing to read now (non-blocking socket).
    Empty,
}

/// The rtnetlink side of the WAN watch: one socket subscribed to link and
/// address changes, one for dumps (so dump replies and events never mix).
#[derive(Debug)]
pub struct RtnlWatch {
    events: NlSocket,
    query: NlSocket,
    seq: u32,
    /// Messages that failed to decode so far.
    pub malformed: u64,
}

impl RtnlWatch {
    /// Subscribes in this or the named network namespace. Subscribe
    /// first, then [`RtnlWatch::dump`]: changes between the two are queued
    /// on the event socket, so none is missed.
    pub fn open(netns: Option<&str>) -> io::Result<RtnlWatch> {
        let events = NlSocket::open(NETLINK_ROUTE, group::WAN, netns)?;
        // Address changes are rare; 1 MiB rides out a burst of link
        // messages (each can be 1-2 KiB) without an overrun.
        let _ = events.set_recv_buffer(1 << 20);
        let query = NlSocket::open(NETLINK_ROUTE, 0, netns)?;
        Ok(RtnlWatch {
            events,
            query,
            seq: crate::flow::now_secs() as u32,
            malformed: 0,
        })
    }

    /// The event socket's file descriptor (for poll).
    pub fn fd(&self) -> i32 {
        self.events.fd()
    }

    /// Makes [`RtnlWatch::recv`] return [`Recv::Empty`] instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.events.set_nonblocking(on)
    }

    /// Receives one datagram of events into `out`.
    pub fn recv(&mut self, out: &mut Vec<RtMsg>) -> io::Result<Recv> {
        match self.events.recv() {
            Ok(data) => {
                self.malformed += parse_datagram(data, out) as u64;
                Ok(Recv::Messages)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Recv::Overrun),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Recv::Empty),
            Err(e) => Err(e),
        }
    }

    /// Dumps every link, then every address, into `out` (see [`dump_on`]).
    pub fn dump(&mut self, out: &mut Vec<RtMsg>) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(8);
        self.malformed += dump_on(&mut self.query, self.seq, out)?;
        Ok(())
    }
}

/// Dumps every link, then every address, in this or the named namespace
/// (for one-shot users such as `ctrack flush-wan --interface`).
pub fn dump(netns: Option<&str>) -> Result<Vec<RtMsg>, Error> {
    let mut sock = NlSocket::open(NETLINK_ROUTE, 0, netns)?;
    let mut out = Vec::new();
    dump_on(&mut sock, crate::flow::now_secs() as u32, &mut out)?;
    Ok(out)
}

/// Dumps every link, then every address, into `out` on `sock` (links
/// first, so an address's interface is known when it is read), with
/// sequence numbers from `seq`. A dump the kernel marks as interrupted is
/// redone. Returns how many messages were malformed (skipped).
pub fn dump_on(sock: &mut NlSocket, seq: u32, out: &mut Vec<RtMsg>) -> Result<u64, Error> {
    let start = out.len();
    let mut seq = seq;
    for _attempt in 0..4 {
        out.truncate(start);
        let mut intr = false;
        let mut bad = 0;
        for ty in [rtm::GETLINK, rtm::GETADDR] {
            seq = seq.wrapping_add(1);
            let (i, b) = dump_one(sock, ty, seq, out)?;
            intr |= i;
            bad += b;
        }
        if !intr {
            return Ok(bad);
        }
    }
    Err(Error::Wire(WireError(
        "address dump kept changing while it was read",
    )))
}

/// One dump of `ty`; returns (interrupted, malformed).
fn dump_one(
    sock: &mut NlSocket,
    ty: u16,
    seq: u32,
    out: &mut Vec<RtMsg>,
) -> Result<(bool, u64), Error> {
    sock.send(&dump_request(ty, seq))?;
    let portid = sock.portid();
    let mut intr = false;
    let mut bad = 0;
    loop {
        let data = sock.recv()?;
        for m in NlMsgs::new(data) {
            let m = m?;
            if m.seq != seq || (m.pid != 0 && m.pid != portid) {
                continue;
            }
            intr |= m.flags & NLM_F_DUMP_INTR != 0;
            match m.ty {
                NLMSG_DONE => return Ok((intr, bad)),
                NLMSG_ERROR => {
                    let code = m.error_code()?;
                    if code != 0 {
                        return Err(Error::Kernel(code));
                    }
                    return Ok((intr, bad));
                }
                _ => match parse_message(&m) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(_) => bad += 1,
                },
            }
        }
    }
}
