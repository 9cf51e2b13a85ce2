//! conntrack's `-o save` format: each flow as a command line that
//! `conntrack -R` (or `ctrack -R`) can load again.

use super::addr::write_ip;
use super::buf::Out;
use super::names;
use super::{EventKind, Flow, ProtoInfo, proto};

fn opt(o: &mut Out, flag: &str, v: u64) {
    o.bytes(flag.as_bytes());
    o.byte(b' ');
    o.u64(v);
    o.byte(b' ');
}

fn ports(o: &mut Out, f: &Flow, names: [&str; 4]) {
    if f.has_orig {
        opt(o, names[0], f.orig.sport as u64);
        opt(o, names[1], f.orig.dport as u64);
    }
    if f.has_reply {
        opt(o, names[2], f.reply.sport as u64);
        opt(o, names[3], f.reply.dport as u64);
    }
}

/// Appends one flow as a conntrack command line, without the newline.
/// `event` picks the command: none or NEW gives `-A`, UPDATE `-U`,
/// DESTROY `-D`.
pub fn write_line(out: &mut Vec<u8>, f: &Flow, event: Option<EventKind>) {
    let mut o = Out::append(out);
    write_line_to(&mut o, f, event);
    o.finish();
}

/// Writes one flow as a conntrack command line (see [`write_line`]).
pub fn write_line_to(o: &mut Out, f: &Flow, event: Option<EventKind>) {
    let start = o.pos();
    o.bytes(match event {
        None | Some(EventKind::New) => b"-A ".as_slice(),
        Some(EventKind::Update) => b"-U ",
        Some(EventKind::Destroy) => b"-D ",
    });
    if let Some(t) = f.timeout {
        opt(o, "-t", t as u64);
    }
    if let Some(s) = f.status {
        o.lit(b"-u ");
        let mut any = false;
        for (bit, name) in names::SAVE_STATUS_NAMES {
            if s & bit != 0 {
                if any {
                    o.byte(b',');
                }
                o.bytes(name.as_bytes());
                any = true;
            }
        }
        if !any {
            o.lit(b"UNSET");
        }
        o.byte(b' ');
    }
    if let Some(v) = f.secmark {
        opt(o, "-c", v as u64);
    }
    if let Some(v) = f.zone {
        opt(o, "-w", v as u64);
    }
    if let Some(v) = f.orig_zone {
        opt(o, "--orig-zone", v as u64);
    }
    if let Some(v) = f.reply_zone {
        opt(o, "--reply-zone", v as u64);
    }
    let mut addr = |flag: &str, a| {
        o.bytes(flag.as_bytes());
        o.byte(b' ');
        write_ip(o, a);
        o.byte(b' ');
    };
    if f.has_orig {
        addr("-s", f.orig.src);
        addr("-d", f.orig.dst);
    }
    if f.has_reply {
        addr(if f.is_dnat() { "-g" } else { "-r" }, f.reply.src);
        addr(if f.is_snat() { "-n" } else { "-q" }, f.reply.dst);
    }
    let p = f.orig.proto;
    let known = matches!(
        p,
        proto::TCP
            | proto::UDP
            | proto::UDPLITE
            | proto::SCTP
            | proto::DCCP
            | proto::ICMP
            | proto::ICMPV6
            | proto::GRE
    );
    if known {
        o.lit(b"-p ");
        o.bytes(names::l4_name(p).as_bytes());
        o.byte(b' ');
    } else {
        opt(o, "-p", p as u64);
    }
    let port_names = ["--sport", "--dport", "--reply-port-src", "--reply-port-dst"];
    match p {
        proto::TCP | proto::UDP | proto::UDPLITE => {
            ports(o, f, port_names);
            if let ProtoInfo::Tcp(t) = f.protoinfo
                && let Some(s) = t.state
            {
                o.lit(b"--state ");
                o.bytes(names::tcp_state_name(s).as_bytes());
                o.byte(b' ');
            }
        }
        proto::SCTP => {
            ports(o, f, port_names);
            if let ProtoInfo::Sctp { state, vtag } = f.protoinfo {
                if let Some(s) = state {
                    o.lit(b"--state ");
                    o.bytes(names::sctp_state_name(s).as_bytes());
                    o.byte(b' ');
                }
                // conntrack 1.4.7 prints the tag byte-swapped on
                // little-endian hosts (ntohl of a host-order value) and
                // swaps it back when -I reads it, so its dumps load: do
                // the same, so dumps of either tool load into the other
                if let Some(v) = vtag[0] {
                    opt(o, "--orig-vtag", u32::from_be(v) as u64);
                }
                if let Some(v) = vtag[1] {
                    opt(o, "--reply-vtag", u32::from_be(v) as u64);
                }
            }
        }
        proto::DCCP => {
            // a kernel without DCCP tracking (6.16+) sends no ports and
            // no DCCP info; conntrack then prints no port options
            if matches!(f.protoinfo, ProtoInfo::Dccp { .. }) {
                ports(o, f, port_names);
            }
            if let ProtoInfo::Dccp { state, role, .. } = f.protoinfo {
                if let Some(s) = state {
                    o.lit(b"--state ");
                    o.bytes(names::dccp_state_name(s).as_bytes());
                    o.byte(b' ');
                }
                if let Some(r) = role.and_then(|r| names::DCCP_ROLES.get(r as usize)) {
                    o.lit(b"--role ");
                    o.bytes(r.as_bytes());
                    o.byte(b' ');
                }
            }
        }
        proto::GRE => ports(
            o,
            f,
            ["--srckey", "--dstkey", "--reply-key-src", "--reply-key-dst"],
        ),
        proto::ICMP | proto::ICMPV6 if f.has_orig => {
            let pre = if p == proto::ICMP {
                "--icmp"
            } else {
                "--icmpv6"
            };
            for (suffix, v) in [
                ("-type", f.orig.icmp_type as u64),
                ("-code", f.orig.icmp_code as u64),
                ("-id", f.orig.icmp_id as u64),
            ] {
                o.bytes(pre.as_bytes());
                opt(o, suffix, v);
            }
        }
        _ => {}
    }
    while o.pos() > start && o.written().last() == Some(&b' ') {
        o.unwrite(1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp4;
    use super::super::{Tuple, status};
    use super::*;

    fn line(f: &Flow) -> String {
        let mut v = Vec::new();
        write_line(&mut v, f, None);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn documented_save_lines() {
        assert_eq!(
            line(&tcp4()),
            "-A -t 119 -u SEEN_REPLY,ASSURED -s 10.0.0.1 -d 10.0.0.2 -r 10.0.0.2 -q 10.0.0.1 \
             -p tcp --sport 1234 --dport 80 --reply-port-src 80 --reply-port-dst 1234 \
             --state ESTABLISHED"
        );
        let mut f = tcp4();
        f.reply.dst = "100.64.0.5".parse().unwrap();
        f.reply.dport = 6000;
        f.status = Some(f.status.unwrap() | status::SRC_NAT | status::SRC_NAT_DONE);
        assert!(line(&f).contains("-r 10.0.0.2 -n 100.64.0.5 -p tcp"));

        let mut icmp = tcp4();
        icmp.protoinfo = ProtoInfo::None;
        icmp.status = Some(status::CONFIRMED);
        icmp.timeout = Some(29);
        icmp.orig = Tuple {
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 77,
            dst: "10.0.0.9".parse().unwrap(),
            ..icmp.orig
        };
        icmp.reply = icmp.orig.inverted();
        assert_eq!(
            line(&icmp),
            "-A -t 29 -u UNSET -s 10.0.0.1 -d 10.0.0.9 -r 10.0.0.9 -q 10.0.0.1 -p icmp \
             --icmp-type 8 --icmp-code 0 --icmp-id 77"
        );
    }
}
