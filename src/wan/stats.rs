//! Counters of the WAN watch for `ctrackd -s` (section `wan`) and the JSON
//! API: changes seen, flushes, flows deleted, already gone and failed,
//! the last change and the last flush. Plain integers owned by the one
//! thread that runs the watch (no atomics, so 32-bit routers are fine).

use std::net::IpAddr;

use super::flush::FlushReport;
use super::tracker::{Change, FlushOrder, IfaceStatus};
use crate::flow::addr::{push_ctime, push_ip, push_u64};
use crate::flow::json::push_str;

/// The last flush, as the stats show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastFlush {
    /// Wall-clock time, seconds since the epoch.
    pub at: i64,
    /// The mode (`stale`, `all-wan`, `all`).
    pub mode: &'static str,
    /// The lost addresses.
    pub lost: Vec<IpAddr>,
    /// The interfaces whose change caused it.
    pub interfaces: Vec<String>,
    /// Its counts (default when it failed before counting).
    pub report: FlushReport,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The WAN watch's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WanStats {
    /// Changes of a watched interface's usable addresses or link.
    pub changes: u64,
    /// When the last change was seen (seconds since the epoch).
    pub last_change: Option<i64>,
    /// Which interface changed last.
    pub last_change_interface: Option<String>,
    /// Flushes run.
    pub flushes: u64,
    /// Flushes that failed (retried later).
    pub failed_flushes: u64,
    /// Flows deleted, all flushes together.
    pub flows_deleted: u64,
    /// Selected flows that were already gone (ENOENT).
    pub already_gone: u64,
    /// Deletes the kernel refused.
    pub delete_errors: u64,
    /// Dumps of links and addresses after an overrun or a new device.
    pub resyncs: u64,
    /// The last flush.
    pub last_flush: Option<LastFlush>,
}

impl WanStats {
    /// Counts a change seen at `wall` (seconds since the epoch).
    pub fn record_change(&mut self, wall: i64, c: &Change) {
        self.changes += 1;
        self.last_change = Some(wall);
        self.last_change_interface = Some(c.interface.clone());
    }

    /// Counts a resync.
    pub fn record_resync(&mut self) {
        self.resyncs += 1;
    }

    /// Counts a flush that ran (`Ok`) or failed (`Err` with the reason).
    pub fn record_flush(
        &mut self,
        wall: i64,
        order: &FlushOrder,
        result: Result<&FlushReport, String>,
    ) {
        self.flushes += 1;
        let mut last = LastFlush {
            at: wall,
            mode: order.rule.mode().as_str(),
            lost: order.rule.lost().to_vec(),
            interfaces: order.interfaces.clone(),
            ..LastFlush::default()
        };
        match result {
            Ok(r) => {
                self.flows_deleted += r.deleted;
                self.already_gone += r.already_gone;
                self.delete_errors += r.errors;
                last.report = r.clone();
            }
            Err(e) => {
                self.failed_flushes += 1;
                last.error = Some(e);
            }
        }
        self.last_flush = Some(last);
    }

    /// Appends the `wan` section of `ctrackd -s`, in conntrackd's layout
    /// (heading, then tab-indented label and right-aligned value).
    pub fn write_text(&self, out: &mut Vec<u8>, ifaces: &[IfaceStatus]) {
        out.extend_from_slice(b"wan:\n");
        for i in ifaces {
            out.extend_from_slice(b"\tinterface ");
            out.extend_from_slice(i.name.as_bytes());
            out.extend_from_slice(match (i.index, i.up) {
                (None, _) => b":\tabsent",
                (Some(_), true) => b":\tup",
                (Some(_), false) => b":\tdown",
            });
            for a in &i.addrs {
                out.push(b' ');
                push_ip(out, *a);
            }
            out.push(b'\n');
        }
        let row = |out: &mut Vec<u8>, label: &str, v: u64| {
            out.push(b'\t');
            out.extend_from_slice(label.as_bytes());
            out.push(b':');
            let mut num = Vec::new();
            push_u64(&mut num, v);
            let pad = 32usize.saturating_sub(label.len() + 1 + num.len()).max(1);
            out.resize(out.len() + pad, b' ');
            out.extend_from_slice(&num);
            out.push(b'\n');
        };
        row(out, "changes seen", self.changes);
        row(out, "flushes", self.flushes);
        row(out, "flows deleted", self.flows_deleted);
        row(out, "already gone", self.already_gone);
        row(out, "delete errors", self.delete_errors);
        row(out, "failed flushes", self.failed_flushes);
        row(out, "resyncs", self.resyncs);
        out.extend_from_slice(b"\tlast change:\t");
        match (self.last_change, &self.last_change_interface) {
            (Some(t), iface) => {
                push_ctime(out, t);
                if let Some(i) = iface {
                    out.extend_from_slice(b" (");
                    out.extend_from_slice(i.as_bytes());
                    out.push(b')');
                }
            }
            (None, _) => out.extend_from_slice(b"never"),
        }
        out.push(b'\n');
        out.extend_from_slice(b"\tlast flush:\t");
        match &self.last_flush {
            None => out.extend_from_slice(b"never"),
            Some(l) => {
                push_ctime(out, l.at);
                out.extend_from_slice(b" ");
                out.extend_from_slice(l.mode.as_bytes());
                for (n, a) in l.lost.iter().enumerate() {
                    out.extend_from_slice(if n == 0 { b" of " } else { b", " });
                    push_ip(out, *a);
                }
                match &l.error {
                    Some(e) => {
                        out.extend_from_slice(b": failed: ");
                        out.extend_from_slice(e.as_bytes());
                    }
                    None => {
                        let r = &l.report;
                        out.extend_from_slice(b": ");
                        push_u64(out, r.deleted);
                        out.extend_from_slice(b" deleted, ");
                        push_u64(out, r.already_gone);
                        out.extend_from_slice(b" already gone, ");
                        push_u64(out, r.errors);
                        out.extend_from_slice(b" errors (");
                        push_u64(out, r.elapsed.as_millis() as u64);
                        out.extend_from_slice(b" ms)");
                    }
                }
            }
        }
        out.extend_from_slice(b"\n\n");
    }

    /// Appends the stats as one JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>, ifaces: &[IfaceStatus]) {
        let num = |out: &mut Vec<u8>, key: &str, v: u64| {
            push_str(out, key);
            out.push(b':');
            push_u64(out, v);
            out.push(b',');
        };
        let ips = |out: &mut Vec<u8>, v: &[IpAddr]| {
            out.push(b'[');
            for (n, a) in v.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                let mut s = Vec::new();
                push_ip(&mut s, *a);
                push_str(out, &String::from_utf8_lossy(&s));
            }
            out.push(b']');
        };
        out.push(b'{');
        num(out, "changes", self.changes);
        num(out, "flushes", self.flushes);
        num(out, "flows_deleted", self.flows_deleted);
        num(out, "already_gone", self.already_gone);
        num(out, "delete_errors", self.delete_errors);
        num(out, "failed_flushes", self.failed_flushes);
        num(out, "resyncs", self.resyncs);
        if let Some(t) = self.last_change {
            num(out, "last_change", t.max(0) as u64);
        }
        if let Some(i) = &self.last_change_interface {
            push_str(out, "last_change_interface");
            out.push(b':');
            push_str(out, i);
            out.push(b',');
        }
        push_str(out, "interfaces");
        out.extend_from_slice(b":[");
        for (n, i) in ifaces.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'{');
            push_str(out, "name");
            out.push(b':');
            push_str(out, &i.name);
            out.push(b',');
            if let Some(x) = i.index {
                num(out, "index", x as u64);
            }
            push_str(out, "up");
            out.extend_from_slice(if i.up { b":true," } else { b":false," });
            push_str(out, "addresses");
            out.push(b':');
            ips(out, &i.addrs);
            out.push(b'}');
        }
        out.push(b']');
        if let Some(l) = &self.last_flush {
            out.push(b',');
            push_str(out, "last_flush");
            out.extend_from_slice(b":{");
            num(out, "at", l.at.max(0) as u64);
            push_str(out, "mode");
            out.push(b':');
            push_str(out, l.mode);
            out.push(b',');
            push_str(out, "lost");
            out.push(b':');
            ips(out, &l.lost);
            out.push(b',');
            push_str(out, "interfaces");
            out.extend_from_slice(b":[");
            for (n, i) in l.interfaces.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                push_str(out, i);
            }
            out.extend_from_slice(b"],");
            let r = &l.report;
            num(out, "selected", r.selected);
            num(out, "deleted", r.deleted);
            num(out, "already_gone", r.already_gone);
            num(out, "errors", r.errors);
            num(out, "ms", r.elapsed.as_millis() as u64);
            push_str(out, "kernel_filter");
            out.extend_from_slice(if r.kernel_filtered {
                b":true"
            } else {
                b":false"
            });
            if let Some(e) = &l.error {
                out.push(b',');
                push_str(out, "error");
                out.push(b':');
                push_str(out, e);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wan::config::FlushMode;
    use crate::wan::rule::Rule;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample() -> (WanStats, Vec<IfaceStatus>) {
        let mut s = WanStats::default();
        let c = Change {
            interface: "wan0".into(),
            added: vec![ip("10.9.2.3")],
            removed: vec![ip("10.9.2.1")],
            link: None,
        };
        s.record_change(100, &c);
        s.record_change(200, &c);
        let order = FlushOrder {
            rule: Rule::new(FlushMode::Stale, &[ip("10.9.2.1")], &[ip("10.9.2.3")]),
            interfaces: vec!["wan0".into()],
            retry: false,
        };
        let report = FlushReport {
            selected: 4,
            deleted: 3,
            already_gone: 1,
            ..FlushReport::default()
        };
        s.record_flush(201, &order, Ok(&report));
        s.record_flush(300, &order, Err("Operation not permitted".into()));
        let ifaces = vec![IfaceStatus {
            name: "wan0".into(),
            index: Some(2),
            up: true,
            addrs: vec![ip("10.9.2.3"), ip("fd09:3::1")],
        }];
        (s, ifaces)
    }

    #[test]
    fn counts() {
        let (s, _) = sample();
        assert_eq!(s.changes, 2);
        assert_eq!(s.last_change, Some(200));
        assert_eq!(s.flushes, 2);
        assert_eq!(s.failed_flushes, 1);
        assert_eq!(
            (s.flows_deleted, s.already_gone, s.delete_errors),
            (3, 1, 0)
        );
    }

    #[test]
    fn text_rendering() {
        let (s, ifaces) = sample();
        let mut out = Vec::new();
        s.write_text(&mut out, &ifaces);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("wan:\n\tinterface wan0:\tup 10.9.2.3 fd09:3::1\n"));
        assert!(
            text.contains("\tchanges seen:                  2\n"),
            "{text}"
        );
        assert!(
            text.contains("\tflows deleted:                 3\n"),
            "{text}"
        );
        assert!(text.contains(" (wan0)\n"));
        assert!(text.contains("stale of 10.9.2.1: failed: Operation not permitted\n"));
        let mut out = Vec::new();
        WanStats::default().write_text(&mut out, &[]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("last change:\tnever\n\tlast flush:\tnever\n"));
    }

    #[test]
    fn json_rendering_parses() {
        let (s, ifaces) = sample();
        let mut out = Vec::new();
        s.write_json(&mut out, &ifaces);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["changes"], 2);
        assert_eq!(v["flows_deleted"], 3);
        assert_eq!(v["interfaces"][0]["addresses"][1], "fd09:3::1");
        assert_eq!(v["last_flush"]["lost"][0], "10.9.2.1");
        assert_eq!(v["last_flush"]["error"], "Operation not permitted");
        let mut out = Vec::new();
        WanStats::default().write_json(&mut out, &[]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["flushes"], 0);
        assert!(v.get("last_flush").is_none());
    }
}
