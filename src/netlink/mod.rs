//! The kernel boundary: ctnetlink requests, dumps and events over
//! netlink-sys sockets, with our own allocation-free attribute codec, and
//! the rtnetlink address/link watch ([`route`]) the WAN flush uses.

pub mod attr;
pub mod client;
pub mod ct;
pub mod events;
pub mod exp;
pub mod message;
pub mod route;
pub mod socket;

pub use client::{Conntrack, DumpStats, Error};
pub use events::{Event, EventSocket};
