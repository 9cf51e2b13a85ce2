//! What a conntrack command line means once parsed: the command, the
//! table, the output formats and the validated [`CtCommand`].

use super::expect::ExpectArgs;
use crate::flow::Labels;
use crate::flow::filter::Filter;
use crate::flow::labels::LabelMap;
use crate::netlink::ct::NatSetup;

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
            Cmd::ExpEvent => "expectation events have been shown.",
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

/// What `--label-add`/`--label-del` do to an entry's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelChange {
    /// `--label-add LABEL[,...]`: set these labels.
    Add(Labels),
    /// `--label-del [LABEL[,...]]`: clear these labels, or all of them
    /// without a list.
    Delete(Option<Labels>),
}

impl LabelChange {
    /// The labels named, if any.
    pub fn labels(self) -> Option<Labels> {
        match self {
            LabelChange::Add(l) => Some(l),
            LabelChange::Delete(l) => l,
        }
    }
}

/// A validated conntrack command.
#[derive(Clone, Debug)]
pub struct CtCommand {
    /// The command (None: none given; conntrack then prints its usage).
    pub cmd: Option<Cmd>,
    /// The table `-L` reads.
    pub table: Table,
    /// Address family (0 = both).
    pub family: u8,
    /// The selection / template.
    pub filter: Filter,
    /// `-n`/`-j` values for `-I`: source NAT to set up.
    pub snat: Option<NatSetup>,
    /// `-g`/`-j` values for `-I`: destination NAT to set up.
    pub dnat: Option<NatSetup>,
    /// `-s`/`-d` given: the original direction is named, at least in part.
    pub orig_given: bool,
    /// `-r`/`-q` given: the reply direction is named, at least in part.
    pub reply_given: bool,
    /// An option that makes conntrack's filter compare entries was given
    /// (`-p`, an address, `-m`, `-u`, `--id`, a zone, `-l`, ...).
    pub compares: bool,
    /// `-z`: zero the counters of the listed entries.
    pub zero: bool,
    /// `-e` event groups (bits NEW 1, UPDATE 2, DESTROY 4); all of them
    /// without `-e`.
    pub event_mask: u32,
    /// `-o`.
    pub output: Output,
    /// `-b`.
    pub buffer_size: Option<usize>,
    /// `--label-add`/`--label-del`.
    pub label_change: Option<LabelChange>,
    /// The label map, when labels were used.
    pub labelmap: Option<LabelMap>,
    /// `-p` given with `-h`: print that protocol's help too.
    pub help_proto: Option<u8>,
    /// SCTP `--orig-vtag`, `--reply-vtag` (for `-I`).
    pub sctp_vtag: [Option<u32>; 2],
    /// DCCP `--role` (0 client, 1 server; for `-I`).
    pub dccp_role: Option<u8>,
    /// The expected tuple and mask of `-I expect`.
    pub expect: ExpectArgs,
}

impl CtCommand {
    /// A command line with no options yet: no command, every field empty.
    pub(super) fn new() -> CtCommand {
        CtCommand {
            cmd: None,
            table: Table::Conntrack,
            family: 0,
            filter: Filter::default(),
            snat: None,
            dnat: None,
            orig_given: false,
            reply_given: false,
            compares: false,
            zero: false,
            event_mask: 0,
            output: Output::default(),
            buffer_size: None,
            label_change: None,
            labelmap: None,
            help_proto: None,
            sctp_vtag: [None; 2],
            dccp_role: None,
            expect: ExpectArgs::default(),
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
