//! Netlink datagrams from the kernel: message walk, flow decode, formats.
#![no_main]
use ctrack::flow::{json, save, text, xml};
use ctrack::netlink::{ct, message::NlMsgs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in NlMsgs::new(data).flatten() {
        if let Ok(f) = ct::decode_flow(m.payload) {
            let mut out = Vec::new();
            text::write_line(&mut out, &f, &text::TextOptions::default());
            xml::write_flow(&mut out, &f, &xml::XmlOptions::default());
            save::write_line(&mut out, &f, None);
            json::write_flow(&mut out, &f, &json::JsonOptions::default());
        }
    }
    let _ = ct::decode_flow(data);
});
