//! Query strings of the API: percent-decoding, the flow selection
//! (`family proto src dst host port state status mark zone nat q`), sort
//! keys and paging. Pure: no I/O, unit-tested here.
//!
//! A bad value is an [`ApiError`] naming the parameter, so a person (or a
//! script) sees what to fix: `invalid value 'x' for parameter 'port'`.

use std::net::IpAddr;

use crate::flow::filter::{Filter, NatFilter, NatMatch, Prefix};
use crate::flow::names::{self, STATUS_NAMES};
use crate::flow::{AF_INET, AF_INET6, Flow, ProtoInfo, proto, status};

use super::names::Names;
use super::table::Row;

/// An error reply: HTTP status and a message for `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub msg: String,
}

impl ApiError {
    /// A 400 for a bad value of `param`.
    pub fn bad(param: &str, value: &str) -> ApiError {
        let mut v: String = value.chars().take(64).collect();
        if v.len() < value.len() {
            v.push_str("...");
        }
        ApiError {
            status: 400,
            msg: format!("invalid value '{v}' for parameter '{param}'"),
        }
    }

    /// Any status with a message.
    pub fn new(status: u16, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            msg: msg.into(),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` and `+` of a query component; invalid escapes and
/// invalid UTF-8 are errors.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits and decodes a query string into (name, value) pairs.
pub fn parse_pairs(qs: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in qs.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).ok_or_else(|| ApiError::new(400, "malformed query string"))?;
        let v = percent_decode(v).ok_or_else(|| ApiError::bad(&k, v))?;
        if out.len() >= 32 {
            return Err(ApiError::new(400, "too many query parameters"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Which host a `host=` parameter names: an address or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any address of the flow equals this one.
    Addr(IpAddr),
    /// Any address of the flow has this name (case-insensitive).
    Name(String),
}

/// The selection of flows of the API: conntrack's [`Filter`] for what it
/// covers, plus the web's own `host`, `port`, `state` by name and free
/// text `q`.
#[derive(Debug, Clone, Default)]
pub struct WebFilter {
    /// Family, protocol, address prefixes, mark, zone, status, NAT.
    pub base: Filter,
    /// `host=`: any address of either tuple.
    pub host: Option<HostMatch>,
    /// `port=`: any port of either tuple.
    pub port: Option<u16>,
    /// `sport=`: the original source port.
    pub sport: Option<u16>,
    /// `dport=`: the original destination port.
    pub dport: Option<u16>,
    /// `id=`: the kernel's id of the flow.
    pub id: Option<u32>,
    /// `state=`: protocol state by name (TCP, SCTP, DCCP), upper case.
    pub state: Option<String>,
    /// `q=`: free text, lower case, split into words that must all be
    /// found in the flow's text form (AND).
    pub q: Vec<String>,
}

/// The protocol state's name, for TCP, SCTP and DCCP flows.
pub fn state_name(f: &Flow) -> Option<&'static str> {
    match f.protoinfo {
        ProtoInfo::Tcp(t) => t.state.map(names::tcp_state_name),
        ProtoInfo::Sctp { state, .. } => state.map(names::sctp_state_name),
        ProtoInfo::Dccp { state, .. } => state.map(names::dccp_state_name),
        ProtoInfo::None => None,
    }
}

fn addrs(f: &Flow) -> [IpAddr; 4] {
    [f.orig.src, f.orig.dst, f.reply.src, f.reply.dst]
}

impl WebFilter {
    /// True when nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
            && self.host.is_none()
            && self.port.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.id.is_none()
            && self.state.is_none()
            && self.q.is_empty()
    }

    /// True when the flow is selected; `names` resolves `host=NAME` and
    /// names in `q`.
    pub fn matches(&self, f: &Flow, names: &Names) -> bool {
        if let Some(fam) = self.base.family
            && fam != f.family
        {
            return false;
        }
        if !self.base.matches(f) {
            return false;
        }
        if let Some(p) = self.port {
            let ported = proto::has_ports(f.orig.proto);
            if !ported
                || !(f.orig.sport == p
                    || f.orig.dport == p
                    || f.reply.sport == p
                    || f.reply.dport == p)
            {
                return false;
            }
        }
        if let Some(id) = self.id
            && f.id != Some(id)
        {
            return false;
        }
        let ported = proto::has_ports(f.orig.proto);
        if self.sport.is_some_and(|p| !ported || f.orig.sport != p)
            || self.dport.is_some_and(|p| !ported || f.orig.dport != p)
        {
            return false;
        }
        if let Some(st) = &self.state
            && state_name(f) != Some(st.as_str())
        {
            return false;
        }
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Addr(a)) => addrs(f).contains(a),
            Some(HostMatch::Name(n)) => addrs(f)
                .iter()
                .any(|a| names.get(a).is_some_and(|x| x.eq_ignore_ascii_case(n))),
        };
        if !host_ok {
            return false;
        }
        if !self.q.is_empty() && !text_contains(f, names, &self.q) {
            return false;
        }
        true
    }
}

/// True when the flow's searchable text (protocol, state, addresses,
/// ports, names, status words, helper) contains every word of `q`
/// (lower case). The text is built in a buffer of this thread, without
/// the formatting machinery (this runs for every row of a filtered list).
fn text_contains(f: &Flow, names: &Names, q: &[String]) -> bool {
    use crate::flow::addr::{push_ip, push_u64};
    thread_local! {
        static TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TEXT.with(|cell| {
        let mut s = cell.borrow_mut();
        s.clear();
        let word = |s: &mut Vec<u8>, w: &[u8]| {
            s.extend_from_slice(w);
            s.push(b' ');
        };
        word(&mut s, names::l3_name(f.family).as_bytes());
        word(&mut s, names::l4_name(f.orig.proto).as_bytes());
        word(&mut s, state_name(f).unwrap_or("").as_bytes());
        for t in [&f.orig, &f.reply] {
            for (a, port) in [(t.src, t.sport), (t.dst, t.dport)] {
                push_ip(&mut s, a);
                s.push(b' ');
                if proto::has_ports(t.proto) {
                    push_ip(&mut s, a);
                    s.push(b':');
                    push_u64(&mut s, port as u64);
                    s.push(b' ');
                    push_u64(&mut s, port as u64);
                    s.push(b' ');
                }
            }
        }
        for a in addrs(f) {
            if let Some(n) = names.get(&a) {
                word(&mut s, n.as_bytes());
            }
        }
        if let Some(st) = f.status {
            for (bit, name) in STATUS_NAMES {
                if st & bit != 0 {
                    word(&mut s, name.as_bytes());
                }
            }
            if st & status::SEEN_REPLY == 0 {
                word(&mut s, b"UNREPLIED");
            }
        }
        if let Some(h) = &f.helper {
            s.extend_from_slice(h.as_bytes());
        }
        s.make_ascii_lowercase();
        q.iter().all(|w| contains(&s, w.as_bytes()))
    })
}

/// True when `needle` occurs in `hay` (first byte first: most places
/// fail there, without a slice comparison).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    (0..=hay.len() - needle.len()).any(|i| hay[i] == first && hay[i + 1..i + needle.len()] == *rest)
}

/// A field flows can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// Address family.
    Family,
    /// Layer-4 protocol number.
    Proto,
    /// Original source address.
    Src,
    /// Original destination address.
    Dst,
    /// Original source port.
    Sport,
    /// Original destination port.
    Dport,
    /// Protocol state number (kernel order: SYN_SENT < ESTABLISHED ...).
    State,
    /// Bytes, both directions.
    Bytes,
    /// Packets, both directions.
    Packets,
    /// Bytes of the original direction (from the initiator).
    BytesOrig,
    /// Bytes of the reply direction.
    BytesReply,
    /// Packets of the original direction.
    PacketsOrig,
    /// Packets of the reply direction.
    PacketsReply,
    /// Seconds until expiry.
    Timeout,
    /// Seconds since start (needs nf_conntrack_timestamp).
    Age,
    /// Connection mark.
    Mark,
    /// Zone.
    Zone,
    /// Kernel id.
    Id,
    /// NAT kind (none, SNAT, DNAT, both), then the reply tuple's address.
    Nat,
    /// Bytes per second, both directions (from the last two snapshots).
    Rate,
    /// Bytes per second of the original direction.
    RateOrig,
    /// Bytes per second of the reply direction.
    RateReply,
}

/// Every sort field with its name, as `sort=` accepts it.
pub const SORT_FIELDS: [(&str, SortField); 22] = [
    ("family", SortField::Family),
    ("proto", SortField::Proto),
    ("src", SortField::Src),
    ("dst", SortField::Dst),
    ("sport", SortField::Sport),
    ("dport", SortField::Dport),
    ("state", SortField::State),
    ("bytes", SortField::Bytes),
    ("packets", SortField::Packets),
    ("bytes_orig", SortField::BytesOrig),
    ("bytes_reply", SortField::BytesReply),
    ("packets_orig", SortField::PacketsOrig),
    ("packets_reply", SortField::PacketsReply),
    ("timeout", SortField::Timeout),
    ("age", SortField::Age),
    ("mark", SortField::Mark),
    ("zone", SortField::Zone),
    ("id", SortField::Id),
    ("nat", SortField::Nat),
    ("rate", SortField::Rate),
    ("rate_orig", SortField::RateOrig),
    ("rate_reply", SortField::RateReply),
];

/// Most sort fields one request may give.
pub const MAX_SORT_FIELDS: usize = 3;

/// A compact sort key: one number per sort field, descending fields
/// inverted, so keys compare with plain `Ord` (no JSON, no strings).
pub type SortKey = [u128; MAX_SORT_FIELDS];

fn ip_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v) | 1 << 127,
    }
}

fn field_value(r: &Row, field: SortField, now: u32) -> u128 {
    let c = |d: usize| r.counters(d).unwrap_or_default();
    let rate = |d: usize| r.rate(d).unwrap_or(0) as u128;
    match field {
        SortField::Family => r.family() as u128,
        SortField::Proto => r.proto() as u128,
        SortField::Src => ip_key(r.addr(0)),
        SortField::Dst => ip_key(r.addr(1)),
        SortField::Sport => r.to_ports().0 as u128,
        SortField::Dport => r.to_ports().1 as u128,
        SortField::State => r.state_order() as u128,
        SortField::Bytes => c(0).bytes as u128 + c(1).bytes as u128,
        SortField::Packets => c(0).packets as u128 + c(1).packets as u128,
        SortField::BytesOrig => c(0).bytes as u128,
        SortField::BytesReply => c(1).bytes as u128,
        SortField::PacketsOrig => c(0).packets as u128,
        SortField::PacketsReply => c(1).packets as u128,
        SortField::Timeout => r.timeout(now) as u128,
        SortField::Age => r.age(now).unwrap_or(0) as u128,
        SortField::Mark => r.mark().unwrap_or(0) as u128,
        SortField::Zone => r.zone().unwrap_or(0) as u128,
        SortField::Id => r.id() as u128,
        SortField::Nat => {
            let (snat, dnat) = (r.is_snat(), r.is_dnat());
            let kind = snat as u128 | (dnat as u128) << 1;
            let addr = if dnat { r.addr(2) } else { r.addr(3) };
            // kind above the address: ip_key uses the low 128 bits, so
            // fold the address into 120 bits
            kind << 120 | (ip_key(addr) & ((1u128 << 120) - 1))
        }
        SortField::Rate => rate(0) + rate(1),
        SortField::RateOrig => rate(0),
        SortField::RateReply => rate(1),
    }
}

/// The sort order of a request: up to three (field, descending) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sort {
    /// Fields in priority order; `true` means descending.
    pub fields: Vec<(SortField, bool)>,
}

impl Sort {
    /// Parses `field[,-field...]`.
    pub fn parse(v: &str) -> Result<Sort, ApiError> {
        let mut fields = Vec::new();
        for part in v.split(',') {
            let (desc, name) = match part.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, part.strip_prefix('+').unwrap_or(part)),
            };
            let f = SORT_FIELDS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, f)| f)
                .ok_or_else(|| ApiError::bad("sort", v))?;
            fields.push((f, desc));
        }
        if fields.len() > MAX_SORT_FIELDS {
            return Err(ApiError::new(
                400,
                format!("parameter 'sort' takes at most {MAX_SORT_FIELDS} fields"),
            ));
        }
        Ok(Sort { fields })
    }

    /// True when no order was asked for (dump order).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The row's compact key for this order at `now` (epoch seconds).
    pub fn key(&self, r: &Row, now: u32) -> SortKey {
        let mut k = [0u128; MAX_SORT_FIELDS];
        for (i, &(field, desc)) in self.fields.iter().enumerate() {
            let v = field_value(r, field, now);
            k[i] = if desc { !v } else { v };
        }
        k
    }

    /// Compares two rows in this order.
    pub fn cmp(&self, a: &Row, b: &Row, now: u32) -> std::cmp::Ordering {
        for &(field, desc) in &self.fields {
            let (x, y) = (field_value(a, field, now), field_value(b, field, now));
            let o = if desc { y.cmp(&x) } else { x.cmp(&y) };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    }
}

/// A parsed request for flows: selection, order, window.
#[derive(Debug, Clone, Default)]
pub struct FlowQuery {
    /// Which flows.
    pub filter: WebFilter,
    /// In which order.
    pub sort: Sort,
    /// How many matching flows to skip.
    pub offset: usize,
    /// How many to return at most (all when absent).
    pub limit: Option<usize>,
    /// Events: include UPDATE events.
    pub updates: bool,
    /// DELETE: the caller asked for every flow on purpose.
    pub all: bool,
    /// List as CSV (`format=csv`) instead of JSON.
    pub csv: bool,
}

/// Largest `offset` or `limit` accepted (beyond any conntrack table).
pub const MAX_WINDOW: usize = 1 << 24;

fn parse_num<T: std::str::FromStr>(param: &str, v: &str) -> Result<T, ApiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad(param, v));
    }
    v.parse().map_err(|_| ApiError::bad(param, v))
}

fn parse_u32_any(param: &str, v: &str) -> Result<u32, ApiError> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) if !h.is_empty() => u32::from_str_radix(h, 16).map_err(|_| ApiError::bad(param, v)),
        Some(_) => Err(ApiError::bad(param, v)),
        None => parse_num(param, v),
    }
}

fn parse_bool(param: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ApiError::bad(param, v)),
    }
}

fn parse_prefix(param: &str, v: &str, fam: &mut Option<u8>) -> Result<Prefix, ApiError> {
    let p = Prefix::parse(v).ok_or_else(|| ApiError::bad(param, v))?;
    let pf = if p.addr.is_ipv4() { AF_INET } else { AF_INET6 };
    match fam {
        Some(f) if *f != pf => Err(ApiError::new(
            400,
            format!("parameter '{param}' is of another family than 'family'"),
        )),
        _ => Ok(p),
    }
}

fn parse_status(v: &str, filter: &mut Filter) -> Result<(), ApiError> {
    let (mut set, mut clear) = (0u32, 0u32);
    for word in v.split(',') {
        let (neg, name) = match word.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, word),
        };
        let upper = name.to_ascii_uppercase();
        if upper == "UNREPLIED" {
            if neg {
                set |= status::SEEN_REPLY;
            } else {
                clear |= status::SEEN_REPLY;
            }
            continue;
        }
        let bit = STATUS_NAMES
            .iter()
            .find(|(_, n)| *n == upper)
            .map(|&(b, _)| b)
            .ok_or_else(|| ApiError::bad("status", v))?;
        if neg {
            clear |= bit;
        } else {
            set |= bit;
        }
    }
    if set & clear != 0 {
        return Err(ApiError::bad("status", v));
    }
    filter.status = Some(set);
    filter.status_mask = set | clear;
    Ok(())
}

/// Which parameters an endpoint takes besides the flow selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// GET /api/v1/connections: sort, limit, offset, format.
    List,
    /// DELETE /api/v1/connections: all.
    Delete,
    /// GET /api/v1/events: update.
    Events,
    /// GET /api/v1/hosts: no extra parameters.
    Hosts,
}

impl FlowQuery {
    /// Parses a query string for `endpoint`; unknown parameters are
    /// refused (a typo must not silently select everything).
    pub fn parse(qs: &str, endpoint: Endpoint) -> Result<FlowQuery, ApiError> {
        let mut q = FlowQuery::default();
        let pairs = parse_pairs(qs)?;
        // family first, so addresses can be checked against it
        for (k, v) in &pairs {
            if k == "family" {
                q.filter.base.family = Some(match v.to_ascii_lowercase().as_str() {
                    "ipv4" | "inet" | "4" => AF_INET,
                    "ipv6" | "inet6" | "6" => AF_INET6,
                    _ => return Err(ApiError::bad(k, v)),
                });
            }
        }
        for (k, v) in &pairs {
            let f = &mut q.filter;
            match (k.as_str(), endpoint) {
                ("family", _) => {}
                ("proto", _) => {
                    let p = match names::l4_by_name(v) {
                        Some(p) => p,
                        None => parse_num::<u8>(k, v)?,
                    };
                    f.base.proto = Some(p);
                }
                ("src", _) => f.base.src_prefix = Some(parse_prefix(k, v, &mut f.base.family)?),
                ("dst", _) => f.base.dst_prefix = Some(parse_prefix(k, v, &mut f.base.family)?),
                ("host", _) => {
                    if v.is_empty() || v.len() > 253 {
                        return Err(ApiError::bad(k, v));
                    }
                    f.host = Some(match v.parse::<IpAddr>() {
                        Ok(a) => HostMatch::Addr(a),
                        Err(_) => HostMatch::Name(v.clone()),
                    });
                }
                ("port", _) => f.port = Some(parse_num(k, v)?),
                ("state", _) => {
                    let up = v.to_ascii_uppercase();
                    let known = names::TCP_STATES
                        .iter()
                        .chain(names::SCTP_STATES.iter())
                        .chain(names::DCCP_STATES.iter())
                        .any(|s| *s == up);
                    if !known {
                        return Err(ApiError::bad(k, v));
                    }
                    f.state = Some(up);
                }
                ("status", _) => parse_status(v, &mut f.base)?,
                ("mark", _) => {
                    let (val, mask) = match v.split_once('/') {
                        Some((a, m)) => (parse_u32_any(k, a)?, parse_u32_any(k, m)?),
                        None => (parse_u32_any(k, v)?, u32::MAX),
                    };
                    if val & !mask != 0 {
                        return Err(ApiError::bad(k, v));
                    }
                    f.base.mark = Some((val, mask));
                }
                ("zone", _) => f.base.zone = Some(parse_num(k, v)?),
                ("nat", _) => {
                    let any = Some(NatMatch::default());
                    f.base.nat = match v.as_str() {
                        "snat" => NatFilter {
                            src: any,
                            ..NatFilter::default()
                        },
                        "dnat" => NatFilter {
                            dst: any,
                            ..NatFilter::default()
                        },
                        "any" => NatFilter {
                            any,
                            ..NatFilter::default()
                        },
                        _ => return Err(ApiError::bad(k, v)),
                    };
                }
                ("q", _) => {
                    let t = v.trim().to_lowercase();
                    if t.len() > 256 {
                        return Err(ApiError::bad(k, v));
                    }
                    f.q = t.split_whitespace().map(str::to_string).collect();
                }
                ("sport", _) => f.sport = Some(parse_num(k, v)?),
                ("dport", _) => f.dport = Some(parse_num(k, v)?),
                ("id", _) => f.id = Some(parse_num(k, v)?),
                ("format", Endpoint::List) => {
                    q.csv = match v.as_str() {
                        "json" => false,
                        "csv" => true,
                        _ => return Err(ApiError::bad(k, v)),
                    }
                }
                ("sort", Endpoint::List) => q.sort = Sort::parse(v)?,
                ("limit", Endpoint::List) => {
                    let n: usize = parse_num(k, v)?;
                    if n > MAX_WINDOW {
                        return Err(ApiError::bad(k, v));
                    }
                    q.limit = Some(n);
                }
                ("offset", Endpoint::List) => {
                    let n: usize = parse_num(k, v)?;
                    if n > MAX_WINDOW {
                        return Err(ApiError::bad(k, v));
                    }
                    q.offset = n;
                }
                ("update", Endpoint::Events) => q.updates = parse_bool(k, v)?,
                ("all", Endpoint::Delete) => q.all = parse_bool(k, v)?,
                _ => {
                    let mut name: String = k.chars().take(40).collect();
                    name.retain(|c| !c.is_control());
                    return Err(ApiError::new(400, format!("unknown parameter '{name}'")));
                }
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::web::table::test_row;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c").unwrap(), "a b c");
        assert_eq!(percent_decode("%0d%0A").unwrap(), "\r\n");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%ff").is_none());
        let p = parse_pairs("a=1&&b=&c").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], ("c".into(), "".into()));
    }

    #[test]
    fn every_parameter_parses_and_bad_ones_are_named() {
        let q = FlowQuery::parse(
            "family=ipv4&proto=tcp&src=10.0.0.0/8&dst=10.0.0.2&host=10.0.0.2&port=80\
             &state=established&status=ASSURED,!OFFLOAD&mark=0x5/0xff&zone=0&nat=any\
             &q=Foo&sort=-bytes,src&limit=10&offset=5",
            Endpoint::List,
        )
        .unwrap();
        assert_eq!(q.filter.base.family, Some(AF_INET));
        assert_eq!(q.filter.base.proto, Some(6));
        assert_eq!(q.filter.state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(q.filter.q, vec!["foo".to_string()]);
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.offset, 5);
        assert_eq!(
            q.sort.fields,
            vec![(SortField::Bytes, true), (SortField::Src, false)]
        );
        for (qs, param) in [
            ("port=abc", "port"),
            ("port=70000", "port"),
            ("proto=bogus", "proto"),
            ("src=10.0.0.0/33", "src"),
            ("state=NOPE", "state"),
            ("status=FOO", "status"),
            ("mark=1/0", "mark"),
            ("nat=maybe", "nat"),
            ("sort=color", "sort"),
            ("limit=-1", "limit"),
            ("family=ipx", "family"),
        ] {
            let e = FlowQuery::parse(qs, Endpoint::List).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.msg.contains(&format!("'{param}'")), "{qs}: {}", e.msg);
        }
        let e = FlowQuery::parse("colour=red", Endpoint::List).unwrap_err();
        assert_eq!(e.msg, "unknown parameter 'colour'");
        assert!(FlowQuery::parse("sort=bytes", Endpoint::Events).is_err());
        assert!(
            FlowQuery::parse("update=1", Endpoint::Events)
                .unwrap()
                .updates
        );
        assert!(FlowQuery::parse("family=ipv6&src=10.0.0.1", Endpoint::List).is_err());
    }

    #[test]
    fn filter_matches_like_the_fields_say() {
        let f = tcp4();
        let names = Names::default();
        let m = |qs: &str| {
            FlowQuery::parse(qs, Endpoint::List)
                .unwrap()
                .filter
                .matches(&f, &names)
        };
        assert!(m(""));
        assert!(m("family=ipv4&proto=tcp&port=1234&state=ESTABLISHED"));
        assert!(!m("family=ipv6"));
        assert!(!m("port=81"));
        assert!(m("host=10.0.0.2"));
        assert!(!m("host=10.0.0.3"));
        assert!(m("src=10.0.0.0/24&dst=10.0.0.2"));
        assert!(m("q=ESTAB"));
        assert!(m("q=10.0.0.2:80"));
        assert!(!m("q=udp"));
        assert!(m("status=ASSURED"));
        assert!(!m("status=UNREPLIED"));
        assert!(m("mark=5"));
        assert!(!m("nat=snat"));
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc", b""));
        assert!(contains(b"abc", b"abc"));
        assert!(contains(b"xabc", b"bc"));
        assert!(contains(b"aab", b"ab"));
        assert!(!contains(b"abc", b"abcd"));
        assert!(!contains(b"abc", b"ac"));
        assert!(!contains(b"", b"a"));
        assert!(contains(b"a", b"a"));
    }

    #[test]
    fn words_mean_and_and_tuple_fields_select() {
        let f = tcp4();
        let names = Names::default();
        let m = |qs: &str| {
            FlowQuery::parse(qs, Endpoint::List)
                .unwrap()
                .filter
                .matches(&f, &names)
        };
        assert!(m("q=tcp+10.0.0.2"));
        assert!(m("q=%20ESTABLISHED%20%20tcp%20"));
        assert!(!m("q=tcp+udp"));
        assert!(m("sport=1234&dport=80"));
        assert!(!m("sport=80"));
        assert!(!m("dport=1234"));
        assert!(m("id=3597683064"));
        assert!(!m("id=1"));
        let mut icmp = tcp4();
        icmp.orig.proto = crate::flow::proto::ICMP;
        let q = FlowQuery::parse("sport=1234", Endpoint::List).unwrap();
        assert!(!q.filter.matches(&icmp, &names), "no ports, no match");
        let q = FlowQuery::parse("dport=80", Endpoint::List).unwrap();
        assert!(!q.filter.matches(&icmp, &names));
        assert!(
            FlowQuery::parse("q=+", Endpoint::List)
                .unwrap()
                .filter
                .is_empty()
        );
        for qs in ["sport=1", "dport=1", "id=1", "q=a"] {
            assert!(
                !FlowQuery::parse(qs, Endpoint::List)
                    .unwrap()
                    .filter
                    .is_empty(),
                "{qs}"
            );
        }
        assert!(FlowQuery::parse("id=x", Endpoint::Delete).is_err());
        assert!(FlowQuery::parse("format=csv", Endpoint::List).unwrap().csv);
        assert!(!FlowQuery::parse("format=json", Endpoint::List).unwrap().csv);
        assert!(FlowQuery::parse("format=xml", Endpoint::List).is_err());
        assert!(FlowQuery::parse("format=csv", Endpoint::Hosts).is_err());
    }

    #[test]
    fn sort_keys_order_descending_by_inverting() {
        let mut a = tcp4();
        let mut b = tcp4();
        a.counters = [
            Some(crate::flow::Counters {
                packets: 1,
                bytes: 10,
            }),
            None,
        ];
        b.counters = [
            Some(crate::flow::Counters {
                packets: 1,
                bytes: 20,
            }),
            None,
        ];
        let (ra, rb) = (test_row(&a, 0), test_row(&b, 0));
        let s = Sort::parse("-bytes").unwrap();
        assert!(s.key(&rb, 0) < s.key(&ra, 0));
        assert!(s.cmp(&rb, &ra, 0).is_lt());
        let s = Sort::parse("bytes").unwrap();
        assert!(s.key(&ra, 0) < s.key(&rb, 0));
        assert!(s.cmp(&ra, &rb, 0).is_lt());
        assert!(s.cmp(&ra, &ra, 0).is_eq());
        assert!(Sort::parse("a,b,c,d").is_err());
        assert!(Sort::parse("bytes,src,dst,id").is_err());
        assert!(Sort::parse("+bytes").unwrap().fields == vec![(SortField::Bytes, false)]);
    }

    #[test]
    fn every_sort_field_reads_its_column() {
        use crate::flow::{Counters, ProtoInfo, TcpInfo};
        let mut f = tcp4();
        f.counters = [
            Some(Counters {
                packets: 3,
                bytes: 300,
            }),
            Some(Counters {
                packets: 5,
                bytes: 700,
            }),
        ];
        f.timestamp_start = Some(40 * 1_000_000_000);
        f.zone = Some(4);
        f.protoinfo = ProtoInfo::Tcp(TcpInfo {
            state: Some(3),
            ..TcpInfo::default()
        });
        let mut r = test_row(&f, 100);
        crate::web::table::set_rate(&mut r, 11, 13);
        let v4 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()) as u128;
        let want: [(SortField, u128); 22] = [
            (SortField::Family, AF_INET as u128),
            (SortField::Proto, 6),
            (SortField::Src, v4("10.0.0.1")),
            (SortField::Dst, v4("10.0.0.2")),
            (SortField::Sport, 1234),
            (SortField::Dport, 80),
            (SortField::State, 4),
            (SortField::Bytes, 1000),
            (SortField::Packets, 8),
            (SortField::BytesOrig, 300),
            (SortField::BytesReply, 700),
            (SortField::PacketsOrig, 3),
            (SortField::PacketsReply, 5),
            (SortField::Timeout, 119 - 10),
            (SortField::Age, 70),
            (SortField::Mark, 5),
            (SortField::Zone, 4),
            (SortField::Id, 3597683064),
            (SortField::Nat, v4("10.0.0.1")),
            (SortField::Rate, 24),
            (SortField::RateOrig, 11),
            (SortField::RateReply, 13),
        ];
        for (field, v) in want {
            assert_eq!(field_value(&r, field, 110), v, "{field:?}");
            let name = SORT_FIELDS.iter().find(|(_, x)| *x == field).unwrap().0;
            assert_eq!(Sort::parse(name).unwrap().key(&r, 110)[0], v, "{name}");
            assert_eq!(
                Sort::parse(&format!("-{name}")).unwrap().key(&r, 110)[0],
                !v
            );
        }
        // IPv6 sorts after IPv4; NAT kinds order none < snat < dnat
        let mut six = tcp4();
        six.orig.src = "::1".parse().unwrap();
        six.orig.dst = "::2".parse().unwrap();
        six.reply = six.orig.inverted();
        let r6 = test_row(&six, 0);
        assert!(field_value(&r6, SortField::Src, 0) > field_value(&r, SortField::Src, 0));
        let mut snat = tcp4();
        snat.status = Some(crate::flow::status::SRC_NAT_DONE);
        snat.reply.dst = "192.0.2.9".parse().unwrap();
        let mut dnat = tcp4();
        dnat.status = Some(crate::flow::status::DST_NAT_DONE);
        dnat.reply.src = "192.0.2.8".parse().unwrap();
        let (rs, rd) = (test_row(&snat, 0), test_row(&dnat, 0));
        assert_eq!(field_value(&rs, SortField::Nat, 0) >> 120, 1);
        assert_eq!(
            field_value(&rs, SortField::Nat, 0) & 0xffff_ffff,
            v4("192.0.2.9")
        );
        assert_eq!(field_value(&rd, SortField::Nat, 0) >> 120, 2);
        assert_eq!(
            field_value(&rd, SortField::Nat, 0) & 0xffff_ffff,
            v4("192.0.2.8")
        );
        // two fields: the second breaks ties of the first
        let s = Sort::parse("proto,-sport").unwrap();
        let mut other = tcp4();
        other.orig.sport = 2000;
        let ro = test_row(&other, 0);
        assert!(s.cmp(&ro, &r, 0).is_lt());
    }
}
