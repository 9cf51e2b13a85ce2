//! Helpers of the web tests: starting the server in a lab namespace, a
//! raw HTTP/1.1 client whose sockets live in that namespace, and a small
//! Chrome DevTools Protocol driver over `--remote-debugging-pipe`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ctrack::netlink::socket::in_netns;
use ctrack::web::{Handle, Hub, Limits, Server, WebConfig, WebContext};

use crate::lab::Netns;
use crate::support::TempDir;

/// Limits for tests: the normal ones, but no rate limit in the way, and
/// one client (every test client is 127.0.0.1) may use every connection,
/// stream and large reply.
pub fn test_limits() -> Limits {
    let l = Limits::default();
    Limits {
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        max_conns_per_client: l.max_conns,
        max_streams_per_client: l.max_streams,
        max_heavy_per_client: l.max_heavy,
        ..l
    }
}

/// A running test server and the kernel event feed into its hub (as
/// ctrackd's event reader and `ctrack web` have).
pub struct Web {
    handle: Option<Handle>,
    feed: Option<(Arc<AtomicBool>, JoinHandle<u64>)>,
}

impl Web {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    /// Its counters (`/api/v1/stats`'s `web`).
    pub fn stats(&self) -> serde_json::Value {
        self.handle().stats()
    }

    fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("a running server")
    }

    /// Stops the server and the feed.
    pub fn stop(mut self) {
        self.end_feed();
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }

    fn end_feed(&mut self) {
        if let Some((stop, t)) = self.feed.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.end_feed();
    }
}

/// Starts the server on 127.0.0.1 (port chosen by the kernel) inside
/// `ns`, with kernel events of `ns` fed to `hub`.
pub fn start(ns: &Netns, mut cfg: WebConfig, hub: Hub) -> Web {
    cfg.address = "127.0.0.1".parse().unwrap();
    cfg.port = 0;
    let stop = Arc::new(AtomicBool::new(false));
    let feed =
        ctrack::web::standalone::feed_events(Some(ns.name.clone()), hub.clone(), stop.clone())
            .expect("event feed");
    let ctx = WebContext {
        netns: Some(ns.name.clone()),
        hub,
        stats: Some(Arc::new(
            || serde_json::json!({"cache": {"entries": 7, "overruns": 0}, "sync": {"up": true}}),
        )),
        log: None,
        flow_counts: None,
    };
    let handle = Server::start(cfg, ctx).expect("web server starts");
    Web {
        handle: Some(handle),
        feed: Some((stop, feed)),
    }
}

/// A config with test limits and counters fresh for every request
/// (`CounterInterval 0`: each request waits for a dump that started after
/// it came, so lists equal what conntrack shows right after).
pub fn config() -> WebConfig {
    WebConfig {
        limits: test_limits(),
        counter_interval: std::time::Duration::ZERO,
        ..WebConfig::default()
    }
}

/// Writes a token file readable by its owner only.
pub fn token_file(dir: &std::path::Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, token).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Opens a TCP connection from inside `ns`.
pub fn connect(ns: &Netns, addr: SocketAddr) -> TcpStream {
    let s = in_netns(&ns.name, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .expect("connect in netns");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Opens a TCP connection from inside `ns` with source address `src` (a
/// second client on the same loopback: 127.0.0.2).
pub fn connect_from(ns: &Netns, src: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::IpAddr::V4(src) = src else {
        panic!("IPv4 sources only")
    };
    let std::net::IpAddr::V4(dst) = addr.ip() else {
        panic!("IPv4 servers only")
    };
    let sin = |a: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    let fd = in_netns(&ns.name, || {
        // SAFETY: plain socket calls on a descriptor this closure owns;
        // the sockaddr structs live across the calls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = OwnedFd::from_raw_fd(fd);
            let me = sin(src, 0);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(fd, (&me as *const libc::sockaddr_in).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let to = sin(dst, addr.port());
            if libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(s)
        }
    })
    .expect("connect from a second address");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A GET from source address `src`.
pub fn get_from(ns: &Netns, src: std::net::IpAddr, addr: SocketAddr, target: &str) -> Reply {
    let mut s = connect_from(ns, src, addr);
    let r = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        addr.ip()
    );
    let _ = s.write_all(r.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&out)
}

/// A parsed reply.
#[derive(Debug)]
pub struct Reply {
    /// Status code (0 when the server closed without a reply).
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(400)])
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol]).unwrap_or("0");
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
}

/// Parses raw reply bytes.
pub fn parse(raw: &[u8]) -> Reply {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Reply {
            status: 0,
            headers: Vec::new(),
            body: raw.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    Reply {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
        headers,
    }
}

/// Sends raw bytes and reads until the server closes.
pub fn raw(ns: &Netns, addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = connect(ns, addr);
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&out)
}

/// One request with `Connection: close`.
pub fn req(ns: &Netns, addr: SocketAddr, method: &str, target: &str, extra: &str) -> Reply {
    let r = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    );
    raw(ns, addr, r.as_bytes())
}

/// GET with `Connection: close`.
pub fn get(ns: &Netns, addr: SocketAddr, target: &str) -> Reply {
    req(ns, addr, "GET", target, "")
}

/// Path of Debian's chromium, if installed.
pub fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/chromium");
    p.exists().then_some(p)
}

/// A headless Chromium driven over the DevTools pipe (fds 3 and 4).
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: std::fs::File,
    buf: Vec<u8>,
    next_id: u64,
    session: Option<String>,
    /// Every event received so far (method, params).
    pub events: Vec<(String, serde_json::Value)>,
    _profile: TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    // move them above the fds the child needs (3 and 4)
    let hi = |fd: i32| {
        // SAFETY: duplicating an fd we own; the result is a new fd we own.
        let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        // SAFETY: closing the original we own.
        unsafe { libc::close(fd) };
        // SAFETY: `n` is a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(n) }
    };
    (hi(fds[0]), hi(fds[1]))
}

impl Browser {
    /// Starts chromium inside network namespace `ns`.
    pub fn launch(ns: &Netns) -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let profile = TempDir::new("chromium");
        let (cmd_r, cmd_w) = pipe();
        let (resp_r, resp_w) = pipe();
        let (a, b) = (cmd_r.as_raw_fd(), resp_w.as_raw_fd());
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, "/usr/bin/chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        drop(cmd_r);
        drop(resp_w);
        Browser {
            child,
            to: std::fs::File::from(cmd_w),
            from: std::fs::File::from(resp_r),
            buf: Vec::new(),
            next_id: 0,
            session: None,
            events: Vec::new(),
            _profile: profile,
        }
    }

    fn read_msg(&mut self) -> serde_json::Value {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == 0) {
                let msg: Vec<u8> = self.buf.drain(..=p).collect();
                return serde_json::from_slice(&msg[..msg.len() - 1]).expect("CDP JSON");
            }
            let mut chunk = [0u8; 65536];
            let n = self.from.read(&mut chunk).expect("read from chromium");
            assert!(n > 0, "chromium closed the DevTools pipe");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command (to the attached page when there is one) and
    /// returns its result; panics on a protocol error.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session
            && !method.starts_with("Target.")
        {
            msg["sessionId"] = serde_json::Value::String(s.clone());
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let m = self.read_msg();
            if m["id"].as_u64() == Some(id) {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
            if let Some(ev) = m["method"].as_str() {
                self.events.push((ev.to_string(), m["params"].clone()));
            }
        }
    }

    /// Opens a page and attaches to it.
    pub fn open_page(&mut self, width: u32, height: u32) {
        let t = self.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let target = t["targetId"].as_str().unwrap().to_string();
        let a = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target, "flatten": true}),
        );
        self.session = Some(a["sessionId"].as_str().unwrap().to_string());
        self.call("Page.enable", serde_json::json!({}));
        self.call("Runtime.enable", serde_json::json!({}));
        self.size(width, height, false);
    }

    /// Sets the viewport.
    pub fn size(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Emulates `prefers-color-scheme`.
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Navigates.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }

    /// Evaluates an expression and returns its value.
    pub fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true (or panics after `secs`).
    pub fn wait_for(&mut self, expr: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(expr) == serde_json::Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes a PNG screenshot of the viewport into `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let png = base64_decode(r["data"].as_str().unwrap());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (what CDP sends screenshots in).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Where screenshots go: the cargo target directory.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/web_browser-xxxx -> target
    exe.ancestors()
        .nth(3)
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Writes `lines` of `ctrack -R` syntax and loads them into `ns`'s table.
pub fn load_flows(ns: &Netns, lines: &str) {
    let dir = TempDir::new("flows");
    let f = dir.join("flows.txt");
    std::fs::write(&f, lines).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ctrack"))
        .args(["--netns", &ns.name, "-R", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ctrack -R: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `count` TCP flows 10.77.a.b:sport -> 10.78.0.1:80 with mark 77, in
/// `ctrack -R` (conntrack -I) syntax.
pub fn volume_lines(count: u32) -> String {
    let mut s = String::new();
    for i in 0..count {
        let a = (i >> 8) & 0xff;
        let b = i & 0xff;
        let sport = 1024 + (i % 60000);
        s.push_str(&format!(
            "-I -p tcp -s 10.77.{a}.{b} -d 10.78.0.1 --sport {sport} --dport 80 --state ESTABLISHED -u ASSURED -t 3600 -m 77\n"
        ));
    }
    s
}
