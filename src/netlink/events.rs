//! Conntrack event subscription: a socket bound to the NEW/UPDATE/DESTROY
//! groups, decoding each event into a flow and its kind.

use std::io;

use super::attr::WireError;
use super::client::Error;
use super::ct::{self, msg};
use super::message::{NLM_F_CREATE, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NlMsgs};
use super::socket::{NETLINK_NETFILTER, NlSocket};
use crate::flow::{EventKind, Flow};

/// Legacy group bits of the conntrack event groups.
pub mod group {
    /// New entries.
    pub const NEW: u32 = 0x1;
    /// Changed entries.
    pub const UPDATE: u32 = 0x2;
    /// Removed entries.
    pub const DESTROY: u32 = 0x4;
    /// All three.
    pub const ALL: u32 = NEW | UPDATE | DESTROY;
}

/// One received event.
#[derive(Clone, Debug)]
pub struct Event {
    /// NEW, UPDATE or DESTROY.
    pub kind: EventKind,
    /// The entry.
    pub flow: Flow,
    /// Port id of the netlink socket whose request caused the event (0
    /// when the kernel itself did).
    pub portid: u32,
}

/// What one receive produced.
#[derive(Debug)]
pub enum Received {
    /// Events (possibly none, if the datagram held only control messages).
    Events,
    /// The socket overran: events were lost (ENOBUFS).
    Overrun,
}

/// A subscribed event socket.
#[derive(Debug)]
pub struct EventSocket {
    sock: NlSocket,
    /// Events that failed to decode so far.
    pub malformed: u64,
    /// The flow [`EventSocket::recv_each`] decodes into, reused.
    scratch: Flow,
}

impl EventSocket {
    /// Subscribes to the `groups` (see [`group`]) in this or the named
    /// network namespace.
    pub fn open(groups: u32, netns: Option<&str>) -> Result<EventSocket, Error> {
        let sock = NlSocket::open(NETLINK_NETFILTER, groups, netns)?;
        Ok(EventSocket {
            sock,
            malformed: 0,
            scratch: Flow::default(),
        })
    }

    /// The socket (for buffer sizes and poll).
    pub fn socket(&self) -> &NlSocket {
        &self.sock
    }

    /// Receives one datagram: its bytes, or None when the socket overran
    /// (ENOBUFS: events were lost). The expectation events
    /// (`netlink::exp`) are decoded from it.
    pub fn recv_datagram(&mut self) -> Result<Option<&[u8]>, Error> {
        datagram(&mut self.sock)
    }

    /// Receives one datagram and appends its events to `out`.
    pub fn recv_into(&mut self, out: &mut Vec<Event>) -> Result<Received, Error> {
        self.recv_each(&mut |kind, flow, portid| {
            out.push(Event {
                kind,
                flow: flow.clone(),
                portid,
            })
        })
    }

    /// Receives one datagram and calls `each` with every event in it: its
    /// kind, the flow and the port id that caused it. The flow is reused
    /// between calls, so nothing is allocated per event.
    pub fn recv_each(
        &mut self,
        each: &mut dyn FnMut(EventKind, &Flow, u32),
    ) -> Result<Received, Error> {
        let EventSocket {
            sock,
            malformed,
            scratch,
        } = self;
        let Some(data) = datagram(sock)? else {
            return Ok(Received::Overrun);
        };
        for m in NlMsgs::new(data) {
            let m = match m {
                Ok(m) => m,
                Err(_) => {
                    *malformed += 1;
                    break;
                }
            };
            if matches!(m.ty, NLMSG_NOOP | NLMSG_ERROR | NLMSG_DONE | NLMSG_OVERRUN) {
                continue;
            }
            if (m.ty >> 8) as u8 != ct::SUBSYS_CTNETLINK {
                continue;
            }
            let kind = match (m.ty & 0xff) as u8 {
                msg::NEW if m.flags & NLM_F_CREATE != 0 => EventKind::New,
                msg::NEW => EventKind::Update,
                msg::DELETE => EventKind::Destroy,
                _ => continue,
            };
            let decoded = ct::split_nfgenmsg(m.payload).and_then(|(family, _, attrs)| {
                crate::netlink::client::reset(scratch);
                ct::decode_flow_into(family, attrs, scratch)
            });
            match decoded {
                Ok(()) => each(kind, scratch, m.pid),
                Err(WireError(_)) => *malformed += 1,
            }
        }
        Ok(Received::Events)
    }

    /// Waits up to `timeout_ms` (-1: forever) for the socket to be readable.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        poll_readable(self.sock.fd(), timeout_ms)
    }
}

/// One datagram from an event socket, or None on ENOBUFS (overrun).
fn datagram(sock: &mut NlSocket) -> Result<Option<&[u8]>, Error> {
    match sock.recv() {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(None),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Waits up to `timeout_ms` (-1: forever) for `fd` to be readable.
pub fn poll_readable(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd and we pass a count of 1.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(n > 0);
    }
}

/// Leaves (`join` false) or joins again the conntrack NEW/UPDATE/DESTROY
/// groups on the event socket `fd`, which another thread may be reading:
/// ctrackd stops listening while it commits (the kernel then builds no
/// events for its own creates). Returns whether every call succeeded.
pub fn set_conntrack_groups(fd: i32, join: bool) -> bool {
    let opt = if join {
        libc::NETLINK_ADD_MEMBERSHIP
    } else {
        libc::NETLINK_DROP_MEMBERSHIP
    };
    let mut ok = true;
    // the group numbers (1, 2, 3) of the bits in [`group`]
    for number in [1u32, 2, 3] {
        // SAFETY: setsockopt reads a u32 of the given size from a live local.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_NETLINK,
                opt,
                &number as *const u32 as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        ok &= rc == 0;
    }
    ok
}
