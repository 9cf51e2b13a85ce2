//! The `Sync { ... }` block of conntrackd.conf as plain Rust values, with
//! conntrackd 1.4.7's defaults, and [`SyncConfig::from_block`], which reads
//! them from the block the daemon's config grammar parsed. Nothing here
//! reads files (the key file is read by [`super::keyfile`]).
//!
//! ```text
//! Sync {
//!     Mode FTFW { ResendQueueSize 131072; ACKWindowSize 300; CommitTimeout 180;
//!                 PurgeTimeout 60; DisableExternalCache off; StartupResync on }
//!     UDP Default { IPv4_address 10.0.0.1; IPv4_Destination_Address 10.0.0.2;
//!                   Port 3780; Interface eth2; SndSocketBuffer 1249280;
//!                   RcvSocketBuffer 1249280; Checksum on }
//!     # or Multicast { ... }, or TCP { the keys of UDP; ErrorQueueLength 128 }
//!     Options { TCPWindowTracking off }
//!     # ctrack extensions:
//!     PeerEndianness little      # byte order of the peer's CPU (x86: little)
//!     CheckSourceAddress on      # UDP: drop datagrams not from the peer
//! }
//! Auth { KeyFile /etc/ctrack/sync.key }
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::wire::ct::QuirkOrder;
use crate::conf::{Checker, ConfigError, Item, addr_value, flag, single, uint, value};

/// Most links conntrackd accepts in one Sync block (`MULTICHANNEL_MAX`).
pub const MAX_LINKS: usize = 4;

/// The reliability mode (`Mode FTFW|NOTRACK|ALARM`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeKind {
    /// Sequence numbers, acknowledgements and retransmission (default).
    #[default]
    Ftfw,
    /// Best effort, no retransmission.
    Notrack,
    /// Every entry re-sent every RefreshTime seconds; entries expire.
    Alarm,
}

/// What kind of socket a link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `UDP { IPv4_address; IPv4_Destination_Address; Port }`.
    Udp {
        /// Local address to bind (`IPv4_address`/`IPv6_address`); None binds
        /// the wildcard address.
        local: Option<IpAddr>,
        /// The peer (`IPv4_Destination_Address`/`IPv6_Destination_Address`).
        peer: IpAddr,
        /// UDP port on both sides (`Port`, default 3780).
        port: u16,
    },
    /// `TCP { IPv4_address; IPv4_Destination_Address; Port }`: as
    /// conntrackd, a server listening on the local address for the peer's
    /// connection (what the peer sends arrives on it) and a client
    /// connecting to the peer (what we send goes on it).
    Tcp {
        /// Local address to listen on (`IPv4_address`/`IPv6_address`);
        /// None listens on the wildcard address.
        local: Option<IpAddr>,
        /// The peer to connect to (`IPv4_Destination_Address`/
        /// `IPv6_Destination_Address`).
        peer: IpAddr,
        /// TCP port on both sides (`Port`, default 3780).
        port: u16,
    },
    /// `Multicast { IPv4_address; Group; IPv4_interface }`.
    Multicast {
        /// The multicast group (`IPv4_address`, e.g. 225.0.0.50).
        group: Ipv4Addr,
        /// UDP port (`Group`, default 3780).
        port: u16,
        /// Address of the local interface to use (`IPv4_interface`).
        interface_addr: Ipv4Addr,
    },
}

/// conntrackd's `ErrorQueueLength` default: datagrams a TCP link keeps
/// while it cannot send.
pub const DEFAULT_ERROR_QUEUE: usize = 128;

/// One dedicated link (a UDP, Multicast or TCP block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Socket kind and addresses.
    pub kind: LinkKind,
    /// `Interface`: the device (its MTU sizes datagrams; it is watched
    /// for link state). Mandatory in conntrackd.
    pub interface: String,
    /// `SndSocketBuffer` (SO_SNDBUFFORCE), None = system default.
    pub snd_buffer: Option<usize>,
    /// `RcvSocketBuffer` (SO_RCVBUFFORCE), None = system default.
    pub rcv_buffer: Option<usize>,
    /// `Checksum on|off`: UDP checksums (off sets SO_NO_CHECK). Default on.
    pub checksum: bool,
    /// Written as `UDP Default { ... }`: the initially active link.
    pub default: bool,
    /// ctrack: drop datagrams whose source is not the configured peer
    /// (UDP only; `CheckSourceAddress on`).
    pub check_source: bool,
    /// ctrack: MTU to size datagrams with when the interface's cannot be
    /// read (tests); None = ask the interface.
    pub mtu: Option<usize>,
    /// TCP `ErrorQueueLength`: datagrams kept while the connection is
    /// down or busy (the oldest is dropped past it).
    pub error_queue: usize,
}

impl LinkConfig {
    /// A UDP link with conntrackd's defaults for everything else.
    pub fn udp(local: Option<IpAddr>, peer: IpAddr, port: u16, interface: &str) -> LinkConfig {
        LinkConfig {
            kind: LinkKind::Udp { local, peer, port },
            interface: interface.to_string(),
            snd_buffer: None,
            rcv_buffer: None,
            checksum: true,
            default: false,
            check_source: false,
            mtu: None,
            error_queue: DEFAULT_ERROR_QUEUE,
        }
    }

    /// A TCP link with conntrackd's defaults for everything else.
    pub fn tcp(local: Option<IpAddr>, peer: IpAddr, port: u16, interface: &str) -> LinkConfig {
        LinkConfig {
            kind: LinkKind::Tcp { local, peer, port },
            ..LinkConfig::udp(local, peer, port, interface)
        }
    }

    /// A multicast link with conntrackd's defaults for everything else.
    pub fn multicast(
        group: Ipv4Addr,
        port: u16,
        interface_addr: Ipv4Addr,
        interface: &str,
    ) -> Self {
        LinkConfig {
            kind: LinkKind::Multicast {
                group,
                port,
                interface_addr,
            },
            ..LinkConfig::udp(None, IpAddr::V4(group), port, interface)
        }
    }

    /// The peer address datagrams must come from, when checked.
    pub fn expected_source(&self) -> Option<IpAddr> {
        match (&self.kind, self.check_source) {
            (LinkKind::Udp { peer, .. } | LinkKind::Tcp { peer, .. }, true) => Some(*peer),
            _ => None,
        }
    }

    /// "UDP", "multicast" or "TCP", as conntrackd's statistics name the
    /// link.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            LinkKind::Udp { .. } => "UDP",
            LinkKind::Multicast { .. } => "multicast",
            LinkKind::Tcp { .. } => "TCP",
        }
    }

    /// Bytes of IP and transport headers taken from the MTU to size a
    /// datagram: conntrackd's 28 for UDP and 40 for TCP over IPv4; over
    /// IPv6 the IP header is 20 bytes longer.
    pub fn header_overhead(&self) -> usize {
        let (transport, v6) = match &self.kind {
            LinkKind::Udp { peer, .. } => (8, peer.is_ipv6()),
            LinkKind::Multicast { .. } => (8, false),
            LinkKind::Tcp { peer, .. } => (20, peer.is_ipv6()),
        };
        transport + if v6 { 40 } else { 20 }
    }
}

/// `Auth { KeyFile ... }` (ctrack extension): HMAC-SHA256 on every datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// File holding the shared secret (at least 16 bytes; trailing
    /// whitespace is ignored, so `head -c 32 /dev/urandom | base64` works);
    /// [`super::keyfile::load_key`] reads it.
    pub key_file: PathBuf,
}

/// The whole Sync block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// `Mode FTFW|NOTRACK|ALARM` (none given: FTFW, as conntrackd).
    pub mode: ModeKind,
    /// FTFW `ResendQueueSize`: objects kept for retransmission (131072).
    pub resend_queue_size: usize,
    /// FTFW `ACKWindowSize`: messages per acknowledgement (300).
    pub ack_window_size: u32,
    /// ALARM `RefreshTime`: seconds between refreshes of an entry (60).
    pub refresh_time: u32,
    /// ALARM `CacheTimeout`: seconds an external entry lives unrefreshed (180).
    pub cache_timeout: u32,
    /// `CommitTimeout`: timeout of committed entries; None = estimate
    /// from the synced timeout. When set, TIMEOUT is not sent.
    pub commit_timeout: Option<u32>,
    /// `PurgeTimeout`: seconds until `-t` flushes the kernel table (60).
    pub purge_timeout: u32,
    /// `DisableExternalCache`: apply received flows to the kernel at once.
    pub disable_external_cache: bool,
    /// NOTRACK `DisableInternalCache`: send events straight out.
    pub disable_internal_cache: bool,
    /// `StartupResync`: ask the peer for a full resync at start.
    pub startup_resync: bool,
    /// `Options { TCPWindowTracking }`: keep window tracking on committed
    /// TCP entries (off: they are created BE_LIBERAL) and sync wscale.
    pub tcp_window_tracking: bool,
    /// `Options { ExpectationSync }`: accepted, expectations are not
    /// synced by ctrack yet.
    pub expectation_sync: bool,
    /// The links (1 to 4, all of one kind).
    pub links: Vec<LinkConfig>,
    /// ctrack `PeerEndianness little|big`: byte order conntrackd uses for
    /// ICMP ids and NAT ports (its CPU's). Default little (x86, ARM).
    pub peer_endianness: QuirkOrder,
    /// ctrack `Auth { KeyFile }`: authenticate datagrams (conntrackd
    /// cannot talk to a peer that has this on).
    pub auth: Option<AuthConfig>,
    /// Most flows of the external cache: General's `HashLimit`, as in
    /// conntrackd (set by the daemon's config reader).
    pub external_limit: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            mode: ModeKind::Ftfw,
            resend_queue_size: 131072,
            ack_window_size: 300,
            refresh_time: 60,
            cache_timeout: 180,
            commit_timeout: None,
            purge_timeout: 60,
            disable_external_cache: false,
            disable_internal_cache: false,
            startup_resync: false,
            tcp_window_tracking: false,
            expectation_sync: false,
            links: Vec::new(),
            peer_endianness: QuirkOrder::Little,
            auth: None,
            external_limit: 262_144,
        }
    }
}

impl SyncConfig {
    /// Checks what conntrackd checks (and a little more); returns warnings
    /// to log, or the error that stops the daemon.
    pub fn validate(&mut self) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        if self.links.is_empty() {
            return Err("Sync needs a UDP, Multicast or TCP block".into());
        }
        if self.links.len() > MAX_LINKS {
            return Err(format!("too many links in Sync: at most {MAX_LINKS}"));
        }
        let first = self.links[0].kind_name();
        if self.links.iter().any(|l| l.kind_name() != first) {
            return Err("cannot mix UDP, Multicast and TCP links in Sync".into());
        }
        if first == "TCP" && self.auth.is_some() {
            // a stream keeps no datagram boundaries for the MAC to cover
            return Err("Auth works on UDP and Multicast links, not on TCP".into());
        }
        if self.links.iter().filter(|l| l.default).count() > 1 {
            return Err("more than one link marked Default in Sync".into());
        }
        for l in &self.links {
            if l.interface.is_empty() {
                return Err(format!("{} link without Interface", l.kind_name()));
            }
            if let LinkKind::Multicast { group, .. } = &l.kind
                && !group.is_multicast()
            {
                return Err(format!("{group} is not a multicast address"));
            }
        }
        if self.commit_timeout.is_some() && self.disable_external_cache {
            warnings
                .push("CommitTimeout has no effect with DisableExternalCache on: ignored".into());
            self.commit_timeout = None;
        }
        if self.disable_internal_cache && self.mode != ModeKind::Notrack {
            return Err("DisableInternalCache is only possible with Mode NOTRACK".into());
        }
        if self.expectation_sync {
            warnings.push("ExpectationSync: expectations are not synced by ctrack".into());
        }
        if self.ack_window_size == 0 {
            self.ack_window_size = 300;
        }
        if self.resend_queue_size == 0 {
            self.resend_queue_size = 131072;
        }
        if self.refresh_time == 0 {
            self.refresh_time = 60;
        }
        if self.cache_timeout == 0 {
            self.cache_timeout = 180;
        }
        if self.purge_timeout == 0 {
            self.purge_timeout = 60;
        }
        Ok(warnings)
    }

    /// Reads the `Sync` block `it` and the `Auth` block; warnings (old
    /// mode names, no mode, what [`SyncConfig::validate`] says) go to `c`,
    /// errors name the file, line and key.
    pub fn from_block(
        c: &mut Checker,
        it: &Item,
        auth: Option<&Item>,
    ) -> Result<SyncConfig, ConfigError> {
        let mut s = SyncConfig::default();
        let mut mode_seen = false;
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
                            c.warn(x, "`Mode NACK' is the old name of FTFW");
                            ModeKind::Ftfw
                        }
                        Some("notrack") => ModeKind::Notrack,
                        Some("alarm") => ModeKind::Alarm,
                        Some("persistent") => {
                            c.warn(x, "`Mode PERSISTENT' is the old name of ALARM");
                            ModeKind::Alarm
                        }
                        _ => {
                            return Err(c.err(x, "`Mode' needs FTFW, NOTRACK or ALARM".into()));
                        }
                    };
                    for y in x.items() {
                        if !common(c, &mut s, y)?
                            && y.key != "ResendBufferSize"
                            && y.key != "Window"
                        {
                            return Err(c.err(
                                y,
                                format!("unknown key `{}' in Mode", crate::conf::shown(&y.key)),
                            ));
                        }
                    }
                }
                "UDP" | "Multicast" | "TCP" => {
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
                    let mut link = if x.key == "UDP" || x.key == "TCP" {
                        let peer = addr("IPv4_Destination_Address")
                            .or_else(|| addr("IPv6_Destination_Address"))
                            .ok_or_else(|| {
                                c.err(
                                    x,
                                    format!("{} link without IPv4_Destination_Address", x.key),
                                )
                            })?;
                        let local = addr("IPv4_address").or_else(|| addr("IPv6_address"));
                        if x.key == "TCP" {
                            LinkConfig::tcp(local, peer, port, &iface)
                        } else {
                            LinkConfig::udp(local, peer, port, &iface)
                        }
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
                            _ => {
                                return Err(
                                    c.err(x, "Multicast link without IPv4_interface".into())
                                );
                            }
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
                            "ErrorQueueLength" => {
                                link.error_queue = uint(c, y, 1, 1 << 16)? as usize
                            }
                            _ => {}
                        }
                    }
                    s.links.push(link);
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
                        "little" => QuirkOrder::Little,
                        "big" => QuirkOrder::Big,
                        v => {
                            return Err(c.err(
                                x,
                                format!(
                                    "bad value `{}' for `PeerEndianness': use little or big",
                                    crate::conf::shown(v)
                                ),
                            ));
                        }
                    };
                }
                _ => {
                    return Err(c.err(
                        x,
                        format!("unknown key `{}' in Sync", crate::conf::shown(&x.key)),
                    ));
                }
            }
        }
        if !mode_seen {
            c.warn(it, "no synchronization mode specified, defaulting to FTFW");
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
            c.warn(it, &w);
        }
        Ok(s)
    }

    /// Index of the initially active link: the one marked Default, else
    /// the first.
    pub fn default_link(&self) -> usize {
        self.links.iter().position(|l| l.default).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp() -> LinkConfig {
        LinkConfig::udp(
            Some("10.0.0.1".parse().unwrap()),
            "10.0.0.2".parse().unwrap(),
            3780,
            "eth2",
        )
    }

    #[test]
    fn defaults_are_conntrackds() {
        let c = SyncConfig::default();
        assert_eq!(c.mode, ModeKind::Ftfw);
        assert_eq!(
            (c.resend_queue_size, c.ack_window_size, c.refresh_time),
            (131072, 300, 60)
        );
        assert_eq!((c.cache_timeout, c.purge_timeout), (180, 60));
        assert_eq!(c.commit_timeout, None);
        assert!(udp().checksum && !udp().default);
    }

    #[test]
    fn tcp_links_and_their_header_overhead() {
        let mut c = Checker::new("t.conf");
        let items = crate::conf::parse_items(
            "t.conf",
            "Sync {\n Mode NOTRACK { DisableExternalCache on }\n TCP Default {\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.2\n  Port 3781\n  Interface eth2\n  ErrorQueueLength 64\n }\n}\n",
        )
        .unwrap();
        let s = SyncConfig::from_block(&mut c, &items[0], None).unwrap();
        let l = &s.links[0];
        assert_eq!(
            l.kind,
            LinkKind::Tcp {
                local: Some("10.0.0.1".parse().unwrap()),
                peer: "10.0.0.2".parse().unwrap(),
                port: 3781,
            }
        );
        assert!(l.default);
        assert_eq!((l.kind_name(), l.error_queue), ("TCP", 64));
        // conntrackd's channel_tcp headersiz: IP 20 + TCP 20
        assert_eq!(l.header_overhead(), 40);
        assert_eq!(udp().header_overhead(), 28);
        let v6 = LinkConfig::tcp(None, "fd00::2".parse().unwrap(), 3780, "eth2");
        assert_eq!(v6.header_overhead(), 60);
        assert_eq!(
            LinkConfig::tcp(None, "10.0.0.2".parse().unwrap(), 1, "e").error_queue,
            128
        );
        // a TCP link needs its peer; TCP does not mix; no Auth on TCP
        let items =
            crate::conf::parse_items("t.conf", "Sync {\n TCP { Interface eth2 }\n}").unwrap();
        let e = SyncConfig::from_block(&mut c, &items[0], None).unwrap_err();
        assert_eq!(e.msg, "TCP link without IPv4_Destination_Address");
        let mut mixed = SyncConfig {
            links: vec![udp(), v6.clone()],
            ..SyncConfig::default()
        };
        assert!(mixed.validate().unwrap_err().contains("cannot mix"));
        let mut authed = SyncConfig {
            links: vec![v6],
            auth: Some(AuthConfig {
                key_file: "/k".into(),
            }),
            ..SyncConfig::default()
        };
        assert!(authed.validate().unwrap_err().contains("not on TCP"));
    }

    #[test]
    fn validation_catches_what_conntrackd_refuses() {
        let mut c = SyncConfig::default();
        assert!(c.validate().is_err());
        c.links = vec![udp(); 5];
        assert!(c.validate().is_err());
        c.links = vec![
            udp(),
            LinkConfig::multicast(
                "225.0.0.50".parse().unwrap(),
                3780,
                "10.0.0.1".parse().unwrap(),
                "eth3",
            ),
        ];
        assert!(c.validate().unwrap_err().contains("mix"));
        let mut a = udp();
        a.default = true;
        c.links = vec![udp(), a.clone()];
        assert_eq!(c.default_link(), 1);
        c.links = vec![a.clone(), a];
        assert!(c.validate().is_err());
        c.links = vec![udp()];
        c.commit_timeout = Some(180);
        c.disable_external_cache = true;
        let w = c.validate().unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(c.commit_timeout, None);
        c.disable_internal_cache = true;
        assert!(c.validate().is_err());
    }
}
