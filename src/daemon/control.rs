//! The control socket: a UNIX stream socket (mode 0600) where `ctrackd -s`,
//! `-i`, `-k` ... send one request line and get a status line (`OK` or
//! `ERR <why>`) and the output. Unlike conntrackd's, every request gets a
//! status, so a client can exit non-zero when the daemon refused or failed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

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

const MAX_REQUEST: usize = 256;

/// Serves the control socket: reads one request per connection, hands it
/// to the core with `forward`, and writes the reply. Runs until the
/// listener fails or `forward` reports the core is gone.
pub fn serve(listener: UnixListener, forward: impl Fn(Pending) -> bool) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let mut line = String::new();
        let mut r = BufReader::new((&s).take(MAX_REQUEST as u64));
        let status = match r.read_line(&mut line) {
            Ok(_) => match Request::parse(line.trim()) {
                Some(request) => {
                    let (tx, rx) = mpsc::channel();
                    if !forward(Pending { request, reply: tx }) {
                        let _ = s.write_all(b"ERR ctrackd is shutting down\n");
                        return;
                    }
                    rx.recv()
                        .unwrap_or_else(|_| Err("ctrackd is shutting down".into()))
                }
                None => Err(format!("unknown request `{}'", line.trim().escape_debug())),
            },
            Err(e) => Err(format!("cannot read the request: {e}")),
        };
        let _ = match status {
            Ok(body) => s.write_all(b"OK\n").and_then(|_| s.write_all(&body)),
            Err(m) => s.write_all(format!("ERR {m}\n").as_bytes()),
        };
    }
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

/// The socket path a client uses: from the config if it can be read,
/// else the default.
pub fn socket_path(config: Option<&Path>) -> PathBuf {
    config
        .and_then(|p| super::config::load(p).ok())
        .map(|c| c.general.unix_path)
        .unwrap_or_else(|| PathBuf::from(super::config::DEFAULT_SOCKET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_roundtrip() {
        let all = [
            Request::Stats(None),
            Request::Stats(Some("runtime".into())),
            Request::Dump(Which::Internal, Format::Json),
            Request::Dump(Which::External, Format::Xml),
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
