//! The HTTP side: our listener and the front (src/web/front.rs), a
//! private Unix socket to tiny_http, tiny_http's request queue, the gate
//! (bounded hand-off to a fixed worker pool), access checks (tokens),
//! routing, and replies with security headers.
//!
//! Threads: the front (accept and every client socket); tiny_http's
//! accept thread and its per-connection readers, at most
//! `Limits::max_conns` since only the front connects to it; one
//! supervisor running the gate; `Limits::workers` workers; the snapshot
//! refresher; one thread per large reply (at most `Limits::max_heavy`)
//! and per event stream (at most `Limits::max_streams`).
//!
//! A reply up to [`SMALL_REPLY`] bytes is written by the worker at once
//! (the socket to the front and the front's buffer hold it whatever the
//! client's pace). A larger one is rendered a chunk at a time by a thread
//! of its own, chunked for HTTP/1.1 and delimited by the connection's
//! close for HTTP/1.0, so tiny_http never holds a whole body; a slow
//! reader then keeps that thread, never a worker.

use std::io::{Cursor, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::access;
use super::api::{self, BytesBody, Chunks, ListBody};
use super::assets;
use super::front;
use super::hosts;
use super::hub;
use super::metrics::{self, Kind, Text};
use super::names::NameCache;
use super::neigh::MacCache;
use super::query::{ApiError, Endpoint, FlowQuery};
use super::ratelimit::RateLimiter;
use super::shared::{API_CSP, COUNTS, Counters, PAGE_CSP, Shared, Slot, SlotKind, error_body};
use super::snapshot::Store;
use super::{Error, WebConfig, WebContext};

/// Largest reply a worker writes itself; larger ones get a thread.
pub const SMALL_REPLY: usize = 128 * 1024;

/// A list of more rows than this (or of all, or CSV) may be large: it
/// takes its client's large-reply place before any work is done, so a
/// client at its cap costs nothing but the 503.
const LARGE_ROWS: usize = 200;

/// A running web server.
pub struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    front: Option<JoinHandle<()>>,
    wake: UnixStream,
    sock: SockDir,
    supervisor: Option<JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
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
        self.shared.store.stop();
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
        if let Some(r) = self.refresher.take() {
            let _ = r.join();
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

/// Reads a token file: private to its owner and group, one word of 16
/// or more characters.
fn read_token(path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::MetadataExt;
    let err = |e: String| Error::Token(path.to_path_buf(), e);
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if let Some(p) = access::token_mode_problem(meta.mode()) {
        return Err(err(p));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let t = access::token_text(&text).map_err(|e| err(e.into()))?;
    Ok(t.as_bytes().to_vec())
}

impl Server {
    /// Binds `config`'s address (inside `ctx.netns` when given) and starts
    /// the server's threads.
    pub fn start(config: WebConfig, ctx: WebContext) -> Result<Handle, Error> {
        let token = match &config.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let read_token = match &config.read_token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let addr = config.socket_addr();
        let bind = || TcpListener::bind(addr);
        let listener = match &ctx.netns {
            Some(ns) => crate::netlink::socket::in_netns(ns, bind),
            None => bind(),
        }
        .map_err(|e| Error::Bind(addr, e))?;
        listener.set_nonblocking(true).map_err(Error::Io)?;
        let local = listener.local_addr().map_err(Error::Io)?;
        let names = Arc::new(NameCache::new(
            config.dhcp_leases.clone(),
            config.hosts.clone(),
        ));
        ctx.hub.set_names(names.clone());
        let store = Arc::new(Store::new(ctx.netns.clone(), config.counter_interval));
        ctx.hub.set_store(store.clone());
        let limits = config.limits.clone();
        let shared = Arc::new(Shared {
            netns: ctx.netns.clone(),
            limiter: Mutex::new(RateLimiter::new(limits.rate_per_sec, limits.rate_burst)),
            limits,
            token,
            read_token,
            listen: local.ip(),
            server_names: config.server_names.clone(),
            store,
            macs: MacCache::new(ctx.netns.clone(), config.dhcp_leases.clone()),
            flow_counts: ctx.flow_counts.clone(),
            conns: Mutex::new(Default::default()),
            next_conn: AtomicU32::new(1),
            slots: Mutex::new(Default::default()),
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
            refresher: None,
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

    /// Starts the workers, the snapshot refresher, tiny_http on `unix`,
    /// its supervisor and the front.
    fn spawn(
        handle: &mut Handle,
        listener: TcpListener,
        unix: UnixListener,
        wake_rx: UnixStream,
    ) -> Result<(), Error> {
        let shared = handle.shared.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Queued>(shared.limits.queue.max(1));
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
        let store = shared.store.clone();
        handle.refresher = Some(
            std::thread::Builder::new()
                .name("ctrack-websnap".into())
                .spawn(move || store.run_refresher())
                .map_err(Error::Io)?,
        );
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

/// A request waiting for a worker, with the time it was queued.
type Queued = (Request, Instant);

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
    tx: SyncSender<Queued>,
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
        sh.counters.add(super::shared::Count::Restarts);
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
fn drain(sh: &Arc<Shared>, s: &Arc<tiny_http::Server>, tx: &SyncSender<Queued>) {
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

/// The security headers every reply carries, as (name, value).
fn security_headers(csp: &str) -> [(&'static str, &str); 6] {
    [
        ("Server", "ctrack"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", csp),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]
}

/// Adds the headers every reply carries.
fn secure<R: std::io::Read>(mut r: Response<R>, csp: &str) -> Response<R> {
    for (k, v) in security_headers(csp) {
        add(&mut r, k, v);
    }
    r
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Cursor<Vec<u8>>> {
    let mut r = Response::from_data(body).with_status_code(StatusCode(status));
    add(&mut r, "Content-Type", "application/json");
    secure(r, API_CSP)
}

/// The header of a 401: the scheme a client must use.
const CHALLENGE: (&str, &str) = ("WWW-Authenticate", "Bearer realm=\"ctrack\"");

fn respond_error(sh: &Shared, rq: Request, e: &ApiError, extra: &[(&str, &str)]) {
    sh.counters.add(super::shared::Count::Errors);
    let mut r = json_response(e.status, error_body(&e.msg));
    for (k, v) in extra {
        add(&mut r, k, v);
    }
    if e.status == 401 {
        sh.counters.add(super::shared::Count::Unauthorized);
        add(&mut r, CHALLENGE.0, CHALLENGE.1);
    }
    if e.status == 503 && !extra.iter().any(|(k, _)| *k == "Retry-After") {
        add(&mut r, "Retry-After", "2");
    }
    let _ = rq.respond(r);
}

/// Hands a request to the workers, on the supervisor thread; 503 when
/// they are all busy and the queue is full. Sizes, bodies, the host and
/// the rate were checked by the front before tiny_http saw the request.
fn gate(sh: &Arc<Shared>, rq: Request, tx: &SyncSender<Queued>) {
    match tx.try_send((rq, Instant::now())) {
        Ok(()) => {}
        Err(TrySendError::Full((rq, _))) | Err(TrySendError::Disconnected((rq, _))) => {
            sh.counters.add(super::shared::Count::Busy);
            let e = ApiError::new(503, "server busy: try again");
            respond_error(sh, rq, &e, &[("Retry-After", "1")]);
        }
    }
}

fn worker(sh: &Arc<Shared>, rx: &Arc<Mutex<Receiver<Queued>>>) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok((rq, queued)) = next else { return };
        if queued.elapsed() >= sh.limits.queue_wait {
            // its client has waited long enough: say so rather than
            // answer late
            sh.counters.add(super::shared::Count::Busy);
            let e = ApiError::new(503, "server busy: try again");
            respond_error(sh, rq, &e, &[("Retry-After", "2")]);
            continue;
        }
        route(sh, rq);
    }
}

fn allow(sh: &Shared, rq: Request, allowed: &str) {
    let e = ApiError::new(405, "method not allowed");
    respond_error(sh, rq, &e, &[("Allow", allowed)]);
}

/// What the front told the server about a request: the client's key
/// (for its caps) and its connection.
#[derive(Clone, Copy, Debug)]
struct Meta {
    key: IpAddr,
    conn: Option<u32>,
    http10: bool,
    head: bool,
}

impl Meta {
    fn of(rq: &Request) -> Meta {
        fn field<'a>(rq: &'a Request, name: &'static str) -> Option<&'a str> {
            rq.headers()
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str().trim())
        }
        let peer = field(rq, "X-Ctrack-Peer")
            .and_then(|v| v.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Meta {
            key: access::client_key(peer),
            conn: field(rq, "X-Ctrack-Conn").and_then(|v| v.parse().ok()),
            http10: *rq.http_version() == tiny_http::HTTPVersion(1, 0),
            head: matches!(rq.method(), Method::Head),
        }
    }
}

/// What a request needs to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Data: the read token when one is configured (the admin token does
    /// too).
    Read,
    /// Deleting: the admin token.
    Admin,
}

/// Checks the request's bearer token against what `need` asks: 401 (with
/// `WWW-Authenticate: Bearer`) when it is missing or wrong, 403 when
/// deleting is not configured at all.
fn authorize(sh: &Shared, rq: &Request, need: Need) -> Result<(), ApiError> {
    let given = rq
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| access::bearer(h.value.as_str()));
    let is = |t: &Option<Vec<u8>>| matches!((t, given), (Some(t), Some(g)) if access::constant_time_eq(g.as_bytes(), t));
    match need {
        Need::Read if sh.read_token.is_none() || is(&sh.read_token) || is(&sh.token) => Ok(()),
        Need::Read => Err(ApiError::new(401, "a valid bearer token is needed to read")),
        Need::Admin if sh.token.is_none() => Err(ApiError::new(
            403,
            "deleting is disabled: no TokenFile is configured",
        )),
        Need::Admin if is(&sh.token) => Ok(()),
        Need::Admin => Err(ApiError::new(
            401,
            "a valid bearer token is needed to delete",
        )),
    }
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
    let known = matches!(
        path,
        "/api/v1/connections" | "/api/v1/hosts" | "/api/v1/stats" | "/metrics" | "/api/v1/events"
    );
    if !known {
        return respond_error(sh, rq, &ApiError::new(404, "not found"), &[]);
    }
    let need = if matches!(rq.method(), Method::Delete) {
        Need::Admin
    } else {
        Need::Read
    };
    if let Err(e) = authorize(sh, &rq, need) {
        return respond_error(sh, rq, &e, &[]);
    }
    let meta = Meta::of(&rq);
    match path {
        "/api/v1/connections" => match rq.method() {
            Method::Get | Method::Head => list(sh, rq, meta, qs),
            Method::Delete => delete(sh, rq, qs),
            _ => allow(sh, rq, "GET, HEAD, DELETE"),
        },
        "/api/v1/hosts" if get => hosts_reply(sh, rq, meta, qs),
        "/api/v1/stats" if get => {
            let body = stats_body(sh);
            reply(sh, rq, Ok(body));
        }
        "/metrics" if get => metrics_reply(sh, rq),
        "/api/v1/events" if matches!(rq.method(), Method::Get) => events(sh, rq, meta, qs),
        _ => allow(sh, rq, "GET"),
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

/// Sends a 200 reply of `body`: written by this worker when it is small,
/// else from a thread of its own, in `slot` (one of the client's
/// large-reply places, taken now when none was; 503 when none is free).
fn send(
    sh: &Arc<Shared>,
    rq: Request,
    meta: Meta,
    ctype: &'static str,
    mut body: Box<dyn Chunks>,
    slot: Option<Slot>,
) {
    let mut first = Vec::with_capacity(16 * 1024);
    let mut done = false;
    while first.len() < SMALL_REPLY {
        if !body.fill(&mut first) {
            done = true;
            break;
        }
    }
    if done {
        let mut r = Response::from_data(first);
        add(&mut r, "Content-Type", ctype);
        let _ = rq.respond(secure(r, API_CSP));
        return;
    }
    let Some(slot) = slot.or_else(|| sh.take_slot(SlotKind::Heavy, meta.key)) else {
        return too_many_large(sh, rq);
    };
    let spawned = std::thread::Builder::new()
        .name("ctrack-webreply".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let _slot = slot;
            stream_reply(rq, meta, ctype, first, body);
        });
    if spawned.is_err() {
        // the request went with the closure: its connection closes
        sh.counters.add(super::shared::Count::Busy);
    }
}

/// 503: the client (or everyone) has as many large replies as allowed.
fn too_many_large(sh: &Shared, rq: Request) {
    sh.counters.add(super::shared::Count::Busy);
    let e = ApiError::new(
        503,
        "too many large replies in progress: try again, or ask for a smaller page (limit)",
    );
    respond_error(sh, rq, &e, &[("Retry-After", "5")]);
}

/// Writes a large reply: our own head (constants only), then the body a
/// chunk at a time, chunked for HTTP/1.1, delimited by the connection's
/// close for HTTP/1.0; ends when the client goes.
fn stream_reply(rq: Request, meta: Meta, ctype: &str, first: Vec<u8>, mut body: Box<dyn Chunks>) {
    let mut w = rq.into_writer();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(if meta.http10 {
        b"HTTP/1.0 200 OK\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\n"
    });
    for (k, v) in security_headers(API_CSP) {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Content-Type: ");
    head.extend_from_slice(ctype.as_bytes());
    if !meta.http10 {
        head.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
    }
    head.extend_from_slice(b"\r\n\r\n");
    if w.write_all(&head).is_err() || meta.head {
        let _ = w.flush();
        return;
    }
    let chunked = !meta.http10;
    let send = |w: &mut Box<dyn Write + Send>, data: &[u8]| -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
            w.write_all(data)?;
            w.write_all(b"\r\n")
        } else {
            w.write_all(data)
        }
    };
    if send(&mut w, &first).is_err() {
        return;
    }
    drop(first);
    let mut buf = Vec::with_capacity(api::CHUNK + 4096);
    loop {
        buf.clear();
        let more = body.fill(&mut buf);
        if send(&mut w, &buf).is_err() || w.flush().is_err() {
            return;
        }
        if !more {
            break;
        }
    }
    if chunked {
        let _ = w.write_all(b"0\r\n\r\n");
    }
    let _ = w.flush();
}

fn list(sh: &Arc<Shared>, rq: Request, meta: Meta, qs: &str) {
    let q = match FlowQuery::parse(qs, Endpoint::List) {
        Ok(q) => q,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let large = q.csv || q.limit.is_none_or(|l| l > LARGE_ROWS);
    let slot = match large {
        true => match sh.take_slot(SlotKind::Heavy, meta.key) {
            Some(s) => Some(s),
            None => return too_many_large(sh, rq),
        },
        false => None,
    };
    let names = sh.names.get();
    let sel = match sh.store.view(true) {
        Ok(v) => api::select(v.table(), &q, &names, v.now),
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let ctype = if q.csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let body = ListBody::new(&sh.store, sel, &q, names);
    send(sh, rq, meta, ctype, Box::new(body), slot);
}

fn hosts_reply(sh: &Arc<Shared>, rq: Request, meta: Meta, qs: &str) {
    let q = match FlowQuery::parse(qs, Endpoint::Hosts) {
        Ok(q) => q,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let names = sh.names.get();
    let macs = sh.macs.get();
    let body = match sh.store.view(true) {
        Ok(v) => {
            let (list, other) = hosts::aggregate(v.table(), &q, &names, &macs, v.now);
            let acct = api::acct_sysctl(sh.netns.as_deref())
                .unwrap_or(v.table().acct() || v.table().is_empty());
            hosts::render(&list, other, v.table(), &names, acct, v.now)
        }
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let body = Box::new(BytesBody::new(body));
    send(sh, rq, meta, "application/json", body, None);
}

fn delete(sh: &Arc<Shared>, rq: Request, qs: &str) {
    let res = FlowQuery::parse(qs, Endpoint::Delete).and_then(|q| {
        let names = sh.names.get();
        api::delete(sh.netns.as_deref(), &q, &names)
    });
    reply(sh, rq, res);
}

fn events(sh: &Arc<Shared>, rq: Request, meta: Meta, qs: &str) {
    let q = match FlowQuery::parse(qs, Endpoint::Events) {
        Ok(q) => q,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let Some(slot) = sh.take_slot(SlotKind::Stream, meta.key) else {
        sh.counters.add(super::shared::Count::Busy);
        let e = ApiError::new(503, "too many event streams");
        return respond_error(sh, rq, &e, &[("Retry-After", "5")]);
    };
    let conn = meta.conn.and_then(|id| sh.conn(id));
    if let Some(c) = &conn {
        c.stream.store(true, Ordering::SeqCst);
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
        return;
    }
    let sh2 = sh.clone();
    let id = sub.id;
    let spawned = std::thread::Builder::new()
        .name("ctrack-websse".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _slot = slot;
            let gone = || {
                sh2.stopping.load(Ordering::Relaxed)
                    || conn
                        .as_ref()
                        .is_some_and(|c| !c.alive.load(Ordering::SeqCst))
            };
            hub::pump(&sh2.hub, sub, &mut w, &gone);
        });
    if spawned.is_err() {
        sh.hub.unsubscribe(id);
    }
}

fn web_stats(sh: &Shared) -> serde_json::Value {
    let c = &sh.counters;
    let h = sh.hub.stats();
    let s = sh.store.stats();
    let mut m = serde_json::Map::new();
    for (k, name, _) in COUNTS {
        m.insert(name.into(), c.get(k).into());
    }
    for (k, v) in [
        ("connections", &c.connections),
        ("streams", &c.streams),
        ("heavy", &c.heavy),
    ] {
        m.insert(k.into(), v.load(Ordering::Relaxed).into());
    }
    for (k, v) in [
        ("events_published", h.published),
        ("events_delivered", h.delivered),
        ("events_new", h.new),
        ("events_destroyed", h.destroyed),
        ("streams_dropped", h.dropped_clients),
    ] {
        m.insert(k.into(), v.into());
    }
    m.insert("uptime".into(), sh.started.elapsed().as_secs().into());
    m.insert(
        "snapshot".into(),
        serde_json::json!({
            "dumps": s.dumps, "dump_errors": s.dump_errors, "last_dump_ms": s.last_dump_ms,
            "rows": s.rows, "memory_bytes": s.memory_bytes, "drops": s.drops,
            "counter_interval": sh.store.interval().as_secs(),
        }),
    );
    serde_json::Value::Object(m)
}

fn table_counts(sh: &Shared) -> Option<(u32, Option<u32>)> {
    api::open(sh.netns.as_deref()).ok()?.count().ok()
}

fn daemon_stats(sh: &Shared) -> serde_json::Value {
    let v = match &sh.stats {
        Some(f) => f(),
        None => serde_json::json!({}),
    };
    if v.is_object() {
        v
    } else {
        serde_json::json!({ "daemon": v })
    }
}

fn stats_body(sh: &Shared) -> Vec<u8> {
    let mut v = daemon_stats(sh);
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

/// Flow counts by class: the daemon's cache when it can tell, else the
/// web's table.
fn flow_counts(sh: &Shared) -> Result<(metrics::FlowCounts, &'static str), ApiError> {
    if let Some(f) = &sh.flow_counts
        && let Some(c) = f()
    {
        return Ok((c, "the daemon's cache"));
    }
    let v = sh.store.view(false)?;
    let mut map: std::collections::HashMap<metrics::FlowClass, u64> = Default::default();
    for (_, r) in v.table().iter() {
        let f = r.to_flow(v.now);
        let st = super::query::state_name(&f).unwrap_or("");
        *map.entry((f.family, f.orig.proto, st)).or_default() += 1;
    }
    let mut out: Vec<_> = map.into_iter().collect();
    out.sort();
    Ok((out, "the event-fed table"))
}

fn metrics_reply(sh: &Arc<Shared>, rq: Request) {
    let (counts, source) = match flow_counts(sh) {
        Ok(c) => c,
        Err(e) => return respond_error(sh, rq, &e, &[]),
    };
    let mut t = Text::default();
    metrics::flows(&mut t, &counts, source);
    if let Some((count, max)) = table_counts(sh) {
        t.single(
            "ctrack_table_entries",
            Kind::Gauge,
            "Entries in the conntrack table.",
            count as u64,
        );
        if let Some(m) = max {
            t.single(
                "ctrack_table_max",
                Kind::Gauge,
                "Size limit of the conntrack table (nf_conntrack_max).",
                m as u64,
            );
        }
    }
    let c = &sh.counters;
    for (k, name, help) in COUNTS {
        t.single(
            &format!("ctrack_web_{name}_total"),
            Kind::Counter,
            help,
            c.get(k),
        );
    }
    let gauges = [
        ("connections", "Client connections open.", &c.connections),
        ("streams", "Event streams open.", &c.streams),
        ("heavy_replies", "Large replies being sent.", &c.heavy),
    ];
    for (name, help, v) in gauges {
        t.single(
            &format!("ctrack_web_{name}"),
            Kind::Gauge,
            help,
            v.load(Ordering::Relaxed) as u64,
        );
    }
    let h = sh.hub.stats();
    let s = sh.store.stats();
    for (name, help, v) in [
        (
            "events_published",
            "Kernel events the web was given.",
            h.published,
        ),
        (
            "events_delivered",
            "Event copies queued to stream clients.",
            h.delivered,
        ),
        (
            "streams_dropped",
            "Stream clients dropped for reading too slowly.",
            h.dropped_clients,
        ),
        (
            "snapshot_dumps",
            "Kernel dumps taken for counters.",
            s.dumps,
        ),
        (
            "snapshot_dump_errors",
            "Kernel dumps that failed.",
            s.dump_errors,
        ),
        (
            "snapshot_drops",
            "Times the table was dropped for lack of watchers.",
            s.drops,
        ),
    ] {
        t.single(&format!("ctrack_web_{name}_total"), Kind::Counter, help, v);
    }
    t.single(
        "ctrack_web_snapshot_rows",
        Kind::Gauge,
        "Flows in the web's table (0 when nobody watches).",
        s.rows,
    );
    t.single(
        "ctrack_web_snapshot_memory_bytes",
        Kind::Gauge,
        "Memory of the web's table.",
        s.memory_bytes,
    );
    t.seconds(
        "ctrack_web_snapshot_last_dump_seconds",
        "Duration of the last kernel dump.",
        s.last_dump_ms,
    );
    t.single(
        "ctrack_web_uptime_seconds",
        Kind::Gauge,
        "Seconds since the web server started.",
        sh.started.elapsed().as_secs(),
    );
    metrics::daemon_families(&mut t, "ctrack", &daemon_stats(sh), 0);
    let mut r = Response::from_data(t.out);
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
    fn security_headers_are_constants() {
        let h = security_headers(PAGE_CSP);
        assert_eq!(h[2], ("Content-Security-Policy", PAGE_CSP));
        assert!(
            h.iter()
                .all(|(k, v)| !k.contains('\n') && !v.contains('\n'))
        );
        assert_eq!(CHALLENGE.1, "Bearer realm=\"ctrack\"");
    }
}
