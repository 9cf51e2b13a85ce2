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
//! [`parse_head`] is the pure part (bytes in, a verdict out) and is
//! unit-tested without sockets.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Limits;
use super::server::{API_CSP, Shared, error_body};

/// Largest request body accepted (DELETE only); tiny_http reads bodies up
/// to this size at once.
pub const MAX_BODY: usize = 1024;
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

/// Why a request head is refused: status and a constant message (never
/// request bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status code.
    pub status: u16,
    /// The `error` text of the JSON body.
    pub msg: &'static str,
}

const fn reject(status: u16, msg: &'static str) -> Reject {
    Reject { status, msg }
}

const BAD_LINE: Reject = reject(400, "malformed request line");
const BAD_HEADER: Reject = reject(400, "malformed request header");
const TOO_LONG: Reject = reject(414, "request target too long");
const TOO_BIG: Reject = reject(431, "request headers too large");
const NO_BODY: Reject = reject(413, "this API takes no request body");

/// A complete, checked request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// What tiny_http gets: the request line and the kept header fields,
    /// rebuilt with CRLFs, ending in `Connection: close`.
    pub forward: Vec<u8>,
    /// Bytes of the input the head took (a body starts here).
    pub len: usize,
    /// Body bytes that follow (`Content-Length`, DELETE only).
    pub body: usize,
}

/// Bytes of input that can hold a head within `l` (plus a DELETE body).
pub fn input_cap(l: &Limits) -> usize {
    l.max_url + l.max_header_bytes + 64 + MAX_BODY
}

fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the request head at the start of `buf` against `l`: `Ok(None)`
/// while it is incomplete and within the limits, `Ok(Some(head))` once
/// complete and valid, `Err` as soon as it breaks a rule: 414 for a
/// request line over `max_url` (+ method and version), 431 for header
/// fields over `max_header_bytes` or `max_headers`, 413 for a body on
/// anything but DELETE or over [`MAX_BODY`] or chunked, 505 for an HTTP
/// version other than 1.0/1.1, 400 for anything malformed (bare CR or LF,
/// control or non-ASCII bytes, folded lines, a bad `Content-Length`).
pub fn parse_head(buf: &[u8], l: &Limits) -> Result<Option<Head>, Reject> {
    // empty lines before the request line are allowed (RFC 9112 2.2)
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
        if start > 8 {
            return Err(BAD_LINE);
        }
    }
    let line_max = l.max_url + 32;
    let Some(le) = find_crlf(buf, start) else {
        return if buf.len() - start > line_max {
            Err(TOO_LONG)
        } else {
            Ok(None)
        };
    };
    let line = &buf[start..le];
    if line.len() > line_max {
        return Err(TOO_LONG);
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_LINE);
    };
    if method.is_empty() || method.len() > 16 || !method.iter().all(u8::is_ascii_uppercase) {
        return Err(BAD_LINE);
    }
    if target.first() != Some(&b'/') || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(BAD_LINE);
    }
    if target.len() > l.max_url {
        return Err(TOO_LONG);
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(if version.starts_with(b"HTTP/") {
            reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        } else {
            BAD_LINE
        });
    }
    let delete = method == b"DELETE";

    let hs = le + 2;
    let mut p = hs;
    let mut count = 0;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut kept: Vec<(&[u8], &[u8])> = Vec::new();
    let end = loop {
        let Some(e) = find_crlf(buf, p) else {
            return if buf.len() - hs > l.max_header_bytes || buf.len() >= input_cap(l) {
                Err(TOO_BIG)
            } else {
                Ok(None)
            };
        };
        if e == p {
            break e + 2;
        }
        count += 1;
        if count > l.max_headers || e + 2 - hs > l.max_header_bytes {
            return Err(TOO_BIG);
        }
        let field = &buf[p..e];
        p = e + 2;
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return Err(BAD_HEADER);
        };
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(BAD_HEADER);
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(BAD_HEADER);
        }
        let value = value.trim_ascii();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(reject(400, "invalid Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(reject(400, "invalid Content-Length"));
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            chunked = true;
        } else if is("connection")
            || is("keep-alive")
            || is("proxy-connection")
            || is("te")
            || is("upgrade")
            || is("expect")
            || is("http2-settings")
        {
            // hop-by-hop: tiny_http gets Connection: close and nothing else
        } else {
            kept.push((name, value));
        }
    };
    let body = length.unwrap_or(0);
    if chunked || body > 0 {
        if !delete {
            return Err(NO_BODY);
        }
        if chunked || body > MAX_BODY {
            return Err(reject(413, "request body too large (at most 1024 bytes)"));
        }
    }
    let mut forward = Vec::with_capacity(end - start + 32);
    forward.extend_from_slice(line);
    forward.extend_from_slice(b"\r\n");
    for (name, value) in kept {
        forward.extend_from_slice(name);
        forward.extend_from_slice(b": ");
        forward.extend_from_slice(value);
        forward.extend_from_slice(b"\r\n");
    }
    if body > 0 {
        forward.extend_from_slice(b"Content-Length: ");
        crate::flow::addr::push_u64(&mut forward, body as u64);
        forward.extend_from_slice(b"\r\n");
    }
    forward.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Some(Head {
        forward,
        len: end,
        body,
    }))
}

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

/// Per-address token buckets; the table is bounded (oldest entries go).
pub struct RateLimiter {
    rate: f32,
    burst: f32,
    buckets: HashMap<IpAddr, (f32, Instant)>,
}

const MAX_BUCKETS: usize = 1024;

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(1) as f32,
            burst: burst.max(1) as f32,
            buckets: HashMap::new(),
        }
    }

    /// True when `ip` may make a request at `now` (and takes a token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&ip) {
            // forget the buckets that have refilled; if none, the oldest
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f32() * rate < burst);
            if self.buckets.len() >= MAX_BUCKETS
                && let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f32() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
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

    fn lim() -> Limits {
        Limits::default()
    }

    fn ok(b: &[u8]) -> Head {
        parse_head(b, &lim()).unwrap().unwrap()
    }

    fn status(b: &[u8]) -> u16 {
        parse_head(b, &lim()).unwrap_err().status
    }

    #[test]
    fn complete_heads_are_rebuilt_with_connection_close() {
        let h = ok(
            b"GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\
                     Accept:  */* \r\nTE: identity\r\nExpect: 100-continue\r\n\r\nrest",
        );
        assert_eq!(
            String::from_utf8(h.forward).unwrap(),
            "GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(h.body, 0);
        assert_eq!(
            &b"GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\
                     Accept:  */* \r\nTE: identity\r\nExpect: 100-continue\r\n\r\nrest"[h.len..],
            b"rest"
        );
        // leading empty lines are skipped, HTTP/1.0 is fine
        let h = ok(b"\r\nGET / HTTP/1.0\r\n\r\n");
        assert!(h.forward.starts_with(b"GET / HTTP/1.0\r\n"));
    }

    #[test]
    fn incomplete_heads_wait() {
        for b in [
            &b""[..],
            b"GE",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: x",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(parse_head(b, &lim()), Ok(None), "{b:?}");
        }
    }

    #[test]
    fn sizes_are_capped() {
        let l = lim();
        // a request line that never ends: 414 once past the cap
        let mut b = b"GET /".to_vec();
        b.extend(std::iter::repeat_n(b'a', l.max_url + 40));
        assert_eq!(status(&b), 414);
        // a complete but long target
        let t = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(l.max_url));
        assert_eq!(status(t.as_bytes()), 414);
        // one endless header line
        let mut b = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        b.extend(std::iter::repeat_n(b'a', l.max_header_bytes));
        assert_eq!(status(&b), 431);
        // many small headers
        let mut b = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=l.max_headers {
            b.extend(format!("X-{i}: v\r\n").bytes());
        }
        assert_eq!(status(&b), 431);
        // exactly at the limit is fine
        let mut b = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..l.max_headers {
            b.extend(format!("X-{i}: v\r\n").bytes());
        }
        b.extend(b"\r\n");
        assert!(parse_head(&b, &l).unwrap().is_some());
    }

    #[test]
    fn bodies_only_small_and_on_delete() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), 413);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"DELETE / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"DELETE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        let h = ok(b"DELETE /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(h.body, 2);
        assert!(
            String::from_utf8(h.forward)
                .unwrap()
                .ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n")
        );
        // zero is no body
        assert_eq!(ok(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body, 0);
        for bad in [
            &b"DELETE / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"[..],
            b"DELETE / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"get / HTTP/1.1\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
    }

    #[test]
    fn every_prefix_and_mutation_is_a_verdict_not_a_panic() {
        let good = b"DELETE /api/v1/connections?all=1 HTTP/1.1\r\nHost: r\r\n\
                     Authorization: Bearer 0123456789abcdef\r\nContent-Length: 2\r\n\r\n{}";
        for n in 0..=good.len() {
            let _ = parse_head(&good[..n], &lim());
        }
        for i in 0..good.len() {
            for b in [0u8, b'\r', b'\n', b' ', b':', 0xff] {
                let mut m = good.to_vec();
                m[i] = b;
                let _ = parse_head(&m, &lim());
            }
        }
    }

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

    #[test]
    fn rate_limiter_refills() {
        let mut r = RateLimiter::new(10, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.allow(ip, t0));
        assert!(r.allow(ip, t0));
        assert!(!r.allow(ip, t0));
        assert!(r.allow(ip, t0 + Duration::from_millis(150)));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(r.allow(other, t0));
        for i in 0..3000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            r.allow(a, t0);
        }
        assert!(r.buckets.len() <= MAX_BUCKETS);
    }
}
