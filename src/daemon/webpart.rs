//! The web page and JSON API inside ctrackd: started with the daemon,
//! fed kernel events by the event reader through the [`Hub`] (which also
//! keeps the web's table current), asking the core for its counters and
//! for the flow counts of its cache (Prometheus `/metrics`, no dump)
//! through the core's channel.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::Cache;
use super::input::Input;
use super::part::Part;
use crate::web::metrics::FlowClass;
use crate::web::{Handle, Hub, Server, WebConfig, WebContext};

/// How long the web waits for the core's answer.
const CORE_WAIT: Duration = Duration::from_secs(2);

/// The cache's flows by (family, protocol, TCP state name), sorted.
pub fn flow_counts(cache: &Cache) -> Vec<(FlowClass, u64)> {
    let mut map: std::collections::HashMap<FlowClass, u64> = Default::default();
    for e in cache.iter() {
        let f = e.to_flow();
        let state = f
            .protoinfo
            .tcp_state()
            .map_or("", crate::flow::names::tcp_state_name);
        *map.entry((f.family, f.orig.proto, state)).or_default() += 1;
    }
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort();
    v
}

/// The running web server.
pub struct WebPart {
    handle: Option<Handle>,
    /// Where kernel events are published for event streams.
    pub hub: Hub,
}

impl WebPart {
    /// Starts the server. `tx` reaches the core (stats requests and log
    /// lines); the returned hub must get every kernel event.
    pub fn start(cfg: WebConfig, tx: Sender<Input>) -> Result<WebPart, String> {
        let hub = Hub::default();
        let stats_tx = Mutex::new(tx.clone());
        let counts_tx = Mutex::new(tx.clone());
        let log_tx = Mutex::new(tx);
        let ctx = WebContext {
            netns: None,
            stats: Some(Arc::new(move || {
                let (rtx, rrx) = mpsc::channel();
                let sent = stats_tx
                    .lock()
                    .map(|t| t.send(Input::StatsJson(rtx)).is_ok())
                    .unwrap_or(false);
                if !sent {
                    return serde_json::json!({});
                }
                rrx.recv_timeout(CORE_WAIT)
                    .unwrap_or_else(|_| serde_json::json!({}))
            })),
            flow_counts: Some(Arc::new(move || {
                let (rtx, rrx) = mpsc::channel();
                let sent = counts_tx
                    .lock()
                    .map(|t| t.send(Input::WebFlowCounts(rtx)).is_ok())
                    .unwrap_or(false);
                if !sent {
                    return None;
                }
                rrx.recv_timeout(CORE_WAIT).ok()
            })),
            hub: hub.clone(),
            log: Some(Arc::new(move |m: &str| {
                if let Ok(t) = log_tx.lock() {
                    let _ = t.send(Input::Log(m.to_string()));
                }
            })),
        };
        let handle = Server::start(cfg, ctx).map_err(|e| e.to_string())?;
        Ok(WebPart {
            handle: Some(handle),
            hub,
        })
    }
}

impl Part for WebPart {
    fn name(&self) -> &'static str {
        "web"
    }

    /// Stops the server (ends event streams, releases the port).
    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

impl Drop for WebPart {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;

    #[test]
    fn the_cache_counts_its_flows_by_class() {
        let mut c = Cache::new("internal", 16, 100);
        let mut f = tcp4();
        c.upsert(&f, 0);
        f.orig.sport = 2;
        c.upsert(&f, 0);
        let mut u = tcp4();
        u.orig.proto = crate::flow::proto::UDP;
        u.reply.proto = crate::flow::proto::UDP;
        u.protoinfo = crate::flow::ProtoInfo::None;
        c.upsert(&u, 0);
        assert_eq!(
            flow_counts(&c),
            vec![
                ((crate::flow::AF_INET, 6, "ESTABLISHED"), 2),
                ((crate::flow::AF_INET, 17, ""), 1),
            ]
        );
    }
}
