//! Host names for addresses: dnsmasq's lease file (`/tmp/dhcp.leases`) and
//! a hosts file (`/etc/hosts` format), reloaded when either file changes.
//!
//! Names come from outside (a DHCP client picks its own name), so they are
//! only ever written through the JSON string escaper, and the page puts
//! them into the DOM as text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Files larger than this are read only up to this size.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest name kept (DNS names are at most 253 bytes).
const MAX_NAME_BYTES: usize = 253;
/// How often the files' modification times are checked.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Address to name.
#[derive(Debug, Default, Clone)]
pub struct Names {
    map: HashMap<IpAddr, Box<str>>,
}

impl Names {
    /// The name of `a`, if one is known.
    pub fn get(&self, a: &IpAddr) -> Option<&str> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(a).map(|s| &**s)
    }

    /// True when no names are known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of known names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds names from dnsmasq's lease file text: `expiry mac ip name
    /// client-id` (IPv6 leases: `expiry iaid ip name duid`; a `duid` line
    /// and a `*` name are skipped). Existing names are kept.
    pub fn add_leases(&mut self, text: &str) {
        for line in text.lines() {
            let w: Vec<&str> = line.split_ascii_whitespace().collect();
            if w.len() < 4 {
                continue;
            }
            // the name is everything between the address and the client
            // id (dnsmasq writes one word; a name with blanks stays whole)
            let last = if w.len() > 4 { w.len() - 1 } else { w.len() };
            let name = w[3..last].join(" ");
            if let Ok(ip) = w[2].parse::<IpAddr>() {
                self.insert(ip, &name);
            }
        }
    }

    /// Adds names from hosts-file text: `address name [aliases...]`, `#`
    /// comments. Existing names are kept.
    pub fn add_hosts(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut w = line.split_ascii_whitespace();
            let (Some(ip), Some(name)) = (w.next(), w.next()) else {
                continue;
            };
            if let Ok(ip) = ip.parse::<IpAddr>() {
                self.insert(ip, name);
            }
        }
    }

    fn insert(&mut self, ip: IpAddr, name: &str) {
        if name == "*" || name.is_empty() || ip.is_unspecified() || ip.is_loopback() {
            return;
        }
        let mut end = name.len().min(MAX_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        self.map.entry(ip).or_insert_with(|| name[..end].into());
    }
}

#[derive(Debug)]
struct Loaded {
    names: Arc<Names>,
    stamps: [Option<SystemTime>; 2],
    checked: Option<Instant>,
}

/// The configured name sources with the last loaded table; cheap to ask
/// (a clone of an `Arc`), reloaded at most once a second when a file's
/// modification time changed.
#[derive(Debug)]
pub struct NameCache {
    leases: Option<PathBuf>,
    hosts: Option<PathBuf>,
    state: Mutex<Loaded>,
}

fn stamp(p: &Option<PathBuf>) -> Option<SystemTime> {
    p.as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// A file's text, at most [`MAX_FILE_BYTES`] of it, lossy UTF-8 (empty
/// when it cannot be read).
pub(super) fn read_capped(p: &Path) -> String {
    use std::io::Read;
    let mut s = Vec::new();
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(MAX_FILE_BYTES).read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

impl NameCache {
    /// A cache over the lease file and hosts file (either may be absent).
    pub fn new(leases: Option<PathBuf>, hosts: Option<PathBuf>) -> NameCache {
        NameCache {
            leases,
            hosts,
            state: Mutex::new(Loaded {
                names: Arc::new(Names::default()),
                stamps: [None, None],
                checked: None,
            }),
        }
    }

    /// The current table, reloading it first if a file changed.
    pub fn get(&self) -> Arc<Names> {
        let Ok(mut st) = self.state.lock() else {
            return Arc::new(Names::default());
        };
        if self.leases.is_none() && self.hosts.is_none() {
            return st.names.clone();
        }
        let now = Instant::now();
        if st.checked.is_some_and(|t| now.duration_since(t) < RECHECK) {
            return st.names.clone();
        }
        st.checked = Some(now);
        let stamps = [stamp(&self.hosts), stamp(&self.leases)];
        if stamps != st.stamps || st.names.is_empty() {
            let mut n = Names::default();
            // the administrator's hosts file wins over names clients chose
            if let Some(h) = &self.hosts {
                n.add_hosts(&read_capped(h));
            }
            if let Some(l) = &self.leases {
                n.add_leases(&read_capped(l));
            }
            st.names = Arc::new(n);
            st.stamps = stamps;
        }
        st.names.clone()
    }

    /// The table as last loaded, without checking the files (for the
    /// event path, which must not touch the file system).
    pub fn current(&self) -> Arc<Names> {
        match self.state.lock() {
            Ok(st) => st.names.clone(),
            Err(_) => Arc::new(Names::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_and_hosts() {
        let mut n = Names::default();
        n.add_hosts("# comment\n10.0.0.5 nas nas.lan\n\n127.0.0.1 localhost\nbad line\n");
        n.add_leases(
            "1700000000 aa:bb:cc:dd:ee:ff 10.0.0.7 laptop 01:aa:bb\n\
             1700000000 aa:bb:cc:dd:ee:00 10.0.0.8 * *\n\
             duid 00:01:00:01\n\
             1700000000 1234 fd00::7 phone 00:01\n\
             1700000000 aa:bb:cc:dd:ee:01 10.0.0.5 other 01\n\
             1700000000 aa:bb:cc:dd:ee:02 10.0.0.6 <img src=x onerror=alert(1)> 01:02\n\
             truncated 10.0.0.9\n",
        );
        assert_eq!(n.get(&"10.0.0.5".parse().unwrap()), Some("nas"));
        assert_eq!(n.get(&"10.0.0.7".parse().unwrap()), Some("laptop"));
        assert_eq!(n.get(&"fd00::7".parse().unwrap()), Some("phone"));
        assert_eq!(n.get(&"10.0.0.8".parse().unwrap()), None);
        assert_eq!(n.get(&"127.0.0.1".parse().unwrap()), None);
        assert_eq!(
            n.get(&"10.0.0.6".parse().unwrap()),
            Some("<img src=x onerror=alert(1)>")
        );
        assert_eq!(n.len(), 4);
    }

    #[test]
    fn long_and_odd_names_are_kept_safely() {
        let mut n = Names::default();
        let long = "é".repeat(300);
        n.add_leases(&format!(
            "1 m 10.1.1.1 {long} x\n1 m 10.1.1.2 <img/src=x> x\n"
        ));
        let got = n.get(&"10.1.1.1".parse().unwrap()).unwrap();
        assert!(got.len() <= MAX_NAME_BYTES);
        assert_eq!(n.get(&"10.1.1.2".parse().unwrap()), Some("<img/src=x>"));
    }
}
