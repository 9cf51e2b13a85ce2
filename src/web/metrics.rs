//! `/metrics`: Prometheus text exposition format 0.0.4, by Prometheus's
//! conventions: every family has `# HELP` and `# TYPE`, counters end in
//! `_total`, durations in `_seconds`, byte counts in `_bytes`, and no
//! label has more values than the table has protocols and states (no
//! per-flow or per-address label). Checked with `promtool check metrics`
//! in tests/web_api.rs.
//!
//! The daemon's counters arrive as JSON (the same object `/api/v1/stats`
//! shows); [`daemon_families`] names them: a few keys are gauges (sizes,
//! states, times), every other number is a counter.

use std::collections::HashSet;

use crate::flow::addr::push_u64;
use crate::flow::names as fnames;

/// Family, protocol number and state name of a flow, for `ctrack_flows`.
pub type FlowClass = (u8, u8, &'static str);

/// Flows by class.
pub type FlowCounts = Vec<(FlowClass, u64)>;

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Prometheus text being written: each family's `# HELP` and `# TYPE`
/// once, before its samples; a name seen before is skipped.
#[derive(Default)]
pub struct Text {
    /// The text so far.
    pub out: Vec<u8>,
    seen: HashSet<String>,
}

/// Appends `s` with `[a-zA-Z0-9_]` kept and anything else as `_`.
pub fn push_name(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' {
            b
        } else {
            b'_'
        });
    }
}

/// Appends a label value, escaped (`\\`, `\"`, `\n`).
pub fn push_label_value(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

impl Text {
    /// Starts family `name` (already sanitised); false when it was
    /// written before (its samples must then be left out).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> bool {
        if !self.seen.insert(name.to_string()) {
            return false;
        }
        self.out.extend_from_slice(b"# HELP ");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b' ');
        // HELP text escapes only backslash and newline
        for b in help.bytes() {
            match b {
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                _ => self.out.push(b),
            }
        }
        self.out.extend_from_slice(b"\n# TYPE ");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(if kind == Kind::Counter {
            b" counter\n"
        } else {
            b" gauge\n"
        });
        true
    }

    /// One sample with an integer value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        self.sample_raw(name, labels, |out| push_u64(out, v));
    }

    /// One sample with any JSON number's text.
    fn sample_raw(&mut self, name: &str, labels: &[(&str, &str)], v: impl FnOnce(&mut Vec<u8>)) {
        self.out.extend_from_slice(name.as_bytes());
        if !labels.is_empty() {
            self.out.push(b'{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(k.as_bytes());
                self.out.extend_from_slice(b"=\"");
                push_label_value(&mut self.out, val);
                self.out.push(b'"');
            }
            self.out.push(b'}');
        }
        self.out.push(b' ');
        v(&mut self.out);
        self.out.push(b'\n');
    }

    /// A gauge of one sample in seconds, from milliseconds.
    pub fn seconds(&mut self, name: &str, help: &str, ms: u64) {
        if self.family(name, Kind::Gauge, help) {
            self.sample_raw(name, &[], |out| {
                push_u64(out, ms / 1000);
                out.push(b'.');
                let frac = ms % 1000;
                out.extend_from_slice(format!("{frac:03}").as_bytes());
            });
        }
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, v: u64) {
        if self.family(name, kind, help) {
            self.sample(name, &[], v);
        }
    }
}

/// `ctrack_flows{family,proto,state}`: flows by class.
pub fn flows(t: &mut Text, counts: &[(FlowClass, u64)], source: &str) {
    let help = format!("Conntrack entries by family, protocol and state ({source}).");
    if !t.family("ctrack_flows", Kind::Gauge, &help) {
        return;
    }
    for &((fam, proto, state), n) in counts {
        let name = fnames::l4_name(proto);
        let num;
        let proto_label = if name == "unknown" {
            num = proto.to_string();
            num.as_str()
        } else {
            name
        };
        t.sample(
            "ctrack_flows",
            &[
                ("family", fnames::l3_name(fam)),
                ("proto", proto_label),
                ("state", state),
            ],
            n,
        );
    }
}

/// Keys of the daemon's JSON that are gauges, with the unit suffix their
/// name gets; every other number is a counter.
const GAUGES: &[(&str, &str)] = &[
    ("active", ""),
    ("entries", ""),
    ("external", ""),
    ("memory_bytes", ""),
    ("buffer_size", "_bytes"),
    ("uptime", "_seconds"),
    ("last_change", "_timestamp_seconds"),
    ("tx", ""),
    ("rs", ""),
    ("objects", ""),
    ("up", ""),
    ("connections", ""),
    ("streams", ""),
    ("clients", ""),
    ("rows", ""),
];

/// Writes every number of the daemon's JSON `v` under `prefix`
/// (`ctrack_cache_internal_created_total`): gauges by `GAUGES`, other
/// numbers as counters, booleans as 0/1 gauges; an array of objects
/// becomes one family labelled by their `interface` or `name`; strings
/// are left out.
pub fn daemon_families(t: &mut Text, prefix: &str, v: &serde_json::Value, depth: u32) {
    use serde_json::Value;
    if depth > 4 {
        return;
    }
    let Value::Object(m) = v else { return };
    for (k, x) in m {
        let mut path = Vec::with_capacity(prefix.len() + k.len() + 1);
        path.extend_from_slice(prefix.as_bytes());
        path.push(b'_');
        push_name(&mut path, k);
        let path = String::from_utf8_lossy(&path).into_owned();
        match x {
            Value::Object(_) => daemon_families(t, &path, x, depth + 1),
            Value::Array(items) => {
                for item in items {
                    let Value::Object(o) = item else { continue };
                    let label = o
                        .get("interface")
                        .or_else(|| o.get("name"))
                        .and_then(Value::as_str);
                    let Some(label) = label else { continue };
                    for (ik, iv) in o {
                        let mut name = path.clone().into_bytes();
                        name.push(b'_');
                        push_name(&mut name, ik);
                        let name = String::from_utf8_lossy(&name).into_owned();
                        number(t, &name, ik, iv, &[("interface", label)], true);
                    }
                }
            }
            _ => number(t, &path, k, x, &[], false),
        }
    }
}

/// One number (or boolean) of the daemon's JSON as a family of one
/// sample; in a labelled group the family is shared by the group's
/// samples.
fn number(
    t: &mut Text,
    path: &str,
    key: &str,
    v: &serde_json::Value,
    labels: &[(&str, &str)],
    grouped: bool,
) {
    use serde_json::Value;
    let (name, kind, text) = match v {
        Value::Bool(b) => (path.to_string(), Kind::Gauge, (*b as u8).to_string()),
        Value::Number(n) => match GAUGES.iter().find(|(g, _)| *g == key) {
            Some((_, unit)) => {
                let name = if path.ends_with(unit) {
                    path.to_string()
                } else {
                    format!("{path}{unit}")
                };
                (name, Kind::Gauge, n.to_string())
            }
            None => (format!("{path}_total"), Kind::Counter, n.to_string()),
        },
        _ => return,
    };
    let help = format!(
        "The daemon's `{}' counter.",
        &path["ctrack_".len().min(path.len())..]
    );
    let fresh = t.family(&name, kind, &help);
    if fresh || grouped {
        t.sample_raw(&name, labels, |out| out.extend_from_slice(text.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_the_conventions() {
        let mut t = Text::default();
        let v = serde_json::json!({
            "uptime": 5,
            "cache": {"internal": {"active": 3, "created": 7, "memory_bytes": 640}},
            "netlink": {"events_received": 9, "buffer_size": 1024},
            "traffic": {"bytes": 100},
            "sync": {"mode": "FTFW", "up": true,
                     "links": [{"interface": "eth\"1", "up": false, "active": 1}, {"x": 1}]},
            "wan": {"last_change": 1700000000, "changes": 2},
            "a-b": 1.5,
        });
        daemon_families(&mut t, "ctrack", &v, 0);
        flows(
            &mut t,
            &[((2, 6, "ESTABLISHED"), 4), ((10, 200, ""), 1)],
            "test",
        );
        t.single("ctrack_table_entries", Kind::Gauge, "Entries.", 5);
        t.seconds("ctrack_d_seconds", "A duration.", 1_042);
        t.single("ctrack_table_entries", Kind::Gauge, "Entries again.", 6);
        let s = String::from_utf8(t.out).unwrap();
        for want in [
            "# TYPE ctrack_uptime_seconds gauge\nctrack_uptime_seconds 5\n",
            "# TYPE ctrack_cache_internal_active gauge\nctrack_cache_internal_active 3\n",
            "# TYPE ctrack_cache_internal_created_total counter\nctrack_cache_internal_created_total 7\n",
            "ctrack_cache_internal_memory_bytes 640\n",
            "ctrack_netlink_events_received_total 9\n",
            "ctrack_netlink_buffer_size_bytes 1024\n",
            "# TYPE ctrack_traffic_bytes_total counter\n",
            "ctrack_sync_up 1\n",
            "ctrack_sync_links_up{interface=\"eth\\\"1\"} 0\n",
            "ctrack_sync_links_active{interface=\"eth\\\"1\"} 1\n",
            "ctrack_wan_last_change_timestamp_seconds 1700000000\n",
            "ctrack_wan_changes_total 2\n",
            "ctrack_a_b_total 1.5\n",
            "ctrack_flows{family=\"ipv4\",proto=\"tcp\",state=\"ESTABLISHED\"} 4\n",
            "ctrack_flows{family=\"ipv6\",proto=\"200\",state=\"\"} 1\n",
            "ctrack_table_entries 5\n",
            "ctrack_d_seconds 1.042\n",
        ] {
            assert!(s.contains(want), "{want}\n---\n{s}");
        }
        assert!(!s.contains("FTFW") && !s.contains("interface_total"));
        assert!(!s.contains("ctrack_table_entries 6"));
        // every family has HELP and TYPE right before its samples
        let mut last_type = String::new();
        for line in s.lines() {
            if let Some(r) = line.strip_prefix("# TYPE ") {
                last_type = r.split(' ').next().unwrap().to_string();
                assert!(
                    !r.ends_with("counter") || last_type.ends_with("_total"),
                    "{line}"
                );
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, last_type, "{line}");
            }
        }
        assert_eq!(s.matches("# HELP ").count(), s.matches("# TYPE ").count());
    }

    #[test]
    fn names_and_labels_are_escaped() {
        let mut out = Vec::new();
        push_name(&mut out, "a-b.c d_9");
        assert_eq!(out, b"a_b_c_d_9");
        let mut out = Vec::new();
        push_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
        let mut t = Text::default();
        assert!(t.family("x", Kind::Counter, "a\\b\nc"));
        assert_eq!(t.out, b"# HELP x a\\\\b\\nc\n# TYPE x counter\n");
    }
}
