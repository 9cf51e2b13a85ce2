//! conntrack's legality tables: which options each command accepts,
//! requires or refuses (`commands_v_options`), and the same for each
//! protocol's own options (`--sport`, `--state`, ...), checked with
//! conntrack's messages.

use super::command::Cmd;
use crate::cli::error::CliError;
use crate::flow::proto;

type Res<T> = Result<T, CliError>;

/// Option bits, in conntrack's order (the columns of its legality table).
pub(super) mod opt {
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
    /// `-a`: deprecated, warned about and ignored (its bit never set).
    #[allow(dead_code)]
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
    /// `--labelmap` (conntrack 1.4.9).
    pub const LABELMAP: u32 = 1 << 29;
    /// Options that make a filter compare entries.
    pub const COMPARISON: u32 =
        PROTO | ORIG | REPL | MARK | SECMARK | STATUS | ID | ZONE | LABEL | ORIG_ZONE | REPL_ZONE;
}

const NUMBER_OF_OPT: usize = 30;

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
    "labelmap",
];

/// conntrack's legality table: 0 illegal, 1 required, 2 optional,
/// 3 "original or reply tuple must be complete". 1.4.9's: its column
/// `--labelmap` (M) is legal with -L, -U, -D and -E.
const COMMANDS_V_OPTIONS: [[u8; NUMBER_OF_OPT]; 20] = [
    /* s d r q p t u z e [ ] { } a m i f n g o c b j w l < > ( ) M */
    [
        2, 2, 2, 2, 2, 0, 2, 2, 0, 0, 0, 2, 2, 0, 2, 0, 2, 2, 2, 2, 2, 0, 2, 2, 2, 0, 0, 2, 2, 2,
    ], // LIST
    [
        3, 3, 3, 3, 1, 1, 2, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 0, 2, 2, 0,
    ], // CREATE
    [
        2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 0, 0, 2,
    ], // UPDATE
    [
        2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0, 2, 2, 0, 0, 2, 2, 2,
    ], // DELETE
    [
        3, 3, 3, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0,
    ], // GET
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // FLUSH
    [
        2, 2, 2, 2, 2, 0, 0, 0, 2, 0, 0, 2, 2, 0, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 2, 2, 2,
    ], // EVENT
    [0; NUMBER_OF_OPT], // VERSION
    [
        0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // HELP
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_LIST
    [
        1, 1, 2, 2, 1, 1, 2, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_CREATE
    [
        1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_DELETE
    [
        1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_GET
    [0; NUMBER_OF_OPT], // EXP_FLUSH
    // ctrack: `-e` is legal here (conntrack refuses it, though its code
    // for it exists) and picks the expectation event groups
    [
        0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // EXP_EVENT
    [0; NUMBER_OF_OPT], // COUNT
    [0; NUMBER_OF_OPT], // EXP_COUNT
    [0; NUMBER_OF_OPT], // STATS
    [0; NUMBER_OF_OPT], // EXP_STATS
    [
        3, 3, 3, 3, 1, 1, 2, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 0, 2, 2, 0,
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
        (Cmd::ExpCreate, &[1, 1, 0, 0, 1, 1, 0, 1, 1]),
        (Cmd::ExpDelete, &[1, 1, 1, 1, 0, 0, 0, 0, 0]),
        (Cmd::ExpGet, &[1, 1, 1, 1, 0, 0, 0, 0, 0]),
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
        (Cmd::ExpCreate, &[1, 1, 0, 0, 1, 1, 1, 1]),
        (Cmd::ExpDelete, &[1, 1, 1, 1, 0, 0, 0, 0]),
        (Cmd::ExpGet, &[1, 1, 1, 1, 0, 0, 0, 0]),
    ];
    row_or_zero(c, R)
}

fn gre_table(c: Cmd) -> &'static [u8] {
    const R: &[(Cmd, &[u8])] = &[
        (Cmd::List, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Create, &[3, 3, 3, 3, 0, 0, 0, 0]),
        (Cmd::Update, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Delete, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Get, &[3, 3, 3, 3, 0, 0, 0, 0]),
        (Cmd::Event, &[2, 2, 2, 2, 0, 0, 0, 0]),
        (Cmd::Add, &[3, 3, 3, 3, 0, 0, 0, 0]),
        (Cmd::ExpCreate, &[1, 1, 1, 1, 1, 1, 1, 1]),
        (Cmd::ExpDelete, &[1, 1, 1, 1, 0, 0, 0, 0]),
        (Cmd::ExpGet, &[1, 1, 1, 1, 0, 0, 0, 0]),
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
        (Cmd::ExpCreate, &[1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1]),
        (Cmd::ExpDelete, &[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
        (Cmd::ExpGet, &[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
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
        (Cmd::ExpCreate, &[1, 1, 0, 0, 1, 1, 0, 1, 1, 1]),
        (Cmd::ExpDelete, &[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
        (Cmd::ExpGet, &[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
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
    table: gre_table,
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

/// The own options of protocol `p` (none for a protocol conntrack has no
/// module for).
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

/// The `--long` options protocol `p` adds to the command line, each with
/// its code (the bit `1 << (code - 1)` of the protocol's option bits).
pub(super) fn proto_longs(p: u8) -> &'static [(&'static str, u32)] {
    proto_opts(p).longs
}

/// True when conntrack has a module for protocol `p` (its own options).
pub(super) fn has_proto_module(p: u8) -> bool {
    proto_opts(p).name != "unknown"
}

/// Checks the options given (`options`, [`opt`] bits) against conntrack's
/// `commands_v_options` row of `cmd`.
pub(super) fn check_options(cmd: Option<Cmd>, options: u32) -> Res<()> {
    let row: &[u8] = match cmd {
        Some(cmd) => &COMMANDS_V_OPTIONS[cmd as usize],
        None => &[0; NUMBER_OF_OPT],
    };
    opt_check(
        options,
        row,
        &OPTFLAGS,
        Some((
            "you have to specify `--src' and `--dst'",
            "you have to specify `--reply-src' and `--reply-dst'",
        )),
    )
}

/// Checks the options of protocol `p` given (`proto_options`, bit
/// `code - 1` for each) against its table's row of `cmd`.
pub(super) fn check_proto_options(cmd: Cmd, p: u8, proto_options: u32) -> Res<()> {
    let po = proto_opts(p);
    opt_check(proto_options, (po.table)(cmd), po.flags, po.pairs)
}

/// conntrack's `generic_opt_check`: each option given must be legal in
/// `row`, each required one given, and where the row says so, the
/// original or the reply pair complete.
fn opt_check(options: u32, row: &[u8], names: &[&str], pairs: Option<(&str, &str)>) -> Res<()> {
    let mut special = false;
    for (i, name) in names.iter().enumerate() {
        let legal = row.get(i).copied().unwrap_or(0);
        if options & (1 << i) == 0 {
            if legal == 1 {
                return Err(CliError::param(format!(
                    "You need to supply the `--{name}' option for this command"
                )));
            }
        } else if legal == 0 {
            return Err(CliError::param(format!(
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
    Err(CliError::param(if partial == 1 {
        reply_msg
    } else {
        orig_msg
    }))
}
