//! `ctrack web`: the web page and API without the daemon, with its own
//! kernel event feed. For a router that wants only the page, for the
//! benchmark and for the demo; ctrackd runs the same server on its own
//! threads and publishes its events itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::netlink::EventSocket;
use crate::netlink::events::Received;
use crate::netlink::events::group;

use super::{Hub, Server, WebConfig, WebContext};

/// Subscribes to the kernel's conntrack events in `netns` and publishes
/// each to `hub` until `stop` is set (checked every 200 ms). Overruns are
/// counted in the returned thread's result; events are never waited for
/// by the hub (it drops slow clients instead).
pub fn feed_events(
    netns: Option<String>,
    hub: Hub,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<u64>> {
    let mut es = EventSocket::open(group::ALL, netns.as_deref())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ = es.socket().set_recv_buffer(8 << 20);
    std::thread::Builder::new()
        .name("ctrack-webevents".into())
        .spawn(move || {
            let mut overruns = 0u64;
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match es.wait(200) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
                batch.clear();
                match es.recv_into(&mut batch) {
                    Ok(Received::Events) => {
                        for ev in &batch {
                            hub.publish(ev);
                        }
                    }
                    Ok(Received::Overrun) => overruns += 1,
                    Err(_) => break,
                }
            }
            overruns
        })
}

const USAGE: &str = "usage: ctrack web [--netns NAME] [--listen ADDRESS:PORT] [--leases FILE] \
[--hosts FILE] [--token-file FILE]";

/// Runs `ctrack web ARGS` until SIGINT or SIGTERM; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut cfg = WebConfig::default();
    let mut netns = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| match it.next() {
            Some(v) => Ok(v.clone()),
            None => Err(format!("ctrack: {name} needs a value")),
        };
        let res: Result<(), String> = match a.as_str() {
            "--netns" => val("--netns").map(|v| netns = Some(v)),
            "--listen" => val("--listen").and_then(|v| {
                let sa: SocketAddr = v.parse().map_err(|_| {
                    format!("ctrack: invalid address '{v}' for --listen (want IP:PORT)")
                })?;
                cfg.address = sa.ip();
                cfg.port = sa.port();
                Ok(())
            }),
            "--leases" => val("--leases").map(|v| cfg.dhcp_leases = Some(PathBuf::from(v))),
            "--hosts" => val("--hosts").map(|v| cfg.hosts = Some(PathBuf::from(v))),
            "--token-file" => val("--token-file").map(|v| cfg.token_file = Some(PathBuf::from(v))),
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => Err(format!("ctrack: unknown option '{other}' for web\n{USAGE}")),
        };
        if let Err(e) = res {
            eprintln!("{e}");
            return 2;
        }
    }
    let hub = Hub::default();
    let stop = Arc::new(AtomicBool::new(false));
    let feed = match feed_events(netns.clone(), hub.clone(), stop.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ctrack: cannot subscribe to conntrack events: {e}");
            return 1;
        }
    };
    let ctx = WebContext {
        netns,
        hub,
        ..WebContext::default()
    };
    let handle = match Server::start(cfg, ctx) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ctrack: {e}");
            stop.store(true, Ordering::Relaxed);
            return 1;
        }
    };
    println!("ctrack: web page at http://{}/", handle.local_addr());
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    match signals {
        Ok(mut s) => {
            let _ = s.forever().next();
        }
        Err(e) => {
            eprintln!("ctrack: cannot wait for signals: {e}");
        }
    }
    handle.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = feed.join();
    0
}
