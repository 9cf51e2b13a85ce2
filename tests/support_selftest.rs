//! The shared test helpers themselves: every `TempDir` is its own (two
//! calls with one tag get two directories, neither removes the other's)
//! and goes on drop; the line masks ignore what they name and nothing
//! else.

mod support;

use support::TempDir;
use support::flowline::{EVENTS, IDENTITY, RUNS, TUPLES};

#[test]
fn temp_dirs_with_one_tag_are_distinct_and_removed_on_drop() {
    let a = TempDir::new("same");
    std::fs::write(a.join("file"), "a").unwrap();
    let b = TempDir::new("same");
    assert_ne!(a.path(), b.path());
    assert!(a.path().starts_with(std::env::temp_dir()));
    assert_eq!(std::fs::read_to_string(a.join("file")).unwrap(), "a");
    let gone = b.path().to_path_buf();
    drop(b);
    assert!(!gone.exists());
    assert!(a.join("file").exists());
}

const LINE: &str = "tcp      6 431999 ESTABLISHED src=10.9.1.2 dst=10.9.2.2 sport=1 dport=2 \
                    packets=3 bytes=4 src=10.9.2.2 dst=10.9.2.1 sport=2 dport=1 [ASSURED] \
                    mark=0 delta-time=5 use=1 id=42";

#[test]
fn masks_hide_only_what_they_name() {
    assert_eq!(
        RUNS.apply(LINE),
        "tcp      6 T ESTABLISHED src=10.9.1.2 dst=10.9.2.2 sport=1 dport=2 \
         packets=3 bytes=4 src=10.9.2.2 dst=10.9.2.1 sport=2 dport=1 [ASSURED] \
         mark=0 delta-time=* use=1 id=*"
    );
    assert_eq!(
        IDENTITY.apply(LINE),
        "tcp ESTABLISHED src=10.9.1.2 dst=10.9.2.2 sport=1 dport=2 \
         src=10.9.2.2 dst=10.9.2.1 sport=2 dport=1"
    );
    // `id=` is the ICMP id of a tuple (and the entry id, had it been listed)
    assert_eq!(
        TUPLES.apply(LINE),
        "tcp src=10.9.1.2 dst=10.9.2.2 sport=1 dport=2 src=10.9.2.2 dst=10.9.2.1 sport=2 dport=1 \
         id=42"
    );
    assert_eq!(
        EVENTS.apply("[1700000000.000001]\t [NEW] udp      17 30 src=1 portid=7 progname=nc"),
        "[TS]\t [NEW] udp      17 T src=1 portid=*"
    );
    assert_eq!(
        RUNS.apply("-I -s 1.1.1.1 -t 50 <timeout>7</timeout>"),
        "-I -s 1.1.1.1 -t T <timeout>*</timeout>"
    );
}
