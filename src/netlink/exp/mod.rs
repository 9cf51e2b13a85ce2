//! ctnetlink's expectation subsystem (`NFNL_SUBSYS_CTNETLINK_EXP`):
//! decoding an expectation from its `CTA_EXPECT_*` attributes into an
//! [`Expectation`] ([`decode`], allocation-free, on the checked attribute
//! view of `netlink::attr`), building every request in one place
//! ([`encode`]), the expectation event groups ([`events`]), and the client
//! calls that dump, get and count expectations over a [`Conntrack`]
//! socket.
//!
//! The wire layout beside `netlink::ct`: the same nfgenmsg header, the
//! same tuple nests (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`) inside
//! `CTA_EXPECT_MASTER`, `CTA_EXPECT_TUPLE` and `CTA_EXPECT_MASK`.

pub mod decode;
pub mod encode;
pub mod events;

pub use decode::{decode_expect, decode_expect_into};
pub use encode::{
    create_request, delete_request, dump_request, encode_expect, flush_request, get_request,
    request,
};
pub use events::{ExpEvent, decode_events};

use super::client::{Conntrack, CpuStats, DumpStats, Error};
use super::ct::{self, CtRequest};
use super::message::{NLM_F_ACK, NLM_F_DUMP};
use crate::flow::expect::Expectation;

/// Expectation message types (`IPCTNL_MSG_EXP_*`).
pub mod msg {
    /// Create; also every dump entry and NEW/UPDATE event.
    pub const NEW: u8 = 0;
    /// Get one expectation, or dump with NLM_F_DUMP.
    pub const GET: u8 = 1;
    /// Delete one expectation, or flush without a tuple; also DESTROY
    /// events.
    pub const DELETE: u8 = 2;
    /// Per-CPU statistics.
    pub const GET_STATS_CPU: u8 = 3;
}

/// `CTA_EXPECT_*` attribute types and their nests.
pub mod cta_exp {
    #![allow(missing_docs)]
    pub const MASTER: u16 = 1;
    pub const TUPLE: u16 = 2;
    pub const MASK: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const ID: u16 = 5;
    pub const HELP_NAME: u16 = 6;
    pub const ZONE: u16 = 7;
    pub const FLAGS: u16 = 8;
    pub const CLASS: u16 = 9;
    pub const NAT: u16 = 10;
    pub const FN: u16 = 11;

    pub const NAT_DIR: u16 = 1;
    pub const NAT_TUPLE: u16 = 2;

    pub const STATS_NEW: u16 = 1;
    pub const STATS_CREATE: u16 = 2;
    pub const STATS_DELETE: u16 = 3;
}

/// Legacy group bits of the expectation event groups (groups 4, 5, 6).
pub mod group {
    /// New expectations.
    pub const NEW: u32 = 0x8;
    /// Changed expectations.
    pub const UPDATE: u32 = 0x10;
    /// Removed expectations (used, timed out or deleted).
    pub const DESTROY: u32 = 0x20;
    /// All three.
    pub const ALL: u32 = NEW | UPDATE | DESTROY;
}

impl Conntrack {
    /// Dumps the expectation table (`req`: [`dump_request`]) and calls
    /// `each` with every expectation; one `Expectation` is reused, so
    /// nothing is allocated per entry. Entries that fail to decode are
    /// counted, not fatal.
    pub fn dump_expectations(
        &mut self,
        req: &CtRequest,
        each: &mut dyn FnMut(&Expectation) -> Result<(), Error>,
    ) -> Result<DumpStats, Error> {
        let mut stats = DumpStats::default();
        let mut e = Expectation::default();
        self.talk(req, NLM_F_DUMP, &mut |m| {
            let Ok((family, _, attrs)) = ct::split_nfgenmsg(m.payload) else {
                stats.malformed += 1;
                return Ok(());
            };
            e = Expectation::default();
            match decode_expect_into(family, attrs, &mut e) {
                Ok(()) => {
                    stats.entries += 1;
                    each(&e)
                }
                Err(_) => {
                    stats.malformed += 1;
                    Ok(())
                }
            }
        })?;
        Ok(stats)
    }

    /// Gets one expectation (`req`: [`get_request`]).
    pub fn get_expectation(&mut self, req: &CtRequest) -> Result<Option<Expectation>, Error> {
        let mut found = None;
        self.talk(req, NLM_F_ACK, &mut |m| {
            found = Some(decode_expect(m.payload)?);
            Ok(())
        })?;
        Ok(found)
    }

    /// Per-CPU expectation statistics (`expect_new`, `expect_create`,
    /// `expect_delete`: [`cta_exp`]`::STATS_*`).
    pub fn expect_stats_cpu(&mut self) -> Result<Vec<CpuStats>, Error> {
        self.stats_cpu_of(&request(msg::GET_STATS_CPU, 0))
    }
}
