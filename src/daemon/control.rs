//! The control socket: a UNIX stream socket (mode 0600) where `ctrackd -s`,
//! `-i`, `-k` ... send one request line and get a status line (`OK` or
//! `ERR <why>`) and the output. Unlike conntrackd's, every request gets a
//! status, so a client can exit non-zero when the daemon refused or failed.
//!
//! A request runs only when its whole line arrived: one line of at most
//! [`MAX_REQUEST`] bytes, newline included, within [`REQUEST_DEADLINE`] of
//! connecting, naming a known request. Anything else is answered `ERR`
//! with the reason (too long, incomplete, timed out, unknown) and runs
//! nothing. Each connection is served by a thread of its own, at most
//! [`MAX_CLIENTS`] at once, so a slow or idle client delays nobody.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Output format of cache dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// conntrack's text lines.
    Text,
    /// conntrack's XML.
    Xml,
    /// ctrack's ndjson.
    Json,
}

/// Which cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The internal cache (this router's flows).
    Internal,
    /// The external cache (the peer's flows).
    External,
    /// Both.
    All,
}

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `-s [section]`.
    Stats(Option<String>),
    /// `-i`/`-e`: dump a cache.
    Dump(Which, Format),
    /// `-f [internal|external]`.
    FlushCache(Which),
    /// `-F`: flush the kernel table.
    FlushKernel,
    /// `-R`: resync the internal cache with the kernel.
    Resync,
    /// `-k`: shut down.
    Kill,
    /// `-c`: commit the external cache into the kernel.
    Commit,
    /// `-B`: send the internal cache to the peer.
    Bulk,
    /// `-n`: ask the peer for a full resync.
    RequestResync,
    /// `-t`: shorten kernel timeouts (flush after PurgeTimeout).
    ResetTimers,
}

impl Request {
    /// The request as its protocol line (without newline).
    pub fn to_line(&self) -> String {
        let which = |w: &Which| match w {
            Which::Internal => "internal",
            Which::External => "external",
            Which::All => "all",
        };
        let fmt = |f: &Format| match f {
            Format::Text => "text",
            Format::Xml => "xml",
            Format::Json => "json",
        };
        match self {
            Request::Stats(None) => "stats".into(),
            Request::Stats(Some(s)) => format!("stats {s}"),
            Request::Dump(w, f) => format!("dump {} {}", which(w), fmt(f)),
            Request::FlushCache(w) => format!("flush {}", which(w)),
            Request::FlushKernel => "flush-kernel".into(),
            Request::Resync => "resync".into(),
            Request::Kill => "kill".into(),
            Request::Commit => "commit".into(),
            Request::Bulk => "bulk".into(),
            Request::RequestResync => "request-resync".into(),
            Request::ResetTimers => "reset-timers".into(),
        }
    }

    /// Parses a protocol line.
    pub fn parse(line: &str) -> Option<Request> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let which = |s: &str| match s {
            "internal" => Some(Which::Internal),
            "external" => Some(Which::External),
            "all" => Some(Which::All),
            _ => None,
        };
        Some(match w.as_slice() {
            ["stats"] => Request::Stats(None),
            ["stats", s] if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Request::Stats(Some(s.to_string()))
            }
            ["dump", c, f] => Request::Dump(
                which(c)?,
                match *f {
                    "text" => Format::Text,
                    "xml" => Format::Xml,
                    "json" => Format::Json,
                    _ => return None,
                },
            ),
            ["flush", c] => Request::FlushCache(which(c)?),
            ["flush-kernel"] => Request::FlushKernel,
            ["resync"] => Request::Resync,
            ["kill"] => Request::Kill,
            ["commit"] => Request::Commit,
            ["bulk"] => Request::Bulk,
            ["request-resync"] => Request::RequestResync,
            ["reset-timers"] => Request::ResetTimers,
            _ => return None,
        })
    }
}

/// The daemon's answer.
pub type Reply = Result<Vec<u8>, String>;

/// A request with the channel its reply goes back on.
#[derive(Debug)]
pub struct Pending {
    /// The request.
    pub request: Request,
    /// Where to send the reply.
    pub reply: mpsc::Sender<Reply>,
}

/// Binds the control socket at `path` with mode 0600, replacing a stale
/// socket file (the caller holds the daemon lock, so nobody else uses it).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Longest request line, its newline included: a line that does not end
/// within it is refused, never run in part.
pub const MAX_REQUEST: usize = 256;

/// Time a client has, from connecting, to send its whole request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Time a client has to take each part of the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; one more is answered `ERR` at once, so
/// idle or slow clients cost each other nothing but a slot.
pub const MAX_CLIENTS: usize = 16;

/// Stack of a connection's thread: it only reads a line and copies the
/// answer.
const CLIENT_STACK: usize = 128 << 10;

/// Why a request was not run.
#[derive(Debug)]
pub enum RequestError {
    /// No newline within [`MAX_REQUEST`] bytes.
    TooLong,
    /// The client closed the connection before the newline.
    Incomplete,
    /// The line did not arrive within [`REQUEST_DEADLINE`].
    TimedOut,
    /// The line is not UTF-8.
    NotText,
    /// The line is no request ctrackd knows.
    Unknown(String),
    /// Reading failed.
    Io(io::Error),
}

impl RequestError {
    /// Whether the line was read but names no request (conntrackd's
    /// "local unknown request"); the others are "local read failed".
    pub fn is_unknown(&self) -> bool {
        matches!(self, RequestError::Unknown(_) | RequestError::NotText)
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request too long (at most {MAX_REQUEST} bytes)"),
            RequestError::Incomplete => f.write_str("incomplete request (no newline)"),
            RequestError::TimedOut => write!(
                f,
                "request timed out (the line must arrive within {} s)",
                REQUEST_DEADLINE.as_secs()
            ),
            RequestError::NotText => f.write_str("request is not text"),
            RequestError::Unknown(line) => {
                write!(f, "unknown request `{}'", crate::conf::shown(line.trim()))
            }
            RequestError::Io(e) => write!(f, "cannot read the request: {e}"),
        }
    }
}

/// Reads one request: the bytes up to the first newline, which must come
/// within [`MAX_REQUEST`] bytes and make a valid request line. Nothing is
/// run from a line that is cut, too long or unknown; what follows the
/// newline is ignored. A read that times out is [`RequestError::TimedOut`].
/// The daemon reads sockets through it (with [`DeadlineReader`]) and the
/// fuzz target plain bytes.
pub fn read_request(r: &mut impl Read) -> Result<Request, RequestError> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    let end = loop {
        if len == buf.len() {
            return Err(RequestError::TooLong);
        }
        let n = match r.read(&mut buf[len..]) {
            Ok(0) => return Err(RequestError::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestError::TimedOut);
            }
            Err(e) => return Err(RequestError::Io(e)),
        };
        if let Some(i) = buf[len..len + n].iter().position(|&b| b == b'\n') {
            break len + i;
        }
        len += n;
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| RequestError::NotText)?;
    Request::parse(line).ok_or_else(|| RequestError::Unknown(line.to_string()))
}

/// A socket read through a deadline: each read waits at most until
/// `deadline`, after it a read fails with `TimedOut`. (A timeout per read
/// would let a client that sends a byte now and then hold its slot
/// forever.)
pub struct DeadlineReader<'a> {
    sock: &'a UnixStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    /// Reads `sock` until `deadline`.
    pub fn new(sock: &'a UnixStream, deadline: Instant) -> Self {
        DeadlineReader { sock, deadline }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.sock.set_read_timeout(Some(left))?;
        (&mut &*self.sock).read(buf)
    }
}

/// Requests the control socket could not run, for `ctrackd -s runtime`
/// (conntrackd's "local read failed" and "local unknown request").
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Requests cut short, too long, timed out or unreadable, and
    /// clients turned away because all slots were taken.
    pub read_failed: AtomicU32,
    /// Lines that are no request.
    pub unknown: AtomicU32,
}

/// A taken connection slot, given back when the connection ends.
struct SlotGuard(Arc<AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the control socket: each connection in a thread of its own (at
/// most [`MAX_CLIENTS`] at once) reads one request with
/// [`read_request`], hands it to the core with `forward` and writes the
/// reply. Runs until the listener fails.
pub fn serve(
    listener: UnixListener,
    counters: Arc<ControlCounters>,
    forward: impl Fn(Pending) -> bool + Clone + Send + 'static,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                // out of descriptors: let clients finish before retrying
                if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        };
        let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::AcqRel);
            counters.read_failed.fetch_add(1, Ordering::Relaxed);
            let _ = (&s).write_all(b"ERR busy: too many control clients at once, try again\n");
            continue;
        }
        let guard = SlotGuard(busy.clone());
        let (forward, shared) = (forward.clone(), counters.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                let _slot = guard;
                answer(&s, &shared, &forward);
            });
        if spawned.is_err() {
            counters.read_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads one request from `s`, has the core answer it and writes the
/// answer: `OK` and the output, or `ERR` and why.
fn answer(s: &UnixStream, counters: &ControlCounters, forward: &impl Fn(Pending) -> bool) {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let reply = match read_request(&mut DeadlineReader::new(s, deadline)) {
        Ok(request) => {
            let (tx, rx) = mpsc::channel();
            if forward(Pending { request, reply: tx }) {
                rx.recv()
                    .unwrap_or_else(|_| Err("ctrackd is shutting down".into()))
            } else {
                Err("ctrackd is shutting down".into())
            }
        }
        Err(e) => {
            let counter = if e.is_unknown() {
                &counters.unknown
            } else {
                &counters.read_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Err(e.to_string())
        }
    };
    let mut w = s;
    let _ = match reply {
        Ok(body) => w.write_all(b"OK\n").and_then(|_| w.write_all(&body)),
        Err(m) => w.write_all(format!("ERR {m}\n").as_bytes()),
    };
}

/// A failed client request, with the message to print.
#[derive(Debug)]
pub struct ClientError(pub String);

/// Sends a request to the daemon at `socket` and returns its output.
pub fn request(socket: &Path, req: &Request) -> Result<Vec<u8>, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        let p = socket.display();
        ClientError(match e.kind() {
            io::ErrorKind::NotFound => format!("ctrackd is not running (no socket at {p})"),
            io::ErrorKind::ConnectionRefused => {
                format!("ctrackd is not running (stale socket at {p})")
            }
            io::ErrorKind::PermissionDenied => {
                format!("cannot talk to ctrackd at {p}: permission denied (run as root)")
            }
            _ => format!("cannot talk to ctrackd at {p}: {e}"),
        })
    })?;
    let io_err = |e: io::Error| ClientError(format!("lost the connection to ctrackd: {e}"));
    s.write_all(format!("{}\n", req.to_line()).as_bytes())
        .map_err(io_err)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(io_err)?;
    let nl = out
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| ClientError("ctrackd closed the connection without an answer".into()))?;
    let status = String::from_utf8_lossy(&out[..nl]).into_owned();
    if status == "OK" {
        Ok(out[nl + 1..].to_vec())
    } else if let Some(m) = status.strip_prefix("ERR ") {
        Err(ClientError(format!("ctrackd: {m}")))
    } else {
        Err(ClientError(format!(
            "ctrackd sent an unexpected answer: {status}"
        )))
    }
}

/// The control socket a client talks to: the configuration's `UNIX {
/// Path }`. A configuration that cannot be read or parsed is the error
/// (as conntrackd's client reports it), except the default file when it
/// does not exist (`explicit` false): then the default socket.
pub fn socket_path(config: &Path, explicit: bool) -> Result<PathBuf, super::config::ConfigError> {
    if !explicit && !config.exists() {
        return Ok(PathBuf::from(super::config::DEFAULT_SOCKET));
    }
    super::config::load(config).map(|c| c.general.unix_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out its bytes a few at a time, then an error.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        then: io::ErrorKind,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(self.then.into());
            }
            let n = self.step.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read(bytes: &[u8]) -> Result<Request, RequestError> {
        read_request(&mut &bytes[..])
    }

    #[test]
    fn only_whole_valid_lines_run() {
        assert_eq!(read(b"kill\n").unwrap(), Request::Kill);
        assert_eq!(read(b"kill\ngarbage after").unwrap(), Request::Kill);
        // padding inside the limit is still the request
        let mut padded = b"kill".to_vec();
        padded.resize(MAX_REQUEST - 1, b' ');
        padded.push(b'\n');
        assert_eq!(read(&padded).unwrap(), Request::Kill);
        // the attack: kill, 252 spaces and garbage, no newline in 256 bytes
        let mut attack = b"kill".to_vec();
        attack.resize(256, b' ');
        attack.extend_from_slice(b"garbage\n");
        assert!(matches!(read(&attack), Err(RequestError::TooLong)));
        // flush with padding and garbage on the line: unknown, not a flush
        let mut flush = b"flush internal".to_vec();
        flush.resize(200, b' ');
        flush.extend_from_slice(b"xyz\n");
        assert!(matches!(read(&flush), Err(RequestError::Unknown(_))));
        // cut short: nothing runs
        assert!(matches!(read(b"kill"), Err(RequestError::Incomplete)));
        assert!(matches!(read(b""), Err(RequestError::Incomplete)));
        assert!(matches!(read(&[b'k'; 100_000]), Err(RequestError::TooLong)));
        assert!(matches!(read(b"kill\xff\n"), Err(RequestError::NotText)));
        assert!(matches!(read(b"stats\r\n"), Ok(Request::Stats(None))));
        // a read interrupted by a signal is tried again
        struct Interrupted(bool);
        impl Read for Interrupted {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    buf[..5].copy_from_slice(b"bulk\n");
                    Ok(5)
                } else {
                    Err(io::ErrorKind::Interrupted.into())
                }
            }
        }
        assert_eq!(
            read_request(&mut Interrupted(false)).unwrap(),
            Request::Bulk
        );
        // a line in pieces is read whole
        let mut t = Trickle {
            data: b"stats runtime\n",
            step: 1,
            then: io::ErrorKind::BrokenPipe,
        };
        assert_eq!(
            read_request(&mut t).unwrap(),
            Request::Stats(Some("runtime".into()))
        );
        // a read timeout is a timed-out request, other errors are I/O
        for (kind, timed_out) in [
            (io::ErrorKind::WouldBlock, true),
            (io::ErrorKind::TimedOut, true),
            (io::ErrorKind::ConnectionReset, false),
        ] {
            let mut t = Trickle {
                data: b"kil",
                step: 2,
                then: kind,
            };
            let e = read_request(&mut t).unwrap_err();
            assert_eq!(matches!(e, RequestError::TimedOut), timed_out, "{e}");
            assert!(!e.is_unknown());
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            RequestError::TooLong.to_string(),
            "request too long (at most 256 bytes)"
        );
        let long = RequestError::Unknown("x".repeat(1000)).to_string();
        assert!(long.len() < 100, "{long}");
        assert!(RequestError::Unknown(String::new()).is_unknown());
        assert!(RequestError::NotText.is_unknown());
        assert!(!RequestError::Incomplete.is_unknown());
    }

    /// A control socket in a scratch directory served by a thread whose
    /// core answers `stats` with "pong" and records every request.
    struct Served {
        path: PathBuf,
        seen: Arc<std::sync::Mutex<Vec<Request>>>,
        counters: Arc<ControlCounters>,
    }

    impl Served {
        fn start(tag: &str) -> Served {
            let path = std::env::temp_dir()
                .join(format!("ctrack-control-{tag}-{}.ctl", std::process::id()));
            let listener = bind(&path).unwrap();
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let counters = Arc::new(ControlCounters::default());
            let (s2, c2) = (seen.clone(), counters.clone());
            std::thread::spawn(move || {
                serve(listener, c2, move |p: Pending| {
                    s2.lock().unwrap().push(p.request.clone());
                    p.reply.send(Ok(b"pong\n".to_vec())).is_ok()
                })
            });
            Served {
                path,
                seen,
                counters,
            }
        }

        fn connect(&self) -> UnixStream {
            UnixStream::connect(&self.path).unwrap()
        }

        /// Sends raw bytes and reads the whole answer (a refusing server
        /// may close before all are sent).
        fn raw(&self, bytes: &[u8]) -> String {
            let mut s = self.connect();
            let _ = s.write_all(bytes);
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn attacks_on_the_socket_are_answered_and_run_nothing() {
        let srv = Served::start("attacks");
        assert_eq!(srv.raw(b"stats\n"), "OK\npong\n");
        // the truncated kill: an answer, and nothing reaches the core
        let mut attack = b"kill".to_vec();
        attack.resize(256, b' ');
        attack.extend_from_slice(b"garbage");
        assert_eq!(
            srv.raw(&attack),
            "ERR request too long (at most 256 bytes)\n"
        );
        // far too long: still an answer, not a reset
        let mut huge = srv.connect();
        let _ = huge.write_all(&[b'a'; 100_000]);
        let mut out = String::new();
        let _ = huge.read_to_string(&mut out);
        assert_eq!(out, "ERR request too long (at most 256 bytes)\n");
        // a request cut short by the client's half-close
        let mut cut = srv.connect();
        cut.write_all(b"kill").unwrap();
        cut.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        cut.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ERR incomplete request (no newline)\n");
        assert_eq!(
            srv.raw(b"flush internal xyz\n"),
            "ERR unknown request `flush internal xyz'\n"
        );
        assert_eq!(*srv.seen.lock().unwrap(), vec![Request::Stats(None)]);
        assert_eq!(srv.counters.read_failed.load(Ordering::Relaxed), 3);
        assert_eq!(srv.counters.unknown.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_client_reports_each_answer() {
        let srv = Served::start("client");
        assert_eq!(
            request(&srv.path, &Request::Stats(None)).unwrap(),
            b"pong\n"
        );
        let dir = std::env::temp_dir().join(format!("ctrack-client-{}", std::process::id()));
        // the socket's directory is made, a stale socket replaced
        let path = dir.join("run/ctl");
        let l = bind(&path).unwrap();
        drop(l);
        let e = request(&path, &Request::Kill).unwrap_err().0;
        assert_eq!(
            e,
            format!(
                "ctrackd is not running (stale socket at {})",
                path.display()
            )
        );
        let _l = bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = request(&path, &Request::Kill).unwrap_err().0;
        assert_eq!(
            e,
            format!("ctrackd is not running (no socket at {})", path.display())
        );
        // answers that are not OK
        for (answer, want) in [
            (&b"ERR no Sync block\n"[..], "ctrackd: no Sync block"),
            (b"WHAT\nbody", "ctrackd sent an unexpected answer: WHAT"),
            (b"OK", "ctrackd closed the connection without an answer"),
            (b"", "ctrackd closed the connection without an answer"),
        ] {
            let l = bind(&path).unwrap();
            let server = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut line = [0u8; 64];
                let _ = s.read(&mut line);
                s.write_all(answer).unwrap();
            });
            assert_eq!(request(&path, &Request::Bulk).unwrap_err().0, want);
            server.join().unwrap();
        }
        // OK: the body follows the status line
        let l = bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = [0u8; 64];
            let _ = s.read(&mut line);
            s.write_all(b"OK\nline 1\nline 2\n").unwrap();
        });
        assert_eq!(request(&path, &Request::Bulk).unwrap(), b"line 1\nline 2\n");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clients_find_the_socket_in_their_config() {
        let dir = std::env::temp_dir().join(format!("ctrack-sockpath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("ctrackd.conf");
        // no file: the default socket, unless the file was asked for
        assert_eq!(
            socket_path(&conf, false).unwrap(),
            PathBuf::from(super::super::config::DEFAULT_SOCKET)
        );
        assert!(socket_path(&conf, true).is_err());
        std::fs::write(&conf, "General {\n UNIX { Path /run/x.ctl }\n}\n").unwrap();
        for explicit in [false, true] {
            assert_eq!(
                socket_path(&conf, explicit).unwrap(),
                PathBuf::from("/run/x.ctl")
            );
        }
        // a file that does not parse is the error, never the default
        std::fs::write(&conf, "General {\n HashSize -3\n}\n").unwrap();
        for explicit in [false, true] {
            let e = socket_path(&conf, explicit).unwrap_err();
            assert_eq!(e.line, 2, "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn idle_and_slow_clients_delay_nobody() {
        let srv = Served::start("slow");
        // ten clients that connect and say nothing
        let idle: Vec<UnixStream> = (0..10).map(|_| srv.connect()).collect();
        // one that sends a byte every 500 ms (its line would take 3 s)
        let slow = srv.connect();
        let dripper = std::thread::spawn(move || {
            let mut s = slow;
            let started = Instant::now();
            for b in b"stats\n".iter().cycle().take(20) {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            (out, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(srv.raw(b"stats\n"), "OK\npong\n");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // the slow one is cut at the deadline, not served for ever
        let (out, took) = dripper.join().unwrap();
        assert!(out.starts_with("ERR request timed out"), "{out}");
        assert!(took < REQUEST_DEADLINE + Duration::from_secs(1), "{took:?}");
        // the idle ones too
        for mut s in idle {
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(out.starts_with("ERR request timed out"), "{out}");
        }
    }

    #[test]
    fn clients_past_the_limit_are_told_to_retry() {
        let srv = Served::start("busy");
        let held: Vec<UnixStream> = (0..MAX_CLIENTS).map(|_| srv.connect()).collect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            srv.raw(b"stats\n"),
            "ERR busy: too many control clients at once, try again\n"
        );
        drop(held);
        // slots come back as their connections end
        let ok = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            srv.raw(b"stats\n") == "OK\npong\n"
        });
        assert!(ok);
    }

    #[test]
    fn request_lines_roundtrip() {
        let all = [
            Request::Stats(None),
            Request::Stats(Some("runtime".into())),
            Request::Dump(Which::Internal, Format::Json),
            Request::Dump(Which::External, Format::Xml),
            Request::Dump(Which::All, Format::Text),
            Request::FlushCache(Which::All),
            Request::FlushKernel,
            Request::Resync,
            Request::Kill,
            Request::Commit,
            Request::Bulk,
            Request::RequestResync,
            Request::ResetTimers,
        ];
        for r in all {
            assert_eq!(Request::parse(&r.to_line()), Some(r));
        }
        for bad in [
            "",
            "stats a b",
            "dump internal",
            "dump x text",
            "flush",
            "stats ../x",
            "kill now",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }
}
