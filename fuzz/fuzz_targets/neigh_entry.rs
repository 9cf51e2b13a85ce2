//! rtnetlink neighbour entries as the Hosts view reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ctrack::web::neigh::parse_neigh(data);
});
