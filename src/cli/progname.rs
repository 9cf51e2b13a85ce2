//! The program behind a netlink port id, for the `[USERSPACE] ...
//! progname=` suffix of `-E`: found in /proc as conntrack does.

use std::io::{Read, Seek};

/// Finds the program that owns a netlink port id, as conntrack's
/// `[USERSPACE] ... progname=` does, remembering the last answer.
pub struct ProgNames {
    netlink: Option<std::fs::File>,
    last: Option<(u32, u64, Option<String>)>,
    /// The last answer and when it was found: a burst of events from one
    /// program (a `conntrack -R` of 200k lines) is not one /proc scan each.
    recent: Option<(u32, std::time::Instant, Option<String>)>,
}

impl ProgNames {
    /// A lookup in `netns`'s /proc/net/netlink (none when it cannot be
    /// read: every name is then unknown).
    pub fn new(netns: Option<&str>) -> ProgNames {
        let open = || std::fs::File::open("/proc/thread-self/net/netlink");
        let netlink = match netns {
            Some(n) => crate::netlink::socket::in_netns(n, open).ok(),
            None => open().ok(),
        };
        ProgNames {
            netlink,
            last: None,
            recent: None,
        }
    }

    /// The command name of the process owning netlink port `portid`, if
    /// found; `now` (the time of the batch of events being printed) says
    /// whether the last answer is recent enough to give again.
    pub fn name(&mut self, portid: u32, now: std::time::Instant) -> Option<&str> {
        let fresh = matches!(&self.recent, Some((p, at, _))
            if *p == portid && now.duration_since(*at) < std::time::Duration::from_millis(200));
        if !fresh {
            let n = self.lookup(portid);
            self.recent = Some((portid, now, n));
        }
        self.recent.as_ref().and_then(|(_, _, n)| n.as_deref())
    }

    /// Finds the socket's inode in /proc/net/netlink, then its owner.
    fn lookup(&mut self, portid: u32) -> Option<String> {
        let f = self.netlink.as_mut()?;
        f.rewind().ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        let inode = text.lines().skip(1).find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let proto: i32 = w.get(1)?.parse().ok()?;
            let pid: u32 = w.get(2)?.parse().ok()?;
            let inode: u64 = w.get(9)?.parse().ok()?;
            (proto == 12 && pid == portid).then_some(inode)
        })?;
        if let Some((p, i, n)) = &self.last
            && *p == portid
            && *i == inode
        {
            return n.clone();
        }
        let name = find_socket_owner(portid, inode);
        self.last = Some((portid, inode, name.clone()));
        name
    }
}

/// The command name of process `pid`.
fn comm_of(pid: u64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close).map(str::to_string)
}

/// True when process `pid` has the socket `inode` open.
fn owns_socket(pid: u64, inode: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    dir.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
}

/// The process owning socket `inode`: the one whose pid is the port id
/// (the usual case), or else the first found in /proc.
fn find_socket_owner(portid: u32, inode: u64) -> Option<String> {
    if owns_socket(portid as u64, inode) {
        return comm_of(portid as u64);
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if pid <= 1 || pid == portid as u64 {
            continue;
        }
        if owns_socket(pid, inode) {
            return comm_of(pid);
        }
    }
    None
}
