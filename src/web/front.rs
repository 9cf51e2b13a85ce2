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
//! Fairness: one client (an IPv4 address or an IPv6 /64) holds at most
//! [`Limits::max_conns_per_client`] connections; at either cap the
//! connection to make room for is one still sending its head, of the
//! client holding the most (a flood evicts its own, never a quiet
//! client's). A request naming another host than ours is refused (421,
//! DNS rebinding), as is one a page of another site made (403). The
//! front tells the server who the client is and which connection it is
//! (`X-Ctrack-Peer`, `X-Ctrack-Conn`; a client's own such fields are
//! dropped), so the server can cap large replies and event streams per
//! client and end an event stream as soon as its client goes.
//!
//! Replies: the front reads a reply ahead of a slow client into a
//! buffer of up to [`SPOOL`] bytes (all buffers together at most
//! [`SPOOL_TOTAL`]), so a worker that wrote a small reply is free at
//! once; a reply (not an event stream) must average
//! [`Limits::min_rate`] once it has run [`Limits::min_rate_after`] and
//! end within [`Limits::reply_deadline`], else it is cut; a request whose
//! reply has not started [`UPSTREAM_WAIT`] after it went to the server
//! gets 503 with `Retry-After` (never a silent close).
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
use super::access;
use super::head::{Head, find_crlf, input_cap, parse_head};
use super::shared::{API_CSP, ConnState, Count, Shared, error_body};

/// Reply bytes buffered per connection on their way to the client
/// whatever the others hold.
const RELAY: usize = 16 * 1024;
/// Reply bytes buffered per connection while all buffers together hold
/// less than [`SPOOL_TOTAL`].
pub const SPOOL: usize = 256 * 1024;
/// Reply bytes buffered by all connections together, beyond which each
/// gets `RELAY` (16 KiB) only.
pub const SPOOL_TOTAL: usize = 4 << 20;
/// A request whose reply has not started this long after it went to the
/// server gets 503 (the first request after a quiet spell may wait for a
/// dump of the table: up to 30 s).
pub const UPSTREAM_WAIT: Duration = Duration::from_secs(45);
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
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        421 => "Misdirected Request",
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
    /// When the request went to the server.
    relayed: Instant,
    /// When the reply's first byte came.
    reply_started: Option<Instant>,
    /// Reply bytes written to the client.
    sent: u64,
    /// What the server knows of this connection (from the relay on).
    state: Option<Arc<ConnState>>,
    /// The client has sent its end (half-closed) during the relay.
    client_eof: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // an event stream of this connection ends at once
        if let Some(s) = &self.state {
            s.alive.store(false, Ordering::SeqCst);
        }
    }
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
            relayed: now,
            reply_started: None,
            sent: 0,
            state: None,
            client_eof: false,
        }
    }

    fn is_stream(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.stream.load(Ordering::Relaxed))
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

    /// poll(2) events wanted on the client and on tiny_http's side;
    /// `room` is how many reply bytes this connection may buffer.
    fn interest(&self, room: usize) -> (i16, i16) {
        match self.phase {
            Phase::Head => (libc::POLLIN, 0),
            Phase::Relay => {
                // the client is read all along: its body, then nothing but
                // its end of sending (see Conn::read_body)
                let mut c = if self.client_eof { 0 } else { libc::POLLIN };
                let mut u = 0;
                if self.pending_out() && self.marked {
                    c |= libc::POLLOUT;
                }
                if !self.to_up.is_empty() {
                    u |= libc::POLLOUT;
                }
                if !self.up_done && self.out.len() - self.out_pos < room {
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
            Phase::Relay => {
                let mut t = self.moved + RELAY_IDLE;
                if self.pending_out() {
                    t = t.min(self.waiting + l.send_timeout);
                }
                match self.reply_started {
                    None => t = t.min(self.relayed + UPSTREAM_WAIT),
                    // the rate is checked once a second
                    Some(_) if !self.is_stream() => t = t.min(Instant::now() + SECOND),
                    Some(_) => {}
                }
                Some(t)
            }
            Phase::Dead => None,
        }
    }

    /// Deadlines: a head not complete in time gets 408; a request whose
    /// reply never starts gets 503; a client that takes no reply bytes
    /// for the send timeout, a reply idle for [`RELAY_IDLE`], or one
    /// slower than the minimum rate or past its deadline is dropped;
    /// lingering ends.
    fn tick(&mut self, sh: &Shared, now: Instant) {
        match self.phase {
            Phase::Head if now >= self.deadline => {
                sh.counters.add(Count::HeadTimeouts);
                sh.counters.add(Count::Errors);
                self.finish(
                    error_reply(408, "request head not received in time", None),
                    now,
                );
            }
            Phase::Relay
                if self.reply_started.is_none()
                    && self.out.is_empty()
                    && now >= self.relayed + UPSTREAM_WAIT =>
            {
                sh.counters.add(Count::Busy);
                sh.counters.add(Count::Errors);
                self.finish(error_reply(503, "server busy: try again", Some("5")), now);
            }
            Phase::Relay
                if (self.pending_out() && now >= self.waiting + sh.limits.send_timeout)
                    || now >= self.moved + RELAY_IDLE =>
            {
                sh.counters.add(Count::SendTimeouts);
                self.phase = Phase::Dead;
            }
            Phase::Relay
                if !self.is_stream()
                    && self.reply_started.is_some_and(|t0| {
                        too_slow(&sh.limits, now.duration_since(t0), self.sent)
                    }) =>
            {
                sh.counters.add(Count::SlowReplies);
                self.phase = Phase::Dead;
            }
            Phase::Closing if now >= self.deadline => self.phase = Phase::Dead,
            _ => {}
        }
    }

    /// Handles poll results: `c` on the client socket, `u` on tiny_http's;
    /// `room` as for [`Conn::interest`].
    fn ready(
        &mut self,
        sh: &Shared,
        up_path: &Path,
        (c, u): (i16, i16),
        scratch: &mut [u8],
        room: usize,
    ) {
        let now = Instant::now();
        let err = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        match self.phase {
            Phase::Head if c != 0 => self.read_head(sh, up_path, scratch, now),
            Phase::Relay => {
                if u != 0 {
                    self.relay_up(u, scratch, room, now);
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
                sh.counters.add(match r.status {
                    413 | 414 | 431 => Count::TooLarge,
                    _ => Count::BadRequests,
                });
                sh.counters.add(Count::Errors);
                self.finish(error_reply(r.status, r.msg, None), now);
            }
            Ok(Some(head)) => self.start_relay(sh, up_path, head, now),
        }
    }

    fn start_relay(&mut self, sh: &Shared, up_path: &Path, head: Head, now: Instant) {
        sh.counters.add(Count::Requests);
        if let Some(reply) = refusal(sh, &head) {
            return self.finish(reply, now);
        }
        let allowed = sh
            .limiter
            .lock()
            .map(|mut r| r.allow(access::client_key(self.peer), now))
            .unwrap_or(true);
        if !allowed {
            sh.counters.add(Count::RateLimited);
            sh.counters.add(Count::Errors);
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
                sh.counters.add(Count::Busy);
                sh.counters.add(Count::Errors);
                let reply = error_reply(503, "server busy: try again", Some("1"));
                return self.finish(reply, now);
            }
        };
        let (id, state) = sh.register_conn();
        let mut to_up = head.forward;
        to_up.extend_from_slice(b"X-Ctrack-Peer: ");
        let mut ip = Vec::with_capacity(40);
        crate::flow::addr::push_ip(&mut ip, self.peer);
        to_up.extend_from_slice(&ip);
        to_up.extend_from_slice(b"\r\nX-Ctrack-Conn: ");
        crate::flow::addr::push_u64(&mut to_up, id as u64);
        to_up.extend_from_slice(b"\r\n\r\n");
        let have = (self.inb.len() - head.len).min(head.body);
        to_up.extend_from_slice(&self.inb[head.len..head.len + have]);
        self.to_up = to_up;
        self.body_left = head.body - have;
        self.inb = Vec::new();
        self.up = Some(up);
        self.state = Some(state);
        self.phase = Phase::Relay;
        self.moved = now;
        self.relayed = now;
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
            // the client is done sending: gone, for an event stream (its
            // place is free at once) or a body cut short; a request's
            // reply still goes out (an HTTP/1.0 client may half-close,
            // as netcat does; a client that really left makes the next
            // write fail)
            Ok(0) if self.body_left > 0 || self.is_stream() => self.phase = Phase::Dead,
            Ok(0) => self.client_eof = true,
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

    /// tiny_http's side: write what we owe it, read its reply (into at
    /// most `room` buffered bytes).
    fn relay_up(&mut self, u: i16, scratch: &mut [u8], room: usize, now: Instant) {
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
        let room = room.saturating_sub(self.out.len() - self.out_pos);
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
                self.reply_started.get_or_insert(now);
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
                self.sent += n as u64;
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

/// The front's own answer to a complete head it will not pass on: 421
/// for a `Host` that is not ours (a DNS-rebinding page), 403 for a
/// request a page of another site made.
fn refusal(sh: &Shared, head: &Head) -> Option<Vec<u8>> {
    let foreign = head
        .host
        .as_ref()
        .is_some_and(|h| !access::host_allowed(h, sh.listen, &sh.server_names));
    if foreign {
        sh.counters.add(Count::Misdirected);
        sh.counters.add(Count::Errors);
        return Some(error_reply(
            421,
            "this server does not answer for that host name",
            None,
        ));
    }
    if head.cross_site {
        sh.counters.add(Count::CrossSite);
        sh.counters.add(Count::Errors);
        return Some(error_reply(403, "cross-site requests are refused", None));
    }
    None
}

/// True when a reply that has run for `ran` and sent `sent` bytes is
/// past its deadline, or below the minimum rate once that applies.
pub fn too_slow(l: &Limits, ran: Duration, sent: u64) -> bool {
    if ran >= l.reply_deadline {
        return true;
    }
    ran >= l.min_rate_after && (sent as f64) < l.min_rate as f64 * ran.as_secs_f64()
}

/// How many reply bytes one connection may buffer when all buffers hold
/// `spooled` bytes.
pub fn spool_room(spooled: usize) -> usize {
    if spooled < SPOOL_TOTAL { SPOOL } else { RELAY }
}

/// Which connection makes room for a new one from `newcomer` (given as
/// (phase, client key, born) of each): when the newcomer's client is at
/// its share, its own oldest connection still sending its head (None:
/// refuse the newcomer); at the cap, a closing one, else the oldest one
/// still sending its head of the client holding the most.
fn pick_victim(
    conns: &[(Phase, IpAddr, Instant)],
    newcomer: IpAddr,
    max_conns: usize,
    per_client: usize,
) -> Result<Option<usize>, ()> {
    let mine = conns.iter().filter(|c| c.1 == newcomer).count();
    let oldest_head_of = |key: IpAddr| {
        conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.0 == Phase::Head && c.1 == key)
            .min_by_key(|(_, c)| c.2)
            .map(|(i, _)| i)
    };
    if mine >= per_client {
        return oldest_head_of(newcomer).map(Some).ok_or(());
    }
    if conns.len() < max_conns {
        return Ok(None);
    }
    if let Some(i) = conns.iter().position(|c| c.0 == Phase::Closing) {
        return Ok(Some(i));
    }
    // the client holding the most connections still sending their head
    let mut counts: std::collections::HashMap<IpAddr, usize> = Default::default();
    for c in conns.iter().filter(|c| c.0 == Phase::Head) {
        *counts.entry(c.1).or_default() += 1;
    }
    let biggest = counts
        .into_iter()
        .max_by_key(|&(k, n)| (n, std::cmp::Reverse(k)))
        .map(|(k, _)| k);
    match biggest.and_then(oldest_head_of) {
        Some(i) => Ok(Some(i)),
        None => Err(()),
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
        let spooled: usize = conns.iter().map(|c| c.out.len() - c.out_pos).sum();
        let room = spool_room(spooled);

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
            let (ce, ue) = c.interest(room);
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
                c.ready(sh, up_path, (cr, ur), &mut scratch, room);
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
                    sh.counters.add(Count::AcceptErrors);
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

/// Takes a new connection, making room by [`pick_victim`]: a connection
/// still sending its head is evicted (503) when it must; when none can
/// go, the new one gets 503.
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
    set_send_buffer(&tcp, SEND_BUFFER);
    let key = access::client_key(peer);
    let seen: Vec<(Phase, IpAddr, Instant)> = conns
        .iter()
        .map(|c| (c.phase, access::client_key(c.peer), c.born))
        .collect();
    let per_client = sh.limits.max_conns_per_client.clamp(1, max_conns);
    match pick_victim(&seen, key, max_conns, per_client) {
        Ok(None) => {}
        Ok(Some(i)) => {
            let old = conns.swap_remove(i);
            if old.phase == Phase::Head {
                sh.counters.add(Count::Evicted);
                refuse(&old.tcp, scratch);
            }
        }
        Err(()) => {
            sh.counters.add(Count::Refused);
            sh.counters.add(Count::Errors);
            refuse(&tcp, scratch);
            return;
        }
    }
    conns.push(Conn::new(tcp, peer, Instant::now(), sh.limits.head_timeout));
}

/// The kernel's send buffer of a client socket: a fixed size (no
/// autotuning to megabytes per connection), so the bytes the front has
/// written are close to what the client took (the minimum rate is judged
/// on them) and a slow reader pins little kernel memory.
const SEND_BUFFER: i32 = 128 * 1024;

fn set_send_buffer(tcp: &TcpStream, bytes: i32) {
    // SAFETY: setsockopt reads an int we pass, on a socket we own.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// One second (the rate check's period).
const SECOND: Duration = Duration::from_secs(1);

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
        for (status, phrase) in [
            (403, "Forbidden"),
            (421, "Misdirected Request"),
            (408, "Request Timeout"),
        ] {
            let r = String::from_utf8(error_reply(status, "x", None)).unwrap();
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
                "{r}"
            );
            assert!(!r.contains("Retry-After"));
        }
    }

    #[test]
    fn slow_replies_are_cut_after_a_grace() {
        let l = Limits::default();
        let s = Duration::from_secs;
        assert!(!too_slow(&l, s(9), 0), "grace");
        assert!(too_slow(&l, s(10), 0));
        assert!(!too_slow(&l, s(10), 10 * 32 * 1024));
        assert!(too_slow(&l, s(10), 10 * 32 * 1024 - 1));
        assert!(!too_slow(&l, s(299), u64::MAX));
        assert!(too_slow(&l, s(300), u64::MAX), "deadline");
    }

    #[test]
    fn spool_room_shrinks_when_buffers_are_full() {
        assert_eq!(spool_room(0), SPOOL);
        assert_eq!(spool_room(SPOOL_TOTAL - 1), SPOOL);
        assert_eq!(spool_room(SPOOL_TOTAL), RELAY);
    }

    #[test]
    fn a_flood_makes_room_from_its_own_connections() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        // under both caps: nobody goes
        let conns = vec![(Phase::Head, a, at(0)), (Phase::Relay, b, at(1))];
        assert_eq!(pick_victim(&conns, c, 4, 2), Ok(None));
        // a at its share: its own oldest head goes, never b's
        let conns = vec![
            (Phase::Head, b, at(0)),
            (Phase::Head, a, at(2)),
            (Phase::Head, a, at(1)),
        ];
        assert_eq!(pick_victim(&conns, a, 8, 2), Ok(Some(2)));
        // a at its share with every request in progress: refused
        let busy = vec![(Phase::Relay, a, at(0)), (Phase::Relay, a, at(1))];
        assert_eq!(pick_victim(&busy, a, 8, 2), Err(()));
        // at the cap: a closing one first
        let conns = vec![
            (Phase::Head, a, at(0)),
            (Phase::Closing, b, at(5)),
            (Phase::Head, a, at(1)),
        ];
        assert_eq!(pick_victim(&conns, c, 3, 3), Ok(Some(1)));
        // at the cap: the oldest head of whoever holds the most
        let conns = vec![
            (Phase::Head, b, at(0)),
            (Phase::Head, a, at(3)),
            (Phase::Head, a, at(2)),
            (Phase::Relay, c, at(1)),
        ];
        assert_eq!(pick_victim(&conns, c, 4, 4), Ok(Some(2)));
        // at the cap with every request in progress: refused
        let conns = vec![(Phase::Relay, a, at(0)), (Phase::Relay, b, at(1))];
        assert_eq!(pick_victim(&conns, c, 2, 2), Err(()));
        // a tie goes to the lower address, deterministically
        let conns = vec![(Phase::Head, b, at(0)), (Phase::Head, a, at(1))];
        assert_eq!(pick_victim(&conns, c, 2, 2), Ok(Some(1)));
    }
}
