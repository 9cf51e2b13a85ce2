//! The expectation parts of a conntrack command line: `--tuple-src`,
//! `--tuple-dst` and the protocols' `--tuple-port-*`/`--tuple-key-*` (the
//! expected connection), `--mask-src`, `--mask-dst` and `--mask-port-*`/
//! `--mask-key-*` (what of it must match), parsed as conntrack parses
//! them. The master connection of `-I/-G/-D expect` is the ordinary
//! `-s -d -p --sport --dport` of the [`Filter`](crate::flow::filter::Filter).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::values::parse_addr_mask;
use crate::cli::error::CliError;
use crate::flow::proto;

/// What `-I expect` needs beyond the master: the expected tuple's
/// addresses and ports and the mask's. Index 0 is the source, 1 the
/// destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpectArgs {
    /// `--tuple-src`, `--tuple-dst`.
    pub tuple: [Option<IpAddr>; 2],
    /// `--mask-src`, `--mask-dst`; also the netmask of a CIDR `-s`, `-d`,
    /// `--tuple-src` or `--tuple-dst` (the last one given wins, as in
    /// conntrack).
    pub mask: [Option<IpAddr>; 2],
    /// `--tuple-port-src`, `--tuple-port-dst` (GRE: `--tuple-key-*`).
    pub tuple_ports: [Option<u16>; 2],
    /// `--mask-port-src`, `--mask-port-dst` (GRE: `--mask-key-*`).
    pub mask_ports: [Option<u16>; 2],
}

/// The netmask of a `/len` prefix in the family of `like`.
pub fn netmask(like: IpAddr, len: u8) -> IpAddr {
    match like {
        IpAddr::V4(_) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(_) => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Parses the value of `--tuple-src`/`--tuple-dst` (`tuple` true: CIDR
/// allowed, and it implies the mask) or `--mask-src`/`--mask-dst` (no
/// CIDR), with conntrack's messages. Returns the address and the implied
/// mask.
pub(super) fn parse_addr(
    arg: &str,
    tuple: bool,
    long: &str,
) -> Result<(IpAddr, Option<IpAddr>), CliError> {
    let cidr_unavailable = || CliError::param(format!("CIDR notation unavailable for `--{long}'"));
    match parse_addr_mask(arg) {
        Ok((addr, None)) => Ok((addr, None)),
        Ok(_) | Err(true) if !tuple => Err(cidr_unavailable()),
        Ok((addr, Some(len))) => {
            let full = if addr.is_ipv4() { 32 } else { 128 };
            Ok((addr, (len != full).then(|| netmask(addr, len))))
        }
        Err(true) => Err(CliError::param("Invalid netmask")),
        Err(false) => Err(CliError::param(format!("Invalid IP address `{arg}'"))),
    }
}

/// Which expectation port a protocol option sets, by the option's code
/// (its position in the protocol's options): `(true, i)` a mask port,
/// `(false, i)` a tuple port, `i` 0 for the source and 1 for the
/// destination.
pub(super) fn port_slot(p: u8, code: u32) -> Option<(bool, usize)> {
    match (p, code) {
        (proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP | proto::GRE, 5) => {
            Some((true, 0))
        }
        (proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP | proto::GRE, 6) => {
            Some((true, 1))
        }
        (proto::UDP | proto::UDPLITE | proto::GRE, 7)
        | (proto::TCP | proto::SCTP | proto::DCCP, 8) => Some((false, 0)),
        (proto::UDP | proto::UDPLITE | proto::GRE, 8)
        | (proto::TCP | proto::SCTP | proto::DCCP, 9) => Some((false, 1)),
        _ => None,
    }
}

impl ExpectArgs {
    /// Sets the port `port_slot` named.
    pub(super) fn set_port(&mut self, (mask, i): (bool, usize), v: u16) {
        let ports = if mask {
            &mut self.mask_ports
        } else {
            &mut self.tuple_ports
        };
        if let Some(slot) = ports.get_mut(i) {
            *slot = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        let v4: IpAddr = "1.2.3.4".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(netmask(v4, 24), "255.255.255.0".parse::<IpAddr>().unwrap());
        assert_eq!(netmask(v4, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            netmask(v4, 32),
            "255.255.255.255".parse::<IpAddr>().unwrap()
        );
        assert_eq!(netmask(v6, 16), "ffff::".parse::<IpAddr>().unwrap());
        assert_eq!(netmask(v6, 0), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn addresses_as_conntrack_parses_them() {
        let p = |a, t| parse_addr(a, t, "mask-src").map_err(|e| e.msg);
        assert_eq!(p("1.2.3.4", false), Ok(("1.2.3.4".parse().unwrap(), None)));
        assert_eq!(
            p("1.2.3.4/24", true),
            Ok((
                "1.2.3.4".parse().unwrap(),
                Some("255.255.255.0".parse().unwrap())
            ))
        );
        assert_eq!(
            p("1.2.3.4/32", true),
            Ok(("1.2.3.4".parse().unwrap(), None))
        );
        assert_eq!(
            p("1.2.3.4/24", false),
            Err("CIDR notation unavailable for `--mask-src'".into())
        );
        assert_eq!(
            p("1.2.3.4/x", false),
            Err("CIDR notation unavailable for `--mask-src'".into())
        );
        assert_eq!(p("1.2.3.4/40", true), Err("Invalid netmask".into()));
        assert_eq!(p("nope", true), Err("Invalid IP address `nope'".into()));
    }

    #[test]
    fn port_slots_follow_each_protocols_option_order() {
        assert_eq!(port_slot(proto::TCP, 8), Some((false, 0)));
        assert_eq!(port_slot(proto::TCP, 9), Some((false, 1)));
        assert_eq!(port_slot(proto::TCP, 7), None);
        assert_eq!(port_slot(proto::UDP, 7), Some((false, 0)));
        assert_eq!(port_slot(proto::GRE, 8), Some((false, 1)));
        assert_eq!(port_slot(proto::SCTP, 5), Some((true, 0)));
        assert_eq!(port_slot(proto::DCCP, 6), Some((true, 1)));
        assert_eq!(port_slot(proto::ICMP, 5), None);
        assert_eq!(port_slot(50, 1), None);
        let mut a = ExpectArgs::default();
        a.set_port((true, 1), 65535);
        a.set_port((false, 0), 7);
        assert_eq!(a.mask_ports, [None, Some(65535)]);
        assert_eq!(a.tuple_ports, [Some(7), None]);
    }
}
