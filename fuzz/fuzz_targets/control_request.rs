//! Control socket requests, through the daemon's own read path: whatever
//! the bytes, reading never panics and a request it accepts is a whole
//! line that round-trips.
#![no_main]
use ctrack::daemon::control::{Request, read_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = read_request(&mut &data[..]) {
        let nl = data.iter().position(|&b| b == b'\n');
        assert!(nl.is_some_and(|n| n < ctrack::daemon::control::MAX_REQUEST));
        assert_eq!(Request::parse(&r.to_line()), Some(r));
    }
});
