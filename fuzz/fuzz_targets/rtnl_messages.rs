//! rtnetlink datagrams (RTM_NEWADDR/DELADDR, RTM_NEWLINK/DELLINK): the
//! decoder in netlink::route, then the WAN tracker fed with what it
//! decoded, as events and as a dump.
#![no_main]
use std::time::{Duration, Instant};

use ctrack::netlink::route::{self, RtMsg};
use ctrack::wan::config::WanConfig;
use ctrack::wan::tracker::{Input, Tracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut msgs = Vec::new();
    route::parse_datagram(data, &mut msgs);
    let _ = route::parse_addr(true, data);
    let _ = route::parse_link(false, data);

    let mut cfg = WanConfig::default();
    for name in ["wan0", "ppp-x"] {
        cfg.set("Interface", name).unwrap();
    }
    let mut tracker = Tracker::new(cfg);
    let t0 = Instant::now();
    // the first half as the baseline dump, the rest as events
    let (dump, events) = msgs.split_at(msgs.len() / 2);
    let _ = tracker.handle(t0, Input::Snapshot(dump));
    let mut now = t0;
    for m in events {
        now += Duration::from_millis(10);
        let _ = tracker.handle(now, Input::Rt(m));
        if matches!(m, RtMsg::Link(l) if !l.new) {
            let _ = tracker.handle(now, Input::Overrun);
        }
    }
    while let Some(d) = tracker.next_deadline() {
        if d > now + Duration::from_secs(600) {
            break;
        }
        now = now.max(d) + Duration::from_millis(1);
        let _ = tracker.handle(now, Input::Tick);
        let _ = tracker.handle(now, Input::FlushDone { ok: true });
    }
    let _ = tracker.handle(now, Input::Snapshot(&msgs));
    let _ = tracker.status();
});
