//! Sync datagrams from a peer: the auth check, the message walk, the
//! state-message decoder and the engine's receive path (FTFW/NOTRACK/
//! ALARM windows, external cache or direct injection), then the netlink
//! requests a commit would build from what was received.
//!
//! Input: one config byte, then datagrams framed as a big-endian u16
//! length and that many bytes. With auth on, the peer is verified first
//! (challenge and answer); each datagram is then fed as is (refused:
//! missing or bad MAC, or read as a challenge or an answer if it parses as
//! one), also to the peer's side, then sealed with the shared key (so the
//! decoder and engine see it), then sealed again and replayed.
#![no_main]
use std::time::{Duration, Instant};

use ctrack::flow::{EventKind, Flow, Tuple, proto};
use ctrack::netlink::ct;
use ctrack::netlink::message::NlMsgs;
use ctrack::sync::auth::Auth;
use ctrack::sync::config::{LinkConfig, ModeKind, SyncConfig};
use ctrack::sync::engine::{Action, Engine, Start};
use ctrack::sync::external;
use ctrack::sync::wire::ct::QuirkOrder;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-key-0123456789abcdef";
const SEQ: u32 = 1000;

fn config(b: u8) -> SyncConfig {
    let mut c = SyncConfig {
        mode: match b & 3 {
            1 => ModeKind::Notrack,
            2 => ModeKind::Alarm,
            _ => ModeKind::Ftfw,
        },
        disable_external_cache: b & 8 != 0,
        peer_endianness: if b & 16 != 0 {
            QuirkOrder::Big
        } else {
            QuirkOrder::Little
        },
        tcp_window_tracking: b & 32 != 0,
        commit_timeout: (b & 64 != 0).then_some(180),
        links: vec![LinkConfig::udp(
            None,
            "10.9.9.2".parse().unwrap(),
            3780,
            "sync0",
        )],
        ..SyncConfig::default()
    };
    let _ = c.validate();
    c
}

/// A few flows of our own, so ACK/NACK ranges from the peer can hit
/// something in the resend queue.
fn own_flow(i: u8) -> Flow {
    let orig = Tuple {
        src: [10, 1, 0, i].into(),
        dst: [10, 2, 0, 1].into(),
        proto: proto::UDP,
        sport: 1024 + i as u16,
        dport: 53,
        ..Tuple::default()
    };
    Flow {
        family: ctrack::flow::AF_INET,
        reply: orig.inverted(),
        orig,
        has_orig: true,
        has_reply: true,
        status: Some(0x0e),
        timeout: Some(30),
        ..Flow::default()
    }
}

/// What a commit or an injection would send the kernel for `f`: it must
/// frame and decode again.
fn to_kernel(f: &Flow, window_tracking: bool) {
    let o = ct::NewOpts {
        timeout: f.timeout,
        tcp_window_tracking: window_tracking,
    };
    for req in [
        ct::create_request(f, &o),
        ct::update_request(f, &o),
        ct::delete_request(f),
    ] {
        let mut bytes = Vec::new();
        req.serialize_into(&mut bytes, 0, 1);
        let m = NlMsgs::new(&bytes).next().unwrap().unwrap();
        ct::decode_flow(m.payload).unwrap();
    }
}

fn drain(engine: &mut Engine, window_tracking: bool) {
    for a in engine.drain_actions() {
        if let Action::Inject { flow, .. } = a {
            to_kernel(&flow, window_tracking);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, mut rest)) = data.split_first() else {
        return;
    };
    let cfg = config(b);
    let auth = b & 4 != 0;
    let t0 = Instant::now();
    let mut engine = Engine::new(
        &cfg,
        Start {
            now: t0,
            seq: SEQ,
            mtus: vec![1500],
            auth_key: auth.then(|| KEY.to_vec()),
            auth_seed: 1,
            seed: 1,
        },
    );
    let mut peer = Auth::new(KEY, 1 << 20);
    if auth {
        // the engine verifies the peer: challenge, answer
        engine.on_datagram(t0, 0, &peer.seal(&[]), None);
        for a in engine.drain_actions() {
            if let Action::Send { datagram, .. } = a {
                let _ = peer.open(t0, &datagram);
            }
        }
        while let Some(answer) = peer.take_reply() {
            engine.on_datagram(t0, 0, &answer, None);
        }
    }
    for i in 0..4 {
        engine.on_event(t0, EventKind::New, &own_flow(i));
    }
    engine.transmit(t0);
    drain(&mut engine, cfg.tcp_window_tracking);

    let mut now = t0;
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let end = (2 + len).min(rest.len());
        let datagram = &rest[2..end];
        rest = &rest[end..];
        now += Duration::from_millis(50);
        engine.on_datagram(now, 0, datagram, None);
        if auth {
            let _ = peer.open(now, datagram);
            while peer.take_reply().is_some() {}
            let sealed = peer.seal(datagram);
            engine.on_datagram(now, 0, &sealed, None);
            engine.on_datagram(now, 0, &sealed, None);
        }
        engine.transmit(now);
        drain(&mut engine, cfg.tcp_window_tracking);
        if let Some(d) = engine.next_deadline() {
            now = now.max(d);
            engine.on_timeout(now);
            drain(&mut engine, cfg.tcp_window_tracking);
        }
    }
    for e in engine.external().iter() {
        let _ = external::commit_timeout(&e, now, cfg.commit_timeout);
        to_kernel(&e.flow, cfg.tcp_window_tracking);
    }
    let _ = engine.rsqueue_text();
});
