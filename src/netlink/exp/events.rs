//! Expectation events: the NEW/UPDATE/DESTROY expectation groups
//! ([`super::group`]) decoded from the datagrams an
//! [`EventSocket`](crate::netlink::EventSocket) receives.

use super::decode::decode_expect;
use super::msg;
use crate::flow::EventKind;
use crate::flow::expect::Expectation;
use crate::netlink::ct::SUBSYS_CTNETLINK_EXP;
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL, NlMsgs};

/// One received expectation event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpEvent {
    /// NEW, UPDATE or DESTROY.
    pub kind: EventKind,
    /// The expectation.
    pub exp: Expectation,
    /// Port id of the netlink socket whose request caused the event (0
    /// when the kernel itself did).
    pub portid: u32,
}

/// Appends the expectation events of one datagram to `out` (other
/// messages are skipped); returns how many failed to decode. A NEW
/// message is a NEW event when it carries NLM_F_CREATE or NLM_F_EXCL, as
/// libnetfilter_conntrack reads it, else an UPDATE.
pub fn decode_events(data: &[u8], out: &mut Vec<ExpEvent>) -> u64 {
    let mut malformed = 0;
    for m in NlMsgs::new(data) {
        let Ok(m) = m else {
            malformed += 1;
            break;
        };
        if (m.ty >> 8) as u8 != SUBSYS_CTNETLINK_EXP {
            continue;
        }
        let kind = match (m.ty & 0xff) as u8 {
            msg::NEW if m.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => EventKind::New,
            msg::NEW => EventKind::Update,
            msg::DELETE => EventKind::Destroy,
            _ => continue,
        };
        match decode_expect(m.payload) {
            Ok(exp) => out.push(ExpEvent {
                kind,
                exp,
                portid: m.pid,
            }),
            Err(_) => malformed += 1,
        }
    }
    malformed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::expect::testutil::ftp_pasv;
    use crate::netlink::exp::{create_request, delete_request, request};

    #[test]
    fn kinds_from_type_and_flags() {
        let e = ftp_pasv();
        let mut data = Vec::new();
        create_request(&e).serialize_into(&mut data, NLM_F_CREATE, 1);
        create_request(&e).serialize_into(&mut data, 0, 2);
        delete_request(&e).serialize_into(&mut data, 0, 3);
        // a conntrack message and a stats message are skipped
        crate::netlink::ct::CtRequest::new(0, 2).serialize_into(&mut data, NLM_F_CREATE, 4);
        request(msg::GET_STATS_CPU, 0).serialize_into(&mut data, 0, 5);
        let mut out = Vec::new();
        assert_eq!(decode_events(&data, &mut out), 0);
        let kinds: Vec<EventKind> = out.iter().map(|ev| ev.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::New, EventKind::Update, EventKind::Destroy]
        );
        assert!(out.iter().all(|ev| ev.exp == e && ev.portid == 0));
        // a cut datagram: what came before it, and one malformed
        let mut out = Vec::new();
        assert_eq!(decode_events(&data[..data.len() - 3], &mut out), 1);
        assert_eq!(out.len(), 3);
        // whole messages whose attributes do not decode: each one counted
        let mut bad = Vec::new();
        for seq in [6, 7] {
            crate::netlink::message::push_header(&mut bad, 0x202, 0, seq, 5);
            bad.extend_from_slice(&[2, 0, 0, 0, 9, 0, 0, 0]);
        }
        let mut out = Vec::new();
        assert_eq!(decode_events(&bad, &mut out), 2);
        assert!(out.is_empty());
    }
}
