//! ctrackd's configuration: conntrackd.conf's grammar (so existing files
//! work) plus ctrack's own blocks (`Web`, `WAN`, `Auth`).
//!
//! Parsing is in two steps: the text becomes a tree of [`Item`]s (a key, its
//! arguments, maybe a block), then the tree is checked against what ctrackd
//! implements. Unknown keys and bad values are errors naming file, line and
//! key; conntrackd keys that ctrackd does not implement give a one-line
//! warning and are ignored.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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

/// A configuration error: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when not about one line).
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One configuration statement: `Key arg...` or `Key arg... { items }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The keyword.
    pub key: String,
    /// Arguments on the same line.
    pub args: Vec<String>,
    /// 1-based line of the keyword.
    pub line: usize,
    /// The block's items, for block statements.
    pub block: Option<Vec<Item>>,
}

impl Item {
    /// The items of this statement's block (empty for a plain statement).
    pub fn items(&self) -> &[Item] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

fn lex(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.split('#').next().unwrap_or("");
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<(Tok, usize)>| {
            if !word.is_empty() {
                out.push((Tok::Word(std::mem::take(word)), line_no));
            }
        };
        for c in line.chars() {
            match c {
                '{' => {
                    flush(&mut word, &mut out);
                    out.push((Tok::Open, line_no));
                }
                '}' => {
                    flush(&mut word, &mut out);
                    out.push((Tok::Close, line_no));
                }
                ';' => flush(&mut word, &mut out),
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
        out.push((Tok::Newline, line_no));
    }
    out
}

/// Parses configuration text into statements (no meaning checked yet).
pub fn parse_items(file: &str, text: &str) -> Result<Vec<Item>, ConfigError> {
    let toks = lex(text);
    let mut pos = 0;
    let items = parse_block(file, &toks, &mut pos, 0)?;
    Ok(items)
}

fn parse_block(
    file: &str,
    toks: &[(Tok, usize)],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<Item>, ConfigError> {
    let err = |line, msg: String| ConfigError {
        file: file.to_string(),
        line,
        msg,
    };
    if depth > 8 {
        return Err(err(
            toks.get(*pos).map_or(0, |t| t.1),
            "blocks nested too deeply".into(),
        ));
    }
    let mut items = Vec::new();
    while let Some((tok, line)) = toks.get(*pos) {
        match tok {
            Tok::Newline => *pos += 1,
            Tok::Close => {
                if depth == 0 {
                    return Err(err(*line, "unexpected `}'".into()));
                }
                *pos += 1;
                return Ok(items);
            }
            Tok::Open => return Err(err(*line, "`{' without a keyword before it".into())),
            Tok::Word(key) => {
                let mut item = Item {
                    key: key.clone(),
                    args: Vec::new(),
                    line: *line,
                    block: None,
                };
                *pos += 1;
                // arguments, then maybe a block opened on this or the next line
                loop {
                    match toks.get(*pos) {
                        Some((Tok::Word(w), l)) if *l == item.line => {
                            item.args.push(w.clone());
                            *pos += 1;
                        }
                        Some((Tok::Newline, _)) => {
                            // a `{` alone on the next line still opens a block
                            let mut look = *pos;
                            while let Some((Tok::Newline, _)) = toks.get(look) {
                                look += 1;
                            }
                            if let Some((Tok::Open, _)) = toks.get(look) {
                                *pos = look;
                                continue;
                            }
                            break;
                        }
                        Some((Tok::Open, _)) => {
                            *pos += 1;
                            item.block = Some(parse_block(file, toks, pos, depth + 1)?);
                            // words after the closing brace on its line belong to
                            // this statement (`State Accept { ... } for TCP`)
                            let close_line = toks.get(*pos - 1).map_or(0, |t| t.1);
                            while let Some((Tok::Word(w), l)) = toks.get(*pos) {
                                if *l != close_line {
                                    break;
                                }
                                item.args.push(w.clone());
                                *pos += 1;
                            }
                            break;
                        }
                        _ => break,
                    }
                }
                items.push(item);
            }
        }
    }
    if depth > 0 {
        return Err(err(
            toks.last().map_or(0, |t| t.1),
            "missing `}' at the end of the file".into(),
        ));
    }
    Ok(items)
}

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

/// What a key's value must look like.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Uint,
    Path,
    Addr,
    Word,
    /// A block with these keys.
    Block(&'static [Key]),
    /// Known to conntrackd, ignored by ctrackd (warning).
    Ignored,
}

/// A known key: name, value kind.
type Key = (&'static str, Kind);

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

struct Checker<'a> {
    file: &'a str,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn err(&self, it: &Item, msg: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: it.line,
            msg,
        }
    }

    fn warn_ignored(&mut self, it: &Item) {
        self.warnings.push(format!(
            "{}:{}: `{}' is a conntrackd setting that ctrackd ignores",
            self.file, it.line, it.key
        ));
    }

    /// Checks every item of a block against `keys`.
    fn check(&mut self, block: &str, items: &[Item], keys: &[Key]) -> Result<(), ConfigError> {
        for it in items {
            let Some((_, kind)) = keys.iter().find(|(k, _)| *k == it.key) else {
                return Err(self.err(it, format!("unknown key `{}' in {block}", it.key)));
            };
            self.check_value(it, *kind)?;
        }
        Ok(())
    }

    fn check_value(&mut self, it: &Item, kind: Kind) -> Result<(), ConfigError> {
        let one = |c: &Self| -> Result<&str, ConfigError> {
            if it.block.is_some() {
                return Err(c.err(it, format!("`{}' takes a value, not a block", it.key)));
            }
            match it.args.as_slice() {
                [v] => Ok(v.as_str()),
                [] => Err(c.err(it, format!("`{}' needs a value", it.key))),
                _ => Err(c.err(it, format!("`{}' takes one value", it.key))),
            }
        };
        match kind {
            Kind::Ignored => self.warn_ignored(it),
            Kind::Bool => {
                let v = one(self)?;
                parse_bool(v).ok_or_else(|| {
                    self.err(
                        it,
                        format!("bad value `{v}' for `{}': use on or off", it.key),
                    )
                })?;
            }
            Kind::Uint => {
                let v = one(self)?;
                v.parse::<u64>().map_err(|_| {
                    self.err(
                        it,
                        format!("bad value `{v}' for `{}': not a number", it.key),
                    )
                })?;
            }
            Kind::Path => {
                let v = one(self)?;
                if !v.starts_with('/') {
                    return Err(self.err(
                        it,
                        format!("bad value `{v}' for `{}': must be an absolute path", it.key),
                    ));
                }
            }
            Kind::Addr => {
                let v = one(self)?;
                Prefix::parse(v)
                    .ok_or_else(|| self.err(it, format!("bad address `{v}' for `{}'", it.key)))?;
            }
            Kind::Word => {
                one(self)?;
            }
            Kind::Block(keys) => {
                let Some(items) = &it.block else {
                    return Err(self.err(it, format!("`{}' needs a {{ ... }} block", it.key)));
                };
                self.check(&it.key, items, keys)?;
            }
        }
        Ok(())
    }
}

/// Parses `on|off|yes|no` (any case).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" => Some(true),
        "off" | "no" => Some(false),
        _ => None,
    }
}

fn single<'a>(c: &Checker, it: &'a Item) -> Result<&'a str, ConfigError> {
    match it.args.as_slice() {
        [v] if it.block.is_none() => Ok(v),
        _ => Err(c.err(it, format!("`{}' takes one value", it.key))),
    }
}

fn uint(c: &Checker, it: &Item, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v = single(c, it)?;
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(c.err(
            it,
            format!(
                "bad value `{v}' for `{}': expected a number from {min} to {max}",
                it.key
            ),
        )),
    }
}

fn path(c: &Checker, it: &Item) -> Result<PathBuf, ConfigError> {
    let v = single(c, it)?;
    if !v.starts_with('/') {
        return Err(c.err(
            it,
            format!("bad value `{v}' for `{}': must be an absolute path", it.key),
        ));
    }
    Ok(PathBuf::from(v))
}

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
                c.warnings.push(format!(
                    "{}:{}: `Filter From Kernelspace' is applied in userspace by ctrackd",
                    c.file, it.line
                ));
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
                            .or_else(|| crate::cli::args::protocol_number(name))
                            .ok_or_else(|| {
                                c.err(p, format!("unknown protocol `{name}' in Filter"))
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
                        return Err(c.err(a, format!("unknown key `{}' in Address", a.key)));
                    }
                    let v = single(c, a)?;
                    let p = Prefix::parse(v)
                        .filter(|p| p.addr.is_ipv4() == (a.key == "IPv4_address"))
                        .ok_or_else(|| c.err(a, format!("bad address `{v}' for `{}'", a.key)))?;
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
                            c.err(s, format!("unknown TCP state `{word}' in Filter"))
                        })?;
                        list.push(n);
                    }
                }
                // `State ... { } for TCP` puts the suffix after the block
                f.states = Some((accept, list));
            }
            _ => return Err(c.err(x, format!("unknown key `{}' in Filter", x.key))),
        }
    }
    Ok(f)
}

fn parse_general(c: &mut Checker, it: &Item) -> Result<General, ConfigError> {
    let mut g = General::default();
    for x in it.items() {
        match x.key.as_str() {
            "HashSize" => g.hash_size = uint(c, x, 1, 1 << 24)? as u32,
            "HashLimit" => g.hash_limit = uint(c, x, 1, 1 << 26)? as u32,
            "LogFile" => {
                let v = single(c, x)?;
                g.log.file = match parse_bool(v) {
                    Some(true) => Some(PathBuf::from(DEFAULT_LOGFILE)),
                    Some(false) => None,
                    None => Some(path(c, x)?),
                };
            }
            "Syslog" => {
                let v = single(c, x)?;
                g.log.syslog = match parse_bool(v) {
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
                                format!("bad value `{v}' for `Syslog': use on, off, daemon, user or local0..local7"),
                            ));
                        }
                        Some(v.to_string())
                    }
                };
            }
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
            "NetlinkEventsReliable" => {
                let v = single(c, x)?;
                g.events_reliable = parse_bool(v).ok_or_else(|| {
                    c.err(
                        x,
                        format!("bad value `{v}' for `NetlinkEventsReliable': use on or off"),
                    )
                })?;
            }
            "Filter" => g.filter = parse_filter(c, x)?,
            "ResyncInterval" => g.resync_interval = uint(c, x, 0, 86400)? as u32,
            "Systemd"
            | "Nice"
            | "PollSecs"
            | "EventIterationLimit"
            | "IPv4_interface"
            | "IPv6_interface" => c.warn_ignored(x),
            "Scheduler" => c.check_value(x, Kind::Block(SCHEDULER_KEYS))?,
            _ => return Err(c.err(x, format!("unknown key `{}' in General", x.key))),
        }
    }
    if g.netlink_buffer_size > g.netlink_buffer_max {
        g.netlink_buffer_max = g.netlink_buffer_size;
    }
    Ok(g)
}

#[cfg(feature = "web")]
fn web_config(c: &Checker, it: &Item) -> Result<crate::web::WebConfig, ConfigError> {
    let mut w = crate::web::WebConfig::default();
    for x in it.items() {
        match x.key.as_str() {
            "Address" => {
                let v = single(c, x)?;
                w.address = v.parse().map_err(|_| {
                    c.err(
                        x,
                        format!("bad value `{v}' for `Address': an IPv4 or IPv6 address"),
                    )
                })?;
            }
            "Port" => w.port = uint(c, x, 1, 65535)? as u16,
            "TokenFile" => w.token_file = Some(path(c, x)?),
            "ReadTokenFile" => w.read_token_file = Some(path(c, x)?),
            "ServerName" => w.server_names.push(single(c, x)?.to_string()),
            "CounterInterval" => {
                w.counter_interval = std::time::Duration::from_secs(uint(c, x, 0, 3600)?)
            }
            "DHCPLeases" => w.dhcp_leases = Some(path(c, x)?),
            "Hosts" => w.hosts = Some(path(c, x)?),
            "MaxConnections" => w.limits.max_conns = uint(c, x, 1, 100)? as usize,
            "Workers" => w.limits.workers = uint(c, x, 1, 64)? as usize,
            _ => {}
        }
    }
    Ok(w)
}

#[cfg(feature = "wan")]
fn wan_config(c: &Checker, it: &Item) -> Result<crate::wan::config::WanConfig, ConfigError> {
    let mut w = crate::wan::config::WanConfig::default();
    for x in it.items() {
        let v = single(c, x)?;
        w.set(&x.key, v).map_err(|e| c.err(x, e))?;
    }
    w.validate().map_err(|e| c.err(it, e))?;
    Ok(w)
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
    let mut c = Checker {
        file,
        warnings: Vec::new(),
    };
    let mut cfg = Config {
        path: PathBuf::from(file),
        general: General::default(),
        sync: None,
        web: None,
        wan: None,
        auth: None,
        #[cfg(feature = "web")]
        web_config: None,
        #[cfg(feature = "wan")]
        wan_config: None,
        #[cfg(feature = "sync")]
        sync_config: None,
        warnings: Vec::new(),
    };
    let mut seen_general = false;
    for it in &items {
        if it.block.is_none() {
            return Err(c.err(
                it,
                format!("`{}' must be a block: {} {{ ... }}", it.key, it.key),
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
                    cfg.web_config = Some(web_config(&c, it)?);
                }
                cfg.web = Some(it.clone());
            }
            "WAN" => {
                dup(&c, cfg.wan.is_some())?;
                c.check("WAN", it.items(), WAN_KEYS)?;
                require(&c, it, cfg!(feature = "wan"), "the WAN flush", "wan")?;
                #[cfg(feature = "wan")]
                {
                    cfg.wan_config = Some(wan_config(&c, it)?);
                }
                cfg.wan = Some(it.clone());
            }
            "Auth" => {
                dup(&c, cfg.auth.is_some())?;
                c.check("Auth", it.items(), AUTH_KEYS)?;
                cfg.auth = Some(it.clone());
            }
            "Stats" | "Helper" => c.warn_ignored(it),
            _ => return Err(c.err(it, format!("unknown block `{}'", it.key))),
        }
    }
    if let Some(sync) = &cfg.sync {
        require(&c, sync, cfg!(feature = "sync"), "sync", "sync")?;
        #[cfg(feature = "sync")]
        {
            cfg.sync_config = Some(sync_config(&mut c, sync, cfg.auth.as_ref())?);
        }
    } else if let Some(a) = &cfg.auth {
        return Err(c.err(
            a,
            "`Auth' applies to Sync, but there is no Sync block".into(),
        ));
    }
    cfg.warnings = c.warnings;
    Ok(cfg)
}

#[cfg(feature = "sync")]
fn sync_config(
    c: &mut Checker,
    it: &Item,
    auth: Option<&Item>,
) -> Result<crate::sync::config::SyncConfig, ConfigError> {
    use crate::sync::config::{AuthConfig, LinkConfig, ModeKind, SyncConfig};
    let mut s = SyncConfig::default();
    let mut mode_seen = false;
    let flag = |c: &Checker, x: &Item| -> Result<bool, ConfigError> {
        let v = single(c, x)?;
        parse_bool(v)
            .ok_or_else(|| c.err(x, format!("bad value `{v}' for `{}': use on or off", x.key)))
    };
    // settings allowed both in `Mode X { }` and directly in `Sync { }`
    let common = |c: &Checker, s: &mut SyncConfig, x: &Item| -> Result<bool, ConfigError> {
        match x.key.as_str() {
            "ResendQueueSize" => s.resend_queue_size = uint(c, x, 1, 1 << 24)? as usize,
            "ACKWindowSize" => s.ack_window_size = uint(c, x, 1, 1 << 20)? as u32,
            "RefreshTime" => s.refresh_time = uint(c, x, 1, 86400)? as u32,
            "CacheTimeout" => s.cache_timeout = uint(c, x, 1, 86400 * 7)? as u32,
            "CommitTimeout" => s.commit_timeout = Some(uint(c, x, 1, 86400 * 30)? as u32),
            "PurgeTimeout" => s.purge_timeout = uint(c, x, 1, 86400)? as u32,
            "DisableExternalCache" => s.disable_external_cache = flag(c, x)?,
            "DisableInternalCache" => s.disable_internal_cache = flag(c, x)?,
            "StartupResync" => s.startup_resync = flag(c, x)?,
            _ => return Ok(false),
        }
        Ok(true)
    };
    for x in it.items() {
        if common(c, &mut s, x)? {
            continue;
        }
        match x.key.as_str() {
            "Mode" => {
                if mode_seen {
                    return Err(c.err(x, "a second `Mode' in Sync".into()));
                }
                mode_seen = true;
                let m = x.args.first().map(|m| m.to_ascii_lowercase());
                s.mode = match m.as_deref() {
                    Some("ftfw") => ModeKind::Ftfw,
                    Some("nack") => {
                        c.warnings.push(format!(
                            "{}:{}: `Mode NACK' is the old name of FTFW",
                            c.file, x.line
                        ));
                        ModeKind::Ftfw
                    }
                    Some("notrack") => ModeKind::Notrack,
                    Some("alarm") => ModeKind::Alarm,
                    Some("persistent") => {
                        c.warnings.push(format!(
                            "{}:{}: `Mode PERSISTENT' is the old name of ALARM",
                            c.file, x.line
                        ));
                        ModeKind::Alarm
                    }
                    _ => {
                        return Err(c.err(x, "`Mode' needs FTFW, NOTRACK or ALARM".into()));
                    }
                };
                for y in x.items() {
                    if !common(c, &mut s, y)? && y.key != "ResendBufferSize" && y.key != "Window" {
                        return Err(c.err(y, format!("unknown key `{}' in Mode", y.key)));
                    }
                }
            }
            "UDP" | "Multicast" => {
                let default = match x.args.as_slice() {
                    [] => false,
                    [d] if d == "Default" => true,
                    _ => return Err(c.err(x, format!("expected `{} [Default] {{'", x.key))),
                };
                let items = x.items();
                let addr = |key: &str| addr_value(items, key);
                let iface = value(items, "Interface").unwrap_or("").to_string();
                let port = match items.iter().find(|y| y.key == "Port" || y.key == "Group") {
                    Some(y) => uint(c, y, 1, 65535)? as u16,
                    None => 3780,
                };
                let mut link = if x.key == "UDP" {
                    let peer = addr("IPv4_Destination_Address")
                        .or_else(|| addr("IPv6_Destination_Address"))
                        .ok_or_else(|| {
                            c.err(x, "UDP link without IPv4_Destination_Address".into())
                        })?;
                    let local = addr("IPv4_address").or_else(|| addr("IPv6_address"));
                    LinkConfig::udp(local, peer, port, &iface)
                } else {
                    let group = match addr("IPv4_address") {
                        Some(IpAddr::V4(g)) => g,
                        _ => {
                            return Err(c.err(
                                x,
                                "Multicast link without an IPv4_address (the group); IPv6 multicast is not supported".into(),
                            ));
                        }
                    };
                    let ifaddr = match addr("IPv4_interface") {
                        Some(IpAddr::V4(a)) => a,
                        _ => return Err(c.err(x, "Multicast link without IPv4_interface".into())),
                    };
                    LinkConfig::multicast(group, port, ifaddr, &iface)
                };
                link.default = default;
                for y in items {
                    match y.key.as_str() {
                        "SndSocketBuffer" => {
                            link.snd_buffer = Some(uint(c, y, 1024, 1 << 30)? as usize)
                        }
                        "RcvSocketBuffer" => {
                            link.rcv_buffer = Some(uint(c, y, 1024, 1 << 30)? as usize)
                        }
                        "Checksum" => link.checksum = flag(c, y)?,
                        "CheckSourceAddress" => link.check_source = flag(c, y)?,
                        "MTU" => link.mtu = Some(uint(c, y, 576, 65535)? as usize),
                        _ => {}
                    }
                }
                s.links.push(link);
            }
            "TCP" => {
                return Err(c.err(
                    x,
                    "TCP sync links are not supported, use UDP or Multicast".into(),
                ));
            }
            "Options" => {
                for y in x.items() {
                    if y.key == "TCPWindowTracking" {
                        s.tcp_window_tracking = flag(c, y)?;
                    }
                }
            }
            "Checksum" => {
                let on = flag(c, x)?;
                for l in &mut s.links {
                    l.checksum = on;
                }
            }
            "PeerEndianness" => {
                s.peer_endianness = match single(c, x)? {
                    "little" => crate::sync::wire::ct::QuirkOrder::Little,
                    "big" => crate::sync::wire::ct::QuirkOrder::Big,
                    v => {
                        return Err(c.err(
                            x,
                            format!("bad value `{v}' for `PeerEndianness': use little or big"),
                        ));
                    }
                };
            }
            _ => return Err(c.err(x, format!("unknown key `{}' in Sync", x.key))),
        }
    }
    if !mode_seen {
        c.warnings.push(format!(
            "{}:{}: no synchronization mode specified, defaulting to FTFW",
            c.file, it.line
        ));
    }
    if let Some(a) = auth
        && let Some(k) = value(a.items(), "KeyFile")
    {
        s.auth = Some(AuthConfig {
            key_file: PathBuf::from(k),
        });
    }
    let warnings = s.validate().map_err(|e| c.err(it, e))?;
    for w in warnings {
        c.warnings.push(format!("{}:{}: {w}", c.file, it.line));
    }
    Ok(s)
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

/// Looks up a plain `Key value` statement in a block's items.
pub fn value<'a>(items: &'a [Item], key: &str) -> Option<&'a str> {
    items
        .iter()
        .find(|i| i.key == key)
        .and_then(|i| i.args.first())
        .map(String::as_str)
}

/// An address value (`IPv4_address 10.0.0.1`) of a block's items.
pub fn addr_value(items: &[Item], key: &str) -> Option<IpAddr> {
    value(items, key).and_then(Prefix::parse).map(|p| p.addr)
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
            addr_value(c.web.unwrap().items(), "Address"),
            Some("192.168.1.1".parse().unwrap())
        );
        // Backlog, Nice, PollSecs, EventIterationLimit, Type, Priority, Stats
        assert_eq!(c.warnings.len(), 7, "{:#?}", c.warnings);
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
