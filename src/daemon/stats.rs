//! The daemon's counters and their text (conntrackd's `-s` layout) and
//! JSON renderings.

use super::cache::Cache;

/// Runtime and netlink counters (conntrackd's `-s runtime`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Seconds since the epoch when the daemon started.
    pub started: i64,
    /// Kernel events received.
    pub events_received: u64,
    /// Events the Filter dropped.
    pub events_filtered: u64,
    /// Events of an unknown type or that failed to decode.
    pub events_unknown: u32,
    /// Event socket errors.
    pub catch_event_failed: u32,
    /// Dump entries that failed to decode.
    pub dump_unknown: u32,
    /// Event socket overruns (ENOBUFS).
    pub overruns: u32,
    /// Kernel table flushes done on request.
    pub kernel_flushes: u32,
    /// Resyncs with the kernel table.
    pub resyncs: u32,
    /// Current event socket buffer size.
    pub buffer_size: usize,
    /// Control requests that could not be read.
    pub local_read_failed: u32,
    /// Unknown control requests.
    pub local_unknown: u32,
    /// Bytes of destroyed flows, original direction.
    pub bytes_orig: u64,
    /// Bytes of destroyed flows, reply direction.
    pub bytes_repl: u64,
    /// Packets of destroyed flows, original direction.
    pub packets_orig: u64,
    /// Packets of destroyed flows, reply direction.
    pub packets_repl: u64,
}

/// conntrackd's uptime text: `[N day(s) ]H h M min` or `M min`.
pub fn uptime_text(secs: i64) -> String {
    let secs = secs.max(0);
    let days = secs / 86400;
    let mut s = String::new();
    if days > 0 {
        s.push_str(&format!("{days} day{} ", if days != 1 { "s" } else { "" }));
    }
    let minutes = secs / 60;
    let hours = (minutes / 60) % 24;
    let minutes = minutes % 60;
    if hours > 0 {
        s.push_str(&format!("{hours} h {minutes} min"));
    } else {
        s.push_str(&format!("{minutes} min"));
    }
    s
}

/// conntrackd's `cache <name>:` section.
pub fn cache_text(c: &Cache) -> String {
    let s = &c.stats;
    format!(
        "cache {}:\ncurrent active connections:\t{:>12}\n\
         connections created:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections updated:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections destroyed:\t\t{:>12}\tfailed:\t{:>12}\n\n",
        c.name(),
        c.len(),
        s.add_ok,
        s.add_fail,
        s.upd_ok,
        s.upd_fail,
        s.del_ok,
        s.del_fail
    )
}

/// conntrackd's extended `-s cache` section.
pub fn cache_text_extended(c: &Cache) -> String {
    let s = &c.stats;
    format!(
        "cache:{}\tactive objects:\t\t{:>12}\n\
         \tactive/total entries:\t\t{:>12}/{:>12}\n\
         \tcreation OK/failed:\t\t{:>12}/{:>12}\n\
         \t\tno memory available:\t{:>12}\n\
         \t\tno space left in cache:\t{:>12}\n\
         \tupdate OK/failed:\t\t{:>12}/{:>12}\n\
         \t\tentry not found:\t{:>12}\n\
         \tdeletion created/failed:\t{:>12}/{:>12}\n\
         \t\tentry not found:\t{:>12}\n\
         \tmemory (bytes):\t\t\t{:>12}\n\n",
        c.name(),
        c.len(),
        c.len(),
        c.len(),
        s.add_ok,
        s.add_fail,
        0,
        s.add_fail,
        s.upd_ok,
        s.upd_fail,
        0,
        s.del_ok,
        s.del_fail,
        s.del_fail,
        c.memory_bytes()
    )
}

/// conntrackd's `traffic processed:` section.
pub fn traffic_text(r: &RuntimeStats) -> String {
    format!(
        "traffic processed:\n{:>20} Bytes      {:>20} Pckts\n\n",
        r.bytes_orig.saturating_add(r.bytes_repl),
        r.packets_orig.saturating_add(r.packets_repl)
    )
}

/// conntrackd's `-s runtime` text.
pub fn runtime_text(r: &RuntimeStats, now: i64) -> String {
    format!(
        "daemon uptime: {}\n\n\
         netlink stats:\n\
         \tevents received:\t{:>20}\n\
         \tevents filtered:\t{:>20}\n\
         \tevents unknown type:\t\t{:>12}\n\
         \tcatch event failed:\t\t{:>12}\n\
         \tdump unknown type:\t\t{:>12}\n\
         \tnetlink overrun:\t\t{:>12}\n\
         \tflush kernel table:\t\t{:>12}\n\
         \tresync with kernel table:\t{:>12}\n\
         \tcurrent buffer size (in bytes):\t{:>12}\n\n\
         runtime stats:\n\
         \tchild process failed:\t\t{:>12}\n\
         \t\tchild process segfault:\t{:>12}\n\
         \t\tchild process termsig:\t{:>12}\n\
         \tselect failed:\t\t\t{:>12}\n\
         \twait failed:\t\t\t{:>12}\n\
         \tlocal read failed:\t\t{:>12}\n\
         \tlocal unknown request:\t\t{:>12}\n\n",
        uptime_text(now - r.started),
        r.events_received,
        r.events_filtered,
        r.events_unknown,
        r.catch_event_failed,
        r.dump_unknown,
        r.overruns,
        r.kernel_flushes,
        r.resyncs,
        r.buffer_size,
        0,
        0,
        0,
        0,
        0,
        r.local_read_failed,
        r.local_unknown
    )
}

/// The counters as JSON (for the web API and SIGUSR1).
pub fn to_json(internal: &Cache, r: &RuntimeStats, now: i64) -> serde_json::Value {
    let s = &internal.stats;
    serde_json::json!({
        "uptime": now - r.started,
        "cache": {
            "internal": {
                "active": internal.len(),
                "created": s.add_ok, "create_failed": s.add_fail,
                "updated": s.upd_ok, "update_failed": s.upd_fail,
                "destroyed": s.del_ok, "destroy_failed": s.del_fail,
                "memory_bytes": internal.memory_bytes(),
            }
        },
        "netlink": {
            "events_received": r.events_received,
            "events_filtered": r.events_filtered,
            "events_unknown": r.events_unknown,
            "overruns": r.overruns,
            "resyncs": r.resyncs,
            "kernel_flushes": r.kernel_flushes,
            "buffer_size": r.buffer_size,
        },
        "traffic": {
            "bytes": r.bytes_orig.saturating_add(r.bytes_repl),
            "packets": r.packets_orig.saturating_add(r.packets_repl),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_like_conntrackd() {
        assert_eq!(uptime_text(59), "0 min");
        assert_eq!(uptime_text(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(uptime_text(86400 + 60), "1 day 1 min");
        assert_eq!(uptime_text(2 * 86400 + 3600), "2 days 1 h 0 min");
    }

    #[test]
    fn cache_section_layout() {
        let c = Cache::new("internal", 16, 10);
        let t = cache_text(&c);
        assert!(t.starts_with("cache internal:\ncurrent active connections:\t           0\n"));
        assert!(t.contains("connections created:\t\t           0\tfailed:\t           0\n"));
    }
}
