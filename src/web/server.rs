//! The HTTP side: our listener and the front (src/web/front.rs), a
//! private Unix socket to tiny_http, tiny_http's request queue, the gate
//! (bounded hand-off to a fixed worker pool), routing, and responses with
//! security headers.
//!
//! Threads: the front (accept and every client socket); tiny_http's
//! accept thread and its per-connection readers, at most
//! `Limits::max_conns` since only the front connects to it; one
//! supervisor running the gate; `Limits::workers` workers; one thread per
//! event stream (at most `Limits::max_streams`).

use std::io::{Cursor, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::api;
use super::assets;
use super::front;
use super::hub;
use super::names::NameCache;
use super::query::{ApiError, Endpoint, FlowQuery};
use super::ratelimit::RateLimiter;
use super::shared::{API_CSP, Counters, PAGE_CSP, Shared, error_body};
use super::{Error, WebConfig, WebContext};

/// A running web server.
pub struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    front: Option<JoinHandle<()>>,
    wake: UnixStream,
    sock: SockDir,
    supervisor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("addr", &self.addr).finish()
    }
}

impl Handle {
    /// The address the server listens on (with the real port when the
    /// configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters as JSON (what /api/v1/stats shows as `web`).
    pub fn stats(&self) -> serde_json::Value {
        web_stats(&self.shared)
    }

    /// Stops accepting, ends event streams, waits for the workers to
    /// finish their current request, and closes the listener.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.hub.close_all();
        // the front first: closing its sockets ends every request tiny_http
        // is reading or answering
        let _ = (&self.wake).write(&[1]);
        if let Some(f) = self.front.take() {
            let _ = f.join();
        }
        if let Ok(servers) = self.shared.servers.lock() {
            for s in servers.iter() {
                s.unblock();
            }
        }
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Ok(mut servers) = self.shared.servers.lock() {
            servers.clear();
        }
        // a dropped tiny_http server wakes its accept thread through the
        // path it was bound to, which an earlier restart may have removed:
        // wake it through ours too
        if let Ok(s) = UnixStream::connect(&self.sock.front) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.sock.remove();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.supervisor.is_some() || self.front.is_some() {
            self.shutdown();
        }
    }
}

/// The private directory (mode 0700) holding the Unix socket between the
/// front and tiny_http: `http` is the name tiny_http knows (and removes
/// when a server of it is dropped), `front` a hard link to the same
/// socket that the front connects to, so a restart of tiny_http never
/// cuts the front off.
struct SockDir {
    dir: PathBuf,
    http: PathBuf,
    front: PathBuf,
}

impl SockDir {
    /// Makes a fresh directory under the temporary directory; never
    /// reuses an existing one (another user's, or a stale one).
    fn create() -> std::io::Result<(SockDir, UnixListener)> {
        use std::os::unix::fs::DirBuilderExt;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 64 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        Self::sweep(&base);
        let ctx = |e: std::io::Error, p: &Path| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot make the HTTP server's private socket {}: {e}",
                    p.display()
                ),
            )
        };
        let mut tries = 0;
        let dir = loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("ctrack-web.{}.{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => {
                    tries += 1;
                }
                Err(e) => return Err(ctx(e, &dir)),
            }
        };
        let sock = SockDir {
            http: dir.join("http"),
            front: dir.join("front"),
            dir,
        };
        let bound = UnixListener::bind(&sock.http)
            .and_then(|l| std::fs::hard_link(&sock.http, &sock.front).map(|_| l));
        match bound {
            Ok(l) => Ok((sock, l)),
            Err(e) => {
                sock.remove();
                Err(ctx(e, &sock.http))
            }
        }
    }

    /// Removes what a server of a process that is gone (killed, crashed)
    /// left: our own directories only, never through a symbolic link,
    /// and only the two names we make (a directory with anything else in
    /// it stays).
    fn sweep(base: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("ctrack-web."))
                .and_then(|n| n.split('.').next())
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            let dir = e.path();
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() && m.uid() == me => {}
                _ => continue,
            }
            let _ = std::fs::remove_file(dir.join("http"));
            let _ = std::fs::remove_file(dir.join("front"));
            let _ = std::fs::remove_dir(&dir);
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.http);
        let _ = std::fs::remove_file(&self.front);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The web server's entry point.
#[derive(Debug)]
pub struct Server;

fn read_token(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Token(path.to_path_buf(), e.to_string()))?;
    let t = text.trim();
    if t.len() < 16 {
        return Err(Error::Token(
            path.to_path_buf(),
            "the token must be at least 16 characters".into(),
        ));
    }
    if t.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(Error::Token(
            path.to_path_buf(),
            "the token must be one word".into(),
        ));
    }
    Ok(t.as_bytes().to_vec())
}

impl Server {
    /// Binds `config`'s address (inside `ctx.netns` when given) and starts
    /// the server's threads.
    pub fn start(config: WebConfig, ctx: WebContext) -> Result<Handle, Error> {
        let addr = config.socket_addr();
        let bind = || TcpListener::bind(addr);
        let listener = match &ctx.netns {
            Some(ns) => crate::netlink::socket::in_netns(ns, bind),
            None => bind(),
        }
        .map_err(|e| Error::Bind(addr, e))?;
        listener.set_nonblocking(true).map_err(Error::Io)?;
        let local = listener.local_addr().map_err(Error::Io)?;
        let token = match &config.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let names = Arc::new(NameCache::new(
            config.dhcp_leases.clone(),
            config.hosts.clone(),
        ));
        ctx.hub.set_names(names.clone());
        let limits = config.limits.clone();
        let shared = Arc::new(Shared {
            netns: ctx.netns.clone(),
            limiter: Mutex::new(RateLimiter::new(limits.rate_per_sec, limits.rate_burst)),
            limits,
            token,
            names,
            hub: ctx.hub.clone(),
            stats: ctx.stats.clone(),
            log: ctx.log.clone(),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            servers: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let (sock, unix) = SockDir::create().map_err(Error::Io)?;
        let (wake, wake_rx) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                sock.remove();
                return Err(Error::Io(e));
            }
        };
        let mut handle = Handle {
            shared,
            addr: local,
            front: None,
            wake,
            sock,
            supervisor: None,
            workers: Vec::new(),
        };
        match Self::spawn(&mut handle, listener, unix, wake_rx) {
            Ok(()) => Ok(handle),
            Err(e) => {
                // stops what did start and removes the socket directory
                handle.shutdown();
                Err(e)
            }
        }
    }

    /// Starts the workers, tiny_http on `unix`, its supervisor and the
    /// front.
    fn spawn(
        handle: &mut Handle,
        listener: TcpListener,
        unix: UnixListener,
        wake_rx: UnixStream,
    ) -> Result<(), Error> {
        let shared = handle.shared.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(shared.limits.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..shared.limits.workers.max(1) {
            let sh = shared.clone();
            let rx = rx.clone();
            let w = std::thread::Builder::new()
                .name(format!("ctrack-web{i}"))
                .spawn(move || worker(&sh, &rx))
                .map_err(Error::Io)?;
            handle.workers.push(w);
        }
        let first = tiny_http::Server::from_listener(unix.try_clone().map_err(Error::Io)?, None)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let sh = shared.clone();
        handle.supervisor = Some(
            std::thread::Builder::new()
                .name("ctrack-webgate".into())
                .spawn(move || supervise(&sh, unix, first, tx))
                .map_err(Error::Io)?,
        );
        let sh = shared.clone();
        let up = handle.sock.front.clone();
        handle.front = Some(
            std::thread::Builder::new()
                .name("ctrack-webfront".into())
                .spawn(move || front::run(&sh, listener, wake_rx, &up))
                .map_err(Error::Io)?,
        );
        Ok(())
    }
}

/// Runs tiny_http servers on the Unix listener, one after another: when
/// a server's request queue ends without a stop (its accept loop died on
/// an accept error such as EMFILE), a new one is built on the same
/// listener, with a growing pause if they keep dying. The old server is
/// drained on a thread of its own for requests already in flight.
/// Connections the front makes meanwhile wait in the listener's backlog.
fn supervise(
    sh: &Arc<Shared>,
    listener: UnixListener,
    first: tiny_http::Server,
    tx: SyncSender<Request>,
) {
    let mut server = Some(first);
    let mut pause = Duration::from_millis(50);
    while !sh.stopping.load(Ordering::SeqCst) {
        let s = match server.take() {
            Some(s) => s,
            None => {
                let built = listener
                    .try_clone()
                    .map_err(|e| e.to_string())
                    .and_then(|l| {
                        tiny_http::Server::from_listener(l, None).map_err(|e| e.to_string())
                    });
                match built {
                    Ok(s) => s,
                    Err(e) => {
                        sh.note(&format!("web: cannot restart the HTTP server: {e}"));
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        let s = Arc::new(s);
        if let Ok(mut list) = sh.servers.lock() {
            list.push(s.clone());
        }
        let born = Instant::now();
        let why = loop {
            match s.recv() {
                Ok(rq) => gate(sh, rq, &tx),
                Err(e) => break e,
            }
        };
        if sh.stopping.load(Ordering::SeqCst) {
            break;
        }
        sh.counters.restarts.fetch_add(1, Ordering::Relaxed);
        sh.note(&format!("web: HTTP accept loop ended ({why}); restarting"));
        let (sh2, tx2, old) = (sh.clone(), tx.clone(), s.clone());
        let _ = std::thread::Builder::new()
            .name("ctrack-webdrain".into())
            .spawn(move || drain(&sh2, &old, &tx2));
        if born.elapsed() > Duration::from_secs(10) {
            pause = Duration::from_millis(50);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Serves requests that still reach a dead server (connections accepted
/// before its accept loop ended) until it has been quiet for a while.
fn drain(sh: &Arc<Shared>, s: &Arc<tiny_http::Server>, tx: &SyncSender<Request>) {
    let mut quiet = Instant::now();
    while !sh.stopping.load(Ordering::SeqCst) && quiet.elapsed() < Duration::from_secs(60) {
        match s.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(rq)) => {
                quiet = Instant::now();
                gate(sh, rq, tx);
            }
            Ok(None) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    if let Ok(mut list) = sh.servers.lock() {
        list.retain(|x| !Arc::ptr_eq(x, s));
    }
}

/// Adds a header made of our own constant text (never request data:
/// that is how response splitting is ruled out). Non-ASCII would be
/// refused by tiny_http; none of our constants is.
fn add<R: std::io::Read>(r: &mut Response<R>, name: &str, value: &str) {
    if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        r.add_header(h);
    }
}

/// Adds the headers every reply carries.
fn secure<R: std::io::Read>(mut r: Response<R>, csp: &str) -> Response<R> {
    add(&mut r, "Server", "ctrack");
    add(&mut r, "X-Content-Type-Options", "nosniff");
    add(&mut r, "Content-Security-Policy", csp);
    add(&mut r, "X-Frame-Options", "DENY");
    add(&mut r, "Referrer-Policy", "no-referrer");
    add(&mut r, "Cache-Control", "no-store");
    r
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Cursor<Vec<u8>>> {
    let mut r = Response::from_data(body).with_status_code(StatusCode(status));
    add(&mut r, "Content-Type", "application/json");
    secure(r, API_CSP)
}

fn respond_error(sh: &Shared, rq: Request, e: &ApiError, extra: &[(&str, &str)]) {
    sh.counters.errors.fetch_add(1, Ordering::Relaxed);
    let mut r = json_response(e.status, error_body(&e.msg));
    for (k, v) in extra {
        add(&mut r, k, v);
    }
    let _ = rq.respond(r);
}

/// Hands a request to the workers, on the supervisor thread; 503 when
/// they are all busy and the queue is full. Sizes, bodies and the rate
/// were checked by the front before tiny_http saw the request.
fn gate(sh: &Arc<Shared>, rq: Request, tx: &SyncSender<Request>) {
    match tx.try_send(rq) {
        Ok(()) => {}
        Err(TrySendError::Full(rq)) | Err(TrySendError::Disconnected(rq)) => {
            sh.counters.busy.fetch_add(1, Ordering::Relaxed);
            let e = ApiError::new(503, "server busy: try again");
            respond_error(sh, rq, &e, &[("Retry-After", "1")]);
        }
    }
}

fn worker(sh: &Arc<Shared>, rx: &Arc<Mutex<Receiver<Request>>>) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(rq) = next else { return };
        route(sh, rq);
    }
}

fn allow(sh: &Shared, rq: Request, allowed: &str) {
    let e = ApiError::new(405, "method not allowed");
    respond_error(sh, rq, &e, &[("Allow", allowed)]);
}

fn route(sh: &Arc<Shared>, rq: Request) {
    let url = rq.url().to_owned();
    let (path, qs) = url.split_once('?').unwrap_or((&url, ""));
    let get = matches!(rq.method(), Method::Get | Method::Head);
    if let Some(asset) = assets::find(path) {
        if !get {
            return allow(sh, rq, "GET, HEAD");
        }
        let csp = if asset.is_page { PAGE_CSP } else { API_CSP };
        let mut r = Response::from_data(asset.body);
        add(&mut r, "Content-Type", asset.content_type);
        let _ = rq.respond(secure(r, csp));
        return;
    }
    match path {
        "/api/v1/connections" => match rq.method() {
            Method::Get | Method::Head => list(sh, rq, qs),
            Method::Delete => delete(sh, rq, qs),
            _ => allow(sh, rq, "GET, HEAD, DELETE"),
        },
        "/api/v1/hosts" if get => {
            let res = FlowQuery::parse(qs, Endpoint::Hosts).and_then(|q| {
                let mut ct = api::open(sh.netns.as_deref())?;
                let names = sh.names.get();
                api::hosts(&mut ct, &q, &names, api::acct_sysctl(sh.netns.as_deref()))
            });
            reply(sh, rq, res);
        }
        "/api/v1/stats" if get => {
            let body = stats_body(sh);
            reply(sh, rq, Ok(body));
        }
        "/metrics" if get => metrics(sh, rq),
        "/api/v1/events" if matches!(rq.method(), Method::Get) => events(sh, rq, qs),
        "/api/v1/hosts" | "/api/v1/stats" | "/metrics" | "/api/v1/events" => allow(sh, rq, "GET"),
        _ => respond_error(sh, rq, &ApiError::new(404, "not found"), &[]),
    }
}

fn reply(sh: &Shared, rq: Request, res: Result<Vec<u8>, ApiError>) {
    match res {
        Ok(body) => {
            let _ = rq.respond(json_response(200, body));
        }
        Err(e) => respond_error(sh, rq, &e, &[]),
    }
}

fn list(sh: &Arc<Shared>, rq: Request, qs: &str) {
    let q = match FlowQuery::parse(qs, Endpoint::List) {
        Ok(q) => q,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let mut ct = match api::open(sh.netns.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let names = sh.names.get();
    if !q.sort.is_empty() {
        match api::sorted_list(&mut ct, &q, &names) {
            Ok(api::Sorted::Bytes(b)) => reply(sh, rq, Ok(b)),
            Ok(api::Sorted::Stream(r)) => {
                let mut r = Response::new(StatusCode(200), Vec::new(), r, None, None);
                add(&mut r, "Content-Type", "application/json");
                let _ = rq.respond(secure(r, API_CSP));
            }
            Err(e) => respond_error(sh, rq, &e, &[]),
        }
        return;
    }
    // unsorted: stream from the dump on a helper thread through a small
    // bounded channel, so memory stays flat whatever the table size
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|s| {
        let names = &names;
        let q = &q;
        let spawned = std::thread::Builder::new()
            .name("ctrack-webdump".into())
            .spawn_scoped(s, move || api::stream_list(ct, q, names, tx));
        if spawned.is_err() {
            let e = ApiError::new(503, "server busy: try again");
            return respond_error(sh, rq, &e, &[]);
        }
        let mut r = Response::new(
            StatusCode(200),
            Vec::new(),
            api::ChanReader::new(rx),
            None,
            None,
        );
        add(&mut r, "Content-Type", "application/json");
        let _ = rq.respond(secure(r, API_CSP));
    });
}

/// Compares in time that depends only on the lengths, not on where the
/// first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u32;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as u32;
    }
    diff == 0
}

fn authorized(sh: &Shared, rq: &Request) -> Result<(), ApiError> {
    let Some(token) = &sh.token else {
        return Err(ApiError::new(
            403,
            "deleting is disabled: no TokenFile is configured",
        ));
    };
    let given = rq
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token) => Ok(()),
        _ => Err(ApiError::new(
            403,
            "a valid bearer token is needed to delete",
        )),
    }
}

fn delete(sh: &Arc<Shared>, rq: Request, qs: &str) {
    if let Err(e) = authorized(sh, &rq) {
        return respond_error(sh, rq, &e, &[]);
    }
    let res = FlowQuery::parse(qs, Endpoint::Delete).and_then(|q| {
        let names = sh.names.get();
        api::delete(sh.netns.as_deref(), &q, &names)
    });
    reply(sh, rq, res);
}

fn events(sh: &Arc<Shared>, rq: Request, qs: &str) {
    let q = match FlowQuery::parse(qs, Endpoint::Events) {
        Ok(q) => q,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let max = sh.limits.max_streams as u32;
    let n = sh.counters.streams.fetch_add(1, Ordering::SeqCst);
    if n >= max {
        sh.counters.streams.fetch_sub(1, Ordering::SeqCst);
        sh.counters.busy.fetch_add(1, Ordering::Relaxed);
        let e = ApiError::new(503, "too many event streams");
        return respond_error(sh, rq, &e, &[("Retry-After", "5")]);
    }
    let sub = sh.hub.subscribe(q.filter, q.updates);
    let mut w = rq.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: ctrack\r\nContent-Type: text/event-stream\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {API_CSP}\r\n\r\n"
    );
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        sh.hub.unsubscribe(sub.id);
        sh.counters.streams.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let sh2 = sh.clone();
    let id = sub.id;
    let spawned = std::thread::Builder::new()
        .name("ctrack-websse".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            hub::pump(&sh2.hub, sub, &mut w);
            sh2.counters.streams.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        sh.hub.unsubscribe(id);
        sh.counters.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn web_stats(sh: &Shared) -> serde_json::Value {
    let c = &sh.counters;
    let h = sh.hub.stats();
    let counters = [
        ("requests", &c.requests),
        ("rate_limited", &c.rate_limited),
        ("busy", &c.busy),
        ("too_large", &c.too_large),
        ("bad_requests", &c.bad_requests),
        ("connections", &c.connections),
        ("refused", &c.refused),
        ("evicted", &c.evicted),
        ("head_timeouts", &c.head_timeouts),
        ("send_timeouts", &c.send_timeouts),
        ("accept_errors", &c.accept_errors),
        ("errors", &c.errors),
        ("restarts", &c.restarts),
        ("streams", &c.streams),
    ];
    let mut m = serde_json::Map::new();
    for (k, v) in counters {
        m.insert(k.into(), v.load(Ordering::Relaxed).into());
    }
    for (k, v) in [
        ("events_published", h.published),
        ("events_delivered", h.delivered),
        ("streams_dropped", h.dropped_clients),
    ] {
        m.insert(k.into(), v.into());
    }
    m.insert("uptime".into(), sh.started.elapsed().as_secs().into());
    serde_json::Value::Object(m)
}

fn table_counts(sh: &Shared) -> Option<(u32, Option<u32>)> {
    api::open(sh.netns.as_deref()).ok()?.count().ok()
}

fn stats_body(sh: &Shared) -> Vec<u8> {
    let mut v = match &sh.stats {
        Some(f) => f(),
        None => serde_json::json!({}),
    };
    if !v.is_object() {
        v = serde_json::json!({ "daemon": v });
    }
    if let Some(m) = v.as_object_mut() {
        m.insert("web".into(), web_stats(sh));
        if let Some((count, max)) = table_counts(sh) {
            m.insert(
                "table".into(),
                serde_json::json!({"count": count, "max": max}),
            );
        }
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec())
}

fn metrics(sh: &Arc<Shared>, rq: Request) {
    let mut out = Vec::with_capacity(4096);
    let mut ct = match api::open(sh.netns.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    out.extend_from_slice(
        b"# HELP ctrack_flows Conntrack entries by family, protocol and state (fresh dump).\n\
          # TYPE ctrack_flows gauge\n",
    );
    match api::flow_counts(&mut ct) {
        Ok(counts) => {
            for ((fam, proto, state), n) in counts {
                out.extend_from_slice(b"ctrack_flows");
                api::push_flow_labels(&mut out, fam, proto, state);
                out.push(b' ');
                crate::flow::addr::push_u64(&mut out, n);
                out.push(b'\n');
            }
        }
        Err(e) => return respond_error(sh, rq, &e, &[]),
    }
    if let Ok((count, max)) = ct.count() {
        out.extend_from_slice(
            b"# HELP ctrack_table_entries Entries in the conntrack table.\n\
              # TYPE ctrack_table_entries gauge\nctrack_table_entries ",
        );
        crate::flow::addr::push_u64(&mut out, count as u64);
        out.push(b'\n');
        if let Some(m) = max {
            out.extend_from_slice(
                b"# HELP ctrack_table_max Size limit of the conntrack table (nf_conntrack_max).\n\
                  # TYPE ctrack_table_max gauge\nctrack_table_max ",
            );
            crate::flow::addr::push_u64(&mut out, m as u64);
            out.push(b'\n');
        }
    }
    let mut v = match &sh.stats {
        Some(f) => f(),
        None => serde_json::json!({}),
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("web".into(), web_stats(sh));
    }
    api::flatten_metrics(&mut out, "ctrack", &v, 0);
    let mut r = Response::from_data(out);
    add(
        &mut r,
        "Content-Type",
        "text/plain; version=0.0.4; charset=utf-8",
    );
    let _ = rq.respond(secure(r, API_CSP));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
