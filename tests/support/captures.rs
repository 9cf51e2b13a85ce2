//! Kernel captures in tests/data (see its README): loading a `.le.hex`
//! file into messages in this host's byte order, hex both ways, the
//! ctnetlink payload of a message, and the deterministic generator of the
//! corruption loops. Shared by tests/codec_captures.rs (conntrack
//! messages) and tests/expect_captures.rs (expectations).

use std::path::{Path, PathBuf};

use ctrack::netlink::ct::cta;
use ctrack::netlink::message::NlMsgs;

/// The directory of the captures.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// One recorded netlink message (header included), in this host's order.
pub struct Capture {
    /// The file's name without `.le.hex`.
    pub name: String,
    /// The messages, header included.
    pub msgs: Vec<Vec<u8>>,
}

/// Reads `NAME.le.hex` (one message per line, `#` comments) and converts
/// it to this host's byte order.
pub fn load(name: &str) -> Capture {
    let path = data_dir().join(format!("{name}.le.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let msgs = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut m = unhex(l.trim());
            if cfg!(target_endian = "big") {
                le_to_native(&mut m);
            }
            m
        })
        .collect();
    Capture {
        name: name.to_string(),
        msgs,
    }
}

/// Bytes of a hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A hex string of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Swaps the host-endian fields of a little-endian netlink message into
/// big-endian: nlmsghdr len/type/flags/seq/pid, every nla_len/nla_type
/// (recursing into NLA_F_NESTED attributes) and CTA_LABELS words.
pub fn le_to_native(m: &mut [u8]) {
    fn swap(b: &mut [u8]) {
        b.reverse();
    }
    if m.len() < 16 {
        return;
    }
    for (a, n) in [(0, 4), (4, 2), (6, 2), (8, 4), (12, 4)] {
        swap(&mut m[a..a + n]);
    }
    // nfgenmsg (4 bytes, res_id already big-endian), then attributes
    if m.len() > 20 {
        swap_attrs(&mut m[20..], true);
    }
    fn swap_attrs(b: &mut [u8], top: bool) {
        let mut at = 0;
        while at + 4 <= b.len() {
            let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            let ty = u16::from_le_bytes([b[at + 2], b[at + 3]]);
            swap(&mut b[at..at + 2]);
            swap(&mut b[at + 2..at + 4]);
            if len < 4 || at + len > b.len() {
                return;
            }
            let payload = &mut b[at + 4..at + len];
            if ty & 0x8000 != 0 {
                swap_attrs(payload, false);
            } else if top && ty & 0x3fff == cta::LABELS {
                for w in payload.chunks_exact_mut(4) {
                    swap(w);
                }
            }
            at += (len + 3) & !3;
        }
    }
}

/// The ctnetlink payload (after nlmsghdr) of a message, and its type.
pub fn payload(m: &[u8]) -> (u16, u16, u32, &[u8]) {
    let msg = NlMsgs::new(m)
        .next()
        .expect("one message")
        .expect("valid header");
    (msg.ty, msg.flags, msg.pid, msg.payload)
}

/// A small deterministic generator (xorshift) for the corruption loop.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
