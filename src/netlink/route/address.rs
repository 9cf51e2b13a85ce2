//! RTM_NEWADDR / RTM_DELADDR: an address added to, refreshed on or
//! removed from an interface.
//!
//! Layout (host-endian, as rtnetlink is): `struct ifaddrmsg` (8 bytes):
//! family u8, prefixlen u8, flags u8, scope u8, index u32; then IFA_*
//! attributes.
//!
//! On point-to-point links (PPP, tun, `ip addr add A peer B`) IFA_ADDRESS
//! is the peer and IFA_LOCAL our own address, so IFA_LOCAL wins when both
//! are present.

use std::net::IpAddr;

use super::{name_of, ne_u32};
use crate::flow::{AF_INET, AF_INET6};
use crate::netlink::attr::{Attr, Attrs, WireError};

/// IFA_* attribute types.
pub mod ifa {
    /// The address (the peer on point-to-point links).
    pub const ADDRESS: u16 = 1;
    /// The local address.
    pub const LOCAL: u16 = 2;
    /// The IPv4 label (interface name or alias such as `eth0:1`).
    pub const LABEL: u16 = 3;
    /// Lifetimes.
    pub const CACHEINFO: u16 = 6;
    /// 32-bit flags (supersede the 8-bit ifa_flags).
    pub const FLAGS: u16 = 8;
}

/// IFA_F_* address flags this crate names.
pub mod ifa_flag {
    /// IPv4: a secondary address (IPv6: a temporary one, same bit).
    pub const SECONDARY: u32 = 0x01;
    /// Duplicate address detection failed.
    pub const DADFAILED: u32 = 0x08;
    /// Preferred lifetime ran out: kept for existing traffic only.
    pub const DEPRECATED: u32 = 0x20;
    /// Duplicate address detection still running.
    pub const TENTATIVE: u32 = 0x40;
    /// Configured by hand (no lifetime).
    pub const PERMANENT: u32 = 0x80;
}

/// Size of `struct ifaddrmsg`.
pub const IFADDRMSG_LEN: usize = 8;

/// An address added to (or refreshed on, or removed from) an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrMsg {
    /// RTM_NEWADDR (true) or RTM_DELADDR (false).
    pub new: bool,
    /// Interface index.
    pub index: u32,
    /// Our address: IFA_LOCAL when present, else IFA_ADDRESS.
    pub addr: IpAddr,
    /// The peer of a point-to-point address (IFA_ADDRESS when it differs
    /// from IFA_LOCAL).
    pub peer: Option<IpAddr>,
    /// Prefix length.
    pub prefix_len: u8,
    /// IFA_F_* flags (IFA_FLAGS when present, else the header's 8 bits).
    pub flags: u32,
    /// Scope (0 universe/global, 253 link, 254 host).
    pub scope: u8,
    /// IPv4 label (IFA_LABEL), usually the interface name.
    pub label: Option<String>,
}

fn ip_of(family: u8, a: &Attr) -> Result<IpAddr, WireError> {
    match family {
        AF_INET => Ok(IpAddr::V4(a.ipv4()?)),
        AF_INET6 => Ok(IpAddr::V6(a.ipv6()?)),
        _ => Err(WireError("address of unknown family")),
    }
}

/// Decodes an RTM_NEWADDR/DELADDR payload. Families other than IPv4 and
/// IPv6 give `Ok(None)`.
pub fn parse_addr(new: bool, payload: &[u8]) -> Result<Option<AddrMsg>, WireError> {
    if payload.len() < IFADDRMSG_LEN {
        return Err(WireError("truncated ifaddrmsg"));
    }
    let family = payload[0];
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let index = ne_u32(payload, 4).ok_or(WireError("truncated ifaddrmsg"))?;
    let (mut address, mut local, mut label, mut flags32) = (None, None, None, None);
    for a in Attrs::new(&payload[IFADDRMSG_LEN..]) {
        let a = a?;
        match a.kind {
            ifa::ADDRESS => address = Some(ip_of(family, &a)?),
            ifa::LOCAL => local = Some(ip_of(family, &a)?),
            ifa::LABEL => label = Some(name_of(&a)),
            ifa::FLAGS => flags32 = Some(a.ne32()?),
            _ => {}
        }
    }
    let (addr, peer) = match (local, address) {
        (Some(l), Some(p)) if l != p => (l, Some(p)),
        (Some(l), _) => (l, None),
        (None, Some(a)) => (a, None),
        (None, None) => return Err(WireError("address message without an address")),
    };
    Ok(Some(AddrMsg {
        new,
        index,
        addr,
        peer,
        prefix_len: payload[1],
        flags: flags32.unwrap_or(payload[2] as u32),
        scope: payload[3],
        label,
    }))
}
