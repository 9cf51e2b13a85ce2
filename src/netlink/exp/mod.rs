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

/// One message of an expectation dump: decoded into `e` (reused) and
/// passed to `each`, or counted as malformed in `stats`.
fn dump_message(
    payload: &[u8],
    e: &mut Expectation,
    stats: &mut DumpStats,
    each: &mut dyn FnMut(&Expectation) -> Result<(), Error>,
) -> Result<(), Error> {
    *e = Expectation::default();
    let decoded = ct::split_nfgenmsg(payload)
        .and_then(|(family, _, attrs)| decode_expect_into(family, attrs, e));
    match decoded {
        Ok(()) => {
            stats.entries += 1;
            each(e)
        }
        Err(_) => {
            stats.malformed += 1;
            Ok(())
        }
    }
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
            dump_message(m.payload, &mut e, &mut stats, each)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::expect::testutil::ftp_pasv;
    use crate::netlink::message::NlMsgs;

    #[test]
    fn groups_are_the_expectation_groups_4_to_6() {
        assert_eq!(group::NEW, 1 << (4 - 1));
        assert_eq!(group::UPDATE, 1 << (5 - 1));
        assert_eq!(group::DESTROY, 1 << (6 - 1));
        assert_eq!(group::ALL, 0x38);
    }

    #[test]
    fn a_dump_counts_what_decodes_and_what_does_not() {
        let mut bytes = Vec::new();
        create_request(&ftp_pasv()).serialize_into(&mut bytes, 0, 1);
        let good = NlMsgs::new(&bytes)
            .next()
            .unwrap()
            .unwrap()
            .payload
            .to_vec();
        let mut bad = good.clone();
        bad.truncate(good.len() - 3);
        let mut stats = DumpStats::default();
        let mut e = Expectation::default();
        let mut seen = Vec::new();
        for p in [&good[..], &bad[..], &[2u8][..], &good[..]] {
            dump_message(p, &mut e, &mut stats, &mut |x| {
                seen.push(*x);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(
            stats,
            DumpStats {
                entries: 2,
                malformed: 2
            }
        );
        assert_eq!(seen, [ftp_pasv(), ftp_pasv()]);
        // what `each` says stops the dump
        let r = dump_message(&good, &mut e, &mut stats, &mut |_| {
            Err(Error::Kernel(libc::EIO))
        });
        assert!(matches!(r, Err(Error::Kernel(libc::EIO))));
    }
}
