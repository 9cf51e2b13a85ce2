//! ctrackd's configuration: conntrackd.conf's blocks (so existing files
//! work) plus ctrack's own (`Web`, `WAN`, `Auth`).
//!
//! Parsing is in two steps: the text becomes a tree of [`Item`]s (a key, its
//! arguments, maybe a block; the grammar is [`crate::conf`]), then the tree
//! is checked against what ctrackd implements: here, which blocks and keys
//! exist (also for rooms left out of the build), the `General` block with
//! its `Filter`; each room reads its own block (`SyncConfig::from_block`,
//! `WebConfig::from_block`, `WanConfig::from_block`). Unknown keys and bad
//! values are errors naming file, line and key; conntrackd keys that
//! ctrackd does not implement give a one-line warning and are ignored.

use std::path::{Path, PathBuf};

use crate::conf::{Checker, Key, Kind, flag, parse_bool, parse_items, path, shown, single, uint};
pub use crate::conf::{ConfigError, Item};
use crate::flow::filter::Prefix;
use crate::flow::{names, proto};

/// Default config path.
pub const DEFAULT_PATH: &str = "/etc/ctrack/ctrackd.conf";
/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/var/run/ctrackd.ctl";
/// Default lock file.
pub const DEFAULT_LOCKFILE: &str = "/var/lock/ctrackd.lock";
/// Default pid file (written with `-d`).
pub const DEFAULT_PIDFILE: &str = "/var/run/ctrackd.pid";
/// Log file used for `LogFile on`.
pub const DEFAULT_LOGFILE: &str = "/var/log/ctrackd.log";

/// Where the daemon logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `LogFile /path` (or `on`: the default path).
    pub file: Option<PathBuf>,
    /// `Syslog on|daemon|local0..7`: the facility name.
    pub syslog: Option<String>,
    /// `SyslogSocket /path` (ctrack): the syslog socket instead of /dev/log.
    pub socket: Option<PathBuf>,
}

/// Log file used for `Stats { LogFile on }`.
pub const DEFAULT_STATS_LOGFILE: &str = "/var/log/ctrackd-stats.log";

/// How Stats mode writes a destroyed flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatsFormat {
    /// conntrackd's line: the time (ctime), a tab, the flow in
    /// conntrack's text without its timeout.
    #[default]
    Text,
    /// One JSON object a line (ctrack's `-o json` fields plus `time`).
    Json,
}

/// conntrackd's `Stats` block: flow accounting, a line for every flow
/// the kernel destroys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsConfig {
    /// `LogFile on|off|/path` (on: [`DEFAULT_STATS_LOGFILE`]).
    pub file: Option<PathBuf>,
    /// `Syslog on|off|facility`: the facility (lines at priority info).
    pub syslog: Option<String>,
    /// `LogFormat text|json` (ctrack).
    pub format: StatsFormat,
}

/// conntrackd's `Filter` block: which flows the cache keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheFilter {
    /// `Protocol Accept|Ignore { ... }`: (accept, protocol numbers).
    pub protocols: Option<(bool, Vec<u8>)>,
    /// `Address Accept|Ignore { IPv4_address ...; IPv6_address ... }`.
    pub addresses: Option<(bool, Vec<Prefix>)>,
    /// `State Accept|Ignore { ... } for TCP`: (accept, TCP states).
    pub states: Option<(bool, Vec<u8>)>,
}

impl CacheFilter {
    /// True when the cache should keep this flow (conntrackd's semantics:
    /// addresses are matched on the original source or the reply source,
    /// states only apply to TCP).
    pub fn accepts(&self, f: &crate::flow::Flow) -> bool {
        if let Some((accept, list)) = &self.protocols {
            if list.contains(&f.orig.proto) != *accept {
                return false;
            }
        }
        if let Some((accept, list)) = &self.addresses {
            let hit = list
                .iter()
                .any(|p| p.contains(f.orig.src) || (f.has_reply && p.contains(f.reply.src)));
            if hit != *accept {
                return false;
            }
        }
        if let Some((accept, list)) = &self.states
            && f.orig.proto == proto::TCP
            && let Some(s) = f.protoinfo.tcp_state()
            && list.contains(&s) != *accept
        {
            return false;
        }
        true
    }
}

/// The `General` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct General {
    /// `HashSize`: initial index size.
    pub hash_size: u32,
    /// `HashLimit`: most flows the cache holds.
    pub hash_limit: u32,
    /// Logging targets.
    pub log: LogConfig,
    /// `LockFile`.
    pub lock_file: PathBuf,
    /// `PidFile` (ctrack): written when daemonized with `-d`.
    pub pid_file: PathBuf,
    /// `UNIX { Path }`: the control socket.
    pub unix_path: PathBuf,
    /// `NetlinkBufferSize`: event socket receive buffer (bytes).
    pub netlink_buffer_size: usize,
    /// `NetlinkBufferSizeMaxGrowth`: how far overruns may grow it.
    pub netlink_buffer_max: usize,
    /// `NetlinkOverrunResync`: seconds of quiet after an overrun before
    /// the resync dump (None: off).
    pub overrun_resync: Option<u32>,
    /// `NetlinkEventsReliable`.
    pub events_reliable: bool,
    /// `ResyncInterval` (ctrack): seconds between safety-net resyncs that
    /// catch what events missed (0: off).
    pub resync_interval: u32,
    /// The `Filter` block.
    pub filter: CacheFilter,
}

impl Default for General {
    fn default() -> Self {
        General {
            hash_size: 65536,
            hash_limit: 262144,
            log: LogConfig::default(),
            lock_file: PathBuf::from(DEFAULT_LOCKFILE),
            pid_file: PathBuf::from(DEFAULT_PIDFILE),
            unix_path: PathBuf::from(DEFAULT_SOCKET),
            netlink_buffer_size: 2 << 20,
            netlink_buffer_max: 64 << 20,
            overrun_resync: Some(5),
            events_reliable: false,
            resync_interval: 120,
            filter: CacheFilter::default(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The `General` block.
    pub general: General,
    /// The `Sync` block, checked for known keys; the sync module reads it.
    pub sync: Option<Item>,
    /// The `Web` block (ctrack).
    pub web: Option<Item>,
    /// The `WAN` block (ctrack).
    pub wan: Option<Item>,
    /// The `Auth` block (ctrack, for sync).
    pub auth: Option<Item>,
    /// The `Stats` block: Stats mode (never with `Sync`).
    pub stats: Option<StatsConfig>,
    /// The `Web` block as the web server's settings.
    #[cfg(feature = "web")]
    pub web_config: Option<crate::web::WebConfig>,
    /// The `Sync` (and `Auth`) blocks as the sync engine's settings.
    #[cfg(feature = "sync")]
    pub sync_config: Option<crate::sync::config::SyncConfig>,
    /// The `WAN` block as the WAN watch's settings.
    #[cfg(feature = "wan")]
    pub wan_config: Option<crate::wan::config::WanConfig>,
    /// One-line warnings about ignored conntrackd keys.
    pub warnings: Vec<String>,
}

// Which keys each block may hold, and their kinds: the schema every block
// is checked against before it is read. The rooms' blocks (Sync, Web,
// WAN, Auth) are here too, not in the rooms, so that a build without a
// room still names a misspelt key before it refuses the block; the rooms
// read the values (`SyncConfig::from_block`, ...).

const UNIX_KEYS: &[Key] = &[("Path", Kind::Path), ("Backlog", Kind::Ignored)];
const SCHEDULER_KEYS: &[Key] = &[("Type", Kind::Ignored), ("Priority", Kind::Ignored)];

const MODE_KEYS: &[Key] = &[
    ("ResendQueueSize", Kind::Uint),
    ("CommitTimeout", Kind::Uint),
    ("PurgeTimeout", Kind::Uint),
    ("ACKWindowSize", Kind::Uint),
    ("DisableExternalCache", Kind::Bool),
    ("DisableInternalCache", Kind::Bool),
    ("StartupResync", Kind::Bool),
    ("RefreshTime", Kind::Uint),
    ("CacheTimeout", Kind::Uint),
    ("ResendBufferSize", Kind::Ignored),
    ("Window", Kind::Ignored),
];

const LINK_KEYS: &[Key] = &[
    ("IPv4_address", Kind::Addr),
    ("IPv6_address", Kind::Addr),
    ("IPv4_Destination_Address", Kind::Addr),
    ("IPv6_Destination_Address", Kind::Addr),
    ("IPv4_interface", Kind::Addr),
    ("IPv6_interface", Kind::Ignored),
    ("Port", Kind::Uint),
    ("Group", Kind::Uint),
    ("Interface", Kind::Word),
    ("SndSocketBuffer", Kind::Uint),
    ("RcvSocketBuffer", Kind::Uint),
    ("Checksum", Kind::Bool),
    ("ErrorQueueLength", Kind::Uint),
    ("CheckSourceAddress", Kind::Bool),
    ("MTU", Kind::Uint),
];

const OPTIONS_KEYS: &[Key] = &[
    ("TCPWindowTracking", Kind::Bool),
    ("ExpectationSync", Kind::Ignored),
];

const SYNC_KEYS: &[Key] = &[
    ("Mode", Kind::Block(MODE_KEYS)),
    ("UDP", Kind::Block(LINK_KEYS)),
    ("Multicast", Kind::Block(LINK_KEYS)),
    ("TCP", Kind::Block(LINK_KEYS)),
    ("Options", Kind::Block(OPTIONS_KEYS)),
    ("ResendQueueSize", Kind::Uint),
    ("CommitTimeout", Kind::Uint),
    ("PurgeTimeout", Kind::Uint),
    ("ACKWindowSize", Kind::Uint),
    ("DisableExternalCache", Kind::Bool),
    ("DisableInternalCache", Kind::Bool),
    ("RefreshTime", Kind::Uint),
    ("CacheTimeout", Kind::Uint),
    ("Checksum", Kind::Bool),
    ("StartupResync", Kind::Bool),
    ("PeerEndianness", Kind::Word),
];

const WEB_KEYS: &[Key] = &[
    ("Address", Kind::Addr),
    ("Port", Kind::Uint),
    ("TokenFile", Kind::Path),
    ("ReadTokenFile", Kind::Path),
    ("ServerName", Kind::Word),
    ("CounterInterval", Kind::Uint),
    ("DHCPLeases", Kind::Path),
    ("Hosts", Kind::Path),
    ("MaxConnections", Kind::Uint),
    ("Workers", Kind::Uint),
];

const WAN_KEYS: &[Key] = &[
    ("Interface", Kind::Word),
    ("Debounce", Kind::Uint),
    ("Flush", Kind::Word),
];

const AUTH_KEYS: &[Key] = &[("KeyFile", Kind::Path)];

const STATS_KEYS: &[Key] = &[
    ("LogFile", Kind::Word),
    ("Syslog", Kind::Word),
    ("NetlinkEventsReliable", Kind::Bool),
    ("LogFormat", Kind::Word),
];

fn accept_ignore(c: &Checker, it: &Item) -> Result<bool, ConfigError> {
    match it.args.first().map(String::as_str) {
        Some("Accept") => Ok(true),
        Some("Ignore") => Ok(false),
        _ => Err(c.err(it, format!("`{}' needs Accept or Ignore", it.key))),
    }
}

fn parse_filter(c: &mut Checker, it: &Item) -> Result<CacheFilter, ConfigError> {
    match it.args.as_slice() {
        [] => {}
        [from, where_] if from == "From" && (where_ == "Userspace" || where_ == "Kernelspace") => {
            if where_ == "Kernelspace" {
                c.warn(
                    it,
                    "`Filter From Kernelspace' is applied in userspace by ctrackd",
                );
            }
        }
        _ => {
            return Err(c.err(
                it,
                "expected `Filter [From Userspace|Kernelspace] {'".into(),
            ));
        }
    }
    let mut f = CacheFilter::default();
    for x in it.items() {
        match x.key.as_str() {
            "Protocol" => {
                let accept = accept_ignore(c, x)?;
                let mut list = Vec::new();
                for p in x.items() {
                    for name in std::iter::once(&p.key).chain(&p.args) {
                        let num = names::l4_by_name(name)
                            .or_else(|| crate::protocols::number(name))
                            .ok_or_else(|| {
                                c.err(p, format!("unknown protocol `{}' in Filter", shown(name)))
                            })?;
                        list.push(num);
                    }
                }
                f.protocols = Some((accept, list));
            }
            "Address" => {
                let accept = accept_ignore(c, x)?;
                let mut list = Vec::new();
                for a in x.items() {
                    if a.key != "IPv4_address" && a.key != "IPv6_address" {
                        return Err(c.err(a, format!("unknown key `{}' in Address", shown(&a.key))));
                    }
                    let v = single(c, a)?;
                    let p = Prefix::parse(v)
                        .filter(|p| p.addr.is_ipv4() == (a.key == "IPv4_address"))
                        .ok_or_else(|| {
                            c.err(a, format!("bad address `{}' for `{}'", shown(v), a.key))
                        })?;
                    list.push(p);
                }
                f.addresses = Some((accept, list));
            }
            "State" => {
                let accept = accept_ignore(c, x)?;
                match x.args.get(1..).unwrap_or(&[]) {
                    [] => {}
                    [a, b] if a == "for" && b.eq_ignore_ascii_case("TCP") => {}
                    _ => {
                        return Err(
                            c.err(x, "expected `State Accept|Ignore { ... } for TCP'".into())
                        );
                    }
                }
                let mut list = Vec::new();
                for s in x.items() {
                    for word in std::iter::once(&s.key).chain(&s.args) {
                        let name = if word == "CLOSED" {
                            "CLOSE"
                        } else {
                            word.as_str()
                        };
                        let n = names::tcp_state_by_name(name).ok_or_else(|| {
                            c.err(s, format!("unknown TCP state `{}' in Filter", shown(word)))
                        })?;
                        list.push(n);
                    }
                }
                // `State ... { } for TCP` puts the suffix after the block
                f.states = Some((accept, list));
            }
            _ => return Err(c.err(x, format!("unknown key `{}' in Filter", shown(&x.key)))),
        }
    }
    Ok(f)
}

/// `LogFile on|off|/path`: `on` is `default`.
fn log_file(c: &Checker, x: &Item, default: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(match parse_bool(single(c, x)?) {
        Some(true) => Some(PathBuf::from(default)),
        Some(false) => None,
        None => Some(path(c, x)?),
    })
}

/// `Syslog on|off|daemon|user|local0..7`: the facility (`on`: daemon).
fn syslog_facility(c: &Checker, x: &Item) -> Result<Option<String>, ConfigError> {
    let v = single(c, x)?;
    Ok(match parse_bool(v) {
        Some(true) => Some("daemon".into()),
        Some(false) => None,
        None => {
            let ok = v == "daemon"
                || v == "user"
                || (v.len() == 6
                    && v.starts_with("local")
                    && (b'0'..=b'7').contains(&v.as_bytes()[5]));
            if !ok {
                return Err(c.err(
                    x,
                    format!(
                        "bad value `{}' for `Syslog': use on, off, daemon, user or local0..local7",
                        shown(v)
                    ),
                ));
            }
            Some(v.to_string())
        }
    })
}

/// The `Stats` block; `reliable` is set by its `NetlinkEventsReliable on`
/// (the man page's place for it: destroy events must not be lost).
fn parse_stats(c: &Checker, it: &Item, reliable: &mut bool) -> Result<StatsConfig, ConfigError> {
    let mut s = StatsConfig::default();
    for x in it.items() {
        match x.key.as_str() {
            "LogFile" => s.file = log_file(c, x, DEFAULT_STATS_LOGFILE)?,
            "Syslog" => s.syslog = syslog_facility(c, x)?,
            "NetlinkEventsReliable" => *reliable |= flag(c, x)?,
            "LogFormat" => {
                s.format = match single(c, x)? {
                    "text" => StatsFormat::Text,
                    "json" => StatsFormat::Json,
                    v => {
                        return Err(c.err(
                            x,
                            format!("bad value `{}' for `LogFormat': use text or json", shown(v)),
                        ));
                    }
                }
            }
            // the table checked the keys
            _ => {}
        }
    }
    Ok(s)
}

fn parse_general(c: &mut Checker, it: &Item) -> Result<General, ConfigError> {
    let mut g = General::default();
    for x in it.items() {
        match x.key.as_str() {
            "HashSize" => g.hash_size = uint(c, x, 1, 1 << 24)? as u32,
            "HashLimit" => g.hash_limit = uint(c, x, 1, 1 << 26)? as u32,
            "LogFile" => g.log.file = log_file(c, x, DEFAULT_LOGFILE)?,
            "Syslog" => g.log.syslog = syslog_facility(c, x)?,
            "LockFile" => g.lock_file = path(c, x)?,
            "PidFile" => g.pid_file = path(c, x)?,
            "SyslogSocket" => g.log.socket = Some(path(c, x)?),
            "UNIX" => {
                c.check_value(x, Kind::Block(UNIX_KEYS))?;
                for u in x.items() {
                    if u.key == "Path" {
                        let p = path(c, u)?;
                        if p.as_os_str().len() > 107 {
                            return Err(
                                c.err(u, "the UNIX socket path is longer than 107 bytes".into())
                            );
                        }
                        g.unix_path = p;
                    }
                }
            }
            "NetlinkBufferSize" | "SocketBufferSize" => {
                g.netlink_buffer_size = uint(c, x, 4096, 1 << 30)? as usize
            }
            "NetlinkBufferSizeMaxGrowth"
            | "SocketBufferSizeMaxGrown"
            | "SocketBufferSizeMaxGrowth" => {
                g.netlink_buffer_max = uint(c, x, 4096, 1 << 30)? as usize
            }
            "NetlinkOverrunResync" => {
                let v = single(c, x)?;
                g.overrun_resync = match parse_bool(v) {
                    Some(true) => Some(30),
                    Some(false) => None,
                    None => Some(uint(c, x, 0, 86400)? as u32),
                };
            }
            "NetlinkEventsReliable" => g.events_reliable = flag(c, x)?,
            "Filter" => g.filter = parse_filter(c, x)?,
            "ResyncInterval" => g.resync_interval = uint(c, x, 0, 86400)? as u32,
            "Systemd"
            | "Nice"
            | "PollSecs"
            | "EventIterationLimit"
            | "IPv4_interface"
            | "IPv6_interface" => c.warn_ignored(x),
            "Scheduler" => c.check_value(x, Kind::Block(SCHEDULER_KEYS))?,
            _ => return Err(c.err(x, format!("unknown key `{}' in General", shown(&x.key)))),
        }
    }
    if g.netlink_buffer_size > g.netlink_buffer_max {
        g.netlink_buffer_max = g.netlink_buffer_size;
    }
    Ok(g)
}

/// Refuses a block whose feature this build leaves out.
fn require(
    c: &Checker,
    it: &Item,
    built: bool,
    what: &str,
    feature: &str,
) -> Result<(), ConfigError> {
    if built {
        return Ok(());
    }
    Err(c.err(
        it,
        format!("this ctrackd is built without {what} (cargo feature \"{feature}\")"),
    ))
}

/// Parses and checks configuration text.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let items = parse_items(file, text)?;
    let mut c = Checker::new(file);
    let mut cfg = Config {
        path: PathBuf::from(file),
        general: General::default(),
        sync: None,
        web: None,
        wan: None,
        auth: None,
        stats: None,
        #[cfg(feature = "web")]
        web_config: None,
        #[cfg(feature = "wan")]
        wan_config: None,
        #[cfg(feature = "sync")]
        sync_config: None,
        warnings: Vec::new(),
    };
    let mut seen_general = false;
    let mut stats_item = None;
    for it in &items {
        if it.block.is_none() {
            return Err(c.err(
                it,
                format!("`{0}' must be a block: {0} {{ ... }}", shown(&it.key)),
            ));
        }
        let dup = |c: &Checker, slot: bool| {
            if slot {
                Err(c.err(it, format!("a second `{}' block", it.key)))
            } else {
                Ok(())
            }
        };
        match it.key.as_str() {
            "General" => {
                dup(&c, seen_general)?;
                seen_general = true;
                cfg.general = parse_general(&mut c, it)?;
            }
            "Sync" => {
                dup(&c, cfg.sync.is_some())?;
                c.check("Sync", it.items(), SYNC_KEYS)?;
                cfg.sync = Some(it.clone());
            }
            "Web" => {
                dup(&c, cfg.web.is_some())?;
                c.check("Web", it.items(), WEB_KEYS)?;
                require(&c, it, cfg!(feature = "web"), "the web server", "web")?;
                #[cfg(feature = "web")]
                {
                    cfg.web_config = Some(crate::web::WebConfig::from_block(&c, it)?);
                }
                cfg.web = Some(it.clone());
            }
            "WAN" => {
                dup(&c, cfg.wan.is_some())?;
                c.check("WAN", it.items(), WAN_KEYS)?;
                require(&c, it, cfg!(feature = "wan"), "the WAN flush", "wan")?;
                #[cfg(feature = "wan")]
                {
                    cfg.wan_config = Some(crate::wan::config::WanConfig::from_block(&c, it)?);
                }
                cfg.wan = Some(it.clone());
            }
            "Auth" => {
                dup(&c, cfg.auth.is_some())?;
                c.check("Auth", it.items(), AUTH_KEYS)?;
                cfg.auth = Some(it.clone());
            }
            "Stats" => {
                dup(&c, stats_item.is_some())?;
                c.check("Stats", it.items(), STATS_KEYS)?;
                stats_item = Some(it);
            }
            "Helper" => c.warn_ignored(it),
            _ => return Err(c.err(it, format!("unknown block `{}'", shown(&it.key)))),
        }
    }
    if let Some(it) = stats_item {
        if cfg.sync.is_some() {
            return Err(c.err(
                it,
                "cannot use both `Stats' and `Sync' clauses in the configuration".into(),
            ));
        }
        let mut reliable = false;
        cfg.stats = Some(parse_stats(&c, it, &mut reliable)?);
        cfg.general.events_reliable |= reliable;
    }
    if let Some(sync) = &cfg.sync {
        require(&c, sync, cfg!(feature = "sync"), "sync", "sync")?;
        #[cfg(feature = "sync")]
        {
            let mut s =
                crate::sync::config::SyncConfig::from_block(&mut c, sync, cfg.auth.as_ref())?;
            s.external_limit = cfg.general.hash_limit as usize;
            cfg.sync_config = Some(s);
        }
    } else if let Some(a) = &cfg.auth {
        return Err(c.err(
            a,
            "`Auth' applies to Sync, but there is no Sync block".into(),
        ));
    }
    cfg.warnings = c.into_warnings();
    Ok(cfg)
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        msg: format!("cannot read the configuration: {e}"),
    })?;
    parse(&file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sync")]
    const DEBIAN_LIKE: &str = r#"
# a conntrackd.conf like Debian's example
Sync {
	Mode FTFW {
		DisableExternalCache Off
		CommitTimeout 1800
		PurgeTimeout 5
	}
	UDP {
		IPv4_address 192.168.2.100
		IPv4_Destination_Address 192.168.2.101
		Port 3780
		Interface eth2
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	Systemd on
	HashSize 32768
	HashLimit 131072
	LogFile on
	Syslog on
	LockFile /var/lock/conntrack.lock
	UNIX {
		Path /var/run/conntrackd.ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
			SCTP
			DCCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1 # loopback
			IPv4_address 192.168.0.0/16
			IPv6_address ::1
		}
	}
}
"#;

    #[test]
    #[cfg(feature = "sync")]
    fn parses_a_conntrackd_config() {
        let c = parse("t.conf", DEBIAN_LIKE).unwrap();
        assert_eq!(c.general.hash_size, 32768);
        assert_eq!(
            c.general.unix_path,
            PathBuf::from("/var/run/conntrackd.ctl")
        );
        assert_eq!(
            c.general.lock_file,
            PathBuf::from("/var/lock/conntrack.lock")
        );
        assert_eq!(c.general.log.file, Some(PathBuf::from(DEFAULT_LOGFILE)));
        assert_eq!(c.general.log.syslog.as_deref(), Some("daemon"));
        assert_eq!(c.general.netlink_buffer_max, 8388608);
        let f = &c.general.filter;
        assert_eq!(f.protocols, Some((true, vec![6, 132, 33])));
        assert_eq!(f.addresses.as_ref().unwrap().1.len(), 3);
        assert!(c.sync.is_some());
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("t.conf:20: `Systemd'"));
    }

    fn err(text: &str) -> String {
        parse("x.conf", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        assert_eq!(
            err("General {\n Bogus 1\n}\n"),
            "x.conf:2: unknown key `Bogus' in General"
        );
        assert_eq!(
            err("General {\n HashSize lots\n}"),
            "x.conf:2: bad value `lots' for `HashSize': expected a number from 1 to 16777216"
        );
        assert_eq!(
            err("General {\n LockFile rel/path\n}"),
            "x.conf:2: bad value `rel/path' for `LockFile': must be an absolute path"
        );
        assert_eq!(err("Nonsense {\n}"), "x.conf:1: unknown block `Nonsense'");
        assert_eq!(
            err("General {\n"),
            "x.conf:1: missing `}' at the end of the file"
        );
        assert_eq!(err("}"), "x.conf:1: unexpected `}'");
        assert_eq!(
            err("Sync {\n UDP {\n  Port many\n }\n}"),
            "x.conf:3: bad value `many' for `Port': not a number"
        );
        assert_eq!(
            err("Web {\n Address 1.2.3\n}"),
            "x.conf:2: bad address `1.2.3' for `Address'"
        );
        assert_eq!(
            err("General {\n Filter {\n  Protocol Accept {\n   NOPE\n  }\n }\n}"),
            "x.conf:4: unknown protocol `NOPE' in Filter"
        );
        assert_eq!(
            err("General {\n Syslog local9\n}"),
            "x.conf:2: bad value `local9' for `Syslog': use on, off, daemon, user or local0..local7"
        );
        assert_eq!(
            err("General {\n}\nGeneral {\n}"),
            "x.conf:3: a second `General' block"
        );
    }

    #[test]
    #[cfg(feature = "web")]
    fn web_access_and_counter_keys() {
        let c = parse(
            "c",
            "Web {\n Address 192.168.1.1\n ServerName router.lan\n ServerName openwrt\n \
             CounterInterval 10\n ReadTokenFile /etc/ctrack/read.token\n}\n",
        )
        .unwrap();
        let w = c.web_config.unwrap();
        assert_eq!(w.server_names, vec!["router.lan", "openwrt"]);
        assert_eq!(w.counter_interval, std::time::Duration::from_secs(10));
        assert_eq!(
            w.read_token_file,
            Some(PathBuf::from("/etc/ctrack/read.token"))
        );
        assert!(
            err("Web {\n CounterInterval 3601\n}").contains("CounterInterval"),
            "{}",
            err("Web {\n CounterInterval 3601\n}")
        );
    }

    #[test]
    #[cfg(all(feature = "web", feature = "wan"))]
    fn every_general_key() {
        let c = parse(
            "c",
            "General {\n HashSize 10\n HashLimit 20\n LogFile /tmp/l\n Syslog local3\n LockFile /tmp/lock\n \
             UNIX { Path /tmp/s\n Backlog 20 }\n SocketBufferSize 8192\n SocketBufferSizeMaxGrown 16384\n \
             NetlinkOverrunResync off\n NetlinkEventsReliable on\n Nice -1\n PollSecs 10\n \
             EventIterationLimit 200\n Scheduler { Type RR\n Priority 99 }\n \
             Filter { State Ignore { SYN_SENT CLOSED } for TCP }\n}\n\
             WAN {\n Interface wan\n Interface wwan\n Debounce 500\n Flush stale\n}\n\
             Web { Address 192.168.1.1\n Port 8080 }\nStats {\n}\n",
        )
        .unwrap();
        let g = &c.general;
        assert_eq!((g.hash_size, g.hash_limit), (10, 20));
        assert_eq!(g.log.syslog.as_deref(), Some("local3"));
        assert_eq!(g.unix_path, PathBuf::from("/tmp/s"));
        assert_eq!((g.netlink_buffer_size, g.netlink_buffer_max), (8192, 16384));
        assert_eq!(g.overrun_resync, None);
        assert!(g.events_reliable);
        assert_eq!(g.filter.states, Some((false, vec![1, 8])));
        assert_eq!(c.wan.unwrap().items().len(), 4);
        assert_eq!(
            crate::conf::addr_value(c.web.unwrap().items(), "Address"),
            Some("192.168.1.1".parse().unwrap())
        );
        // Backlog, Nice, PollSecs, EventIterationLimit, Type, Priority
        assert_eq!(c.warnings.len(), 6, "{:#?}", c.warnings);
        assert_eq!(c.stats, Some(StatsConfig::default()));
    }

    #[test]
    #[cfg(feature = "sync")]
    fn filter_semantics() {
        let c = parse("c", DEBIAN_LIKE).unwrap();
        let f = &c.general.filter;
        let mut flow = crate::flow::testutil::tcp4();
        assert!(f.accepts(&flow));
        flow.orig.src = "192.168.1.1".parse().unwrap();
        assert!(!f.accepts(&flow));
        flow.orig.src = "10.0.0.1".parse().unwrap();
        flow.orig.proto = proto::UDP;
        assert!(!f.accepts(&flow));
    }

    #[test]
    fn stats_block() {
        let c = parse(
            "c",
            "Stats {\n LogFile on\n Syslog local2\n NetlinkEventsReliable on\n LogFormat json\n}\n",
        )
        .unwrap();
        assert_eq!(
            c.stats,
            Some(StatsConfig {
                file: Some(PathBuf::from(DEFAULT_STATS_LOGFILE)),
                syslog: Some("local2".into()),
                format: StatsFormat::Json,
            })
        );
        assert!(c.general.events_reliable);
        let c = parse("c", "Stats {\n LogFile /tmp/s.log\n Syslog off\n}\n").unwrap();
        let s = c.stats.unwrap();
        assert_eq!(s.file, Some(PathBuf::from("/tmp/s.log")));
        assert_eq!((s.syslog, s.format), (None, StatsFormat::Text));
        assert!(!c.general.events_reliable);
        assert_eq!(
            err("Stats {\n LogFormat xml\n}"),
            "x.conf:2: bad value `xml' for `LogFormat': use text or json"
        );
        assert_eq!(
            err("Stats {\n Bogus 1\n}"),
            "x.conf:2: unknown key `Bogus' in Stats"
        );
        assert_eq!(
            err("Stats {\n}\nStats {\n}"),
            "x.conf:3: a second `Stats' block"
        );
    }

    #[test]
    #[cfg(feature = "sync")]
    fn stats_and_sync_exclude_each_other() {
        let e = err(&format!("{DEBIAN_LIKE}\nStats {{\n LogFile on\n}}\n"));
        assert!(
            e.ends_with("cannot use both `Stats' and `Sync' clauses in the configuration"),
            "{e}"
        );
    }

    #[test]
    fn several_addresses_on_one_line() {
        // as shipped configs write them (conntrackd's grammar ignores lines)
        let c = parse(
            "c",
            "General {\n Filter { Address Ignore { IPv4_address 127.0.0.1 IPv4_address 192.168.0.0/16 IPv6_address ::1 } }\n}\n",
        )
        .unwrap();
        let (accept, list) = c.general.filter.addresses.unwrap();
        assert!(!accept);
        assert_eq!(list.len(), 3);
        assert_eq!(
            err("General {\n Filter { Address Ignore { IPv4_address 1.2.3.4 IPv4_address } }\n}"),
            "x.conf:2: `IPv4_address' takes one value"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "{{{{",
            "}}}}",
            "General { UNIX { Path } }",
            "A B C {",
            "General\n{\nHashSize\n}",
            "\u{0}\u{ff}",
        ];
        for i in inputs {
            let _ = parse("g", i);
        }
    }
}
