//! Expectations: what a connection tracking helper (FTP, SIP, TFTP, ...)
//! tells the kernel to expect, so the related data connection is let in
//! as RELATED and gets the control connection as its master.
//!
//! [`Expectation`] is one entry of the kernel's expectation table as
//! ctnetlink reports it (`CTA_EXPECT_*`), and this module writes it in
//! conntrack's formats, byte for byte as libnetfilter_conntrack does
//! (`nfexp_snprintf`): the default line ([`write_line`]) and `-o xml`
//! ([`write_xml`]); plus ctrack's JSON object ([`write_json`]).
//! conntrack has no save form for expectations (`-L expect -o save`
//! prints the default line), so neither has ctrack.
//!
//! Pure data and formatting, like the rest of `flow`: the CLI, and later
//! the daemon's expectation cache, sync and web API build on it.

use super::addr::{push_hex, push_ip, push_u64};
use super::json::{Obj, push_bytes_str, write_tuple_obj};
use super::text::{event_tag, push_addrs, push_ports};
use super::xml::push_when;
use super::{EventKind, HelperName, Name, Tuple, names, proto};

/// Expectation flags (`NF_CT_EXPECT_*`).
pub mod flag {
    /// Stays after the expected connection arrived (more may follow).
    pub const PERMANENT: u32 = 0x1;
    /// Not yet active (a SIP expectation waiting for its signalling).
    pub const INACTIVE: u32 = 0x2;
    /// Created from userspace (`conntrack -I expect`, conntrackd).
    pub const USERSPACE: u32 = 0x4;
    /// Every flag with its name, in conntrack's order.
    pub const NAMES: [(u32, &str); 3] = [
        (PERMANENT, "PERMANENT"),
        (INACTIVE, "INACTIVE"),
        (USERSPACE, "USERSPACE"),
    ];
}

/// The name of an expectation function (`CTA_EXPECT_FN`, e.g.
/// `nat-follow-master`): longer than a helper name can be.
pub type ExpectFnName = Name<32>;

/// The NAT an expectation applies to the connection it expects
/// (`CTA_EXPECT_NAT`): the FTP helper behind NAT expects the data
/// connection on the NATed address and maps it back to the saved one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpectNat {
    /// Direction of the master the NAT applies to (0 original, 1 reply).
    pub dir: Option<u32>,
    /// The saved address and port (source fields of the tuple).
    pub tuple: Option<Tuple>,
}

/// One expectation, as decoded from a ctnetlink expectation message.
///
/// Every attribute the kernel may leave out is an `Option`, because the
/// formats print a field only when the kernel sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    /// Address family (AF_INET or AF_INET6) from the message header.
    pub family: u8,
    /// The original tuple of the master connection (CTA_EXPECT_MASTER).
    pub master: Option<Tuple>,
    /// The tuple of the expected connection (CTA_EXPECT_TUPLE).
    pub tuple: Option<Tuple>,
    /// Which bits of `tuple` must match (CTA_EXPECT_MASK): addresses and
    /// the source port are masks, the rest all ones.
    pub mask: Option<Tuple>,
    /// Seconds until the expectation expires.
    pub timeout: Option<u32>,
    /// Kernel-assigned id.
    pub id: Option<u32>,
    /// The helper that made it.
    pub helper: Option<HelperName>,
    /// Conntrack zone.
    pub zone: Option<u16>,
    /// [`flag`] bits.
    pub flags: Option<u32>,
    /// Expectation class of the helper (SIP: signalling, audio, video).
    pub class: Option<u32>,
    /// NAT set up for the expected connection.
    pub nat: Option<ExpectNat>,
    /// The function the kernel runs on the expected connection.
    pub expectfn: Option<ExpectFnName>,
}

impl Expectation {
    /// The layer-4 protocol of the expected connection.
    pub fn proto(&self) -> u8 {
        self.tuple.map_or(0, |t| t.proto)
    }
}

/// Which optional parts of the default line to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpTextOptions {
    /// Event tag (`[NEW]` ...) for event lines.
    pub event: Option<EventKind>,
    /// Whether to print the timeout (conntrackd's cache dumps leave it out).
    pub hide_timeout: bool,
}

/// Appends an expectation as conntrack's line, without the newline:
/// `300 proto=6 src=.. dst=.. sport=0 dport=N mask-src=.. mask-dst=..
/// sport=0 dport=65535 master-src=.. master-dst=.. sport=.. dport=21
/// [zone=N ][PERMANENT,INACTIVE,USERSPACE ]class=0 helper=ftp`.
pub fn write_line(out: &mut Vec<u8>, e: &Expectation, o: &ExpTextOptions) {
    if let Some(ev) = o.event {
        out.extend_from_slice(event_tag(ev).as_bytes());
        out.push(b' ');
    }
    if let Some(t) = e.timeout.filter(|_| !o.hide_timeout) {
        push_u64(out, t as u64);
        out.push(b' ');
    }
    out.extend_from_slice(b"proto=");
    push_u64(out, e.proto() as u64);
    out.push(b' ');
    for (t, src, dst) in [
        (&e.tuple, &b"src="[..], &b"dst="[..]),
        (&e.mask, b"mask-src=", b"mask-dst="),
        (&e.master, b"master-src=", b"master-dst="),
    ] {
        if let Some(t) = t {
            push_addrs(out, t, src, dst);
            push_ports(out, t);
        }
    }
    if let Some(z) = e.zone {
        out.extend_from_slice(b"zone=");
        push_u64(out, z as u64);
        out.push(b' ');
    }
    let flags = e.flags.unwrap_or(0);
    let mut first = true;
    for (bit, name) in flag::NAMES {
        if flags & bit != 0 {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(name.as_bytes());
            first = false;
        }
    }
    // libnetfilter_conntrack's blank after the flags, also when only
    // unknown bits are set
    if flags != 0 {
        out.push(b' ');
    }
    if let Some(c) = e.class {
        out.extend_from_slice(b"class=");
        push_u64(out, c as u64);
        out.push(b' ');
    }
    if let Some(h) = &e.helper {
        out.extend_from_slice(b"helper=");
        out.extend_from_slice(h.as_bytes());
    }
    // the line always has `proto=`: its last blank is its own
    if out.last() == Some(&b' ') {
        out.pop();
    }
}

/// Which optional parts of the XML element to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpXmlOptions {
    /// Event type attribute of `<flow>`.
    pub event: Option<EventKind>,
    /// `-o timestamp`: a `<when>` element with the local time of `now`.
    pub when: bool,
    /// The current time in seconds.
    pub now: i64,
}

/// The document header conntrack prints before the first expectation.
pub const XML_HEADER: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<expect>\n";
/// The closing tag conntrack prints after the last expectation.
pub const XML_FOOTER: &str = "</expect>\n";

fn push_xml_addrs(out: &mut Vec<u8>, tag: &[u8], t: Option<&Tuple>) {
    out.push(b'<');
    out.extend_from_slice(tag);
    out.extend_from_slice(b"><src>");
    if let Some(t) = t {
        push_ip(out, t.src);
    }
    out.extend_from_slice(b"</src><dst>");
    if let Some(t) = t {
        push_ip(out, t.dst);
    }
    out.extend_from_slice(b"</dst></");
    out.extend_from_slice(tag);
    out.push(b'>');
}

fn push_xml_ports(out: &mut Vec<u8>, tag: &[u8], t: Option<&Tuple>) {
    out.push(b'<');
    out.extend_from_slice(tag);
    out.push(b'>');
    if let Some(t) = t {
        match t.proto {
            p if proto::has_ports(p) => {
                out.extend_from_slice(b"<sport>");
                push_u64(out, t.sport as u64);
                out.extend_from_slice(b"</sport><dport>");
                push_u64(out, t.dport as u64);
                out.extend_from_slice(b"</dport>");
            }
            proto::GRE => {
                out.extend_from_slice(b"<srckey>0x");
                push_hex(out, t.sport as u32);
                out.extend_from_slice(b"</srckey><dstkey>0x");
                push_hex(out, t.dport as u32);
                out.extend_from_slice(b"</dstkey>");
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(tag);
    out.push(b'>');
}

fn push_elem(out: &mut Vec<u8>, tag: &[u8], v: u64) {
    out.push(b'<');
    out.extend_from_slice(tag);
    out.push(b'>');
    push_u64(out, v);
    out.extend_from_slice(b"</");
    out.extend_from_slice(tag);
    out.push(b'>');
}

/// Appends an expectation as conntrack's `<flow>` element (`-o xml`),
/// without the newline.
pub fn write_xml(out: &mut Vec<u8>, e: &Expectation, o: &ExpXmlOptions) {
    out.extend_from_slice(match o.event {
        Some(EventKind::New) => b"<flow type=\"new\">".as_slice(),
        Some(EventKind::Update) => b"<flow type=\"update\">",
        Some(EventKind::Destroy) => b"<flow type=\"destroy\">",
        None => b"<flow>",
    });
    let tuples = [
        (&b"expected"[..], e.tuple.as_ref()),
        (b"mask", e.mask.as_ref()),
        (b"master", e.master.as_ref()),
    ];
    out.extend_from_slice(b"<layer3 protonum=\"");
    push_u64(out, e.family as u64);
    out.extend_from_slice(b"\" protoname=\"");
    out.extend_from_slice(names::l3_name(e.family).as_bytes());
    out.extend_from_slice(b"\">");
    for (tag, t) in tuples {
        push_xml_addrs(out, tag, t);
    }
    out.extend_from_slice(b"</layer3><layer4 protonum=\"");
    push_u64(out, e.proto() as u64);
    out.extend_from_slice(b"\" protoname=\"");
    out.extend_from_slice(names::l4_name(e.proto()).as_bytes());
    out.extend_from_slice(b"\">");
    for (tag, t) in tuples {
        push_xml_ports(out, tag, t);
    }
    out.extend_from_slice(b"</layer4><meta>");
    if let Some(h) = &e.helper {
        out.extend_from_slice(b"<helper-name>");
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"</helper-name>");
    }
    if let Some(t) = e.timeout {
        push_elem(out, b"timeout", t as u64);
    }
    if let Some(c) = e.class {
        push_elem(out, b"class", c as u64);
    }
    if let Some(z) = e.zone {
        push_elem(out, b"zone", z as u64);
    }
    if o.when {
        push_when(out, o.now);
    }
    let flags = e.flags.unwrap_or(0);
    for (bit, tag) in [
        (flag::PERMANENT, &b"<permanent/>"[..]),
        (flag::INACTIVE, b"<inactive/>"),
        (flag::USERSPACE, b"<userspace/>"),
    ] {
        if flags & bit != 0 {
            out.extend_from_slice(tag);
        }
    }
    out.extend_from_slice(b"</meta></flow>");
}

/// Which optional parts of the JSON object to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpJsonOptions {
    /// Event type (`"event":"new"` ...).
    pub event: Option<EventKind>,
    /// Leave out the timeout (the daemon's cache dumps).
    pub hide_timeout: bool,
}

/// Appends an expectation as ctrack's JSON object, without a newline:
/// `layer3`, `layer4`, `protonum`, `timeout`, the `expected`, `mask` and
/// `master` tuples, `zone`, `flags`, `class`, `helper`, `id`, `nat` and
/// `expectfn`, each only when the kernel sent it (README documents them).
pub fn write_json(out: &mut Vec<u8>, e: &Expectation, opts: &ExpJsonOptions) {
    let mut o = Obj::new(out);
    if let Some(ev) = opts.event {
        o.str(
            "event",
            match ev {
                EventKind::New => "new",
                EventKind::Update => "update",
                EventKind::Destroy => "destroy",
            },
        );
    }
    o.str("layer3", names::l3_name(e.family));
    o.str("layer4", names::l4_name(e.proto()));
    o.num("protonum", e.proto() as u64);
    if let Some(t) = e.timeout.filter(|_| !opts.hide_timeout) {
        o.num("timeout", t as u64);
    }
    for (key, t) in [
        ("expected", &e.tuple),
        ("mask", &e.mask),
        ("master", &e.master),
    ] {
        if let Some(t) = t {
            write_tuple_obj(o.key(key), t);
        }
    }
    if let Some(z) = e.zone {
        o.num("zone", z as u64);
    }
    if let Some(flags) = e.flags {
        let out = o.key("flags");
        out.push(b'[');
        let mut first = true;
        for (bit, name) in flag::NAMES {
            if flags & bit != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                super::json::push_str(out, name);
            }
        }
        out.push(b']');
    }
    if let Some(c) = e.class {
        o.num("class", c as u64);
    }
    if let Some(h) = &e.helper {
        push_bytes_str(o.key("helper"), h.as_bytes());
    }
    if let Some(id) = e.id {
        o.num("id", id as u64);
    }
    if let Some(n) = &e.nat {
        let mut no = Obj::new(o.key("nat"));
        match n.dir {
            Some(0) => no.str("dir", "original"),
            Some(1) => no.str("dir", "reply"),
            Some(d) => no.num("dir", d as u64),
            None => {}
        }
        if let Some(t) = &n.tuple {
            write_tuple_obj(no.key("tuple"), t);
        }
        no.end();
    }
    if let Some(f) = &e.expectfn {
        push_bytes_str(o.key("expectfn"), f.as_bytes());
    }
    o.end();
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::flow::AF_INET;

    /// The expectation an FTP PASV through the lab router makes.
    pub fn ftp_pasv() -> Expectation {
        let ip = |s: &str| s.parse().unwrap();
        Expectation {
            family: AF_INET,
            master: Some(Tuple {
                src: ip("10.9.1.2"),
                dst: ip("10.9.2.2"),
                proto: proto::TCP,
                sport: 37268,
                dport: 21,
                ..Tuple::default()
            }),
            tuple: Some(Tuple {
                src: ip("10.9.1.2"),
                dst: ip("10.9.2.2"),
                proto: proto::TCP,
                sport: 0,
                dport: 51221,
                ..Tuple::default()
            }),
            mask: Some(Tuple {
                src: ip("255.255.255.255"),
                dst: ip("255.255.255.255"),
                proto: proto::TCP,
                sport: 0,
                dport: 65535,
                ..Tuple::default()
            }),
            timeout: Some(298),
            id: Some(123),
            helper: Some(HelperName::from_bytes(b"ftp")),
            flags: Some(0),
            class: Some(0),
            ..Expectation::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::ftp_pasv;
    use super::*;
    use crate::flow::AF_INET6;

    fn line(e: &Expectation, o: &ExpTextOptions) -> String {
        let mut v = Vec::new();
        write_line(&mut v, e, o);
        String::from_utf8(v).unwrap()
    }

    fn xml(e: &Expectation, o: &ExpXmlOptions) -> String {
        let mut v = Vec::new();
        write_xml(&mut v, e, o);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn ftp_line_as_conntrack_prints_it() {
        assert_eq!(
            line(&ftp_pasv(), &ExpTextOptions::default()),
            "298 proto=6 src=10.9.1.2 dst=10.9.2.2 sport=0 dport=51221 \
             mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 \
             master-src=10.9.1.2 master-dst=10.9.2.2 sport=37268 dport=21 class=0 helper=ftp"
        );
        let o = ExpTextOptions {
            event: Some(EventKind::Destroy),
            hide_timeout: true,
        };
        assert!(line(&ftp_pasv(), &o).starts_with("[DESTROY] proto=6 src="));
        let o = ExpTextOptions {
            event: Some(EventKind::New),
            ..Default::default()
        };
        assert!(line(&ftp_pasv(), &o).starts_with("    [NEW] 298 proto=6 "));
    }

    #[test]
    fn zone_flags_and_missing_parts() {
        let mut e = ftp_pasv();
        e.zone = Some(3);
        e.flags = Some(flag::PERMANENT | flag::USERSPACE);
        e.helper = None;
        assert!(
            line(&e, &ExpTextOptions::default())
                .ends_with("sport=37268 dport=21 zone=3 PERMANENT,USERSPACE class=0")
        );
        e.flags = Some(flag::INACTIVE);
        e.class = None;
        assert!(line(&e, &ExpTextOptions::default()).ends_with("dport=21 zone=3 INACTIVE"));
        // an unknown flag bit leaves conntrack's blank: two before class
        e.flags = Some(8);
        e.class = Some(1);
        e.zone = None;
        assert!(line(&e, &ExpTextOptions::default()).ends_with("dport=21  class=1"));
        // a protocol without ports: addresses only
        let mut u = ftp_pasv();
        for t in [&mut u.tuple, &mut u.mask].into_iter().flatten() {
            t.proto = 19;
        }
        assert_eq!(
            line(&u, &ExpTextOptions::default()),
            "298 proto=19 src=10.9.1.2 dst=10.9.2.2 mask-src=255.255.255.255 \
             mask-dst=255.255.255.255 master-src=10.9.1.2 master-dst=10.9.2.2 sport=37268 \
             dport=21 class=0 helper=ftp"
        );
        assert_eq!(
            line(&Expectation::default(), &ExpTextOptions::default()),
            "proto=0"
        );
    }

    #[test]
    fn ftp_xml_as_conntrack_prints_it() {
        assert_eq!(
            xml(&ftp_pasv(), &ExpXmlOptions::default()),
            "<flow><layer3 protonum=\"2\" protoname=\"ipv4\"><expected><src>10.9.1.2</src>\
             <dst>10.9.2.2</dst></expected><mask><src>255.255.255.255</src><dst>255.255.255.255\
             </dst></mask><master><src>10.9.1.2</src><dst>10.9.2.2</dst></master></layer3>\
             <layer4 protonum=\"6\" protoname=\"tcp\"><expected><sport>0</sport><dport>51221\
             </dport></expected><mask><sport>0</sport><dport>65535</dport></mask><master>\
             <sport>37268</sport><dport>21</dport></master></layer4><meta><helper-name>ftp\
             </helper-name><timeout>298</timeout><class>0</class></meta></flow>"
        );
        let mut e = ftp_pasv();
        e.family = AF_INET6;
        e.zone = Some(2);
        e.flags = Some(flag::PERMANENT | flag::INACTIVE | flag::USERSPACE);
        let x = xml(
            &e,
            &ExpXmlOptions {
                event: Some(EventKind::Update),
                when: true,
                now: 0,
            },
        );
        assert!(x.starts_with("<flow type=\"update\"><layer3 protonum=\"10\" protoname=\"ipv6\">"));
        assert!(x.contains("<class>0</class><zone>2</zone><when><hour>"));
        assert!(x.ends_with("</when><permanent/><inactive/><userspace/></meta></flow>"));
        // GRE keys in hex, nothing for ICMP
        let mut g = ftp_pasv();
        if let Some(t) = &mut g.tuple {
            t.proto = proto::GRE;
            t.sport = 0x10;
        }
        assert!(
            xml(&g, &ExpXmlOptions::default())
                .contains("<expected><srckey>0x10</srckey><dstkey>0xc815</dstkey></expected>")
        );
        if let Some(t) = &mut g.tuple {
            t.proto = proto::ICMP;
        }
        assert!(xml(&g, &ExpXmlOptions::default()).contains("<expected></expected>"));
        let empty = xml(&Expectation::default(), &ExpXmlOptions::default());
        assert!(empty.contains("<expected><src></src><dst></dst></expected>"));
    }

    #[test]
    fn json_object() {
        let mut e = ftp_pasv();
        e.nat = Some(ExpectNat {
            dir: Some(1),
            tuple: Some(Tuple {
                src: "10.9.1.2".parse().unwrap(),
                proto: proto::TCP,
                sport: 4000,
                ..Tuple::default()
            }),
        });
        e.expectfn = Some(ExpectFnName::from_bytes(b"nat-follow-master"));
        e.flags = Some(flag::PERMANENT | flag::INACTIVE);
        e.zone = Some(4);
        let mut v = Vec::new();
        write_json(
            &mut v,
            &e,
            &ExpJsonOptions {
                event: Some(EventKind::New),
                hide_timeout: false,
            },
        );
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["event"], "new");
        assert_eq!(j["layer3"], "ipv4");
        assert_eq!(j["layer4"], "tcp");
        assert_eq!(j["protonum"], 6);
        assert_eq!(j["timeout"], 298);
        assert_eq!(j["expected"]["dport"], 51221);
        assert_eq!(j["mask"]["src"], "255.255.255.255");
        assert_eq!(j["master"]["sport"], 37268);
        assert_eq!(j["zone"], 4);
        assert_eq!(j["flags"], serde_json::json!(["PERMANENT", "INACTIVE"]));
        assert_eq!(j["class"], 0);
        assert_eq!(j["helper"], "ftp");
        assert_eq!(j["id"], 123);
        assert_eq!(j["nat"]["dir"], "reply");
        assert_eq!(j["nat"]["tuple"]["sport"], 4000);
        assert_eq!(j["expectfn"], "nat-follow-master");
        for (dir, want) in [
            (0, serde_json::json!("original")),
            (7, serde_json::json!(7)),
        ] {
            e.nat = Some(ExpectNat {
                dir: Some(dir),
                tuple: None,
            });
            let mut v = Vec::new();
            write_json(
                &mut v,
                &e,
                &ExpJsonOptions {
                    hide_timeout: true,
                    ..Default::default()
                },
            );
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(j["nat"]["dir"], want);
            assert!(j.get("timeout").is_none() && j.get("event").is_none());
        }
        let mut v = Vec::new();
        write_json(&mut v, &Expectation::default(), &ExpJsonOptions::default());
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "{\"layer3\":\"unknown\",\"layer4\":\"unknown\",\"protonum\":0}"
        );
    }
}
