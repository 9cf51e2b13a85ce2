//! Makes the captures of real conntrackd sync traffic in tests/data/sync/
//! (see the README there). Not part of the normal test run, since the
//! captures are committed; regenerate them with
//! `cargo test --test sync_capture -- --ignored --test-threads=1`.
#![cfg(feature = "sync")]

mod lab;
mod support;
mod synclab;

use std::path::PathBuf;

use synclab::{Conntrackd, Side, SyncLab, Transport};

struct Scenario {
    name: &'static str,
    primary_mode: &'static str,
    standby_mode: &'static str,
    transport: Transport,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "ftfw-udp",
        primary_mode: "Mode FTFW { ResendQueueSize 131072\n\tACKWindowSize 300 }",
        standby_mode: "Mode FTFW { }",
        transport: Transport::Udp,
    },
    Scenario {
        name: "notrack-udp",
        primary_mode: "Mode NOTRACK { CommitTimeout 180 }",
        standby_mode: "Mode NOTRACK { }",
        transport: Transport::Udp,
    },
    Scenario {
        name: "alarm-udp",
        primary_mode: "Mode ALARM { RefreshTime 2\n\tCacheTimeout 10 }",
        standby_mode: "Mode ALARM { RefreshTime 2\n\tCacheTimeout 10 }",
        transport: Transport::Udp,
    },
    Scenario {
        name: "ftfw-mcast",
        primary_mode: "Mode FTFW { }",
        standby_mode: "Mode FTFW { }",
        transport: Transport::Multicast,
    },
];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sync")
}

fn run(s: &Scenario) {
    let l = SyncLab::new("cap");
    let dir = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join(format!("{}.pcap", s.name));
    let _ = std::fs::remove_file(&pcap);
    let cap = synclab::capture(&l.standby, &pcap);
    let standby = Conntrackd::start(
        &l.standby,
        &l.dir,
        "standby",
        s.standby_mode,
        s.transport,
        Side::Standby,
    );
    let primary = Conntrackd::start(
        l.primary(),
        &l.dir,
        "primary",
        s.primary_mode,
        s.transport,
        Side::Primary,
    );
    synclab::settle(1500);
    let traffic = synclab::make_traffic(&l.lab);
    let del = synclab::make_entries(l.primary());
    synclab::settle(1500);
    let o = l.primary().conntrack(&del);
    assert!(o.status.success(), "{}", lab::stderr(&o));
    synclab::settle(1500);
    let o = primary.run(&["-B"]);
    assert!(o.status.success());
    synclab::settle(2500);
    std::fs::write(
        dir.join(format!("{}.table", s.name)),
        synclab::raw_table(l.primary()),
    )
    .unwrap();
    let listing = lab::stdout(&l.primary().conntrack(&["-L"]));
    std::fs::write(dir.join(format!("{}.primary.txt", s.name)), listing).unwrap();
    let ext = standby.external().join("\n");
    std::fs::write(dir.join(format!("{}.external.txt", s.name)), ext + "\n").unwrap();
    primary.stop();
    standby.stop();
    synclab::settle(500);
    synclab::stop_capture(cap);
    drop(traffic);
}

#[test]
#[ignore = "regenerates the committed captures in tests/data/sync"]
fn make_captures() {
    if !lab::can_run() {
        return;
    }
    let only = std::env::var("SYNC_CAPTURE").ok();
    for s in &SCENARIOS {
        if only.as_deref().is_some_and(|o| o != s.name) {
            continue;
        }
        run(s);
    }
}
