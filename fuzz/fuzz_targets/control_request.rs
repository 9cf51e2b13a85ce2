//! Control socket request lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some(r) = ctrack::daemon::control::Request::parse(&line) {
        assert_eq!(ctrack::daemon::control::Request::parse(&r.to_line()), Some(r));
    }
});
