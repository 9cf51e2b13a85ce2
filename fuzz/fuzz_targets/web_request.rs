//! What a web client controls beyond the head's syntax: the `Host` and
//! `Authorization` values, and the query string of the API.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use ctrack::web::access;
    use ctrack::web::query::{Endpoint, FlowQuery};
    let listen = std::net::IpAddr::from([192, 168, 1, 1]);
    let _ = access::host_allowed(data, listen, &["router.lan".to_string()]);
    let _ = access::cross_site(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = access::bearer(s);
        for e in [Endpoint::List, Endpoint::Delete, Endpoint::Events, Endpoint::Hosts] {
            let _ = FlowQuery::parse(s, e);
        }
    }
});
