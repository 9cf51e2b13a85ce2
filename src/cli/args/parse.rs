//! The parser: the getopt scanner's tokens turned into a [`CtCommand`],
//! each value checked as it comes, then the whole against conntrack's
//! legality tables.

use std::net::IpAddr;

use super::command::{Cmd, CtCommand, LabelChange, Table};
use super::expect;
use super::legality::{check_options, check_proto_options, opt, proto_longs};
use super::values::{
    EVENT_WORDS, find_proto, parse_addr_mask, parse_list, parse_name, parse_output, parse_port,
    parse_small, parse_status, parse_u32, split_nat_arg,
};
use crate::cli::error::CliError;
use crate::cli::getopt::{Getopt, HasArg, LongOpt, Token};
use crate::flow::filter::{NatMatch, Prefix};
use crate::flow::labels::{CONNLABEL_CONF, LabelMap, parse_c_ulong};
use crate::flow::{AF_INET, AF_INET6, Labels, names, proto};
use crate::netlink::client::errno_text as kernel_errno_text;
use crate::netlink::ct::NatSetup;
use crate::netlink::events::group;

type Res<T> = Result<T, CliError>;

/// conntrack's short options, in getopt's notation.
const SHORTS: &str = ":L::I::U::D::G::E::F::A::hVs:d:r:q:p:t:u:e:a:z[:]:{:}:m:i:f:o:n::g::c:b:C::Sj::w:l:<:>::(:):M:";

/// Keys of the protocol options, above every character key: the option's
/// code is added to it.
const PROTO_KEY_BASE: u32 = 0x1000;

/// conntrack's long options, each with the key of its short form.
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
        l("labelmap", Required, 'M'),
        l("label-add", Required, '<'),
        l("label-del", Optional, '>'),
        l("orig-zone", Required, '('),
        l("reply-zone", Required, ')'),
    ]
}

/// The long name of option `key` (`src` for `s`).
fn long_name_of(key: char) -> &'static str {
    base_longs()
        .into_iter()
        .find(|o| o.key == key as u32)
        .map(|o| o.name)
        .unwrap_or("unknown")
}

/// The command being built, and what only the parse needs.
struct Parser {
    c: CtCommand,
    /// The options given, as [`opt`] bits (the legality table's columns).
    options: u32,
    family: u8,
    status_value: u32,
    status_mask: u32,
    proto: Option<u8>,
    proto_flags: u32,
    warnings: Vec<String>,
    labels_used: bool,
    /// `--labelmap PATH` (1.4.9): where label names are read.
    labelmap_path: Option<String>,
    /// The label lists of `-l`, `--label-add`, `--label-del` in order,
    /// parsed once every option is read (as 1.4.9, so `--labelmap` may
    /// come after them).
    label_lists: Vec<(char, String)>,
    /// `--mask-src` / `--mask-dst` addresses.
    masks: [Option<IpAddr>; 2],
}

impl Parser {
    fn set_family(&mut self, f: u8) -> Res<()> {
        if self.family == 0 {
            self.family = f;
        } else if self.family != f {
            return Err(CliError::param("mismatched address family"));
        }
        Ok(())
    }

    fn add_command(&mut self, cmd: Cmd) -> Res<()> {
        if self.c.cmd.is_some() {
            return Err(CliError::param("Invalid commands combination"));
        }
        self.c.cmd = Some(cmd);
        Ok(())
    }

    fn labelmap(&mut self) -> Option<&LabelMap> {
        if !self.labels_used {
            self.labels_used = true;
            let path = self.labelmap_path.as_deref().unwrap_or(CONNLABEL_CONF);
            match LabelMap::load(path) {
                Ok(m) => self.c.labelmap = Some(m),
                // conntrack's perror(), printed at once: also before the
                // error a missing label name then causes
                Err(e) => eprintln!("nfct_labelmap_new: {}", errno_text(&e)),
            }
        }
        self.c.labelmap.as_ref()
    }

    /// The label lists, parsed with the label map now that every option
    /// is read.
    fn apply_labels(&mut self) -> Res<()> {
        let lists = std::mem::take(&mut self.label_lists);
        self.labelmap();
        for (k, arg) in lists {
            let l = self.parse_labels(&arg)?;
            let changed = self.c.label_change.and_then(|c| c.labels());
            match k {
                'l' => self.c.filter.labels = Some(merge_labels(self.c.filter.labels, l)),
                '<' => self.c.label_change = Some(LabelChange::Add(merge_labels(changed, l))),
                _ => {
                    self.c.label_change = Some(LabelChange::Delete(Some(merge_labels(changed, l))))
                }
            }
        }
        Ok(())
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
                .ok_or_else(|| CliError::param(format!("unknown label '{name}'")))?;
            l.words[bit / 32] |= 1 << (bit % 32);
        }
        Ok(l)
    }

    fn addr_opt(&mut self, key: char, arg: &str) -> Res<()> {
        let (addr, mask) = match parse_addr_mask(arg) {
            Ok(v) => v,
            Err(false) => return Err(CliError::param(format!("Invalid IP address `{arg}'"))),
            Err(true) => {
                // conntrack checks CIDR availability before the netmask
                if matches!(key, 'r' | 'q') && arg.contains('/') {
                    return Err(CliError::param(format!(
                        "CIDR notation unavailable for `--{}'",
                        long_name_of(key)
                    )));
                }
                return Err(CliError::param("Invalid netmask"));
            }
        };
        self.set_family(if addr.is_ipv4() { AF_INET } else { AF_INET6 })?;
        let has_mask = matches!(key, 's' | 'd');
        if mask.is_some() && !has_mask {
            return Err(CliError::param(format!(
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
                self.options |= given;
                match mask.filter(|&m| m != full) {
                    Some(len) => {
                        *prefix = Some(Prefix { addr, len });
                        self.options |= masked;
                        *exact = None;
                        // for `-I expect` the prefix is the mask
                        self.c.expect.mask[(key == 'd') as usize] =
                            Some(expect::netmask(addr, len));
                    }
                    None => *exact = Some(addr),
                }
            }
            'r' => {
                self.options |= opt::REPL_SRC;
                f.reply_src = Some(addr);
            }
            'q' => {
                self.options |= opt::REPL_DST;
                f.reply_dst = Some(addr);
            }
            _ => {}
        }
        Ok(())
    }

    /// `--tuple-src/--tuple-dst` (a CIDR one implies the mask) and
    /// `--mask-src/--mask-dst` (args::expect).
    fn expect_addr_opt(&mut self, key: char, arg: &str) -> Res<()> {
        let tuple = matches!(key, '[' | ']');
        let (addr, mask) = expect::parse_addr(arg, tuple, long_name_of(key))?;
        self.set_family(if addr.is_ipv4() { AF_INET } else { AF_INET6 })?;
        let i = matches!(key, ']' | '}') as usize;
        let mask_bit = [opt::MASK_SRC, opt::MASK_DST][i];
        let e = &mut self.c.expect;
        if tuple {
            e.tuple[i] = Some(addr);
            self.options |= [opt::EXP_SRC, opt::EXP_DST][i];
            if let Some(m) = mask {
                e.mask[i] = Some(m);
                self.options |= mask_bit;
            }
        } else {
            e.mask[i] = Some(addr);
            self.masks[i] = Some(addr);
            self.options |= mask_bit;
        }
        Ok(())
    }

    fn nat_opt(&mut self, key: char, arg: Option<String>) -> Res<()> {
        self.options |= match key {
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
                    return Err(CliError::param(format!(
                        "CIDR notation unavailable for `--{}'",
                        long_name_of(key)
                    )));
                }
                _ => return Err(CliError::param(format!("Invalid IP address `{addr_s}'"))),
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
        if let Some(slot) = expect::port_slot(p, code) {
            let port = match p {
                proto::GRE => parse_key(v, flag)?,
                _ => parse_port(v, flag)?,
            };
            self.c.expect.set_port(slot, port);
            return Ok(());
        }
        let f = &mut self.c.filter;
        let is_port_proto = proto::has_ports(p);
        match (p, code) {
            (proto::GRE, 1..=8) => {
                let key = parse_key(v, flag)?;
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
                    .ok_or_else(|| CliError::param(format!("unknown TCP state `{v}'")))?;
                f.state = Some(s);
            }
            (proto::SCTP, 7) => {
                f.state = Some(parse_name(&names::SCTP_STATES, v, "unknown SCTP state")?)
            }
            (proto::DCCP, 7) => {
                f.state = Some(parse_name(&names::DCCP_STATES, v, "Unknown DCCP state")?)
            }
            (proto::DCCP, 10) => {
                self.c.dccp_role = Some(parse_name(&names::DCCP_ROLES, v, "Unknown DCCP role")?)
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

/// A GRE key (`--srckey 0x10`): a C number up to 0xffff.
fn parse_key(v: &str, flag: &str) -> Res<u16> {
    parse_c_ulong(v)
        .filter(|&n| n <= 0xffff)
        .map(|n| n as u16)
        .ok_or_else(|| CliError::ours(format!("invalid key '{v}' for {flag}")))
}

/// Parses a conntrack command line (without the program name).
pub fn parse(args: Vec<String>) -> Result<(CtCommand, Vec<String>), CliError> {
    let mut p = Parser {
        c: CtCommand::new(),
        options: 0,
        family: 0,
        status_value: 0,
        status_mask: 0,
        proto: None,
        proto_flags: 0,
        warnings: Vec::new(),
        labels_used: false,
        labelmap_path: None,
        label_lists: Vec::new(),
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
            Token::Unknown(a) => return Err(CliError::param(format!("unknown option `{a}'"))),
            Token::MissingValue(a) => {
                return Err(CliError::param(format!(
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
                    Some(w) => return Err(CliError::param(format!("unknown type `{w}'"))),
                };
                let is_l = k == 'L';
                if !is_l && matches!(table, Table::Dying | Table::Unconfirmed) {
                    return Err(CliError::param(
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
                        return Err(CliError::param(format!(
                            "Can't do --{long} on expectations"
                        )));
                    }
                };
                p.add_command(cmd)?;
                p.c.table = table;
            }
            's' | 'd' | 'r' | 'q' => p.addr_opt(k, &val())?,
            '[' | ']' | '{' | '}' => p.expect_addr_opt(k, &val())?,
            'p' => {
                let v = val();
                p.options |= opt::PROTO;
                let num = find_proto(&v)
                    .ok_or_else(|| CliError::param(format!("`{v}' unsupported protocol")))?;
                p.proto = Some(num);
                p.c.filter.proto = Some(num);
                for (name, code) in proto_longs(num) {
                    longs.push(LongOpt {
                        name,
                        has_arg: HasArg::Required,
                        key: PROTO_KEY_BASE + code,
                    });
                }
            }
            't' => {
                p.options |= opt::TIMEOUT;
                p.c.filter.timeout = Some(parse_u32(&val(), "--timeout", "timeout")?);
            }
            'u' => {
                p.options |= opt::STATUS;
                let (mut v, mut m) = (p.status_value, p.status_mask);
                parse_status(&val(), &mut v, &mut m, &mut p.warnings)?;
                p.status_value = v;
                p.status_mask = m;
            }
            'e' => {
                p.options |= opt::EVENT_MASK;
                p.c.event_mask |= parse_list(&val(), EVENT_WORDS, &mut p.warnings)?;
            }
            'o' => {
                p.options |= opt::OUTPUT;
                parse_output(&val(), &mut p.c.output, &mut p.warnings)?;
                let o = p.c.output;
                if o.save
                    && (o.extended || o.timestamp || o.id || o.ktimestamp || o.labels || o.xml)
                {
                    return Err(CliError::other(
                        "cannot combine save output with any other output type, use -o save only",
                    ));
                }
                if o.json && (o.save || o.xml || o.extended || o.labels) {
                    return Err(CliError::ours(
                        "cannot combine json output with save, xml, extended or labels",
                    ));
                }
            }
            'z' => p.options |= opt::ZERO,
            'n' | 'g' | 'j' => {
                let arg = value.clone().or_else(|| g.take_optional_word());
                p.nat_opt(k, arg)?;
            }
            'w' | '(' | ')' => {
                let v = val();
                let flag = format!("--{}", long_name_of(k));
                let z = parse_c_ulong(&v)
                    .filter(|&n| n <= u16::MAX as u64)
                    .ok_or_else(|| CliError::ours(format!("invalid zone '{v}' for {flag}")))?
                    as u16;
                let f = &mut p.c.filter;
                match k {
                    'w' => {
                        p.options |= opt::ZONE;
                        f.zone = Some(z);
                    }
                    '(' => {
                        p.options |= opt::ORIG_ZONE;
                        f.orig_zone = Some(z);
                    }
                    _ => {
                        p.options |= opt::REPL_ZONE;
                        f.reply_zone = Some(z);
                    }
                }
            }
            'i' => {
                let v = value
                    .clone()
                    .or_else(|| g.take_optional_word())
                    .unwrap_or_default();
                p.options |= opt::ID;
                p.c.filter.id = Some(parse_u32(&v, "--id", "id")?);
            }
            'c' => {
                p.options |= opt::SECMARK;
                p.c.filter.secmark = Some(parse_u32(&val(), "--secmark", "secmark")?);
            }
            'm' => {
                p.options |= opt::MARK;
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
                p.options |= match k {
                    'l' => opt::LABEL,
                    '<' => opt::ADD_LABEL,
                    _ => opt::DEL_LABEL,
                };
                if p.options & (opt::ADD_LABEL | opt::DEL_LABEL)
                    == (opt::ADD_LABEL | opt::DEL_LABEL)
                {
                    return Err(CliError::other(
                        "cannot use --label-add and --label-del at the same time",
                    ));
                }
                let arg = if k == '>' {
                    match value.clone().or_else(|| g.take_optional_word()) {
                        Some(a) => a,
                        None => {
                            p.c.label_change.get_or_insert(LabelChange::Delete(None));
                            continue;
                        }
                    }
                } else {
                    val()
                };
                p.label_lists.push((k, arg));
            }
            'M' => {
                if p.labelmap_path.is_some() {
                    return Err(CliError::param(
                        "option `--labelmap' can only be specified once",
                    ));
                }
                p.options |= opt::LABELMAP;
                p.labelmap_path = Some(val());
            }
            'a' => p
                .warnings
                .push("WARNING: ignoring -a, deprecated option.".into()),
            'f' => {
                p.options |= opt::FAMILY;
                let v = val();
                if v.starts_with("ipv4") {
                    p.set_family(AF_INET)?;
                } else if v.starts_with("ipv6") {
                    p.set_family(AF_INET6)?;
                } else {
                    return Err(CliError::param(format!("`{v}' unsupported protocol")));
                }
            }
            'b' => {
                p.options |= opt::BUFFERSIZE;
                let v = val();
                let n = parse_c_ulong(&v)
                    .filter(|&n| n > 0 && n <= (1 << 30))
                    .ok_or_else(|| {
                        CliError::ours(format!("invalid buffer size '{v}' for --buffer-size"))
                    })?;
                p.c.buffer_size = Some(n as usize);
            }
            _ => return Err(CliError::param(format!("unknown option `{spelled}'"))),
        }
    }

    // any of these options (might) use labels
    if p.options & (opt::LABEL | opt::ADD_LABEL | opt::DEL_LABEL) != 0 || p.c.output.labels {
        p.apply_labels()?;
    }
    let mut c = p.c;
    let options = p.options;
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
    if options & opt::STATUS != 0 {
        c.filter.status = Some(p.status_value);
        c.filter.status_mask = p.status_mask;
    }
    if options & opt::ANY_NAT != 0 && options & (opt::SRC_NAT | opt::DST_NAT) != 0 {
        return Err(CliError::param(
            "cannot specify `--src-nat' or `--dst-nat' with `--any-nat'",
        ));
    }
    check_options(c.cmd, options)?;
    if let (Some(cmd), Some(pr)) = (c.cmd, p.proto) {
        if cmd == Cmd::Help {
            c.help_proto = Some(pr);
        } else {
            check_proto_options(cmd, pr, p.proto_flags)?;
        }
    }
    c.orig_given = options & opt::ORIG != 0;
    c.reply_given = options & opt::REPL != 0;
    c.compares = options & opt::COMPARISON != 0;
    c.zero = options & opt::ZERO != 0;
    if options & opt::EVENT_MASK == 0 {
        c.event_mask = group::ALL;
    }
    // conntrack compares the template (and so a `-t`) only when a
    // comparison option is given: `-D -t 1` deletes everything
    if c.cmd == Some(Cmd::Delete) && !c.compares {
        c.filter.timeout = None;
    }
    let filtering = match c.cmd {
        Some(Cmd::List) => !matches!(c.table, Table::Dying | Table::Unconfirmed),
        Some(Cmd::Update | Cmd::Delete | Cmd::Event) => true,
        _ => false,
    };
    if filtering {
        apply_masks(&mut c, options, p.masks)?;
    }
    Ok((c, p.warnings))
}

/// The C library's text for the error of reading a file (perror's).
fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => kernel_errno_text(n).to_string(),
        None => e.to_string(),
    }
}

/// `labels` with the labels of `more` added.
fn merge_labels(labels: Option<Labels>, more: Labels) -> Labels {
    let mut merged = labels.unwrap_or(Labels {
        words: [0; 4],
        len: 4,
    });
    for i in 0..4 {
        merged.words[i] |= more.words[i];
    }
    merged
}

/// `--mask-src`/`--mask-dst` turn `-s`/`-d` into a network match, as
/// conntrack's `nfct_filter_init` does (a mask without its address is an
/// error there).
fn apply_masks(c: &mut CtCommand, options: u32, masks: [Option<IpAddr>; 2]) -> Res<()> {
    for (i, mask) in masks.into_iter().enumerate() {
        let Some(mask) = mask else { continue };
        let (bit, name) = if i == 0 {
            (opt::ORIG_SRC, "src")
        } else {
            (opt::ORIG_DST, "dst")
        };
        if options & bit == 0 {
            return Err(CliError::param(format!(
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
    use crate::exit;
    use crate::flow::status;

    fn parse_str(s: &str) -> Result<CtCommand, CliError> {
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
