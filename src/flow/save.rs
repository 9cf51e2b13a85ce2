//! conntrack's `-o save` format: each flow as a command line that
//! `conntrack -R` (or `ctrack -R`) can load again.

use super::addr::{push_ip, push_u64};
use super::names;
use super::{EventKind, Flow, ProtoInfo, proto};

fn opt(out: &mut Vec<u8>, flag: &str, v: u64) {
    out.extend_from_slice(flag.as_bytes());
    out.push(b' ');
    push_u64(out, v);
    out.push(b' ');
}

fn ports(out: &mut Vec<u8>, f: &Flow, names: [&str; 4]) {
    if f.has_orig {
        opt(out, names[0], f.orig.sport as u64);
        opt(out, names[1], f.orig.dport as u64);
    }
    if f.has_reply {
        opt(out, names[2], f.reply.sport as u64);
        opt(out, names[3], f.reply.dport as u64);
    }
}

/// Appends one flow as a conntrack command line, without the newline.
/// `event` picks the command: none or NEW gives `-A`, UPDATE `-U`,
/// DESTROY `-D`.
pub fn write_line(out: &mut Vec<u8>, f: &Flow, event: Option<EventKind>) {
    let start = out.len();
    out.extend_from_slice(match event {
        None | Some(EventKind::New) => b"-A ".as_slice(),
        Some(EventKind::Update) => b"-U ",
        Some(EventKind::Destroy) => b"-D ",
    });
    if let Some(t) = f.timeout {
        opt(out, "-t", t as u64);
    }
    if let Some(s) = f.status {
        out.extend_from_slice(b"-u ");
        let mut any = false;
        for (bit, name) in names::SAVE_STATUS_NAMES {
            if s & bit != 0 {
                if any {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                any = true;
            }
        }
        if !any {
            out.extend_from_slice(b"UNSET");
        }
        out.push(b' ');
    }
    if let Some(v) = f.secmark {
        opt(out, "-c", v as u64);
    }
    if let Some(v) = f.zone {
        opt(out, "-w", v as u64);
    }
    if let Some(v) = f.orig_zone {
        opt(out, "--orig-zone", v as u64);
    }
    if let Some(v) = f.reply_zone {
        opt(out, "--reply-zone", v as u64);
    }
    let mut addr = |flag: &str, a| {
        out.extend_from_slice(flag.as_bytes());
        out.push(b' ');
        push_ip(out, a);
        out.push(b' ');
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
        out.extend_from_slice(b"-p ");
        out.extend_from_slice(names::l4_name(p).as_bytes());
        out.push(b' ');
    } else {
        opt(out, "-p", p as u64);
    }
    let port_names = ["--sport", "--dport", "--reply-port-src", "--reply-port-dst"];
    match p {
        proto::TCP | proto::UDP | proto::UDPLITE => {
            ports(out, f, port_names);
            if let ProtoInfo::Tcp(t) = f.protoinfo
                && let Some(s) = t.state
            {
                out.extend_from_slice(b"--state ");
                out.extend_from_slice(names::tcp_state_name(s).as_bytes());
                out.push(b' ');
            }
        }
        proto::SCTP => {
            ports(out, f, port_names);
            if let ProtoInfo::Sctp { state, vtag } = f.protoinfo {
                if let Some(s) = state {
                    out.extend_from_slice(b"--state ");
                    out.extend_from_slice(names::sctp_state_name(s).as_bytes());
                    out.push(b' ');
                }
                // conntrack 1.4.7 prints the tag byte-swapped on
                // little-endian hosts (ntohl of a host-order value) and
                // swaps it back when -I reads it, so its dumps load: do
                // the same, so dumps of either tool load into the other
                if let Some(v) = vtag[0] {
                    opt(out, "--orig-vtag", u32::from_be(v) as u64);
                }
                if let Some(v) = vtag[1] {
                    opt(out, "--reply-vtag", u32::from_be(v) as u64);
                }
            }
        }
        proto::DCCP => {
            // a kernel without DCCP tracking (6.16+) sends no ports and
            // no DCCP info; conntrack then prints no port options
            if matches!(f.protoinfo, ProtoInfo::Dccp { .. }) {
                ports(out, f, port_names);
            }
            if let ProtoInfo::Dccp { state, role, .. } = f.protoinfo {
                if let Some(s) = state {
                    out.extend_from_slice(b"--state ");
                    out.extend_from_slice(names::dccp_state_name(s).as_bytes());
                    out.push(b' ');
                }
                if let Some(r) = role.and_then(|r| names::DCCP_ROLES.get(r as usize)) {
                    out.extend_from_slice(b"--role ");
                    out.extend_from_slice(r.as_bytes());
                    out.push(b' ');
                }
            }
        }
        proto::GRE => ports(
            out,
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
                out.extend_from_slice(pre.as_bytes());
                opt(out, suffix, v);
            }
        }
        _ => {}
    }
    while out.len() > start && out.last() == Some(&b' ') {
        out.pop();
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
