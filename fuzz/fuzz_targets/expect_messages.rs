//! Expectation messages from the kernel: message walk, expectation
//! decode and events, every output format of an expectation.
#![no_main]
use ctrack::flow::expect::{self, ExpJsonOptions, ExpTextOptions, ExpXmlOptions};
use ctrack::netlink::exp;
use ctrack::netlink::message::NlMsgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in NlMsgs::new(data).flatten() {
        if let Ok(e) = exp::decode_expect(m.payload) {
            let mut out = Vec::new();
            expect::write_line(&mut out, &e, &ExpTextOptions::default());
            expect::write_xml(&mut out, &e, &ExpXmlOptions::default());
            expect::write_json(&mut out, &e, &ExpJsonOptions::default());
        }
    }
    let _ = exp::decode_events(data, &mut Vec::new());
    let _ = exp::decode_expect(data);
});
