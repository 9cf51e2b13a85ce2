//! conntrack 1.4.7's command line: flags in, a validated [`CtCommand`] out.
//!
//! Two stages, as ripgrep does: the getopt scanner yields raw tokens, and
//! this module turns them into settings, checking each value and then the
//! legality matrix of commands and options (conntrack's
//! `commands_v_options` and the per-protocol tables), so the same command
//! lines are accepted and refused with the same messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::getopt::{Getopt, HasArg, LongOpt, Token};
use crate::flow::filter::{Filter, NatMatch, Prefix};
use crate::flow::labels::{LabelMap, parse_c_ulong};
use crate::flow::{AF_INET, AF_INET6, Labels, names, proto, status};
use crate::netlink::ct::NatSetup;

/// conntrack's exit codes.
pub use crate::exit;

/// The prefix conntrack puts on its messages; ctrack keeps it so scripts
/// that parse stderr see the same text.
pub const PROGNAME_VERSION: &str = "conntrack v1.4.7 (conntrack-tools)";

/// A command line that cannot run: the message and the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError {
    /// The message, without the program prefix.
    pub msg: String,
    /// The exit code (2 for parameter problems).
    pub code: i32,
    /// Whether the message is conntrack's own (printed with conntrack's
    /// prefix and "Try ... -h" line) or a ctrack check (`ctrack: ...`).
    pub conntrack_style: bool,
}

impl ArgError {
    fn param(msg: impl Into<String>) -> ArgError {
        ArgError {
            msg: msg.into(),
            code: exit::PARAMETER,
            conntrack_style: true,
        }
    }
    fn other(msg: impl Into<String>) -> ArgError {
        ArgError {
            msg: msg.into(),
            code: exit::OTHER,
            conntrack_style: true,
        }
    }
    fn ours(msg: impl Into<String>) -> ArgError {
        ArgError {
            msg: msg.into(),
            code: exit::PARAMETER,
            conntrack_style: false,
        }
    }
}

type Res<T> = Result<T, ArgError>;

/// conntrack's commands, numbered as its command bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmd {
    /// `-L`.
    List = 0,
    /// `-I`.
    Create = 1,
    /// `-U`.
    Update = 2,
    /// `-D`.
    Delete = 3,
    /// `-G`.
    Get = 4,
    /// `-F`.
    Flush = 5,
    /// `-E`.
    Event = 6,
    /// `-V`.
    Version = 7,
    /// `-h`.
    Help = 8,
    /// `-L expect`.
    ExpList = 9,
    /// `-I expect`.
    ExpCreate = 10,
    /// `-D expect`.
    ExpDelete = 11,
    /// `-G expect`.
    ExpGet = 12,
    /// `-F expect`.
    ExpFlush = 13,
    /// `-E expect`.
    ExpEvent = 14,
    /// `-C`.
    Count = 15,
    /// `-C expect`.
    ExpCount = 16,
    /// `-S`.
    Stats = 17,
    /// `-S expect`.
    ExpStats = 18,
    /// `-A`.
    Add = 19,
}

impl Cmd {
    /// True for the expectation-table commands.
    pub fn is_expect(self) -> bool {
        matches!(
            self,
            Cmd::ExpList
                | Cmd::ExpCreate
                | Cmd::ExpDelete
                | Cmd::ExpGet
                | Cmd::ExpFlush
                | Cmd::ExpEvent
                | Cmd::ExpCount
                | Cmd::ExpStats
        )
    }

    /// The summary conntrack prints on stderr after the command, if any.
    pub fn exit_msg(self) -> Option<&'static str> {
        Some(match self {
            Cmd::List | Cmd::Get => "flow entries have been shown.",
            Cmd::Create => "flow entries have been created.",
            Cmd::Update => "flow entries have been updated.",
            Cmd::Delete => "flow entries have been deleted.",
            Cmd::Event => "flow events have been shown.",
            Cmd::ExpList | Cmd::ExpDelete => "expectations have been shown.",
            Cmd::Add => "flow entries have been added.",
            _ => return None,
        })
    }
}

/// Which table `-L` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The conntrack table.
    Conntrack,
    /// Expectations.
    Expect,
    /// The dying list.
    Dying,
    /// The unconfirmed list.
    Unconfirmed,
}

/// Output format flags (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// `xml`.
    pub xml: bool,
    /// `extended`.
    pub extended: bool,
    /// `timestamp` (events).
    pub timestamp: bool,
    /// `id`.
    pub id: bool,
    /// `ktimestamp`.
    pub ktimestamp: bool,
    /// `labels`.
    pub labels: bool,
    /// `save`.
    pub save: bool,
    /// `json` (ctrack's ndjson).
    pub json: bool,
}

/// Option bits, in conntrack's order (the columns of its legality table).
pub mod opt {
    #![allow(missing_docs)]
    pub const ORIG_SRC: u32 = 1 << 0;
    pub const ORIG_DST: u32 = 1 << 1;
    pub const ORIG: u32 = ORIG_SRC | ORIG_DST;
    pub const REPL_SRC: u32 = 1 << 2;
    pub const REPL_DST: u32 = 1 << 3;
    pub const REPL: u32 = REPL_SRC | REPL_DST;
    pub const PROTO: u32 = 1 << 4;
    pub const TIMEOUT: u32 = 1 << 5;
    pub const STATUS: u32 = 1 << 6;
    pub const ZERO: u32 = 1 << 7;
    pub const EVENT_MASK: u32 = 1 << 8;
    pub const EXP_SRC: u32 = 1 << 9;
    pub const EXP_DST: u32 = 1 << 10;
    pub const MASK_SRC: u32 = 1 << 11;
    pub const MASK_DST: u32 = 1 << 12;
    pub const NATRANGE: u32 = 1 << 13;
    pub const MARK: u32 = 1 << 14;
    pub const ID: u32 = 1 << 15;
    pub const FAMILY: u32 = 1 << 16;
    pub const SRC_NAT: u32 = 1 << 17;
    pub const DST_NAT: u32 = 1 << 18;
    pub const OUTPUT: u32 = 1 << 19;
    pub const SECMARK: u32 = 1 << 20;
    pub const BUFFERSIZE: u32 = 1 << 21;
    pub const ANY_NAT: u32 = 1 << 22;
    pub const ZONE: u32 = 1 << 23;
    pub const LABEL: u32 = 1 << 24;
    pub const ADD_LABEL: u32 = 1 << 25;
    pub const DEL_LABEL: u32 = 1 << 26;
    pub const ORIG_ZONE: u32 = 1 << 27;
    pub const REPL_ZONE: u32 = 1 << 28;
    /// Options that make a filter compare entries.
    pub const COMPARISON: u32 =
        PROTO | ORIG | REPL | MARK | SECMARK | STATUS | ID | ZONE | LABEL | ORIG_ZONE | REPL_ZONE;
}

const NUMBER_OF_OPT: usize = 29;

const OPTFLAGS: [&str; NUMBER_OF_OPT] = [
    "src",
    "dst",
    "reply-src",
    "reply-dst",
    "protonum",
    "timeout",
    "status",
    "zero",
    "event-mask",
    "tuple-src",
    "tuple-dst",
    "mask-src",
    "mask-dst",
    "nat-range",
    "mark",
    "id",
    "family",
    "src-nat",
    "dst-nat",
    "output",
    "secmark",
    "buffer-size",
    "any-nat",
    "zone",
    "label",
    "label-add",
    "label-del",
    "orig-zone",
    "reply-zone",
];

/// conntrack's legality table: 0 illegal, 1 required, 2 optional,
/// 3 "original or reply tuple must be complete".
const COMMANDS_V_OPTIONS: [[u8; NUMBER_OF_OPT]; 20] = [
    /* s d r q p t u z e [ ] { } a m i f n g o c b j w l < > ( ) */
    [
        2, 2, 2, 2, 2, 0, 2, 2, 0, 0, 0, 2, 2, 0, 2, 0, 2, 2, 2, 2, 2, 0, 2, 2, 2, 0, 0, 2, 2,
    ], // LIST
    [
        3, 3, 3, 3, 1, 1, 2, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 0, 2, 2,
    ], // CREATE
    [
        2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 0, 0,
    ], // UPDATE
    [
        2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0, 2, 2, 0, 0, 2, 2,
    ], // DELETE
    [
        3, 3, 3, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0,
    ], // GET
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // FLUSH
    [
        2, 2, 2, 2, 2, 0, 0, 0, 2, 0, 0, 2, 2, 0, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 2, 2,
    ], // EVENT
    [0; NUMBER_OF_OPT], // VERSION
    [
        0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // HELP
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_LIST
    [
        1, 1, 2, 2, 1, 1, 2, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_CREATE
    [
        1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_DELETE
    [
        1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_GET
    [0; NUMBER_OF_OPT], // EXP_FLUSH
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_EVENT
    [0; NUMBER_OF_OPT], // COUNT
    [0; NUMBER_OF_OPT], // EXP_COUNT
    [0; NUMBER_OF_OPT], // STATS
    [0; NUMBER_OF_OPT], // EXP_STATS
    [
        3, 3, 3, 3, 1, 1, 2, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 0, 2, 2,
    ], // ADD
];

/// A protocol's own options: names, legality table and pair messages.
struct ProtoOpts {
    name: &'static str,
    longs: &'static [(&'static str, u32)],
    flags: &'static [&'static str],
    /// Rows for LIST CREATE UPDATE DELETE GET FLUSH EVENT ... ADD (by Cmd).
    table: fn(Cmd) -> &'static [u8],
    /// Messages for an incomplete original / reply pair; None: no pairs.
    pairs: Option<(&'static str, &'static str)>,
}

fn row_or_zero(cmd: Cmd, rows: &'static [(Cmd, &'static [u8])]) -> &'static [u8] {
    rows.iter()
        .find(|(c, _)| *c == cmd)
        .map(|(_, r)| *r)
        .unwrap_or(&[0; 11])
}

fn tcp_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2, 2, 0, 0, 2, 0, 0]),
        (Cmd::Create, &[3, 3, 3, 3, 0, 0, 1, 0, 0]),
        (Cmd::Update, &[2, 2, 2, 2, 0, 0, 2, 0, 0]),
        (Cmd::Delete, &[2, 2, 2, 2, 0, 0, 2, 0, 0]),
        (Cmd::Get, &[3, 3, 3, 3, 0, 0, 2, 0, 0]),
        (Cmd::Event, &[2, 2, 2, 2, 0, 0, 2, 0, 0]),
        (Cmd::Add, &[3, 3, 3, 3, 0, 0, 1, 0, 0]),
    ];
    row_or_zero(c, R)
}

fn udp_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Create, &[3, 3, 3, 3, 0, 0, 0, 0]),
        (Cmd::Update, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Delete, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Get, &[3, 3, 3, 3, 0, 0, 0, 0]),
        (Cmd::Event, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Add, &[3, 3, 3, 3, 0, 0, 0, 0]),
    ];
    row_or_zero(c, R)
}

fn sctp_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0, 0]),
        (Cmd::Create, &[3, 3, 3, 3, 0, 0, 1, 0, 0, 1, 1]),
        (Cmd::Update, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 2, 2]),
        (Cmd::Delete, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0, 0]),
        (Cmd::Get, &[3, 3, 3, 3, 0, 0, 2, 0, 0, 2, 2]),
        (Cmd::Event, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0, 0]),
        (Cmd::Add, &[3, 3, 3, 3, 0, 0, 1, 0, 0, 1, 1]),
    ];
    row_or_zero(c, R)
}

fn dccp_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0]),
        (Cmd::Create, &[3, 3, 3, 3, 0, 0, 1, 0, 0, 1]),
        (Cmd::Update, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0]),
        (Cmd::Delete, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0]),
        (Cmd::Get, &[3, 3, 3, 3, 0, 0, 2, 0, 0, 0]),
        (Cmd::Event, &[2, 2, 2, 2, 0, 0, 2, 0, 0, 0]),
        (Cmd::Add, &[3, 3, 3, 3, 0, 0, 1, 0, 0, 1]),
    ];
    row_or_zero(c, R)
}

fn icmp_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2]),
        (Cmd::Create, &[1, 1, 2]),
        (Cmd::Update, &[2, 2, 2]),
        (Cmd::Delete, &[2, 2, 2]),
        (Cmd::Get, &[1, 1, 2]),
        (Cmd::Event, &[2, 2, 2]),
        (Cmd::Add, &[1, 1, 2]),
    ];
    row_or_zero(c, R)
}

fn none_table(_: Cmd) -> &'static [u8] {
    &[]
}

const TCP: ProtoOpts = ProtoOpts {
    name: "tcp",
    longs: &[
        ("orig-port-src", 1),
        ("sport", 1),
        ("orig-port-dst", 2),
        ("dport", 2),
        ("reply-port-src", 3),
        ("reply-port-dst", 4),
        ("mask-port-src", 5),
        ("mask-port-dst", 6),
        ("state", 7),
        ("tuple-port-src", 8),
        ("tuple-port-dst", 9),
    ],
    flags: &[
        "sport",
        "dport",
        "reply-port-src",
        "reply-port-dst",
        "mask-port-src",
        "mask-port-dst",
        "state",
        "tuple-port-src",
        "tuple-port-dst",
    ],
    table: tcp_table,
    pairs: Some((
        "you have to specify `--sport' and `--dport'",
        "you have to specify `--reply-src-port' and `--reply-dst-port'",
    )),
};

const UDP_FLAGS: &[&str] = &[
    "sport",
    "dport",
    "reply-port-src",
    "reply-port-dst",
    "mask-port-src",
    "mask-port-dst",
    "tuple-port-src",
    "tuple-port-dst",
];

const UDP_LONGS: &[(&str, u32)] = &[
    ("orig-port-src", 1),
    ("sport", 1),
    ("orig-port-dst", 2),
    ("dport", 2),
    ("reply-port-src", 3),
    ("reply-port-dst", 4),
    ("mask-port-src", 5),
    ("mask-port-dst", 6),
    ("tuple-port-src", 7),
    ("tuple-port-dst", 8),
];

const UDP: ProtoOpts = ProtoOpts {
    name: "udp",
    longs: UDP_LONGS,
    flags: UDP_FLAGS,
    table: udp_table,
    pairs: Some((
        "you have to specify `--sport' and `--dport'",
        "you have to specify `--reply-src-port' and `--reply-dst-port'",
    )),
};

const UDPLITE: ProtoOpts = ProtoOpts {
    name: "udplite",
    ..UDP
};

const SCTP: ProtoOpts = ProtoOpts {
    name: "sctp",
    longs: &[
        ("orig-port-src", 1),
        ("orig-port-dst", 2),
        ("reply-port-src", 3),
        ("reply-port-dst", 4),
        ("mask-port-src", 5),
        ("mask-port-dst", 6),
        ("state", 7),
        ("tuple-port-src", 8),
        ("tuple-port-dst", 9),
        ("orig-vtag", 10),
        ("reply-vtag", 11),
        ("sport", 1),
        ("dport", 2),
    ],
    flags: &[
        "sport",
        "dport",
        "reply-port-src",
        "reply-port-dst",
        "mask-port-src",
        "mask-port-dst",
        "state",
        "tuple-port-src",
        "tuple-port-dst",
        "orig-vtag",
        "reply-vtag",
    ],
    table: sctp_table,
    pairs: Some((
        "you have to specify `--sport' and `--dport'",
        "you have to specify `--reply-src-port' and `--reply-dst-port'",
    )),
};

const DCCP: ProtoOpts = ProtoOpts {
    name: "dccp",
    longs: &[
        ("orig-port-src", 1),
        ("orig-port-dst", 2),
        ("reply-port-src", 3),
        ("reply-port-dst", 4),
        ("mask-port-src", 5),
        ("mask-port-dst", 6),
        ("state", 7),
        ("tuple-port-src", 8),
        ("tuple-port-dst", 9),
        ("sport", 1),
        ("dport", 2),
        ("role", 10),
    ],
    flags: &[
        "sport",
        "dport",
        "reply-port-src",
        "reply-port-dst",
        "mask-port-src",
        "mask-port-dst",
        "state",
        "tuple-port-src",
        "tuple-port-dst",
        "role",
    ],
    table: dccp_table,
    pairs: Some((
        "you have to specify `--sport' and `--dport'",
        "you have to specify `--reply-port-src' and `--report-port-dst'",
    )),
};

const GRE: ProtoOpts = ProtoOpts {
    name: "gre",
    longs: &[
        ("orig-key-src", 1),
        ("srckey", 1),
        ("orig-key-dst", 2),
        ("dstkey", 2),
        ("reply-key-src", 3),
        ("reply-key-dst", 4),
        ("mask-key-src", 5),
        ("mask-key-dst", 6),
        ("tuple-key-src", 7),
        ("tuple-key-dst", 8),
    ],
    flags: &[
        "srckey",
        "dstkey",
        "reply-key-src",
        "reply-key-dst",
        "mask-key-src",
        "mask-key-dst",
        "tuple-key-src",
        "tuple-key-dst",
    ],
    table: udp_table,
    pairs: Some((
        "you have to specify `--srckey' and `--dstkey'",
        "you have to specify `--reply-src-key' and `--reply-dst-key'",
    )),
};

const ICMP: ProtoOpts = ProtoOpts {
    name: "icmp",
    longs: &[("icmp-type", 1), ("icmp-code", 2), ("icmp-id", 3)],
    flags: &["icmp-type", "icmp-code", "icmp-id"],
    table: icmp_table,
    pairs: None,
};

const ICMPV6: ProtoOpts = ProtoOpts {
    name: "icmpv6",
    longs: &[("icmpv6-type", 1), ("icmpv6-code", 2), ("icmpv6-id", 3)],
    flags: &["icmpv6-type", "icmpv6-code", "icmpv6-id"],
    table: icmp_table,
    pairs: None,
};

const UNKNOWN: ProtoOpts = ProtoOpts {
    name: "unknown",
    longs: &[],
    flags: &[],
    table: none_table,
    pairs: None,
};

fn proto_opts(p: u8) -> &'static ProtoOpts {
    match p {
        proto::TCP => &TCP,
        proto::UDP => &UDP,
        proto::UDPLITE => &UDPLITE,
        proto::SCTP => &SCTP,
        proto::DCCP => &DCCP,
        proto::GRE => &GRE,
        proto::ICMP => &ICMP,
        proto::ICMPV6 => &ICMPV6,
        _ => &UNKNOWN,
    }
}

/// The proto help text conntrack prints for `-h -p PROTO`.
pub fn proto_help(p: u8) -> &'static str {
    macro_rules! ports {
        () => {
            "  --orig-port-src\t\toriginal source port\n  --orig-port-dst\t\toriginal destination port\n  --reply-port-src\t\treply source port\n  --reply-port-dst\t\treply destination port\n  --mask-port-src\t\tmask source port\n  --mask-port-dst\t\tmask destination port\n  --tuple-port-src\t\texpectation tuple src port\n  --tuple-port-src\t\texpectation tuple dst port\n"
        };
    }
    match p {
        proto::TCP => concat!(ports!(), "  --state\t\t\tTCP state, fe. ESTABLISHED\n"),
        proto::UDP | proto::UDPLITE => ports!(),
        proto::SCTP => concat!(
            ports!(),
            "  --state\t\t\tSCTP state, fe. ESTABLISHED\n  --orig-vtag\t\toriginal verification tag\n  --reply-vtag\t\treply verification tag\n",
        ),
        proto::DCCP => concat!(ports!(), "  --state\t\t\tDCCP state, fe. RESPOND\n"),
        proto::ICMP => {
            "  --icmp-type\t\t\ticmp type\n  --icmp-code\t\t\ticmp code\n  --icmp-id\t\t\ticmp id\n"
        }
        proto::ICMPV6 => {
            "  --icmpv6-type\t\t\ticmpv6 type\n  --icmpv6-code\t\t\ticmpv6 code\n  --icmpv6-id\t\t\ticmpv6 id\n"
        }
        proto::GRE => {
            "  --orig-key-src\t\toriginal source key\n  --orig-key-dst\t\toriginal destination key\n  --reply-key-src\t\treply source key\n  --reply-key-dst\t\treply destination key\n  --mask-key-src\t\tmask source key\n  --mask-key-dst\t\tmask destination key\n  --tuple-key-src\t\texpectation tuple src key\n  --tuple-key-src\t\texpectation tuple dst key\n"
        }
        _ => "  no options (unsupported)\n",
    }
}

/// A validated conntrack command.
#[derive(Clone, Debug)]
pub struct CtCommand {
    /// The command (None: none given; conntrack then prints its usage).
    pub cmd: Option<Cmd>,
    /// The table `-L` reads.
    pub table: Table,
    /// The option bits given.
    pub options: u32,
    /// Address family (0 = both).
    pub family: u8,
    /// The selection / template.
    pub filter: Filter,
    /// `-n`/`-j` values for `-I`: source NAT to set up.
    pub snat: Option<NatSetup>,
    /// `-g`/`-j` values for `-I`: destination NAT to set up.
    pub dnat: Option<NatSetup>,
    /// `-e` event groups (bits NEW 1, UPDATE 2, DESTROY 4).
    pub event_mask: u32,
    /// `-o`.
    pub output: Output,
    /// `-b`.
    pub buffer_size: Option<usize>,
    /// `--label-add`/`--label-del` labels.
    pub label_modify: Option<Labels>,
    /// The label map, when labels were used.
    pub labelmap: Option<LabelMap>,
    /// `-p` given with `-h`: print that protocol's help too.
    pub help_proto: Option<u8>,
    /// SCTP `--orig-vtag`, `--reply-vtag` (for `-I`).
    pub sctp_vtag: [Option<u32>; 2],
    /// DCCP `--role` (0 client, 1 server; for `-I`).
    pub dccp_role: Option<u8>,
}

impl CtCommand {
    fn new() -> CtCommand {
        CtCommand {
            cmd: None,
            table: Table::Conntrack,
            options: 0,
            family: 0,
            filter: Filter::default(),
            snat: None,
            dnat: None,
            event_mask: 0,
            output: Output::default(),
            buffer_size: None,
            label_modify: None,
            labelmap: None,
            help_proto: None,
            sctp_vtag: [None; 2],
            dccp_role: None,
        }
    }

    /// TCP flags conntrack forces on entries it creates (window tracking
    /// off so manual entries work; CLOSE_INIT from TIME_WAIT on).
    pub fn tcp_flags(&self) -> u8 {
        const BE_LIBERAL: u8 = 0x08;
        const SACK_PERM: u8 = 0x02;
        const CLOSE_INIT: u8 = 0x04;
        let mut f = BE_LIBERAL | SACK_PERM;
        if self.filter.state.is_some_and(|s| s >= 7) {
            f |= CLOSE_INIT;
        }
        f
    }
}

const SHORTS: &str =
    ":L::I::U::D::G::E::F::A::hVs:d:r:q:p:t:u:e:a:z[:]:{:}:m:i:f:o:n::g::c:b:C::Sj::w:l:<:>::(:):";

const PROTO_KEY_BASE: u32 = 0x1000;

fn base_longs() -> Vec<LongOpt> {
    use HasArg::*;
    let l = |name, has_arg, key: char| LongOpt {
        name,
        has_arg,
        key: key as u32,
    };
    vec![
        l("dump", Optional, 'L'),
        l("create", Optional, 'I'),
        l("add", Optional, 'A'),
        l("delete", Optional, 'D'),
        l("update", Optional, 'U'),
        l("get", Optional, 'G'),
        l("flush", Optional, 'F'),
        l("event", Optional, 'E'),
        l("counter", Optional, 'C'),
        l("stats", No, 'S'),
        l("version", No, 'V'),
        l("help", No, 'h'),
        l("orig-src", Required, 's'),
        l("src", Required, 's'),
        l("orig-dst", Required, 'd'),
        l("dst", Required, 'd'),
        l("reply-src", Required, 'r'),
        l("reply-dst", Required, 'q'),
        l("protonum", Required, 'p'),
        l("timeout", Required, 't'),
        l("status", Required, 'u'),
        l("zero", No, 'z'),
        l("event-mask", Required, 'e'),
        l("tuple-src", Required, '['),
        l("tuple-dst", Required, ']'),
        l("mask-src", Required, '{'),
        l("mask-dst", Required, '}'),
        l("nat-range", Required, 'a'),
        l("mark", Required, 'm'),
        l("secmark", Required, 'c'),
        l("id", Optional, 'i'),
        l("family", Required, 'f'),
        l("src-nat", Optional, 'n'),
        l("dst-nat", Optional, 'g'),
        l("output", Required, 'o'),
        l("buffer-size", Required, 'b'),
        l("any-nat", Optional, 'j'),
        l("zone", Required, 'w'),
        l("label", Required, 'l'),
        l("label-add", Required, '<'),
        l("label-del", Optional, '>'),
        l("orig-zone", Required, '('),
        l("reply-zone", Required, ')'),
    ]
}

fn long_name_of(key: char) -> &'static str {
    base_longs()
        .into_iter()
        .find(|o| o.key == key as u32)
        .map(|o| o.name)
        .unwrap_or("unknown")
}

/// Parses an IPv4 address the way inet_aton does (`1.2.3.4`, `0x0a.1`,
/// `10.1`, `167772161`), which conntrack accepts.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.ends_with('.') {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        if p.is_empty() || !p.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        nums.push(parse_c_ulong(p)?);
    }
    let last = *nums.last()?;
    let mut v: u64 = 0;
    for (i, n) in nums[..nums.len() - 1].iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * (nums.len() as u32 - 1);
    if room < 64 && last >= (1u64 << room) {
        return None;
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// An address as conntrack parses it: inet_aton, then IPv6.
pub fn parse_inet(s: &str) -> Option<IpAddr> {
    if let Some(a) = inet_aton(s) {
        return Some(IpAddr::V4(a));
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `addr[/len]` as conntrack's parse_addr: Ok((address, mask)) where mask
/// is None without a slash; Err(true) for an invalid netmask and Err(false)
/// for an invalid address.
fn parse_addr_mask(s: &str) -> Result<(IpAddr, Option<u8>), bool> {
    // conntrack copies at most INET6_ADDRSTRLEN-1 bytes
    let s: String = s.chars().take(45).collect();
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a.to_string(), Some(m.to_string())),
        None => (s.clone(), None),
    };
    let addr = parse_inet(&a).ok_or(false)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let mask = match m {
        None => None,
        Some(m) => {
            let v: i64 = m.parse().map_err(|_| true)?;
            if !(0..=max).contains(&v) {
                return Err(true);
            }
            Some(v as u8)
        }
    };
    Ok((addr, mask))
}

fn parse_u32(v: &str, flag: &str, what: &str) -> Res<u32> {
    parse_c_ulong(v)
        .filter(|&n| n <= u32::MAX as u64)
        .map(|n| n as u32)
        .ok_or_else(|| ArgError::ours(format!("invalid {what} '{v}' for {flag}")))
}

fn parse_port(v: &str, flag: &str) -> Res<u16> {
    if !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = v.parse::<u16>() {
            return Ok(n);
        }
    }
    Err(ArgError::ours(format!("invalid port '{v}' for {flag}")))
}

fn parse_small(v: &str, flag: &str, what: &str, max: u32) -> Res<u32> {
    if !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = v.parse::<u32>()
        && n <= max
    {
        return Ok(n);
    }
    Err(ArgError::ours(format!("invalid {what} '{v}' for {flag}")))
}

/// conntrack's keyword matching: a case-insensitive prefix of a keyword,
/// with SRC_NAT/DST_NAT tried first (and ignored with a warning).
fn parse_keyword(word: &str, table: &[(&str, u32)], warnings: &mut Vec<String>) -> Option<u32> {
    let prefix_of = |k: &str| word.len() <= k.len() && k[..word.len()].eq_ignore_ascii_case(word);
    if prefix_of("SRC_NAT") {
        warnings.push("WARNING: ignoring SRC_NAT, use --src-nat instead".into());
        return Some(0);
    }
    if prefix_of("DST_NAT") {
        warnings.push("WARNING: ignoring DST_NAT, use --dst-nat instead".into());
        return Some(0);
    }
    table.iter().find(|(k, _)| prefix_of(k)).map(|&(_, v)| v)
}

fn parse_list(arg: &str, table: &[(&str, u32)], warnings: &mut Vec<String>) -> Res<u32> {
    let mut v = 0;
    let mut rest = arg;
    loop {
        let (word, next) = match rest.find(',') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if word.is_empty() {
            return Err(ArgError::param(format!("Bad parameter `{rest}'")));
        }
        match parse_keyword(word, table, warnings) {
            Some(bits) => v |= bits,
            None => return Err(ArgError::param(format!("Bad parameter `{rest}'"))),
        }
        match next {
            Some(n) => rest = n,
            None => return Ok(v),
        }
    }
}

const STATUS_WORDS: &[(&str, u32)] = &[
    ("ASSURED", status::ASSURED),
    ("SEEN_REPLY", status::SEEN_REPLY),
    ("UNSET", 0),
    ("FIXED_TIMEOUT", status::FIXED_TIMEOUT),
    ("EXPECTED", status::EXPECTED),
    ("OFFLOAD", status::OFFLOAD),
    ("HW_OFFLOAD", status::HW_OFFLOAD),
];

const EVENT_WORDS: &[(&str, u32)] = &[("ALL", 7), ("NEW", 1), ("UPDATES", 2), ("DESTROY", 4)];

const O_XML: u32 = 1;
const O_EXT: u32 = 2;
const O_TMS: u32 = 4;
const O_ID: u32 = 8;
const O_KTMS: u32 = 16;
const O_CL: u32 = 32;
const O_SAVE: u32 = 64;
const O_JSON: u32 = 128;

const OUTPUT_WORDS: &[(&str, u32)] = &[
    ("xml", O_XML),
    ("extended", O_EXT),
    ("timestamp", O_TMS),
    ("id", O_ID),
    ("ktimestamp", O_KTMS),
    ("labels", O_CL),
    ("userspace", 0),
    ("save", O_SAVE),
    ("json", O_JSON),
];

/// `-u` with `!FLAG` negation and `UNREPLIED`: returns (value, mask).
fn parse_status(arg: &str, value: &mut u32, mask: &mut u32, warnings: &mut Vec<String>) -> Res<()> {
    let mut rest = arg;
    loop {
        let (word, next) = match rest.find(',') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let bad = || ArgError::param(format!("Bad parameter `{rest}'"));
        if word.is_empty() {
            return Err(bad());
        }
        let (negated, w) = match word.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, word),
        };
        if !negated && w.starts_with("UNREPLIED") {
            *mask |= status::SEEN_REPLY;
        } else {
            if w.is_empty() {
                return Err(bad());
            }
            let bits = parse_keyword(w, STATUS_WORDS, warnings).ok_or_else(bad)?;
            if negated {
                *mask |= bits;
            } else {
                *value |= bits;
            }
        }
        match next {
            Some(n) => rest = n,
            None => return Ok(()),
        }
    }
}

fn split_nat_arg(arg: &str) -> Res<(String, Option<u16>)> {
    if let Some(start) = arg.find('[') {
        let inner = &arg[start + 1..];
        let Some(close) = inner.find(']') else {
            return Err(ArgError::param("No closing ']' around IPv6 address"));
        };
        if close == 0 {
            return Err(ArgError::param("No IPv6 address specified"));
        }
        let addr = &inner[..close];
        match inner[close..].find(':') {
            Some(i) => {
                let port = &inner[close + i + 1..];
                Ok((addr.to_string(), Some(nat_port(port)?)))
            }
            None => Ok((arg.to_string(), None)),
        }
    } else {
        match arg.find(':') {
            Some(i) if !arg[i + 1..].contains(':') => {
                Ok((arg[..i].to_string(), Some(nat_port(&arg[i + 1..])?)))
            }
            _ => Ok((arg.to_string(), None)),
        }
    }
}

fn nat_port(p: &str) -> Res<u16> {
    if p.is_empty() {
        return Err(ArgError::param("No port specified after `:'"));
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().map_or(true, |n| n > 65535) {
        return Err(ArgError::param(format!("Invalid port `{p}'")));
    }
    Ok(p.parse().unwrap_or(0))
}

/// Reads the protocol number of a name in /etc/protocols.
pub fn protocol_number(name: &str) -> Option<u8> {
    etc_protocols(name)
}

fn etc_protocols(name: &str) -> Option<u8> {
    let text = std::fs::read_to_string("/etc/protocols").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(pname), Some(num)) = (words.next(), words.next()) else {
            continue;
        };
        if pname == name || words.any(|alias| alias == name) {
            return num.parse().ok();
        }
    }
    None
}

/// The /etc/protocols name of a protocol number.
pub fn protocol_name(num: u8) -> Option<String> {
    let text = std::fs::read_to_string("/etc/protocols").ok()?;
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let name = words.next()?;
        (words.next()?.parse::<u8>().ok()? == num).then(|| name.to_string())
    })
}

fn find_proto(name: &str) -> Option<u8> {
    if let Some(p) = names::l4_by_name(name).filter(|p| proto_opts(*p).name != "unknown") {
        return Some(p);
    }
    if let Some(p) = etc_protocols(name) {
        return Some(p);
    }
    if let Some(p) = names::l4_by_name(name) {
        return Some(p);
    }
    parse_c_ulong(name).filter(|&n| n <= 255).map(|n| n as u8)
}

struct Parser {
    c: CtCommand,
    family: u8,
    status_value: u32,
    status_mask: u32,
    proto: Option<u8>,
    proto_flags: u32,
    warnings: Vec<String>,
    labels_used: bool,
    /// `--mask-src` / `--mask-dst` addresses.
    masks: [Option<IpAddr>; 2],
}

impl Parser {
    fn set_family(&mut self, f: u8) -> Res<()> {
        if self.family == 0 {
            self.family = f;
        } else if self.family != f {
            return Err(ArgError::param("mismatched address family"));
        }
        Ok(())
    }

    fn add_command(&mut self, cmd: Cmd) -> Res<()> {
        if self.c.cmd.is_some() {
            return Err(ArgError::param("Invalid commands combination"));
        }
        self.c.cmd = Some(cmd);
        Ok(())
    }

    fn labelmap(&mut self) -> Option<&LabelMap> {
        if !self.labels_used {
            self.labels_used = true;
            self.c.labelmap = LabelMap::load_system();
            if self.c.labelmap.is_none() {
                // conntrack's perror(), printed at once: also before the
                // error a missing label name then causes
                eprintln!("nfct_labelmap_new: No such file or directory");
            }
        }
        self.c.labelmap.as_ref()
    }

    fn parse_labels(&mut self, arg: &str) -> Res<Labels> {
        let mut l = Labels {
            words: [0; 4],
            len: 4,
        };
        for name in arg.split(',') {
            let bit = self
                .labelmap()
                .and_then(|m| m.bit(name))
                .filter(|&b| b < 128)
                .ok_or_else(|| ArgError::param(format!("unknown label '{name}'")))?;
            l.words[bit / 32] |= 1 << (bit % 32);
        }
        Ok(l)
    }

    fn addr_opt(&mut self, key: char, arg: &str) -> Res<()> {
        let (addr, mask) = match parse_addr_mask(arg) {
            Ok(v) => v,
            Err(false) => return Err(ArgError::param(format!("Invalid IP address `{arg}'"))),
            Err(true) => {
                // conntrack checks CIDR availability before the netmask
                if matches!(key, 'r' | 'q') && arg.contains('/') {
                    return Err(ArgError::param(format!(
                        "CIDR notation unavailable for `--{}'",
                        long_name_of(key)
                    )));
                }
                return Err(ArgError::param("Invalid netmask"));
            }
        };
        self.set_family(if addr.is_ipv4() { AF_INET } else { AF_INET6 })?;
        let has_mask = matches!(key, 's' | 'd');
        if mask.is_some() && !has_mask {
            return Err(ArgError::param(format!(
                "CIDR notation unavailable for `--{}'",
                long_name_of(key)
            )));
        }
        let f = &mut self.c.filter;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        match key {
            's' | 'd' => {
                // a shorter prefix filters by mask; a full one is an address
                let (given, masked, prefix, exact) = if key == 's' {
                    (
                        opt::ORIG_SRC,
                        opt::MASK_SRC,
                        &mut f.src_prefix,
                        &mut f.orig_src,
                    )
                } else {
                    (
                        opt::ORIG_DST,
                        opt::MASK_DST,
                        &mut f.dst_prefix,
                        &mut f.orig_dst,
                    )
                };
                self.c.options |= given;
                match mask.filter(|&m| m != full) {
                    Some(len) => {
                        *prefix = Some(Prefix { addr, len });
                        self.c.options |= masked;
                        *exact = None;
                    }
                    None => *exact = Some(addr),
                }
            }
            'r' => {
                self.c.options |= opt::REPL_SRC;
                f.reply_src = Some(addr);
            }
            'q' => {
                self.c.options |= opt::REPL_DST;
                f.reply_dst = Some(addr);
            }
            _ => {}
        }
        Ok(())
    }

    fn nat_opt(&mut self, key: char, arg: Option<String>) -> Res<()> {
        self.c.options |= match key {
            'n' => opt::SRC_NAT,
            'g' => opt::DST_NAT,
            _ => opt::ANY_NAT,
        };
        let mut m = NatMatch::default();
        if let Some(arg) = arg {
            let (addr_s, port) = split_nat_arg(&arg)?;
            let addr = match parse_addr_mask(&addr_s) {
                Ok((a, None)) => a,
                Ok((_, Some(_))) | Err(true) if addr_s.contains('/') => {
                    return Err(ArgError::param(format!(
                        "CIDR notation unavailable for `--{}'",
                        long_name_of(key)
                    )));
                }
                _ => return Err(ArgError::param(format!("Invalid IP address `{addr_s}'"))),
            };
            self.set_family(if addr.is_ipv4() { AF_INET } else { AF_INET6 })?;
            m = NatMatch {
                addr: Some(addr),
                port,
            };
            let setup = NatSetup {
                addr: Some(addr),
                port,
            };
            if key != 'g' {
                self.c.snat = Some(setup);
            }
            if key != 'n' {
                self.c.dnat = Some(setup);
            }
        }
        let n = &mut self.c.filter.nat;
        match key {
            'n' => n.src = Some(m),
            'g' => n.dst = Some(m),
            _ => n.any = Some(m),
        }
        Ok(())
    }

    fn proto_opt(&mut self, p: u8, code: u32, v: &str, flag: &str) -> Res<()> {
        self.proto_flags |= 1 << (code - 1);
        let f = &mut self.c.filter;
        let is_port_proto = proto::has_ports(p);
        match (p, code) {
            (proto::GRE, 1..=8) => {
                let key = parse_c_ulong(v)
                    .filter(|&n| n <= 0xffff)
                    .ok_or_else(|| ArgError::ours(format!("invalid key '{v}' for {flag}")))?
                    as u16;
                match code {
                    1 => f.orig_sport = Some(key),
                    2 => f.orig_dport = Some(key),
                    3 => f.reply_sport = Some(key),
                    4 => f.reply_dport = Some(key),
                    _ => {}
                }
            }
            (_, 1..=6) if is_port_proto => {
                let port = parse_port(v, flag)?;
                match code {
                    1 => f.orig_sport = Some(port),
                    2 => f.orig_dport = Some(port),
                    3 => f.reply_sport = Some(port),
                    4 => f.reply_dport = Some(port),
                    // masks and expectation tuples are illegal for the
                    // conntrack table; the legality check reports them
                    _ => {}
                }
            }
            (proto::TCP, 7) => {
                let s = names::tcp_state_by_name(v)
                    .ok_or_else(|| ArgError::param(format!("unknown TCP state `{v}'")))?;
                f.state = Some(s);
            }
            (proto::SCTP, 7) => {
                let s = names::SCTP_STATES
                    .iter()
                    .position(|&n| n == v)
                    .ok_or_else(|| ArgError::param(format!("unknown SCTP state `{v}'")))?;
                f.state = Some(s as u8);
            }
            (proto::DCCP, 7) => {
                let s = names::DCCP_STATES
                    .iter()
                    .position(|&n| n == v)
                    .ok_or_else(|| ArgError::param(format!("Unknown DCCP state `{v}'")))?;
                f.state = Some(s as u8);
            }
            (proto::DCCP, 10) => {
                let r = names::DCCP_ROLES
                    .iter()
                    .position(|&n| n == v)
                    .ok_or_else(|| ArgError::param(format!("Unknown DCCP role `{v}'")))?;
                self.c.dccp_role = Some(r as u8);
            }
            (proto::SCTP, 10 | 11) => {
                let t = parse_u32(v, flag, "verification tag")?;
                self.c.sctp_vtag[(code - 10) as usize] = Some(t);
            }
            (proto::ICMP | proto::ICMPV6, 1) => {
                f.icmp_type = Some(parse_small(v, flag, "ICMP type", 255)? as u8)
            }
            (proto::ICMP | proto::ICMPV6, 2) => {
                f.icmp_code = Some(parse_small(v, flag, "ICMP code", 255)? as u8)
            }
            (proto::ICMP | proto::ICMPV6, 3) => {
                f.icmp_id = Some(parse_small(v, flag, "ICMP id", 65535)? as u16)
            }
            _ => {}
        }
        Ok(())
    }
}

fn opt_check(options: u32, row: &[u8], names: &[&str], pairs: Option<(&str, &str)>) -> Res<()> {
    let mut special = false;
    for (i, name) in names.iter().enumerate() {
        let legal = row.get(i).copied().unwrap_or(0);
        if options & (1 << i) == 0 {
            if legal == 1 {
                return Err(ArgError::param(format!(
                    "You need to supply the `--{name}' option for this command"
                )));
            }
        } else if legal == 0 {
            return Err(ArgError::param(format!(
                "Illegal option `--{name}' with this command"
            )));
        }
        if legal == 3 {
            special = true;
        }
    }
    let Some((orig_msg, reply_msg)) = pairs.filter(|_| special) else {
        return Ok(());
    };
    let coupled = [0b0011u32, 0b1100u32];
    let mut partial: i32 = -1;
    for (i, c) in coupled.iter().enumerate() {
        if options & c == *c {
            return Ok(());
        }
        if options & c != 0 && partial < 0 {
            partial = i as i32;
        }
    }
    Err(ArgError::param(if partial == 1 {
        reply_msg
    } else {
        orig_msg
    }))
}

/// Parses a conntrack command line (without argv[0]).
pub fn parse(args: Vec<String>) -> Result<(CtCommand, Vec<String>), ArgError> {
    let mut p = Parser {
        c: CtCommand::new(),
        family: 0,
        status_value: 0,
        status_mask: 0,
        proto: None,
        proto_flags: 0,
        warnings: Vec::new(),
        labels_used: false,
        masks: [None; 2],
    };
    let mut longs = base_longs();
    let mut g = Getopt::new(args);
    while let Some(tok) = g.next_token(SHORTS, &longs) {
        let (key, value, spelled) = match tok {
            Token::Opt {
                key,
                value,
                spelled,
            } => (key, value, spelled),
            Token::Unknown(a) => return Err(ArgError::param(format!("unknown option `{a}'"))),
            Token::MissingValue(a) => {
                return Err(ArgError::param(format!(
                    "option `{a}' requires an argument"
                )));
            }
        };
        let val = || value.clone().unwrap_or_default();
        if key >= PROTO_KEY_BASE {
            let code = key - PROTO_KEY_BASE;
            let pr = p.proto.unwrap_or(0);
            let flag = if spelled.starts_with("--") {
                spelled.split('=').next().unwrap_or(&spelled).to_string()
            } else {
                spelled.clone()
            };
            p.proto_opt(pr, code, &val(), &flag)?;
            continue;
        }
        let k = char::from_u32(key).unwrap_or('?');
        match k {
            'L' | 'I' | 'D' | 'G' | 'F' | 'E' | 'V' | 'h' | 'C' | 'S' | 'U' | 'A' => {
                // conntrack's get_optional_arg ignores an attached value
                // (`-Lx`, `--dump=expect`): the table is then conntrack
                let word = match value {
                    Some(_) => None,
                    None => g.take_optional_word(),
                };
                let table = match word.as_deref() {
                    None => Table::Conntrack,
                    Some(w) if "expect".starts_with(w) => Table::Expect,
                    Some(w) if "conntrack".starts_with(w) => Table::Conntrack,
                    Some(w) if "dying".starts_with(w) => Table::Dying,
                    Some(w) if "unconfirmed".starts_with(w) => Table::Unconfirmed,
                    Some(w) => return Err(ArgError::param(format!("unknown type `{w}'"))),
                };
                let is_l = k == 'L';
                if !is_l && matches!(table, Table::Dying | Table::Unconfirmed) {
                    return Err(ArgError::param(
                        "Can't do that command with tables `dying' and `unconfirmed'",
                    ));
                }
                let exp = table == Table::Expect;
                let cmd = match (k, exp) {
                    ('L', false) => Cmd::List,
                    ('L', true) => Cmd::ExpList,
                    ('I', false) => Cmd::Create,
                    ('I', true) => Cmd::ExpCreate,
                    ('D', false) => Cmd::Delete,
                    ('D', true) => Cmd::ExpDelete,
                    ('G', false) => Cmd::Get,
                    ('G', true) => Cmd::ExpGet,
                    ('F', false) => Cmd::Flush,
                    ('F', true) => Cmd::ExpFlush,
                    ('E', false) => Cmd::Event,
                    ('E', true) => Cmd::ExpEvent,
                    ('V', _) => Cmd::Version,
                    ('h', _) => Cmd::Help,
                    ('C', false) => Cmd::Count,
                    ('C', true) => Cmd::ExpCount,
                    ('S', false) => Cmd::Stats,
                    ('S', true) => Cmd::ExpStats,
                    ('U', false) => Cmd::Update,
                    ('A', false) => Cmd::Add,
                    (c, _) => {
                        let long = base_longs()
                            .into_iter()
                            .find(|o| o.key == c as u32)
                            .map(|o| o.name)
                            .unwrap_or("unknown");
                        return Err(ArgError::param(format!(
                            "Can't do --{long} on expectations"
                        )));
                    }
                };
                p.add_command(cmd)?;
                p.c.table = table;
            }
            's' | 'd' | 'r' | 'q' => p.addr_opt(k, &val())?,
            '[' | ']' | '{' | '}' => {
                // expectation tuples and masks: parsed for the family and
                // legality check only
                let v = val();
                let (addr, _) = parse_addr_mask(&v)
                    .map_err(|_| ArgError::param(format!("Invalid IP address `{v}'")))?;
                p.set_family(if addr.is_ipv4() { AF_INET } else { AF_INET6 })?;
                match k {
                    '{' => p.masks[0] = Some(addr),
                    '}' => p.masks[1] = Some(addr),
                    _ => {}
                }
                p.c.options |= match k {
                    '[' => opt::EXP_SRC,
                    ']' => opt::EXP_DST,
                    '{' => opt::MASK_SRC,
                    _ => opt::MASK_DST,
                };
            }
            'p' => {
                let v = val();
                p.c.options |= opt::PROTO;
                let num = find_proto(&v)
                    .ok_or_else(|| ArgError::param(format!("`{v}' unsupported protocol")))?;
                p.proto = Some(num);
                p.c.filter.proto = Some(num);
                let po = proto_opts(num);
                for (name, code) in po.longs {
                    longs.push(LongOpt {
                        name,
                        has_arg: HasArg::Required,
                        key: PROTO_KEY_BASE + code,
                    });
                }
            }
            't' => {
                p.c.options |= opt::TIMEOUT;
                p.c.filter.timeout = Some(parse_u32(&val(), "--timeout", "timeout")?);
            }
            'u' => {
                p.c.options |= opt::STATUS;
                let (mut v, mut m) = (p.status_value, p.status_mask);
                parse_status(&val(), &mut v, &mut m, &mut p.warnings)?;
                p.status_value = v;
                p.status_mask = m;
            }
            'e' => {
                p.c.options |= opt::EVENT_MASK;
                p.c.event_mask |= parse_list(&val(), EVENT_WORDS, &mut p.warnings)?;
            }
            'o' => {
                p.c.options |= opt::OUTPUT;
                let bits = parse_list(&val(), OUTPUT_WORDS, &mut p.warnings)?;
                let o = &mut p.c.output;
                o.xml |= bits & O_XML != 0;
                o.extended |= bits & O_EXT != 0;
                o.timestamp |= bits & O_TMS != 0;
                o.id |= bits & O_ID != 0;
                o.ktimestamp |= bits & O_KTMS != 0;
                o.labels |= bits & O_CL != 0;
                o.save |= bits & O_SAVE != 0;
                o.json |= bits & O_JSON != 0;
                if o.labels {
                    p.labelmap();
                }
                let o = p.c.output;
                if o.save
                    && (o.extended || o.timestamp || o.id || o.ktimestamp || o.labels || o.xml)
                {
                    return Err(ArgError::other(
                        "cannot combine save output with any other output type, use -o save only",
                    ));
                }
                if o.json && (o.save || o.xml || o.extended || o.labels) {
                    return Err(ArgError::ours(
                        "cannot combine json output with save, xml, extended or labels",
                    ));
                }
            }
            'z' => p.c.options |= opt::ZERO,
            'n' | 'g' | 'j' => {
                let arg = value.clone().or_else(|| g.take_optional_word());
                p.nat_opt(k, arg)?;
            }
            'w' | '(' | ')' => {
                let v = val();
                let flag = format!("--{}", long_name_of(k));
                let z = parse_c_ulong(&v)
                    .filter(|&n| n <= u16::MAX as u64)
                    .ok_or_else(|| ArgError::ours(format!("invalid zone '{v}' for {flag}")))?
                    as u16;
                let f = &mut p.c.filter;
                match k {
                    'w' => {
                        p.c.options |= opt::ZONE;
                        f.zone = Some(z);
                    }
                    '(' => {
                        p.c.options |= opt::ORIG_ZONE;
                        f.orig_zone = Some(z);
                    }
                    _ => {
                        p.c.options |= opt::REPL_ZONE;
                        f.reply_zone = Some(z);
                    }
                }
            }
            'i' => {
                let v = value
                    .clone()
                    .or_else(|| g.take_optional_word())
                    .unwrap_or_default();
                p.c.options |= opt::ID;
                p.c.filter.id = Some(parse_u32(&v, "--id", "id")?);
            }
            'c' => {
                p.c.options |= opt::SECMARK;
                p.c.filter.secmark = Some(parse_u32(&val(), "--secmark", "secmark")?);
            }
            'm' => {
                p.c.options |= opt::MARK;
                let v = val();
                let (a, b) = match v.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (v.as_str(), None),
                };
                let value = parse_u32(a, "--mark", "mark")?;
                let mask = match b {
                    Some(b) => parse_u32(b, "--mark", "mark mask")?,
                    None => u32::MAX,
                };
                p.c.filter.mark = Some((value, mask));
            }
            'l' | '<' | '>' => {
                p.c.options |= match k {
                    'l' => opt::LABEL,
                    '<' => opt::ADD_LABEL,
                    _ => opt::DEL_LABEL,
                };
                if p.c.options & (opt::ADD_LABEL | opt::DEL_LABEL)
                    == (opt::ADD_LABEL | opt::DEL_LABEL)
                {
                    return Err(ArgError::other(
                        "cannot use --label-add and --label-del at the same time",
                    ));
                }
                let arg = if k == '>' {
                    match value.clone().or_else(|| g.take_optional_word()) {
                        Some(a) => a,
                        None => {
                            p.labelmap();
                            continue;
                        }
                    }
                } else {
                    val()
                };
                let l = p.parse_labels(&arg)?;
                let slot = if k == 'l' {
                    &mut p.c.filter.labels
                } else {
                    &mut p.c.label_modify
                };
                let mut merged = slot.unwrap_or(Labels {
                    words: [0; 4],
                    len: 4,
                });
                for i in 0..4 {
                    merged.words[i] |= l.words[i];
                }
                *slot = Some(merged);
            }
            'a' => p
                .warnings
                .push("WARNING: ignoring -a, deprecated option.".into()),
            'f' => {
                p.c.options |= opt::FAMILY;
                let v = val();
                if v.starts_with("ipv4") {
                    p.set_family(AF_INET)?;
                } else if v.starts_with("ipv6") {
                    p.set_family(AF_INET6)?;
                } else {
                    return Err(ArgError::param(format!("`{v}' unsupported protocol")));
                }
            }
            'b' => {
                p.c.options |= opt::BUFFERSIZE;
                let v = val();
                let n = parse_c_ulong(&v)
                    .filter(|&n| n > 0 && n <= (1 << 30))
                    .ok_or_else(|| {
                        ArgError::ours(format!("invalid buffer size '{v}' for --buffer-size"))
                    })?;
                p.c.buffer_size = Some(n as usize);
            }
            _ => return Err(ArgError::param(format!("unknown option `{spelled}'"))),
        }
    }

    let mut c = p.c;
    let family = if p.family == 0 {
        match c.cmd {
            Some(Cmd::List | Cmd::Update | Cmd::Delete | Cmd::Get | Cmd::Flush | Cmd::Event) => 0,
            _ => AF_INET,
        }
    } else {
        p.family
    };
    c.family = family;
    c.filter.family = (family != 0).then_some(family);
    if c.options & opt::STATUS != 0 {
        c.filter.status = Some(p.status_value);
        c.filter.status_mask = p.status_mask;
    }
    if c.options & opt::ANY_NAT != 0 && c.options & (opt::SRC_NAT | opt::DST_NAT) != 0 {
        return Err(ArgError::param(
            "cannot specify `--src-nat' or `--dst-nat' with `--any-nat'",
        ));
    }
    let row: &[u8] = match c.cmd {
        Some(cmd) => &COMMANDS_V_OPTIONS[cmd as usize],
        None => &[0; NUMBER_OF_OPT],
    };
    opt_check(
        c.options,
        row,
        &OPTFLAGS,
        Some((
            "you have to specify `--src' and `--dst'",
            "you have to specify `--reply-src' and `--reply-dst'",
        )),
    )?;
    if let (Some(cmd), Some(pr)) = (c.cmd, p.proto) {
        if cmd == Cmd::Help {
            c.help_proto = Some(pr);
        } else {
            let po = proto_opts(pr);
            opt_check(p.proto_flags, (po.table)(cmd), po.flags, po.pairs)?;
        }
    }
    // conntrack compares the template (and so a `-t`) only when a
    // comparison option is given: `-D -t 1` deletes everything
    if c.cmd == Some(Cmd::Delete) && c.options & opt::COMPARISON == 0 {
        c.filter.timeout = None;
    }
    let filtering = match c.cmd {
        Some(Cmd::List) => !matches!(c.table, Table::Dying | Table::Unconfirmed),
        Some(Cmd::Update | Cmd::Delete | Cmd::Event) => true,
        _ => false,
    };
    if filtering {
        apply_masks(&mut c, p.masks)?;
    }
    Ok((c, p.warnings))
}

/// `--mask-src`/`--mask-dst` turn `-s`/`-d` into a network match, as
/// conntrack's `nfct_filter_init` does (a mask without its address is an
/// error there).
fn apply_masks(c: &mut CtCommand, masks: [Option<IpAddr>; 2]) -> Res<()> {
    for (i, mask) in masks.into_iter().enumerate() {
        let Some(mask) = mask else { continue };
        let (bit, name) = if i == 0 {
            (opt::ORIG_SRC, "src")
        } else {
            (opt::ORIG_DST, "dst")
        };
        if c.options & bit == 0 {
            return Err(ArgError::param(format!(
                "Can't use --mask-{name} without --{name}"
            )));
        }
        let len = match mask {
            IpAddr::V4(m) => u32::from(m).leading_ones() as u8,
            IpAddr::V6(m) => u128::from(m).leading_ones() as u8,
        };
        let f = &mut c.filter;
        let (exact, prefix) = if i == 0 {
            (&mut f.orig_src, &mut f.src_prefix)
        } else {
            (&mut f.orig_dst, &mut f.dst_prefix)
        };
        if let Some(addr) = exact.take().or(prefix.map(|p| p.addr)) {
            *prefix = Some(Prefix { addr, len });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<CtCommand, ArgError> {
        parse(s.split_whitespace().map(str::to_string).collect()).map(|(c, _)| c)
    }

    fn err(s: &str) -> String {
        parse_str(s).unwrap_err().msg
    }

    #[test]
    fn list_with_filters() {
        let c = parse_str("-L -p tcp --dport 80 -s 10.0.0.0/8 -m 1/0xff -u ASSURED").unwrap();
        assert_eq!(c.cmd, Some(Cmd::List));
        assert_eq!(c.filter.proto, Some(6));
        assert_eq!(c.filter.orig_dport, Some(80));
        assert_eq!(c.filter.src_prefix.unwrap().len, 8);
        assert_eq!(c.filter.mark, Some((1, 0xff)));
        assert_eq!(c.filter.status, Some(status::ASSURED));
        assert_eq!(c.family, AF_INET);
    }

    #[test]
    fn conntrack_error_messages() {
        assert_eq!(err("-L -s nope"), "Invalid IP address `nope'");
        assert_eq!(
            err("-L -r 1.2.3.4/8"),
            "CIDR notation unavailable for `--reply-src'"
        );
        assert_eq!(err("-L -s 1.2.3.4/40"), "Invalid netmask");
        assert_eq!(err("-L -D"), "Invalid commands combination");
        assert_eq!(err("--foo"), "unknown option `--foo'");
        assert_eq!(err("-L -p"), "option `-p' requires an argument");
        assert_eq!(err("-L -p nonsense"), "`nonsense' unsupported protocol");
        assert_eq!(
            err("-I -p tcp -s 1.2.3.4"),
            "You need to supply the `--timeout' option for this command"
        );
        assert_eq!(
            err("-F -s 1.2.3.4"),
            "Illegal option `--src' with this command"
        );
        assert_eq!(
            err("-I -p tcp -t 10 -s 1.2.3.4 --state ESTABLISHED"),
            "you have to specify `--src' and `--dst'"
        );
        assert_eq!(
            err("-I -p tcp -t 10 -s 1.2.3.4 -d 1.2.3.5 --sport 1 --state ESTABLISHED"),
            "you have to specify `--sport' and `--dport'"
        );
        assert_eq!(err("-L -p tcp --state BOGUS"), "unknown TCP state `BOGUS'");
        assert_eq!(err("-L -u BOGUS"), "Bad parameter `BOGUS'");
        assert_eq!(err("-L -s 1.2.3.4 -d ::1"), "mismatched address family");
        assert_eq!(err("-L --sport 1"), "unknown option `--sport'");
        assert_eq!(err("-L nope"), "unknown type `nope'");
        assert_eq!(
            err("-L -n -j"),
            "cannot specify `--src-nat' or `--dst-nat' with `--any-nat'"
        );
    }

    #[test]
    fn our_value_checks() {
        let e = parse_str("-L -p tcp --dport abc").unwrap_err();
        assert_eq!(e.msg, "invalid port 'abc' for --dport");
        assert!(!e.conntrack_style);
        assert_eq!(e.code, exit::PARAMETER);
        assert!(parse_str("-L -p tcp --dport 65536").is_err());
        assert!(parse_str("-L -m 12x").is_err());
        assert!(parse_str("-L -w 70000").is_err());
    }

    #[test]
    fn inet_aton_forms() {
        assert_eq!(inet_aton("1.2.3.4"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("0x0a.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("1.2.3.256"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("a.b"), None);
    }

    #[test]
    fn nat_args() {
        let c = parse_str("-L -n 1.2.3.4:80").unwrap();
        assert_eq!(c.filter.nat.src.unwrap().port, Some(80));
        let c = parse_str("-L -j [fd00::1]:53").unwrap();
        assert_eq!(
            c.filter.nat.any.unwrap().addr,
            Some("fd00::1".parse().unwrap())
        );
        let c = parse_str("-L -g").unwrap();
        assert_eq!(c.filter.nat.dst, Some(NatMatch::default()));
        assert_eq!(err("-L -n 1.2.3.4:"), "No port specified after `:'");
    }

    #[test]
    fn keywords_are_case_insensitive_prefixes() {
        let c = parse_str("-E -e new,DESTROY -o ext,id").unwrap();
        assert_eq!(c.event_mask, 5);
        assert!(c.output.extended && c.output.id);
        let c = parse_str("-L -u !ASSURED,UNREPLIED").unwrap();
        assert_eq!(c.filter.status, Some(0));
        assert_eq!(c.filter.status_mask, status::ASSURED | status::SEEN_REPLY);
    }
}
