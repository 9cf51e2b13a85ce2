//! The TCP link, wire-compatible with conntrackd's `TCP { }` channel.
//!
//! conntrackd opens two connections per pair: each daemon listens on
//! `IPv4_address:Port` (backlog 1, SO_KEEPALIVE) for the peer's
//! connection, on which it only receives, and connects to
//! `IPv4_Destination_Address:Port`, on which it only sends. The stream
//! carries the same messages as a datagram (protocol v1, each with its
//! length in its header) with nothing around them: a sender writes its
//! buffers of whole messages, a receiver cuts the stream back into
//! messages, keeping a partial one until the rest arrives. A new
//! connection to the listener replaces the old one (the peer restarted);
//! with `CheckSourceAddress on`, only one from the peer's address does.
//!
//! Here the server is read by the link's reader thread ([`TcpLink::recv`])
//! and the client lives in a thread of its own, so the core never waits
//! for a connection: [`TcpLink::send`] queues a datagram (at most
//! `ErrorQueueLength` of them, the oldest dropped past it, as conntrackd's
//! error queue) and the thread connects (once a second at most, like
//! conntrackd), writes, and reconnects after a failure, writing the
//! datagram that failed again first so the new connection starts on a
//! message boundary.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{bind, bind_to_device, buffer, cvt, link_err, setsockopt, with_sockaddr};
use crate::sync::config::{LinkConfig, LinkKind};
use crate::sync::wire;

/// Time between connection attempts (conntrackd's TCP_CONNECT_TIMEOUT).
const RECONNECT: Duration = Duration::from_secs(1);

/// A write that takes longer means a dead peer: the connection is
/// dropped and made again.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state of a TCP link's two connections (`ctrackd -s` shows them as
/// conntrackd does: `server=connected client=connected`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpState {
    /// The peer is connected to our listener.
    pub server: bool,
    /// We are connected to the peer.
    pub client: bool,
}

/// The datagrams a TCP link holds for its connection (conntrackd's
/// `errorq` in `-s queue`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorQueue {
    /// Datagrams waiting.
    pub len: usize,
    /// `ErrorQueueLength`.
    pub max: usize,
    /// Datagrams dropped because it was full.
    pub dropped: u64,
}

/// Locks a mutex, also when a thread panicked holding it (the data is
/// plain queues and sockets, valid at every step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tcp_socket(v6: bool) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until one of `fds` is ready for `events` or `timeout` passes
/// (None: no limit); returns the `revents` of each.
fn poll(fds: &[(RawFd, libc::c_short)], timeout: Option<Duration>) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: `p` is a live array of `p.len()` pollfd structs.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    cvt(rc)?;
    Ok(p.iter().map(|x| x.revents).collect())
}

/// Connects `fd` to `addr`, waiting at most `timeout`.
fn connect(fd: RawFd, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with plain integer flags.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    // SAFETY: `sa` points to a valid socket address of length `len`,
    // alive for the call.
    let rc = with_sockaddr(addr, |sa, len| unsafe { libc::connect(fd, sa, len) });
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let ready = poll(&[(fd, libc::POLLOUT)], Some(timeout))?;
        if ready[0] == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int into `err`, whose size we pass.
        cvt(unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    Ok(())
}

/// Where the stream's complete messages end in `buf`: `Some(n)` when
/// `buf[..n]` holds only whole messages (the rest is the start of the
/// next one), None when a header's length cannot be a message's (the
/// stream lost its boundaries).
pub fn complete_messages(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(h) = buf.get(pos..pos + 4) {
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        if len < wire::HDR_LEN {
            return None;
        }
        if buf.len() - pos < len {
            break;
        }
        pos += len;
    }
    Some(pos)
}

/// The receiving side: the listener and the peer's connection (only the
/// link's reader thread uses it, blocked in it while it waits).
#[derive(Debug)]
struct Server {
    listener: TcpListener,
    conn: Option<(TcpStream, IpAddr)>,
    /// Bytes of a message not complete yet.
    pending: Vec<u8>,
}

/// Datagrams waiting for the client connection.
#[derive(Debug)]
struct Outbox {
    queue: Mutex<OutQueue>,
    ready: Condvar,
    connected: AtomicBool,
}

#[derive(Debug)]
struct OutQueue {
    items: VecDeque<Vec<u8>>,
    cap: usize,
    closed: bool,
    /// Datagrams dropped because the queue was full.
    dropped: u64,
}

/// A TCP link: see the module documentation.
#[derive(Debug)]
pub struct TcpLink {
    server: Mutex<Server>,
    listen_addr: SocketAddr,
    /// `CheckSourceAddress on`: connections from elsewhere are closed
    /// (they do not replace the peer's).
    expected: Option<IpAddr>,
    timeout: Mutex<Option<Duration>>,
    server_up: AtomicBool,
    out: Arc<Outbox>,
}

impl TcpLink {
    /// Listens on the local address and starts the client thread, both in
    /// the calling thread's network namespace.
    pub fn open(cfg: &LinkConfig) -> io::Result<TcpLink> {
        let LinkKind::Tcp { local, peer, port } = cfg.kind else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a TCP link",
            ));
        };
        let v6 = peer.is_ipv6();
        let ctx = |what: &str, e: io::Error| link_err(cfg, what, e);
        let any = if v6 {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0u8; 4])
        };
        let bind_addr = SocketAddr::new(local.unwrap_or(any), port);
        let fd = tcp_socket(v6).map_err(|e| ctx("socket", e))?;
        let l = fd.as_raw_fd();
        let one: libc::c_int = 1;
        setsockopt(l, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)
            .map_err(|e| ctx("SO_REUSEADDR", e))?;
        setsockopt(l, libc::SOL_SOCKET, libc::SO_KEEPALIVE, &one)
            .map_err(|e| ctx("SO_KEEPALIVE", e))?;
        if let Some(b) = cfg.rcv_buffer {
            buffer(l, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, b)
                .map_err(|e| ctx("RcvSocketBuffer", e))?;
        }
        bind_to_device(l, &cfg.interface).map_err(|e| ctx("bind to device", e))?;
        bind(l, bind_addr).map_err(|e| ctx(&format!("bind {bind_addr}"), e))?;
        // SAFETY: listen(2) on the socket we own.
        cvt(unsafe { libc::listen(l, 1) }).map_err(|e| ctx("listen", e))?;
        let out = Arc::new(Outbox {
            queue: Mutex::new(OutQueue {
                items: VecDeque::new(),
                cap: cfg.error_queue.max(1),
                closed: false,
                dropped: 0,
            }),
            ready: Condvar::new(),
            connected: AtomicBool::new(false),
        });
        let client = Client {
            out: out.clone(),
            dest: SocketAddr::new(peer, port),
            interface: cfg.interface.clone(),
            snd_buffer: cfg.snd_buffer,
        };
        std::thread::Builder::new()
            .name("sync-tcp-client".into())
            .spawn(move || client.run())
            .map_err(|e| ctx("client thread", e))?;
        let listener = TcpListener::from(fd);
        Ok(TcpLink {
            listen_addr: listener.local_addr().map_err(|e| ctx("listen", e))?,
            expected: cfg.expected_source(),
            server: Mutex::new(Server {
                listener,
                conn: None,
                pending: Vec::new(),
            }),
            timeout: Mutex::new(None),
            server_up: AtomicBool::new(false),
            out,
        })
    }

    /// Queues a datagram for the peer; an error says the queue was full
    /// and its oldest datagram was dropped for this one.
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let mut q = lock(&self.out.queue);
        let dropped = q.items.len() >= q.cap;
        if dropped {
            q.items.pop_front();
            q.dropped += 1;
        }
        q.items.push_back(datagram.to_vec());
        drop(q);
        self.out.ready.notify_one();
        if dropped {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "TCP link queue full: the oldest datagram was dropped",
            ));
        }
        Ok(())
    }

    /// How long [`TcpLink::recv`] waits (None: until something comes).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.timeout) = timeout;
    }

    /// The state of both connections.
    pub fn state(&self) -> TcpState {
        TcpState {
            server: self.server_up.load(Ordering::Relaxed),
            client: self.out.connected.load(Ordering::Relaxed),
        }
    }

    /// What waits for the connection, and what was dropped.
    pub fn error_queue(&self) -> ErrorQueue {
        let q = lock(&self.out.queue);
        ErrorQueue {
            len: q.items.len(),
            max: q.cap,
            dropped: q.dropped,
        }
    }

    /// The listening address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Waits for the peer's complete messages and copies them into `buf`
    /// (one message is at most 65535 bytes: give 64 KiB): their length
    /// and the peer's address. Accepts the peer's connection (a new one
    /// replaces the old, whose partial message is dropped with it). A
    /// stream that lost its message boundaries is handed over as it is
    /// (the engine counts it malformed) and its connection dropped.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        let deadline = lock(&self.timeout).map(|t| Instant::now() + t);
        let mut guard = lock(&self.server);
        let srv = &mut *guard;
        loop {
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Some(left)
                }
                None => None,
            };
            let mut fds = vec![(srv.listener.as_raw_fd(), libc::POLLIN)];
            if let Some((c, _)) = &srv.conn {
                fds.push((c.as_raw_fd(), libc::POLLIN));
            }
            let ready = match poll(&fds, wait) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if ready[0] != 0 {
                // (a failed accept is the caller's receive error)
                let (stream, from) = srv.listener.accept()?;
                if self.expected.is_some_and(|want| want != from.ip()) {
                    continue;
                }
                srv.conn = Some((stream, from.ip()));
                srv.pending.clear();
                self.server_up.store(true, Ordering::Relaxed);
                continue;
            }
            if ready.get(1).is_none_or(|r| *r == 0) {
                continue;
            }
            let Some((conn, from)) = &mut srv.conn else {
                continue;
            };
            let from = *from;
            let old = srv.pending.len();
            let room = buf.len().saturating_sub(old).max(1);
            srv.pending.resize(old + room, 0);
            let read = conn.read(&mut srv.pending[old..]);
            srv.pending.truncate(old + *read.as_ref().unwrap_or(&0));
            if !matches!(read, Ok(n) if n > 0) {
                // the peer went away (or reset): wait for it again
                srv.conn = None;
                srv.pending.clear();
                self.server_up.store(false, Ordering::Relaxed);
                continue;
            }
            match complete_messages(&srv.pending) {
                // the rest of the message is still on its way
                Some(0) if srv.pending.len() < buf.len() => continue,
                Some(end) if end > 0 => {
                    buf[..end].copy_from_slice(&srv.pending[..end]);
                    srv.pending.drain(..end);
                    return Ok((end, from));
                }
                // no boundary to cut at: hand the bytes over, start again
                _ => {
                    let n = srv.pending.len().min(buf.len());
                    buf[..n].copy_from_slice(&srv.pending[..n]);
                    srv.pending.clear();
                    srv.conn = None;
                    self.server_up.store(false, Ordering::Relaxed);
                    return Ok((n, from));
                }
            }
        }
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        lock(&self.out.queue).closed = true;
        self.out.ready.notify_all();
    }
}

/// The sending side, run by its own thread.
struct Client {
    out: Arc<Outbox>,
    dest: SocketAddr,
    interface: String,
    snd_buffer: Option<usize>,
}

impl Client {
    /// A connected socket to the peer.
    fn connect(&self) -> io::Result<TcpStream> {
        let fd = tcp_socket(self.dest.is_ipv6())?;
        let s = fd.as_raw_fd();
        if let Some(b) = self.snd_buffer {
            buffer(s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, b)?;
        }
        let one: libc::c_int = 1;
        setsockopt(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, &one)?;
        bind_to_device(s, &self.interface)?;
        connect(s, self.dest, RECONNECT)?;
        let stream = TcpStream::from(fd);
        // control messages go out at once, not after Nagle's delay
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(stream)
    }

    /// The next datagram, waiting until `until` at most; None when the
    /// link closed or nothing came.
    fn next(&self, until: Option<Instant>) -> Option<Vec<u8>> {
        let mut q = lock(&self.out.queue);
        loop {
            if q.closed {
                return None;
            }
            if let Some(d) = q.items.pop_front() {
                return Some(d);
            }
            let wait = match until {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if wait.is_zero() {
                return None;
            }
            q = self
                .out
                .ready
                .wait_timeout(q, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn closed(&self) -> bool {
        lock(&self.out.queue).closed
    }

    /// Connects, writes, reconnects, until the link is dropped.
    fn run(self) {
        let mut conn: Option<TcpStream> = None;
        let mut next_attempt = Instant::now();
        while !self.closed() {
            let Some(stream) = conn.as_mut() else {
                let now = Instant::now();
                if now < next_attempt {
                    // wait, but wake up when the link closes
                    let q = lock(&self.out.queue);
                    if !q.closed {
                        let _ = self.out.ready.wait_timeout(q, next_attempt - now);
                    }
                    continue;
                }
                next_attempt = now + RECONNECT;
                if let Ok(s) = self.connect() {
                    conn = Some(s);
                    self.out.connected.store(true, Ordering::Relaxed);
                }
                continue;
            };
            // wake up now and then to notice a close
            let Some(d) = self.next(Some(Instant::now() + RECONNECT)) else {
                continue;
            };
            // the peer never writes on this connection: readable means it
            // closed (restarted), and a write would vanish into it
            let closed = poll(&[(stream.as_raw_fd(), libc::POLLIN)], Some(Duration::ZERO))
                .map_or(true, |r| r[0] != 0);
            if closed || stream.write_all(&d).is_err() {
                // written again first on the next connection, which starts
                // on a message boundary (the peer drops the old one)
                let mut q = lock(&self.out.queue);
                if q.items.len() < q.cap {
                    q.items.push_front(d);
                } else {
                    q.dropped += 1;
                }
                drop(q);
                conn = None;
                self.out.connected.store(false, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_cut_on_message_boundaries() {
        let alive = [0x1a, 0x10, 0x00, 0x08, 0, 0, 0, 1];
        let ack = [0x1a, 0x08, 0x00, 0x10, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let mut s = Vec::new();
        s.extend_from_slice(&alive);
        s.extend_from_slice(&ack);
        assert_eq!(complete_messages(&s), Some(24));
        assert_eq!(complete_messages(&s[..23]), Some(8));
        assert_eq!(complete_messages(&s[..10]), Some(8));
        assert_eq!(complete_messages(&s[..3]), Some(0));
        assert_eq!(complete_messages(&[]), Some(0));
        // a length shorter than a header: the boundaries are lost
        assert_eq!(complete_messages(&[0x10, 0, 0, 4, 0, 0, 0, 0]), None);
        let mut bad = alive.to_vec();
        bad.extend_from_slice(&[0x10, 0, 0, 0]);
        assert_eq!(complete_messages(&bad), None);
    }
}
