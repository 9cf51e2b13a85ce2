//! HTTP request heads as the web front reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ctrack::web::head::parse_head(data, &ctrack::web::Limits::default());
});
