//! The bounded front of the web server: our own accept loop and request
//! head reader, in front of tiny_http.
//!
//! tiny_http 0.12 accepts connections itself and reads each request head
//! on a new thread per connection, with no bound on threads, on header
//! bytes or on time, before any of our code sees the request. So no
//! client ever reaches it directly. One thread here (`ctrack-webfront`,
//! non-blocking sockets and poll(2)) accepts on the configured address,
//! keeps at most [`Limits::max_conns`] clients, reads each request head
//! up to the size limits and before a deadline counted from the accept
//! (a client trickling one byte a second is cut all the same), applies
//! the per-address rate limit, and forwards a rebuilt head of checked
//! fields (and a small DELETE body) over a private Unix socket to
//! tiny_http. Then it copies the reply back, stream or SSE alike, and
//! drops a client that stops reading for [`Limits::send_timeout`].
//!
//! One request per connection: the forwarded head says
//! `Connection: close` and the reply gets the same header, so each
//! connection has one head, one deadline and one reply. tiny_http thus
//! holds at most `max_conns` connections (and threads), all of them with
//! a complete, checked head.
//!
//! The pure parts live beside it: the head parser in [`super::head`] and
//! the per-address rate limit in [`super::ratelimit`]; the state the
//! front shares with the tiny_http side is [`super::shared::Shared`].

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Limits;
use super::head::{Head, find_crlf, input_cap, parse_head};
use super::shared::{API_CSP, Shared, error_body};

/// Reply bytes buffered per connection on their way to the client.
const RELAY: usize = 16 * 1024;
/// How long a finished connection may take to close after our reply.
const LINGER: Duration = Duration::from_secs(2);
/// A reply with no byte either way for this long is cut (a wedged
/// worker; event streams send a keep-alive every 15 s).
const RELAY_IDLE: Duration = Duration::from_secs(60);
/// Pause of the accept loop after EMFILE, ENFILE, ENOBUFS or ENOMEM.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted per wake-up at most (the others wait in the
/// kernel's backlog for the next round).
const ACCEPT_BATCH: usize = 64;
/// Most connections the front holds whatever the configuration: each
/// waits in the Unix listener's backlog (128) at worst.
pub const MAX_CONNS: usize = 100;
/// Free descriptors the front wants before it connects to tiny_http: one
/// for its end, one for tiny_http's accept, one for the clone tiny_http
/// makes of every accepted socket (with `unwrap()`: EMFILE there would
/// abort ctrackd), and room for the workers' netlink sockets.
const FD_HEADROOM: usize = 16;

/// The reason phrase of a status the front answers itself.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Service Unavailable",
    }
}

/// A whole error reply of the front: the same security headers as every
/// other reply, a JSON body, `Connection: close`; only constants in the
/// header.
pub fn error_reply(status: u16, msg: &str, retry_after: Option<&str>) -> Vec<u8> {
    let body = error_body(msg);
    let mut r = Vec::with_capacity(420 + body.len());
    r.extend_from_slice(b"HTTP/1.1 ");
    crate::flow::addr::push_u64(&mut r, status as u64);
    r.push(b' ');
    r.extend_from_slice(reason(status).as_bytes());
    r.extend_from_slice(
        b"\r\nServer: ctrack\r\nContent-Type: application/json\r\n\
          X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
          Referrer-Policy: no-referrer\r\nCache-Control: no-store\r\n\
          Connection: close\r\nContent-Security-Policy: ",
    );
    r.extend_from_slice(API_CSP.as_bytes());
    if let Some(s) = retry_after {
        r.extend_from_slice(b"\r\nRetry-After: ");
        r.extend_from_slice(s.as_bytes());
    }
    r.extend_from_slice(b"\r\nContent-Length: ");
    crate::flow::addr::push_u64(&mut r, body.len() as u64);
    r.extend_from_slice(b"\r\n\r\n");
    r.extend_from_slice(&body);
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Head,
    /// Forwarding to tiny_http and copying its reply back.
    Relay,
    /// Our last bytes go out, then the client's leftovers are read and
    /// dropped until it closes or the linger time ends.
    Closing,
    /// To be dropped.
    Dead,
}

/// One client connection.
struct Conn {
    tcp: TcpStream,
    peer: IpAddr,
    phase: Phase,
    born: Instant,
    /// Head phase: the deadline of the head; Closing: the end of the
    /// linger time.
    deadline: Instant,
    /// Request bytes read so far (head phase only).
    inb: Vec<u8>,
    up: Option<UnixStream>,
    /// Bytes for tiny_http not written yet.
    to_up: Vec<u8>,
    /// Body bytes still to come from the client.
    body_left: usize,
    /// Bytes for the client, sent from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Last time bytes moved either way (for the relay idle cut).
    moved: Instant,
    /// Since when the client has had reply bytes waiting without taking
    /// any (for the send timeout).
    waiting: Instant,
    /// The reply's status line has had `Connection: close` added.
    marked: bool,
    up_done: bool,
    shut: bool,
}

impl Conn {
    fn new(tcp: TcpStream, peer: IpAddr, now: Instant, head_timeout: Duration) -> Conn {
        Conn {
            tcp,
            peer,
            phase: Phase::Head,
            born: now,
            deadline: now + head_timeout,
            inb: Vec::new(),
            up: None,
            to_up: Vec::new(),
            body_left: 0,
            out: Vec::new(),
            out_pos: 0,
            moved: now,
            waiting: now,
            marked: false,
            up_done: false,
            shut: false,
        }
    }

    fn pending_out(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Answers `reply` and closes.
    fn finish(&mut self, reply: Vec<u8>, now: Instant) {
        self.up = None;
        self.inb = Vec::new();
        self.to_up = Vec::new();
        self.out = reply;
        self.out_pos = 0;
        self.marked = true;
        self.phase = Phase::Closing;
        self.deadline = now + LINGER;
        self.waiting = now;
    }

    /// Once our last byte is out: FIN to the client, so it sees the end
    /// of the reply, while we keep reading its leftovers.
    fn close_write(&mut self) {
        if !self.shut && !self.pending_out() {
            self.shut = true;
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
    }

    /// poll(2) events wanted on the client and on tiny_http's side.
    fn interest(&self) -> (i16, i16) {
        match self.phase {
            Phase::Head => (libc::POLLIN, 0),
            Phase::Relay => {
                // the client is read all along: its body, then nothing but
                // its close, which ends the request (as nginx does)
                let mut c = libc::POLLIN;
                let mut u = 0;
                if self.pending_out() && self.marked {
                    c |= libc::POLLOUT;
                }
                if !self.to_up.is_empty() {
                    u |= libc::POLLOUT;
                }
                if !self.up_done && self.out.len() - self.out_pos < RELAY {
                    u |= libc::POLLIN;
                }
                (c, u)
            }
            Phase::Closing if self.pending_out() => (libc::POLLOUT, 0),
            Phase::Closing => (libc::POLLIN, 0),
            Phase::Dead => (0, 0),
        }
    }

    /// The next time this connection must be looked at without I/O.
    fn wake_at(&self, l: &Limits) -> Option<Instant> {
        match self.phase {
            Phase::Head | Phase::Closing => Some(self.deadline),
            Phase::Relay if self.pending_out() => {
                Some((self.waiting + l.send_timeout).min(self.moved + RELAY_IDLE))
            }
            Phase::Relay => Some(self.moved + RELAY_IDLE),
            Phase::Dead => None,
        }
    }

    /// Deadlines: a head not complete in time gets 408; a client that
    /// takes no reply bytes for the send timeout, or a reply idle for
    /// [`RELAY_IDLE`], is dropped; lingering ends.
    fn tick(&mut self, sh: &Shared, now: Instant) {
        match self.phase {
            Phase::Head if now >= self.deadline => {
                sh.counters.head_timeouts.fetch_add(1, Ordering::Relaxed);
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.finish(
                    error_reply(408, "request head not received in time", None),
                    now,
                );
            }
            Phase::Relay
                if (self.pending_out() && now >= self.waiting + sh.limits.send_timeout)
                    || now >= self.moved + RELAY_IDLE =>
            {
                sh.counters.send_timeouts.fetch_add(1, Ordering::Relaxed);
                self.phase = Phase::Dead;
            }
            Phase::Closing if now >= self.deadline => self.phase = Phase::Dead,
            _ => {}
        }
    }

    /// Handles poll results: `c` on the client socket, `u` on tiny_http's.
    fn ready(&mut self, sh: &Shared, up_path: &Path, c: i16, u: i16, scratch: &mut [u8]) {
        let now = Instant::now();
        let err = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        match self.phase {
            Phase::Head if c != 0 => self.read_head(sh, up_path, scratch, now),
            Phase::Relay => {
                if u != 0 {
                    self.relay_up(u, scratch, now);
                }
                if c & libc::POLLIN != 0 {
                    self.read_body(scratch, now);
                } else if c & err != 0 {
                    self.phase = Phase::Dead;
                }
                if self.phase == Phase::Relay && c & libc::POLLOUT != 0 {
                    self.write_out(now);
                }
                if self.phase == Phase::Relay && self.up_done && !self.pending_out() {
                    self.phase = Phase::Closing;
                    self.deadline = now + LINGER;
                    self.up = None;
                    self.close_write();
                }
            }
            Phase::Closing if c != 0 => {
                if self.pending_out() {
                    self.write_out(now);
                    if c & err != 0 && self.pending_out() {
                        self.phase = Phase::Dead;
                    }
                } else {
                    // the client's leftovers: read and drop until it closes
                    match (&self.tcp).read(scratch) {
                        Ok(0) => self.phase = Phase::Dead,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => self.phase = Phase::Dead,
                    }
                }
                if self.phase == Phase::Closing {
                    self.close_write();
                }
            }
            _ => {}
        }
    }

    fn read_head(&mut self, sh: &Shared, up_path: &Path, scratch: &mut [u8], now: Instant) {
        let cap = input_cap(&sh.limits);
        let room = cap.saturating_sub(self.inb.len()).min(scratch.len());
        let n = match (&self.tcp).read(&mut scratch[..room]) {
            Ok(0) => {
                self.phase = Phase::Dead;
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
            Err(_) => {
                self.phase = Phase::Dead;
                return;
            }
        };
        let chunk = &scratch[..n];
        self.inb.extend_from_slice(chunk);
        // only a new line end (or a full buffer) can change the verdict
        if !chunk.contains(&b'\n') && self.inb.len() < cap {
            return;
        }
        match parse_head(&self.inb, &sh.limits) {
            Ok(None) => {}
            Err(r) => {
                let counter = match r.status {
                    413 | 414 | 431 => &sh.counters.too_large,
                    _ => &sh.counters.bad_requests,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.finish(error_reply(r.status, r.msg, None), now);
            }
            Ok(Some(head)) => self.start_relay(sh, up_path, head, now),
        }
    }

    fn start_relay(&mut self, sh: &Shared, up_path: &Path, head: Head, now: Instant) {
        sh.counters.requests.fetch_add(1, Ordering::Relaxed);
        let allowed = sh
            .limiter
            .lock()
            .map(|mut r| r.allow(self.peer, now))
            .unwrap_or(true);
        if !allowed {
            sh.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            sh.counters.errors.fetch_add(1, Ordering::Relaxed);
            let reply = error_reply(429, "too many requests: slow down", Some("1"));
            return self.finish(reply, now);
        }
        // a blocking connect to our own listener returns at once: its
        // backlog (128) is larger than MAX_CONNS
        let up = match fds_free(&self.tcp)
            .and_then(|_| UnixStream::connect(up_path))
            .and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }) {
            Ok(s) => s,
            Err(_) => {
                sh.counters.busy.fetch_add(1, Ordering::Relaxed);
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                let reply = error_reply(503, "server busy: try again", Some("1"));
                return self.finish(reply, now);
            }
        };
        let mut to_up = head.forward;
        let have = (self.inb.len() - head.len).min(head.body);
        to_up.extend_from_slice(&self.inb[head.len..head.len + have]);
        self.to_up = to_up;
        self.body_left = head.body - have;
        self.inb = Vec::new();
        self.up = Some(up);
        self.phase = Phase::Relay;
        self.moved = now;
    }

    /// Reads the rest of the body for tiny_http; after it, anything the
    /// client sends is dropped (one request per connection) and its close
    /// ends the reply.
    fn read_body(&mut self, scratch: &mut [u8], now: Instant) {
        let want = if self.body_left > 0 {
            self.body_left.min(scratch.len())
        } else {
            scratch.len()
        };
        match (&self.tcp).read(&mut scratch[..want]) {
            Ok(0) => self.phase = Phase::Dead,
            Ok(n) if self.body_left > 0 => {
                self.to_up.extend_from_slice(&scratch[..n]);
                self.body_left -= n;
                self.moved = now;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.phase = Phase::Dead,
        }
    }

    /// tiny_http's side: write what we owe it, read its reply.
    fn relay_up(&mut self, u: i16, scratch: &mut [u8], now: Instant) {
        let Some(up) = self.up.as_ref() else { return };
        if u & libc::POLLOUT != 0 && !self.to_up.is_empty() {
            match (&*up).write(&self.to_up) {
                Ok(n) => {
                    self.to_up.drain(..n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => {
                    self.to_up.clear();
                    self.up_done = true;
                }
            }
        }
        let readable = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        if u & readable == 0 || self.up_done {
            return;
        }
        let room = RELAY.saturating_sub(self.out.len() - self.out_pos);
        if room == 0 {
            return;
        }
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let n = room.min(scratch.len());
        match (&*up).read(&mut scratch[..n]) {
            Ok(0) => self.up_done = true,
            Ok(n) => {
                if !self.pending_out() {
                    self.waiting = now;
                }
                self.out.extend_from_slice(&scratch[..n]);
                self.moved = now;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.up_done = true,
        }
        if !self.marked {
            self.mark();
        }
    }

    /// Adds `Connection: close` after the reply's status line (tiny_http
    /// refuses to send that header itself), once the line is complete.
    fn mark(&mut self) {
        match find_crlf(&self.out, self.out_pos) {
            Some(e) => {
                const CLOSE: &[u8] = b"Connection: close\r\n";
                self.out.extend_from_slice(CLOSE);
                self.out[e + 2..].rotate_right(CLOSE.len());
                self.marked = true;
            }
            None if self.up_done || self.out.len() - self.out_pos > 512 => self.marked = true,
            None => {}
        }
    }

    fn write_out(&mut self, now: Instant) {
        match (&self.tcp).write(&self.out[self.out_pos..]) {
            Ok(n) => {
                self.out_pos += n;
                if n > 0 {
                    self.moved = now;
                    self.waiting = now;
                }
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.phase = Phase::Dead,
        }
    }
}

/// Ok when [`FD_HEADROOM`] descriptors are free now (found by taking
/// and giving back that many).
fn fds_free(probe: &impl AsRawFd) -> std::io::Result<()> {
    let mut got = [-1; FD_HEADROOM];
    let mut res = Ok(());
    for slot in got.iter_mut() {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new
        // one that only this function owns, or -1.
        let fd = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            res = Err(std::io::Error::last_os_error());
            break;
        }
        *slot = fd;
    }
    for fd in got.into_iter().filter(|&fd| fd >= 0) {
        // SAFETY: `fd` was made above and is closed exactly once.
        unsafe { libc::close(fd) };
    }
    res
}

/// Answers a connection we will not keep (at the cap, or evicted) with
/// 503 and closes it, without waiting for anything.
fn refuse(tcp: &TcpStream, scratch: &mut [u8]) {
    // read what already arrived so the close is a FIN, not a reset that
    // could destroy the reply before the client reads it
    for _ in 0..4 {
        match (&*tcp).read(scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let reply = error_reply(503, "too many connections: try again", Some("1"));
    let _ = (&*tcp).write(&reply);
    let _ = tcp.shutdown(Shutdown::Write);
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The front's thread: accepts on `listener`, serves connections, until
/// `wake` becomes readable and the server is stopping.
pub(super) fn run(sh: &Arc<Shared>, listener: TcpListener, wake: UnixStream, up_path: &Path) {
    let l = &sh.limits;
    let max_conns = l.max_conns.clamp(1, MAX_CONNS);
    let mut conns: Vec<Conn> = Vec::with_capacity(max_conns);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2 + 2 * max_conns);
    let mut scratch = vec![0u8; RELAY];
    let mut paused_until: Option<Instant> = None;
    let mut noted: Option<Instant> = None;
    while !sh.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        for c in conns.iter_mut() {
            c.tick(sh, now);
        }
        conns.retain(|c| c.phase != Phase::Dead);
        sh.counters
            .connections
            .store(conns.len() as u32, Ordering::Relaxed);

        if paused_until.is_some_and(|t| now >= t) {
            paused_until = None;
        }
        fds.clear();
        fds.push(pollfd(wake.as_raw_fd(), libc::POLLIN));
        let accepting = if paused_until.is_none() {
            libc::POLLIN
        } else {
            0
        };
        fds.push(pollfd(listener.as_raw_fd(), accepting));
        let mut next = paused_until;
        for c in &conns {
            let (ce, ue) = c.interest();
            fds.push(pollfd(c.tcp.as_raw_fd(), ce));
            let ufd = c.up.as_ref().map_or(-1, |u| u.as_raw_fd());
            fds.push(pollfd(ufd, ue));
            if let Some(t) = c.wake_at(l) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let timeout = match next {
            Some(t) => t
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, 60_000) as i32,
            None => 60_000,
        };
        // SAFETY: `fds` is a valid, initialised array of `fds.len()`
        // pollfd structs that outlives the call; poll only writes revents.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            sh.note(&format!("web: poll failed ({e}); stopping the front"));
            break;
        }
        if fds[0].revents != 0 {
            match (&wake).read(&mut scratch) {
                Ok(0) => break,
                Err(e) if e.kind() != ErrorKind::WouldBlock => break,
                _ => continue,
            }
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let (cr, ur) = (fds[2 + 2 * i].revents, fds[3 + 2 * i].revents);
            if cr != 0 || ur != 0 {
                c.ready(sh, up_path, cr, ur, &mut scratch);
            }
        }
        conns.retain(|c| c.phase != Phase::Dead);
        if fds[1].revents == 0 {
            continue;
        }
        for _ in 0..ACCEPT_BATCH {
            let (tcp, peer) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    sh.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let passing = matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR)
                    );
                    if passing {
                        // that connection is gone; the next one may be fine
                        continue;
                    }
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM or worse: serve the
                    // open connections and try again shortly
                    let now = Instant::now();
                    if noted.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
                        noted = Some(now);
                        sh.note(&format!("web: accept failed ({e}); pausing briefly"));
                    }
                    paused_until = Some(now + ACCEPT_PAUSE);
                    break;
                }
            };
            admit(sh, &mut conns, max_conns, tcp, peer.ip(), &mut scratch);
        }
        sh.counters
            .connections
            .store(conns.len() as u32, Ordering::Relaxed);
    }
    sh.counters.connections.store(0, Ordering::Relaxed);
}

/// Takes a new connection: at the cap, the oldest connection still
/// waiting for its head (or one that is closing) makes room; when every
/// connection has a request in progress, the new one gets 503.
fn admit(
    sh: &Shared,
    conns: &mut Vec<Conn>,
    max_conns: usize,
    tcp: TcpStream,
    peer: IpAddr,
    scratch: &mut [u8],
) {
    if tcp.set_nonblocking(true).is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    if conns.len() >= max_conns {
        let victim = conns
            .iter()
            .position(|c| c.phase == Phase::Closing)
            .or_else(|| {
                conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.phase == Phase::Head)
                    .min_by_key(|(_, c)| c.born)
                    .map(|(i, _)| i)
            });
        match victim {
            Some(i) => {
                let old = conns.swap_remove(i);
                if old.phase == Phase::Head {
                    sh.counters.evicted.fetch_add(1, Ordering::Relaxed);
                    refuse(&old.tcp, scratch);
                }
            }
            None => {
                sh.counters.refused.fetch_add(1, Ordering::Relaxed);
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                refuse(&tcp, scratch);
                return;
            }
        }
    }
    conns.push(Conn::new(tcp, peer, Instant::now(), sh.limits.head_timeout));
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_carry_only_constants() {
        let r = error_reply(429, "too many requests: slow down", Some("1"));
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(head.contains("\r\nRetry-After: 1"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nX-Content-Type-Options: nosniff"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, "{\"error\":\"too many requests: slow down\"}");
    }
}
