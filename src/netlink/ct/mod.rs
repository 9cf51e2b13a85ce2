//! ctnetlink messages: decoding a conntrack entry from its attributes into a
//! [`Flow`] ([`decode`], allocation-free), encoding a flow or parts of one
//! into requests ([`encode`]), and framing requests ([`CtRequest`]).
//!
//! netlink-packet-netfilter models only part of CTA_* (no counters, id,
//! zone, ICMP tuple fields, timestamps, labels, NAT, helper...) and its
//! typed parse allocates per attribute, so the hot path walks attributes
//! here. Requests are framed with netlink-packet-core's `NetlinkMessage`
//! and netlink-packet-netfilter's `NetfilterHeader`; their attributes are
//! written by [`AttrWriter`], which sets NLA_F_NESTED on every nest as the
//! kernel's strict parsers (CTA_FILTER) require.
//!
//! [`Flow`]: crate::flow::Flow

pub mod decode;
pub mod encode;

pub use decode::{decode_flow, decode_flow_into};
pub use encode::{
    NatSetup, NewOpts, TCP_FLAG_BE_LIBERAL, TupleParts, create_request, delete_request,
    encode_identity, encode_nat, encode_tcp_info, encode_tuple, get_request, update_request,
};

use netlink_packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};

use super::attr::{AttrWriter, WireError};

/// The ctnetlink subsystem (`NFNL_SUBSYS_CTNETLINK`).
pub const SUBSYS_CTNETLINK: u8 = 1;
/// The expectation subsystem (`NFNL_SUBSYS_CTNETLINK_EXP`).
pub const SUBSYS_CTNETLINK_EXP: u8 = 2;

/// ctnetlink message types (`IPCTNL_MSG_CT_*`).
pub mod msg {
    /// Create/update; also every dump entry and NEW/UPDATE event.
    pub const NEW: u8 = 0;
    /// Get one entry, or dump with NLM_F_DUMP.
    pub const GET: u8 = 1;
    /// Delete one entry, or flush without a tuple; also DESTROY events.
    pub const DELETE: u8 = 2;
    /// Dump and zero counters.
    pub const GET_CTRZERO: u8 = 3;
    /// Per-CPU statistics.
    pub const GET_STATS_CPU: u8 = 4;
    /// Global statistics (entry count).
    pub const GET_STATS: u8 = 5;
    /// Dump the dying list.
    pub const GET_DYING: u8 = 6;
    /// Dump the unconfirmed list.
    pub const GET_UNCONFIRMED: u8 = 7;
}

/// Top-level CTA_* attribute types.
pub mod cta {
    #![allow(missing_docs)]
    pub const TUPLE_ORIG: u16 = 1;
    pub const TUPLE_REPLY: u16 = 2;
    pub const STATUS: u16 = 3;
    pub const PROTOINFO: u16 = 4;
    pub const HELP: u16 = 5;
    pub const NAT_SRC: u16 = 6;
    pub const TIMEOUT: u16 = 7;
    pub const MARK: u16 = 8;
    pub const COUNTERS_ORIG: u16 = 9;
    pub const COUNTERS_REPLY: u16 = 10;
    pub const USE: u16 = 11;
    pub const ID: u16 = 12;
    pub const NAT_DST: u16 = 13;
    pub const TUPLE_MASTER: u16 = 14;
    pub const SEQ_ADJ_ORIG: u16 = 15;
    pub const SEQ_ADJ_REPLY: u16 = 16;
    pub const SECMARK: u16 = 17;
    pub const ZONE: u16 = 18;
    pub const SECCTX: u16 = 19;
    pub const TIMESTAMP: u16 = 20;
    pub const MARK_MASK: u16 = 21;
    pub const LABELS: u16 = 22;
    pub const LABELS_MASK: u16 = 23;
    pub const SYNPROXY: u16 = 24;
    pub const FILTER: u16 = 25;
    pub const STATUS_MASK: u16 = 26;
    pub const TIMESTAMP_EVENT: u16 = 27;

    pub const TUPLE_IP: u16 = 1;
    pub const TUPLE_PROTO: u16 = 2;
    pub const TUPLE_ZONE: u16 = 3;

    pub const IP_V4_SRC: u16 = 1;
    pub const IP_V4_DST: u16 = 2;
    pub const IP_V6_SRC: u16 = 3;
    pub const IP_V6_DST: u16 = 4;

    pub const PROTO_NUM: u16 = 1;
    pub const PROTO_SRC_PORT: u16 = 2;
    pub const PROTO_DST_PORT: u16 = 3;
    pub const PROTO_ICMP_ID: u16 = 4;
    pub const PROTO_ICMP_TYPE: u16 = 5;
    pub const PROTO_ICMP_CODE: u16 = 6;
    pub const PROTO_ICMPV6_ID: u16 = 7;
    pub const PROTO_ICMPV6_TYPE: u16 = 8;
    pub const PROTO_ICMPV6_CODE: u16 = 9;

    pub const PROTOINFO_TCP: u16 = 1;
    pub const PROTOINFO_DCCP: u16 = 2;
    pub const PROTOINFO_SCTP: u16 = 3;

    pub const TCP_STATE: u16 = 1;
    pub const TCP_WSCALE_ORIG: u16 = 2;
    pub const TCP_WSCALE_REPLY: u16 = 3;
    pub const TCP_FLAGS_ORIG: u16 = 4;
    pub const TCP_FLAGS_REPLY: u16 = 5;

    pub const DCCP_STATE: u16 = 1;
    pub const DCCP_ROLE: u16 = 2;
    pub const DCCP_HANDSHAKE_SEQ: u16 = 3;

    pub const SCTP_STATE: u16 = 1;
    pub const SCTP_VTAG_ORIG: u16 = 2;
    pub const SCTP_VTAG_REPLY: u16 = 3;

    pub const COUNTERS_PACKETS: u16 = 1;
    pub const COUNTERS_BYTES: u16 = 2;
    pub const COUNTERS32_PACKETS: u16 = 3;
    pub const COUNTERS32_BYTES: u16 = 4;

    pub const TIMESTAMP_START: u16 = 1;
    pub const TIMESTAMP_STOP: u16 = 2;

    pub const NAT_V4_MINIP: u16 = 1;
    pub const NAT_V4_MAXIP: u16 = 2;
    pub const NAT_PROTO: u16 = 3;
    pub const NAT_V6_MINIP: u16 = 4;
    pub const NAT_V6_MAXIP: u16 = 5;
    pub const PROTONAT_PORT_MIN: u16 = 1;
    pub const PROTONAT_PORT_MAX: u16 = 2;

    pub const SEQADJ_CORRECTION_POS: u16 = 1;
    pub const SEQADJ_OFFSET_BEFORE: u16 = 2;
    pub const SEQADJ_OFFSET_AFTER: u16 = 3;

    pub const HELP_NAME: u16 = 1;
    pub const SECCTX_NAME: u16 = 1;

    pub const SYNPROXY_ISN: u16 = 1;
    pub const SYNPROXY_ITS: u16 = 2;
    pub const SYNPROXY_TSOFF: u16 = 3;

    pub const FILTER_ORIG_FLAGS: u16 = 1;
    pub const FILTER_REPLY_FLAGS: u16 = 2;

    pub const STATS_GLOBAL_ENTRIES: u16 = 1;
    pub const STATS_GLOBAL_MAX_ENTRIES: u16 = 2;
}

/// CTA_FILTER flags (which tuple fields a filtered dump compares).
pub mod filter_flag {
    #![allow(missing_docs)]
    pub const IP_SRC: u32 = 1 << 0;
    pub const IP_DST: u32 = 1 << 1;
    pub const TUPLE_ZONE: u32 = 1 << 2;
    pub const PROTO_NUM: u32 = 1 << 3;
    pub const PROTO_SRC_PORT: u32 = 1 << 4;
    pub const PROTO_DST_PORT: u32 = 1 << 5;
}

/// Writes CTA_FILTER: which fields of the CTA_TUPLE_ORIG and
/// CTA_TUPLE_REPLY already written the kernel compares in a dump
/// ([`filter_flag`] bits; 0 leaves a direction out).
pub fn encode_filter(w: &mut AttrWriter, orig_flags: u32, reply_flags: u32) {
    let nest = w.begin(cta::FILTER);
    // NLA_U32: host order
    if orig_flags != 0 {
        w.bytes(cta::FILTER_ORIG_FLAGS, &orig_flags.to_ne_bytes());
    }
    if reply_flags != 0 {
        w.bytes(cta::FILTER_REPLY_FLAGS, &reply_flags.to_ne_bytes());
    }
    w.end(nest);
}

/// Size of the nfgenmsg header that starts every ctnetlink payload.
pub const NFGENMSG_LEN: usize = 4;

/// Splits a ctnetlink payload into its nfgenmsg family and attributes.
#[inline]
pub fn split_nfgenmsg(payload: &[u8]) -> Result<(u8, u16, &[u8]), WireError> {
    match payload.split_first_chunk::<NFGENMSG_LEN>() {
        Some(([family, _, r0, r1], attrs)) => Ok((*family, u16::from_be_bytes([*r0, *r1]), attrs)),
        None => Err(WireError("truncated nfgenmsg header")),
    }
}

/// A ctnetlink request: nfgenmsg header fields and encoded attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtRequest {
    /// Subsystem (ctnetlink or expectations).
    pub subsys: u8,
    /// Message type within the subsystem.
    pub msg: u8,
    /// nfgenmsg family.
    pub family: u8,
    /// nfgenmsg version (1 makes the kernel honour the family in a flush).
    pub version: u8,
    /// Encoded attributes.
    pub attrs: Vec<u8>,
}

impl CtRequest {
    /// A conntrack-subsystem request with no attributes.
    pub fn new(msg: u8, family: u8) -> CtRequest {
        CtRequest {
            subsys: SUBSYS_CTNETLINK,
            msg,
            family,
            version: 0,
            attrs: Vec::new(),
        }
    }

    /// A writer for this request's attributes.
    pub fn writer(&mut self) -> AttrWriter<'_> {
        AttrWriter::new(&mut self.attrs)
    }

    /// Appends the framed message (netlink header + payload) to `out`.
    pub fn serialize_into(&self, out: &mut Vec<u8>, flags: u16, seq: u32) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(self.clone_ref()));
        m.finalize();
        let at = out.len();
        out.resize(at + m.buffer_len(), 0);
        m.serialize(&mut out[at..]);
    }

    fn clone_ref(&self) -> CtRequestRef<'_> {
        CtRequestRef(self)
    }
}

/// Borrowing adapter so serialising does not copy the attributes.
#[derive(Debug)]
struct CtRequestRef<'a>(&'a CtRequest);

impl NetlinkSerializable for CtRequestRef<'_> {
    fn message_type(&self) -> u16 {
        ((self.0.subsys as u16) << 8) | self.0.msg as u16
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.0.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let h = NetfilterHeader::new(NetfilterProtoFamily::from(self.0.family), self.0.version, 0);
        if buffer.len() >= NFGENMSG_LEN + self.0.attrs.len() {
            h.emit(&mut buffer[..NFGENMSG_LEN]);
            buffer[NFGENMSG_LEN..NFGENMSG_LEN + self.0.attrs.len()].copy_from_slice(&self.0.attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{AF_INET, Tuple, proto};

    #[test]
    fn request_roundtrip_through_our_decoder() {
        let t = Tuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 0x1234,
            ..Tuple::default()
        };
        let mut r = CtRequest::new(msg::NEW, AF_INET);
        let mut w = r.writer();
        encode_tuple(&mut w, cta::TUPLE_ORIG, &TupleParts::full(&t, Some(4)));
        encode_tuple(
            &mut w,
            cta::TUPLE_REPLY,
            &TupleParts::full(&t.inverted(), None),
        );
        w.be32(cta::TIMEOUT, 30);
        let mut bytes = Vec::new();
        r.serialize_into(&mut bytes, 0x5, 9);
        let m = super::super::message::NlMsgs::new(&bytes)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(m.ty, 0x100);
        assert_eq!(m.seq, 9);
        let f = decode_flow(m.payload).unwrap();
        assert_eq!(f.orig, t);
        assert_eq!(f.orig_zone, Some(4));
        assert_eq!(f.reply.icmp_type, 0);
        assert_eq!(f.timeout, Some(30));
    }
}
