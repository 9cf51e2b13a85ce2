//! Link sockets: UDP unicast, IPv4 multicast and TCP, set up the way
//! conntrackd sets them up (a receive socket bound to the sync port, a
//! send socket with an ephemeral port), plus the interface facts the
//! engine needs (MTU, up/running).
//!
//! - receive: SO_REUSEADDR, SO_RCVBUFFORCE (`RcvSocketBuffer`), bound to
//!   `IPv4_address:Port` (UDP) or `group:Group` (multicast, joined with
//!   IP_ADD_MEMBERSHIP on `IPv4_interface`), and to the `Interface`
//!   device;
//! - send: SO_NO_CHECK when `Checksum off`, SO_SNDBUFFORCE
//!   (`SndSocketBuffer`), bound to the device; multicast adds
//!   IP_MULTICAST_IF = `IPv4_interface`, IP_MULTICAST_LOOP = 0, TTL 1.
//! - TCP ([`tcp`]): a listening socket for the peer's connection and a
//!   client connection to the peer, reconnected in a thread of its own.
//!
//! Only syscalls are unsafe here, each one small.

pub mod tcp;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::config::{LinkConfig, LinkKind};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T of the size we pass; the kernel only
    // reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(rc).map(|_| ())
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

fn udp_socket(v6: bool) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Calls `f` with `addr` as a C socket address and its length.
fn with_sockaddr<T>(
    addr: SocketAddr,
    f: impl FnOnce(*const libc::sockaddr, libc::socklen_t) -> T,
) -> T {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain old data; zeroed is valid.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr = in_addr(*a.ip());
            f(
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain old data; zeroed is valid.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sa.sin6_scope_id = a.scope_id();
            f(
                &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

fn bind(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    // SAFETY: `sa` points to a valid socket address of length `len`,
    // alive for the call.
    let rc = with_sockaddr(addr, |sa, len| unsafe { libc::bind(fd, sa, len) });
    cvt(rc).map(|_| ())
}

fn bind_to_device(fd: RawFd, ifname: &str) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name '{ifname}'"),
        ));
    }
    // SAFETY: the name pointer and length describe a live byte slice.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr() as *const libc::c_void,
            name.len() as libc::socklen_t,
        )
    };
    cvt(rc).map(|_| ())
}

fn buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // FORCE needs CAP_NET_ADMIN; fall back to the capped option
    setsockopt(fd, libc::SOL_SOCKET, force, &v)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, plain, &v))
}

fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name '{ifname}'"),
        ));
    }
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn ioctl_ifreq(ifname: &str, req: libc::Ioctl) -> io::Result<libc::ifreq> {
    let mut r = ifreq(ifname)?;
    let fd = udp_socket(false)?;
    // SAFETY: SIOCGIF* ioctls read the name and fill the union of `r`,
    // which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut r as *mut libc::ifreq) };
    cvt(rc).map_err(|e| io::Error::new(e.kind(), format!("interface {ifname}: {e}")))?;
    Ok(r)
}

/// The MTU of an interface (SIOCGIFMTU), in this thread's namespace.
pub fn interface_mtu(ifname: &str) -> io::Result<usize> {
    let r = ioctl_ifreq(ifname, libc::SIOCGIFMTU as libc::Ioctl)?;
    // SAFETY: SIOCGIFMTU filled ifru_mtu.
    let mtu = unsafe { r.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as usize)
}

/// True when the interface is up and running (has carrier), as
/// conntrackd's link watch requires.
pub fn interface_up(ifname: &str) -> io::Result<bool> {
    let r = ioctl_ifreq(ifname, libc::SIOCGIFFLAGS as libc::Ioctl)?;
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    let flags = unsafe { r.ifr_ifru.ifru_flags } as libc::c_int;
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}

/// Most bytes of received datagrams a link's reader hands to the core
/// before the core has taken them. What arrives beyond is dropped and
/// counted: the core is busy (a commit, a purge) or the peer floods us.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// What a link's reader has handed to the core and not been taken yet,
/// and what it dropped because that was too much.
#[derive(Debug, Default)]
pub struct RecvQueue {
    bytes: AtomicUsize,
    dropped: AtomicUsize,
}

impl RecvQueue {
    /// Makes room for a datagram of `n` bytes (false: no room, counted
    /// as dropped).
    fn admit(&self, n: usize) -> bool {
        let ok = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= MAX_QUEUED_BYTES).then_some(q + n)
            })
            .is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The core took a datagram of `n` bytes.
    pub fn taken(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }

    /// Bytes handed over and not taken yet.
    pub fn queued(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Datagrams dropped since the last call.
    pub fn take_dropped(&self) -> usize {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// The sockets of one link.
#[derive(Debug)]
pub struct LinkSocket {
    io: LinkIo,
    mtu: usize,
    interface: String,
    queue: RecvQueue,
}

#[derive(Debug)]
enum LinkIo {
    /// UDP and multicast: one socket to receive, one to send.
    Datagram {
        recv: UdpSocket,
        send: UdpSocket,
        dest: SocketAddr,
    },
    /// TCP: a server for the peer's connection, a client to the peer.
    Stream(tcp::TcpLink),
}

/// Wraps a socket error with the link's interface and what failed.
fn link_err(cfg: &LinkConfig, what: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("sync link {} ({what}): {e}", cfg.interface),
    )
}

/// The MTU datagrams are sized by: the configured one, else the
/// interface's.
fn link_mtu(cfg: &LinkConfig) -> io::Result<usize> {
    match cfg.mtu {
        Some(m) => Ok(m),
        None => interface_mtu(&cfg.interface).map_err(|e| link_err(cfg, "MTU", e)),
    }
}

impl LinkSocket {
    /// Opens a link in the calling thread's network namespace (a TCP
    /// link's client thread stays in it too).
    pub fn open(cfg: &LinkConfig) -> io::Result<LinkSocket> {
        let (bind_addr, dest, group) = match &cfg.kind {
            LinkKind::Udp { local, peer, port } => {
                let any = if peer.is_ipv6() {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                (
                    SocketAddr::new(local.unwrap_or(any), *port),
                    SocketAddr::new(*peer, *port),
                    None,
                )
            }
            LinkKind::Multicast {
                group,
                port,
                interface_addr,
            } => (
                SocketAddr::new(IpAddr::V4(*group), *port),
                SocketAddr::new(IpAddr::V4(*group), *port),
                Some((*group, *interface_addr)),
            ),
            LinkKind::Tcp { .. } => {
                return Ok(LinkSocket {
                    io: LinkIo::Stream(tcp::TcpLink::open(cfg)?),
                    mtu: link_mtu(cfg)?,
                    interface: cfg.interface.clone(),
                    queue: RecvQueue::default(),
                });
            }
        };
        let v6 = dest.is_ipv6();
        let ctx = |what: &str, e: io::Error| link_err(cfg, what, e);
        // receive side
        let rfd = udp_socket(v6).map_err(|e| ctx("socket", e))?;
        let r = rfd.as_raw_fd();
        setsockopt(r, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1 as &libc::c_int)
            .map_err(|e| ctx("SO_REUSEADDR", e))?;
        if let Some(b) = cfg.rcv_buffer {
            buffer(r, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, b)
                .map_err(|e| ctx("RcvSocketBuffer", e))?;
        }
        bind_to_device(r, &cfg.interface).map_err(|e| ctx("bind to device", e))?;
        bind(r, bind_addr).map_err(|e| ctx(&format!("bind {bind_addr}"), e))?;
        if let Some((g, ifa)) = group {
            let mreq = libc::ip_mreq {
                imr_multiaddr: in_addr(g),
                imr_interface: in_addr(ifa),
            };
            setsockopt(r, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| ctx("IP_ADD_MEMBERSHIP", e))?;
        }
        // send side
        let sfd = udp_socket(v6).map_err(|e| ctx("socket", e))?;
        let s = sfd.as_raw_fd();
        let no_check: libc::c_int = (!cfg.checksum).into();
        setsockopt(s, libc::SOL_SOCKET, libc::SO_NO_CHECK, &no_check)
            .map_err(|e| ctx("SO_NO_CHECK", e))?;
        if let Some(b) = cfg.snd_buffer {
            buffer(s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, b)
                .map_err(|e| ctx("SndSocketBuffer", e))?;
        }
        bind_to_device(s, &cfg.interface).map_err(|e| ctx("bind to device", e))?;
        if let Some((_, ifa)) = group {
            setsockopt(
                s,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_LOOP,
                &0 as &libc::c_int,
            )
            .map_err(|e| ctx("IP_MULTICAST_LOOP", e))?;
            setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &in_addr(ifa))
                .map_err(|e| ctx("IP_MULTICAST_IF", e))?;
            setsockopt(
                s,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_TTL,
                &1 as &libc::c_int,
            )
            .map_err(|e| ctx("IP_MULTICAST_TTL", e))?;
        }
        Ok(LinkSocket {
            io: LinkIo::Datagram {
                recv: UdpSocket::from(rfd),
                send: UdpSocket::from(sfd),
                dest,
            },
            mtu: link_mtu(cfg)?,
            interface: cfg.interface.clone(),
            queue: RecvQueue::default(),
        })
    }

    /// What the link's reader handed to the core (see
    /// [`MAX_QUEUED_BYTES`]): call [`RecvQueue::taken`] for each datagram
    /// the core takes.
    pub fn queue(&self) -> &RecvQueue {
        &self.queue
    }

    /// The interface MTU (the engine takes the link's header overhead
    /// from it to size datagrams).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Sends one datagram to the peer or group. A TCP link queues it for
    /// its connection; an error then means the queue was full and its
    /// oldest datagram was dropped.
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        match &self.io {
            LinkIo::Datagram { send, dest, .. } => send.send_to(datagram, *dest).map(|_| ()),
            LinkIo::Stream(t) => t.send(datagram),
        }
    }

    /// Receives one datagram, or from a TCP link the complete messages
    /// that arrived (never a part of one): its length and source address.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        match &self.io {
            LinkIo::Datagram { recv, .. } => recv.recv_from(buf).map(|(n, a)| (n, a.ip())),
            LinkIo::Stream(t) => t.recv(buf),
        }
    }

    /// How long [`LinkSocket::recv`] waits (None: until something comes).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match &self.io {
            LinkIo::Datagram { recv, .. } => recv.set_read_timeout(timeout),
            LinkIo::Stream(t) => {
                t.set_read_timeout(timeout);
                Ok(())
            }
        }
    }

    /// A TCP link's queue of datagrams (None for UDP and multicast).
    pub fn error_queue(&self) -> Option<tcp::ErrorQueue> {
        match &self.io {
            LinkIo::Datagram { .. } => None,
            LinkIo::Stream(t) => Some(t.error_queue()),
        }
    }

    /// A TCP link's connections (None for UDP and multicast).
    pub fn tcp_state(&self) -> Option<tcp::TcpState> {
        match &self.io {
            LinkIo::Datagram { .. } => None,
            LinkIo::Stream(t) => Some(t.state()),
        }
    }

    /// The local address of the send socket (its ephemeral port); for
    /// TCP, of the listening socket.
    pub fn send_addr(&self) -> io::Result<SocketAddr> {
        match &self.io {
            LinkIo::Datagram { send, .. } => send.local_addr(),
            LinkIo::Stream(t) => Ok(t.listen_addr()),
        }
    }
}

/// What a link's reader thread delivers to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkInput {
    /// A datagram arrived.
    Datagram {
        /// Index of the link in the Sync block.
        link: usize,
        /// The datagram.
        bytes: Vec<u8>,
        /// Its source address.
        src: Option<IpAddr>,
    },
    /// The link's socket failed to receive.
    RecvError(usize),
    /// Receiving has failed [`MAX_RECV_FAILURES`] times in a row: the
    /// reader goes on trying, once a second.
    Failing {
        /// Index of the link.
        link: usize,
        /// The last error.
        error: String,
    },
    /// Receiving works again after [`LinkInput::Failing`].
    Recovered(usize),
}

/// Receive failures in a row after which a reader reports the link as
/// failing and slows down to one attempt a second.
pub const MAX_RECV_FAILURES: u32 = 1000;

/// Starts the thread that reads link `link`'s socket and passes what it
/// receives to `deliver` (see [`read_loop`]), until `deliver` returns
/// false.
pub fn spawn_reader(
    link: usize,
    sock: Arc<LinkSocket>,
    deliver: impl FnMut(LinkInput) -> bool + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("sync-link{link}"))
        .spawn(move || {
            read_loop(
                link,
                |buf| sock.recv(buf),
                sock.queue(),
                deliver,
                std::thread::sleep,
            )
        })
        .map(|_| ())
}

/// A reader's loop: receives with `recv` and passes datagrams to
/// `deliver` while `queue` has room for them (dropping and counting the
/// rest), reports each receive failure, and after
/// [`MAX_RECV_FAILURES`] in a row reports the link as failing and tries
/// once a second (`pause`) until it works again. Returns when `deliver`
/// returns false.
pub fn read_loop(
    link: usize,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, IpAddr)>,
    queue: &RecvQueue,
    mut deliver: impl FnMut(LinkInput) -> bool,
    mut pause: impl FnMut(Duration),
) {
    let mut buf = vec![0u8; 65536];
    let mut failures = 0u32;
    loop {
        let input = match recv(&mut buf) {
            Ok((n, src)) => {
                if failures >= MAX_RECV_FAILURES && !deliver(LinkInput::Recovered(link)) {
                    return;
                }
                failures = 0;
                if !queue.admit(n) {
                    continue;
                }
                LinkInput::Datagram {
                    link,
                    bytes: buf[..n].to_vec(),
                    src: Some(src),
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == MAX_RECV_FAILURES
                    && !deliver(LinkInput::Failing {
                        link,
                        error: e.to_string(),
                    })
                {
                    return;
                }
                pause(if failures >= MAX_RECV_FAILURES {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(10)
                });
                LinkInput::RecvError(link)
            }
        };
        if !deliver(input) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_interface_names_are_errors_not_panics() {
        assert!(interface_mtu("").is_err());
        assert!(interface_mtu("this-name-is-far-too-long").is_err());
        assert!(interface_up("a\0b").is_err());
        assert!(interface_mtu("ctrack-no-such0").is_err());
    }

    #[test]
    fn loopback_has_an_mtu() {
        // every namespace has lo
        assert!(interface_mtu("lo").unwrap() >= 1500);
    }

    #[test]
    fn a_failing_socket_is_reported_and_retried_not_abandoned() {
        let mut calls = 0u32;
        let recv = |buf: &mut [u8]| {
            calls += 1;
            if calls <= 1500 {
                Err(io::Error::from_raw_os_error(libc::ENOMEM))
            } else {
                buf[..3].copy_from_slice(b"abc");
                Ok((3, IpAddr::from([10, 9, 9, 2])))
            }
        };
        let queue = RecvQueue::default();
        let mut got = Vec::new();
        let mut pauses = Vec::new();
        read_loop(
            2,
            recv,
            &queue,
            |i| {
                let more = !matches!(i, LinkInput::Datagram { .. });
                got.push(i);
                more
            },
            |d| pauses.push(d),
        );
        let failing: Vec<_> = got
            .iter()
            .filter(|i| matches!(i, LinkInput::Failing { .. }))
            .collect();
        assert_eq!(failing.len(), 1);
        assert!(
            matches!(failing[0], LinkInput::Failing { link: 2, error } if error.contains("memory"))
        );
        assert_eq!(
            got.iter()
                .filter(|i| **i == LinkInput::RecvError(2))
                .count(),
            1500
        );
        // fast retries first, then one a second
        assert_eq!(pauses[998], Duration::from_millis(10));
        assert_eq!(pauses[999], Duration::from_secs(1));
        assert_eq!(got[got.len() - 2], LinkInput::Recovered(2));
        assert!(
            matches!(&got[got.len() - 1], LinkInput::Datagram { bytes, .. } if bytes == b"abc")
        );
        assert_eq!(queue.queued(), 3);
    }

    #[test]
    fn datagrams_the_core_has_not_taken_are_bounded() {
        let queue = RecvQueue::default();
        let mut calls = 0;
        let recv = |_: &mut [u8]| {
            calls += 1;
            if calls <= 200 {
                Ok((60_000, IpAddr::from([10, 9, 9, 2])))
            } else {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        };
        let mut datagrams = 0;
        read_loop(
            0,
            recv,
            &queue,
            |i| match i {
                LinkInput::Datagram { .. } => {
                    datagrams += 1;
                    true
                }
                _ => false,
            },
            |_| {},
        );
        // the core took nothing meanwhile: 4 MiB went to it, the rest
        // was dropped and counted
        assert_eq!(datagrams, MAX_QUEUED_BYTES / 60_000);
        assert_eq!(queue.take_dropped(), 200 - datagrams);
        assert_eq!(queue.take_dropped(), 0);
        for _ in 0..datagrams {
            queue.taken(60_000);
        }
        assert_eq!(queue.queued(), 0);
        assert!(queue.admit(60_000));
    }
}
