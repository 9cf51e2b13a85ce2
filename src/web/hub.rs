//! The event hub: the daemon publishes kernel events, each Server-Sent
//! Events client gets the ones its filter selects.
//!
//! Publishing never blocks and never allocates per client: an event is
//! serialized once (only when some client wants it) and handed to each
//! client's bounded queue with `try_send`. A client whose queue is full is
//! too slow: it is dropped (its stream ends with an `event: dropped`
//! message), never buffered without limit.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::flow::EventKind;
use crate::flow::json::{JsonOptions, write_flow};
use crate::netlink::Event;

use super::names::{NameCache, Names};
use super::query::WebFilter;

/// Queue length per client when none is configured.
pub const DEFAULT_QUEUE: usize = 1024;

struct Sub {
    id: u32,
    filter: WebFilter,
    updates: bool,
    tx: SyncSender<Arc<[u8]>>,
}

#[derive(Default)]
struct Inner {
    subs: Mutex<Vec<Sub>>,
    names: Mutex<Option<Arc<NameCache>>>,
    next_id: AtomicU32,
    published: AtomicU32,
    delivered: AtomicU32,
    dropped_clients: AtomicU32,
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
    /// Events published by the daemon (wrapping counter).
    pub published: u32,
    /// Event copies queued to clients (wrapping counter).
    pub delivered: u32,
    /// Clients dropped because their queue was full.
    pub dropped_clients: u32,
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
            subs.push(Sub {
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
            subs.retain(|s| s.id != id);
        }
    }

    /// Removes every client: their streams end (used when stopping).
    pub fn close_all(&self) {
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.clear();
        }
    }

    /// Number of connected clients.
    pub fn clients(&self) -> u32 {
        self.inner.subs.lock().map(|s| s.len() as u32).unwrap_or(0)
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            clients: self.clients(),
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped_clients: self.inner.dropped_clients.load(Ordering::Relaxed),
        }
    }

    /// Hands a kernel event to every client that selected it. Never
    /// blocks: a client with a full queue is dropped.
    pub fn publish(&self, ev: &Event) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let Ok(mut subs) = self.inner.subs.lock() else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        let names = self.names();
        let mut msg: Option<Arc<[u8]>> = None;
        let mut dropped = 0;
        subs.retain(|s| {
            if ev.kind == EventKind::Update && !s.updates {
                return true;
            }
            if !s.filter.matches(&ev.flow, &names) {
                return true;
            }
            let m = msg.get_or_insert_with(|| sse_message(ev, &names)).clone();
            match s.tx.try_send(m) {
                Ok(()) => {
                    self.inner.delivered.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        if dropped > 0 {
            self.inner
                .dropped_clients
                .fetch_add(dropped, Ordering::Relaxed);
        }
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

/// Writes a client's events to its connection until the client goes away,
/// the hub drops it, or writing fails (the socket's send timeout bounds a
/// stalled write). Runs on the client's own thread.
pub fn pump(hub: &Hub, sub: Subscription, out: &mut dyn Write) {
    let _ = out
        .write_all(b": ctrack events\n\n")
        .and_then(|_| out.flush());
    loop {
        match sub.rx.recv_timeout(KEEPALIVE) {
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
            }
            Err(RecvTimeoutError::Timeout) => {
                if out
                    .write_all(b": keep-alive\n\n")
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    break;
                }
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
        pump(&hub, all, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("reconnect\"}\n\n"), "{text}");
    }
}
