//! conntrack command lines (arguments separated by NUL bytes).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = ctrack::cli::args::parse(args);
    let _ = ctrack::daemon::parse_args(&text.split('\0').map(str::to_string).collect::<Vec<_>>());
});
