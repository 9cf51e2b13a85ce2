//! `ctrack web`: the web page and API without the daemon, with its own
//! kernel event feed. For a router that wants only the page, for the
//! benchmark and for the demo; ctrackd runs the same server on its own
//! threads and publishes its events itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::exit;
use crate::netlink::EventSocket;
use crate::netlink::events::Received;
use crate::netlink::events::group;

use crate::opts::{OptError, Opts, Spec, take_netns};

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

/// The usage line of `ctrack web` (`-h`, and after an unknown option).
const USAGE: &str = "usage: ctrack web [--netns NAME] [--listen ADDRESS:PORT] [--leases FILE] \
[--hosts FILE] [--token-file FILE] [--read-token-file FILE] [--server-name NAME]... \
[--counter-interval SECONDS]";

/// The options of `ctrack web` (`--netns` is taken before).
const OPTIONS: &[Spec] = &[
    Spec::value("--listen"),
    Spec::value("--leases"),
    Spec::value("--hosts"),
    Spec::value("--token-file"),
    Spec::value("--read-token-file"),
    Spec::value("--server-name"),
    Spec::value("--counter-interval"),
    Spec::flag("-h"),
    Spec::flag("--help"),
];

/// Why `ctrack web` stops before serving.
#[derive(Debug)]
enum WebError {
    /// A bad command line (exit 2).
    Usage(String),
    /// The event feed or the server could not start (exit 1).
    Start(String),
}

impl WebError {
    /// Prints the error; returns its exit code. The one place `ctrack web`
    /// prints its errors.
    fn report(&self) -> i32 {
        let (msg, code) = match self {
            WebError::Usage(m) => (m, exit::PARAMETER),
            WebError::Start(m) => (m, exit::OTHER),
        };
        eprintln!("ctrack: {msg}");
        code
    }
}

impl From<OptError> for WebError {
    fn from(e: OptError) -> WebError {
        WebError::Usage(match e {
            OptError::MissingValue { name } => format!("{name} needs a value"),
            OptError::UnexpectedValue { arg, .. } | OptError::Unknown(arg) => {
                format!("unknown option '{arg}' for web\n{USAGE}")
            }
        })
    }
}

/// Parses the arguments after `web` (without `--netns`); None for `-h`.
fn parse(args: &[String]) -> Result<Option<WebConfig>, WebError> {
    let mut cfg = WebConfig::default();
    for opt in Opts::new(args, OPTIONS) {
        let (name, value) = opt?;
        let v = value.unwrap_or_default();
        match name {
            "--listen" => {
                let sa: SocketAddr = v.parse().map_err(|_| {
                    WebError::Usage(format!("invalid address '{v}' for --listen (want IP:PORT)"))
                })?;
                cfg.address = sa.ip();
                cfg.port = sa.port();
            }
            "--leases" => cfg.dhcp_leases = Some(PathBuf::from(v)),
            "--hosts" => cfg.hosts = Some(PathBuf::from(v)),
            "--token-file" => cfg.token_file = Some(PathBuf::from(v)),
            "--read-token-file" => cfg.read_token_file = Some(PathBuf::from(v)),
            "--server-name" => cfg.server_names.push(v.to_string()),
            "--counter-interval" => {
                let secs: u64 = v.parse().ok().filter(|&s| s <= 3600).ok_or_else(|| {
                    WebError::Usage(format!(
                        "invalid value '{v}' for --counter-interval (seconds, 0 to 3600)"
                    ))
                })?;
                cfg.counter_interval = std::time::Duration::from_secs(secs);
            }
            // the table's last two: "-h", "--help"
            _ => return Ok(None),
        }
    }
    Ok(Some(cfg))
}

/// Runs `ctrack web ARGS` (`--netns` anywhere) until SIGINT or SIGTERM;
/// returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    match serve(args) {
        Ok(()) => exit::OK,
        Err(e) => e.report(),
    }
}

/// Parses the command line, starts the event feed and the server, and
/// serves until a signal.
fn serve(mut args: Vec<String>) -> Result<(), WebError> {
    let netns = take_netns(&mut args)?;
    let Some(cfg) = parse(&args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let hub = Hub::default();
    let stop = Arc::new(AtomicBool::new(false));
    let feed = feed_events(netns.clone(), hub.clone(), stop.clone())
        .map_err(|e| WebError::Start(format!("cannot subscribe to conntrack events: {e}")))?;
    let ctx = WebContext {
        netns,
        hub,
        ..WebContext::default()
    };
    let handle = Server::start(cfg, ctx).map_err(|e| {
        stop.store(true, Ordering::Relaxed);
        WebError::Start(e.to_string())
    })?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<WebConfig>, WebError> {
        parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    fn usage_error(s: &str) -> String {
        match p(s) {
            Err(WebError::Usage(m)) => m,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn options_and_errors() {
        let cfg = p("--listen 127.0.0.1:8077 --hosts /h").unwrap().unwrap();
        assert_eq!(cfg.port, 8077);
        assert_eq!(cfg.hosts, Some(PathBuf::from("/h")));
        assert_eq!(cfg.counter_interval, crate::web::DEFAULT_COUNTER_INTERVAL);
        let cfg = p("--counter-interval 0 --server-name a --server-name b --read-token-file /r")
            .unwrap()
            .unwrap();
        assert!(cfg.counter_interval.is_zero());
        assert_eq!(cfg.server_names, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(cfg.read_token_file, Some(PathBuf::from("/r")));
        assert!(usage_error("--counter-interval 3601").contains("--counter-interval"));
        assert!(usage_error("--counter-interval x").contains("--counter-interval"));
        assert!(p("--bogus -h").is_err());
        assert!(p("-h --bogus").unwrap().is_none());
        assert_eq!(usage_error("--leases"), "--leases needs a value");
        assert_eq!(
            usage_error("--listen foo"),
            "invalid address 'foo' for --listen (want IP:PORT)"
        );
        assert!(usage_error("--bogus").starts_with("unknown option '--bogus' for web\nusage:"));
    }
}
