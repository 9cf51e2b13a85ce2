//! The event hub: the daemon publishes kernel events, each Server-Sent
//! Events client gets the ones its filter selects.
//!
//! Publishing never blocks and never allocates per client: an event is
//! serialized once (only when some client wants it) and handed to each
//! client's bounded queue with `try_send`. A client whose queue is full is
//! too slow: it is dropped (its stream ends with an `event: dropped`
//! message), never buffered without limit.
//!
//! Every event also goes to the web's shared table ([`Store::apply`]),
//! which is how lists stay current between counter snapshots.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::flow::EventKind;
use crate::flow::json::{JsonOptions, write_flow};
use crate::netlink::Event;

use super::names::{NameCache, Names};
use super::query::WebFilter;
use super::snapshot::Store;

/// Queue length per client when none is configured.
pub const DEFAULT_QUEUE: usize = 1024;

struct Sub {
    id: u32,
    filter: WebFilter,
    updates: bool,
    tx: SyncSender<Arc<[u8]>>,
}

/// The clients and the counts (64-bit, under the clients' lock: no
/// 64-bit atomics on 32-bit MIPS).
#[derive(Default)]
struct Subs {
    list: Vec<Sub>,
    published: u64,
    delivered: u64,
    dropped_clients: u64,
    new: u64,
    destroyed: u64,
}

#[derive(Default)]
struct Inner {
    subs: Mutex<Subs>,
    names: Mutex<Option<Arc<NameCache>>>,
    store: Mutex<Option<Arc<Store>>>,
    next_id: AtomicU32,
    queue: AtomicU32,
}

/// The hub; clone it freely (all clones are the same hub). The daemon
/// keeps one and calls [`Hub::publish`] for every kernel event; the web
/// server adds a subscriber per `/api/v1/events` client.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(DEFAULT_QUEUE)
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.clients())
            .finish()
    }
}

/// Counters of the hub, for /api/v1/stats and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connected clients.
    pub clients: u32,
    /// Events published by the daemon.
    pub published: u64,
    /// Event copies queued to clients.
    pub delivered: u64,
    /// Clients dropped because their queue was full.
    pub dropped_clients: u64,
    /// NEW events published (the page's new flows per second when it
    /// polls instead of streaming).
    pub new: u64,
    /// DESTROY events published.
    pub destroyed: u64,
}

/// One client's end: its queue of serialized events.
pub struct Subscription {
    /// Serialized events (`data: ...\n\n` lines) for this client.
    pub rx: Receiver<Arc<[u8]>>,
    /// The hub's id of this client.
    pub id: u32,
}

impl Hub {
    /// A hub whose clients each get a queue of `queue` events.
    pub fn new(queue: usize) -> Hub {
        let inner = Inner::default();
        inner
            .queue
            .store(queue.clamp(1, 1 << 20) as u32, Ordering::Relaxed);
        Hub {
            inner: Arc::new(inner),
        }
    }

    /// Gives the hub the name table used for `host=NAME` and `q` filters
    /// and for names in the events (the web server does this).
    pub fn set_names(&self, names: Arc<NameCache>) {
        if let Ok(mut n) = self.inner.names.lock() {
            *n = Some(names);
        }
    }

    /// Gives the hub the table every event is applied to (the web server
    /// does this).
    pub fn set_store(&self, store: Arc<Store>) {
        if let Ok(mut s) = self.inner.store.lock() {
            *s = Some(store);
        }
    }

    fn names(&self) -> Arc<Names> {
        match self.inner.names.lock() {
            Ok(n) => n
                .as_ref()
                .map(|c| c.current())
                .unwrap_or_else(|| Arc::new(Names::default())),
            Err(_) => Arc::new(Names::default()),
        }
    }

    /// Adds a client with its filter; `updates` also sends UPDATE events.
    pub fn subscribe(&self, filter: WebFilter, updates: bool) -> Subscription {
        let n = self.inner.queue.load(Ordering::Relaxed) as usize;
        let (tx, rx) = std::sync::mpsc::sync_channel(n);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.list.push(Sub {
                id,
                filter,
                updates,
                tx,
            });
        }
        Subscription { rx, id }
    }

    /// Removes a client (when its connection ends).
    pub fn unsubscribe(&self, id: u32) {
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.list.retain(|s| s.id != id);
        }
    }

    /// Removes every client: their streams end (used when stopping).
    pub fn close_all(&self) {
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.list.clear();
        }
    }

    /// Number of connected clients.
    pub fn clients(&self) -> u32 {
        self.inner
            .subs
            .lock()
            .map(|s| s.list.len() as u32)
            .unwrap_or(0)
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        match self.inner.subs.lock() {
            Ok(s) => HubStats {
                clients: s.list.len() as u32,
                published: s.published,
                delivered: s.delivered,
                dropped_clients: s.dropped_clients,
                new: s.new,
                destroyed: s.destroyed,
            },
            Err(_) => HubStats::default(),
        }
    }

    /// Hands a kernel event to the table and to every client that
    /// selected it. Never blocks on a client: one with a full queue is
    /// dropped.
    pub fn publish(&self, ev: &Event) {
        if let Ok(s) = self.inner.store.lock()
            && let Some(s) = s.as_ref()
        {
            s.apply(ev);
        }
        let Ok(mut subs) = self.inner.subs.lock() else {
            return;
        };
        subs.published += 1;
        match ev.kind {
            EventKind::New => subs.new += 1,
            EventKind::Destroy => subs.destroyed += 1,
            EventKind::Update => {}
        }
        if subs.list.is_empty() {
            return;
        }
        let names = self.names();
        let mut msg: Option<Arc<[u8]>> = None;
        let (mut dropped, mut delivered) = (0, 0);
        subs.list.retain(|s| {
            if ev.kind == EventKind::Update && !s.updates {
                return true;
            }
            if !s.filter.matches(&ev.flow, &names) {
                return true;
            }
            let m = msg.get_or_insert_with(|| sse_message(ev, &names)).clone();
            match s.tx.try_send(m) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        subs.delivered += delivered;
        subs.dropped_clients += dropped;
    }
}

/// One event as an SSE message: `data: {flow json with "event"}\n\n`.
fn sse_message(ev: &Event, names: &Names) -> Arc<[u8]> {
    let mut out = Vec::with_capacity(600);
    out.extend_from_slice(b"data: ");
    let opts = JsonOptions {
        event: Some(ev.kind),
        now: crate::flow::now_secs(),
        ..JsonOptions::default()
    };
    write_flow(&mut out, &ev.flow, &opts);
    super::api::append_names(&mut out, &ev.flow, names);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// How often an idle stream gets a comment line, so dead clients are
/// noticed and proxies keep the stream open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How often a stream checks that its client is still there.
const CHECK: Duration = Duration::from_millis(200);

/// Writes a client's events to its connection until the client goes away
/// (`gone` says so, checked every 200 ms: its slot is free at once), the
/// hub drops it, or writing fails. Runs on the client's own thread.
pub fn pump(hub: &Hub, sub: Subscription, out: &mut dyn Write, gone: &dyn Fn() -> bool) {
    let _ = out
        .write_all(b": ctrack events\n\n")
        .and_then(|_| out.flush());
    let mut quiet_since = Instant::now();
    loop {
        if gone() {
            break;
        }
        match sub.rx.recv_timeout(CHECK) {
            Ok(first) => {
                if out.write_all(&first).is_err() {
                    break;
                }
                let mut ok = true;
                while let Ok(more) = sub.rx.try_recv() {
                    if out.write_all(&more).is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok || out.flush().is_err() {
                    break;
                }
                quiet_since = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {
                if quiet_since.elapsed() < KEEPALIVE {
                    continue;
                }
                if out
                    .write_all(b": keep-alive\n\n")
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    break;
                }
                quiet_since = Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out
                    .write_all(
                        b"event: dropped\ndata: {\"error\":\"events came faster than this client read them; reconnect\"}\n\n",
                    )
                    .and_then(|_| out.flush());
                break;
            }
        }
    }
    hub.unsubscribe(sub.id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;

    fn ev(kind: EventKind) -> Event {
        Event {
            kind,
            flow: tcp4(),
            portid: 0,
        }
    }

    #[test]
    fn filtered_delivery_and_slow_clients_are_dropped() {
        let hub = Hub::new(2);
        let all = hub.subscribe(WebFilter::default(), false);
        let with_updates = hub.subscribe(WebFilter::default(), true);
        let mut udp = WebFilter::default();
        udp.base.proto = Some(17);
        let none = hub.subscribe(udp, true);
        hub.publish(&ev(EventKind::New));
        hub.publish(&ev(EventKind::Update));
        assert_eq!(
            all.rx.try_recv().unwrap().len(),
            with_updates.rx.try_recv().unwrap().len()
        );
        assert!(all.rx.try_recv().is_err(), "no UPDATE without update=1");
        let upd = with_updates.rx.try_recv().unwrap();
        assert!(
            std::str::from_utf8(&upd)
                .unwrap()
                .contains("\"event\":\"update\"")
        );
        assert!(none.rx.try_recv().is_err());
        // `all` does not read: its queue of 2 fills and it is dropped
        hub.publish(&ev(EventKind::Destroy));
        hub.publish(&ev(EventKind::Destroy));
        hub.publish(&ev(EventKind::Destroy));
        assert_eq!(hub.stats().dropped_clients, 2);
        assert_eq!(hub.clients(), 1);
        let mut out = Vec::new();
        pump(&hub, all, &mut out, &|| false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("reconnect\"}\n\n"), "{text}");
        let st = hub.stats();
        assert_eq!((st.published, st.new, st.destroyed), (5, 1, 3));
        // a client that went: its stream ends within a check, its slot
        // is free
        let left = hub.subscribe(WebFilter::default(), false);
        let before = hub.clients();
        let t0 = Instant::now();
        let mut out = Vec::new();
        pump(&hub, left, &mut out, &|| {
            t0.elapsed() > Duration::from_millis(300)
        });
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(hub.clients(), before - 1);
    }
}
