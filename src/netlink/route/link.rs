//! RTM_NEWLINK / RTM_DELLINK: a link that appeared, changed or went away.
//!
//! Layout (host-endian, as rtnetlink is): `struct ifinfomsg` (16 bytes):
//! family u8, pad u8, type u16, index i32, flags u32, change u32; then
//! IFLA_* attributes.

use super::{name_of, ne_u32};
use crate::netlink::attr::{Attrs, WireError};

/// IFLA_* attribute types.
pub mod ifla {
    /// Interface name.
    pub const IFNAME: u16 = 3;
    /// Operational state (RFC 2863).
    pub const OPERSTATE: u16 = 16;
}

/// IFF_* link flags this crate names.
pub mod iff {
    /// Administratively up.
    pub const UP: u32 = 0x1;
    /// Point-to-point link.
    pub const POINTOPOINT: u32 = 0x10;
    /// Operationally up (carrier and not dormant).
    pub const RUNNING: u32 = 0x40;
    /// Carrier present.
    pub const LOWER_UP: u32 = 0x10000;
}

/// Size of `struct ifinfomsg`.
pub const IFINFOMSG_LEN: usize = 16;

/// A link that appeared, changed or went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMsg {
    /// RTM_NEWLINK (true) or RTM_DELLINK (false).
    pub new: bool,
    /// Interface index.
    pub index: u32,
    /// IFF_* flags.
    pub flags: u32,
    /// Interface name (IFLA_IFNAME).
    pub name: Option<String>,
}

impl LinkMsg {
    /// Administratively up (IFF_UP): what the kernel's masquerade cleanup
    /// also keys on (NETDEV_DOWN clears it).
    pub fn is_up(&self) -> bool {
        self.new && self.flags & iff::UP != 0
    }
}

/// Decodes an RTM_NEWLINK/DELLINK payload.
pub fn parse_link(new: bool, payload: &[u8]) -> Result<LinkMsg, WireError> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(WireError("truncated ifinfomsg"));
    }
    let index = ne_u32(payload, 4).ok_or(WireError("truncated ifinfomsg"))?;
    let flags = ne_u32(payload, 8).ok_or(WireError("truncated ifinfomsg"))?;
    let mut name = None;
    for a in Attrs::new(&payload[IFINFOMSG_LEN..]) {
        let a = a?;
        if a.kind == ifla::IFNAME {
            name = Some(name_of(&a));
        }
    }
    Ok(LinkMsg {
        new,
        index,
        flags,
        name,
    })
}
