//! Authenticated datagrams (ctrack extension, off by default): SHA-256
//! (FIPS 180-4), HMAC-SHA256 (RFC 2104), and the 40-byte auth block that
//! `Auth { KeyFile ... }` puts in front of every datagram, with a replay
//! guard per sender instance.
//!
//! ```text
//!  0      1      2    4        8             16             24               40
//! +------+------+----+--------+-------------+--------------+----------------+---------
//! | 0xF1 | kind | 0  | "CTA2" | sender (64) | counter (64) | HMAC-SHA256/128 | payload
//! +------+------+----+--------+-------------+--------------+----------------+---------
//! ```
//!
//! The block looks like a message with length 0, which conntrackd treats
//! as "bad message size" and which makes it discard the rest of the
//! datagram: a peer without the key (conntrackd, or ctrack without
//! `Auth`) applies nothing from an authenticated sender. The MAC covers
//! bytes 0..24 and the payload, truncated to 128 bits (RFC 4868).
//!
//! Each instance (each start of the daemon) picks a random 64-bit sender
//! id and counts its datagrams from 1, whatever its clock says. A
//! receiver:
//! - drops datagrams carrying its own id (reflected back at it);
//! - keeps a replay window per sender id it verified: each counter is
//!   accepted once, within 64 behind the highest seen (UDP may reorder);
//! - verifies a sender id it does not know with a challenge: kind 1
//!   carries the sender's id and a fresh random nonce, the sender answers
//!   with kind 2 carrying our id and the nonce, and only datagrams it
//!   counts after that answer are accepted. Until then its datagrams are
//!   dropped (the sync protocol sends again what they carried).
//!
//! So a restarted peer (new id, counters from 1, clock behind or not) is
//! verified in one round trip; a recording of an old instance, or of the
//! current one played to a receiver that restarted, never is; and a
//! datagram sent back to its sender is refused rather than moving a
//! window that the real peer's datagrams would then fall behind.
//!
//! Hand-written because it is ~150 lines and a crypto crate would cost
//! more bytes than the whole sync module; checked against the FIPS 180-2
//! and RFC 4231 vectors below.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Length of the auth block.
pub const AUTH_LEN: usize = 40;
/// First byte of the auth block (version 15, type 1).
pub const AUTH_MAGIC: u8 = 0xf1;
const TAG: &[u8; 4] = b"CTA2";
/// The signed part of the block: magic, kind, tag, sender, counter.
const SIGNED_HEAD: usize = 24;
const MAC_LEN: usize = 16;
const WINDOW: u64 = 64;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// An incremental SHA-256.
#[derive(Clone, Debug)]
pub struct Sha256 {
    h: [u32; 8],
    buf: [u8; 64],
    used: usize,
    total: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl Sha256 {
    /// A fresh hash.
    pub fn new() -> Sha256 {
        Sha256 {
            h: H0,
            buf: [0; 64],
            used: 0,
            total: 0,
        }
    }

    fn block(h: &mut [u32; 8], b: &[u8]) {
        let mut w = [0u32; 64];
        for (i, c) in b.chunks_exact(4).take(16).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut bb, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & bb) ^ (a & c) ^ (bb & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = bb;
            bb = a;
            a = t1.wrapping_add(t2);
        }
        for (x, v) in h.iter_mut().zip([a, bb, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(v);
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.used > 0 {
            let n = (64 - self.used).min(data.len());
            self.buf[self.used..self.used + n].copy_from_slice(&data[..n]);
            self.used += n;
            data = &data[n..];
            if self.used == 64 {
                let b = self.buf;
                Self::block(&mut self.h, &b);
                self.used = 0;
            }
        }
        let mut chunks = data.chunks_exact(64);
        for c in &mut chunks {
            Self::block(&mut self.h, c);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.used += rest.len();
    }

    /// The digest.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let n = if self.used < 56 {
            56 - self.used
        } else {
            120 - self.used
        };
        pad[n..n + 8].copy_from_slice(&bits.to_be_bytes());
        let total = self.total;
        self.update(&pad[..n + 8]);
        self.total = total;
        let mut out = [0u8; 32];
        for (o, h) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&h.to_be_bytes());
        }
        out
    }

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut s = Sha256::new();
        s.update(data);
        s.finish()
    }
}

/// HMAC-SHA256 with a fixed key: the two padded key blocks are hashed
/// once, each MAC then costs the message plus two blocks.
#[derive(Clone, Debug)]
pub struct HmacSha256 {
    inner: Sha256,
    outer: Sha256,
}

impl HmacSha256 {
    /// Prepares a key (longer than 64 bytes: hashed first, per RFC 2104).
    pub fn new(key: &[u8]) -> HmacSha256 {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        let mut outer = Sha256::new();
        inner.update(&k.map(|b| b ^ 0x36));
        outer.update(&k.map(|b| b ^ 0x5c));
        HmacSha256 { inner, outer }
    }

    /// The MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut i = self.inner.clone();
        for p in parts {
            i.update(p);
        }
        let mut o = self.outer.clone();
        o.update(&i.finish());
        o.finish()
    }
}

/// Why an authenticated datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No auth block (e.g. from conntrackd or a peer without Auth), or a
    /// truncated one.
    Missing,
    /// The MAC does not match: wrong key or altered bytes.
    BadMac,
    /// A counter already seen or too old: a replay.
    Replay,
    /// Our own datagram, sent back to us.
    Reflected,
    /// From a sender instance not verified yet: it was challenged (a
    /// restarted peer answers at once; a recording cannot).
    Unverified,
}

/// What [`Auth::open`] made of a datagram it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// Sync messages from a verified sender instance.
    Messages(&'a [u8]),
    /// A sender instance answered our challenge: its datagrams count from
    /// now on (the id, for the log).
    Verified(u64),
    /// We answered a challenge: the peer dropped what we sent before it
    /// (and will accept what we send from now on).
    Answered,
    /// Part of the exchange, handled (a challenge answered, a late or
    /// repeated answer ignored).
    Handled,
}

/// Kinds of auth block (byte 1).
mod kind {
    /// Sync messages follow.
    pub const MESSAGES: u8 = 0;
    /// A challenge: the target's id and a nonce follow.
    pub const CHALLENGE: u8 = 1;
    /// The answer: the challenger's id and its nonce follow.
    pub const RESPONSE: u8 = 2;
}

/// Most sender instances whose counters are tracked at once (a pair has
/// one; a restarted peer briefly two).
const MAX_SENDERS: usize = 4;

/// A sender that is not verified yet is challenged at most this often.
pub const CHALLENGE_INTERVAL: Duration = Duration::from_millis(100);

/// Most challenges answered per second (recorded ones can be replayed at
/// us; each is answered once anyway).
const MAX_ANSWERS_PER_SECOND: usize = 20;

/// The replay window of one verified sender instance.
#[derive(Clone, Copy, Debug)]
struct Window {
    id: u64,
    highest: u64,
    /// Bit i: counter `highest - i` was seen (or is too old to accept).
    seen: u64,
    /// When it last sent something valid (for eviction), in datagrams.
    used: u64,
}

impl Window {
    fn accept(&mut self, c: u64) -> Result<(), AuthError> {
        if c > self.highest {
            let shift = c - self.highest;
            self.seen = if shift >= WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.highest = c;
            return Ok(());
        }
        let back = self.highest - c;
        if back >= WINDOW || self.seen & (1 << back) != 0 {
            return Err(AuthError::Replay);
        }
        self.seen |= 1 << back;
        Ok(())
    }
}

/// A challenge we sent and wait an answer for.
#[derive(Clone, Copy, Debug)]
struct Challenge {
    target: u64,
    nonce: u64,
    sent: Instant,
}

/// Signs outgoing and checks incoming datagrams for one shared key, for
/// one instance (see the module documentation).
#[derive(Clone, Debug)]
pub struct Auth {
    hmac: HmacSha256,
    id: u64,
    send_counter: u64,
    rng: u64,
    senders: Vec<Window>,
    challenges: Vec<Challenge>,
    /// (sender, nonce) of the challenges answered lately.
    answered: VecDeque<(u64, u64)>,
    /// When the challenges of the last second were answered.
    answers_at: VecDeque<Instant>,
    replies: VecDeque<Vec<u8>>,
    received: u64,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn be64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}

/// splitmix64: the id and nonces of an instance from its random seed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut x = *state;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Auth {
    /// A signer/verifier for one instance; `seed` must be random (the
    /// instance id and the challenge nonces come from it).
    pub fn new(key: &[u8], seed: u64) -> Auth {
        let mut rng = seed;
        let mut id = next_random(&mut rng);
        if id == 0 {
            id = 1;
        }
        Auth {
            hmac: HmacSha256::new(key),
            id,
            send_counter: 0,
            rng,
            senders: Vec::new(),
            challenges: Vec::new(),
            answered: VecDeque::new(),
            answers_at: VecDeque::new(),
            replies: VecDeque::new(),
            received: 0,
        }
    }

    /// This instance's sender id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn mac16(&self, head: &[u8], payload: &[u8]) -> [u8; MAC_LEN] {
        let m = self.hmac.mac(&[head, payload]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&m[..MAC_LEN]);
        out
    }

    fn seal_kind(&mut self, k: u8, payload: &[u8]) -> Vec<u8> {
        self.send_counter = self.send_counter.wrapping_add(1);
        let mut out = Vec::with_capacity(AUTH_LEN + payload.len());
        out.extend_from_slice(&[AUTH_MAGIC, k, 0, 0]);
        out.extend_from_slice(TAG);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.send_counter.to_be_bytes());
        let mac = self.mac16(&out[..SIGNED_HEAD], payload);
        out.extend_from_slice(&mac);
        out.extend_from_slice(payload);
        out
    }

    /// Returns `messages` with the auth block in front.
    pub fn seal(&mut self, messages: &[u8]) -> Vec<u8> {
        self.seal_kind(kind::MESSAGES, messages)
    }

    /// A datagram of the exchange to send to the peer (a challenge or an
    /// answer), if any: take them after each [`Auth::open`].
    pub fn take_reply(&mut self) -> Option<Vec<u8>> {
        self.replies.pop_front()
    }

    /// Checks a datagram received at `now`: returns its messages when it
    /// comes from a verified sender instance and was not seen before;
    /// handles the challenge exchange (see [`Auth::take_reply`]).
    pub fn open<'a>(&mut self, now: Instant, datagram: &'a [u8]) -> Result<Opened<'a>, AuthError> {
        if datagram.len() < AUTH_LEN
            || datagram[0] != AUTH_MAGIC
            || datagram[1] > kind::RESPONSE
            || datagram[2..4] != [0, 0]
            || &datagram[4..8] != TAG
        {
            return Err(AuthError::Missing);
        }
        let (head, payload) = datagram.split_at(AUTH_LEN);
        if !ct_eq(
            &self.mac16(&head[..SIGNED_HEAD], payload),
            &head[SIGNED_HEAD..],
        ) {
            return Err(AuthError::BadMac);
        }
        let sender = be64(&head[8..16]);
        let counter = be64(&head[16..24]);
        if sender == self.id {
            return Err(AuthError::Reflected);
        }
        self.received += 1;
        let exchange = (payload.len() == 16).then(|| (be64(payload), be64(&payload[8..])));
        match head[1] {
            kind::MESSAGES => match self.senders.iter().position(|w| w.id == sender) {
                Some(i) => {
                    self.senders[i].accept(counter)?;
                    self.senders[i].used = self.received;
                    Ok(Opened::Messages(payload))
                }
                None => {
                    self.challenge(now, sender);
                    Err(AuthError::Unverified)
                }
            },
            kind::CHALLENGE => match exchange {
                Some((target, nonce)) if target == self.id && self.answer(now, sender, nonce) => {
                    Ok(Opened::Answered)
                }
                _ => Ok(Opened::Handled),
            },
            _ => {
                let open = self.challenges.iter().position(|c| {
                    exchange.is_some_and(|(target, nonce)| {
                        target == self.id && c.target == sender && c.nonce == nonce
                    })
                });
                match open {
                    Some(i) => {
                        self.challenges.swap_remove(i);
                        self.verified(sender, counter);
                        Ok(Opened::Verified(sender))
                    }
                    None => Ok(Opened::Handled),
                }
            }
        }
    }

    /// Challenges `sender` (at most every [`CHALLENGE_INTERVAL`]), with a
    /// fresh nonce each time.
    fn challenge(&mut self, now: Instant, sender: u64) {
        let i = match self.challenges.iter().position(|c| c.target == sender) {
            Some(i) if now < self.challenges[i].sent + CHALLENGE_INTERVAL => return,
            Some(i) => i,
            None => {
                if self.challenges.len() >= MAX_SENDERS {
                    let oldest = (0..self.challenges.len())
                        .min_by_key(|&i| self.challenges[i].sent)
                        .unwrap_or(0);
                    self.challenges.swap_remove(oldest);
                }
                self.challenges.push(Challenge {
                    target: sender,
                    nonce: 0,
                    sent: now,
                });
                self.challenges.len() - 1
            }
        };
        let nonce = next_random(&mut self.rng);
        self.challenges[i].nonce = nonce;
        self.challenges[i].sent = now;
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&sender.to_be_bytes());
        payload[8..].copy_from_slice(&nonce.to_be_bytes());
        let d = self.seal_kind(kind::CHALLENGE, &payload);
        self.replies.push_back(d);
    }

    /// Answers a challenge once, within [`MAX_ANSWERS_PER_SECOND`];
    /// returns whether it did.
    fn answer(&mut self, now: Instant, sender: u64, nonce: u64) -> bool {
        if self.answered.contains(&(sender, nonce)) {
            return false;
        }
        while self
            .answers_at
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.answers_at.pop_front();
        }
        if self.answers_at.len() >= MAX_ANSWERS_PER_SECOND {
            return false;
        }
        self.answers_at.push_back(now);
        if self.answered.len() >= 2 * MAX_SENDERS {
            self.answered.pop_front();
        }
        self.answered.push_back((sender, nonce));
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&sender.to_be_bytes());
        payload[8..].copy_from_slice(&nonce.to_be_bytes());
        let d = self.seal_kind(kind::RESPONSE, &payload);
        self.replies.push_back(d);
        true
    }

    /// `sender` answered a fresh challenge with `counter`: only what it
    /// sends after that answer is accepted.
    fn verified(&mut self, sender: u64, counter: u64) {
        let w = Window {
            id: sender,
            highest: counter,
            seen: u64::MAX,
            used: self.received,
        };
        match self.senders.iter().position(|w| w.id == sender) {
            Some(i) => {
                let old = self.senders[i];
                if old.highest < counter {
                    self.senders[i] = w;
                }
            }
            None => {
                if self.senders.len() >= MAX_SENDERS {
                    let lru = (0..self.senders.len())
                        .min_by_key(|&i| self.senders[i].used)
                        .unwrap_or(0);
                    self.senders.swap_remove(lru);
                }
                self.senders.push(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn sha256_fips_vectors() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&Sha256::digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // one million 'a', fed in uneven pieces
        let mut s = Sha256::new();
        let chunk = [b'a'; 997];
        let mut left = 1_000_000;
        while left > 0 {
            let n = left.min(chunk.len());
            s.update(&chunk[..n]);
            left -= n;
        }
        assert_eq!(
            hex(&s.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex(&HmacSha256::new(&key).mac(&[&data])), want);
        }
        // test case 5: truncation to 128 bits, as our auth block does
        let m = HmacSha256::new(&[0x0c; 20]).mac(&[b"Test With Truncation"]);
        assert_eq!(hex(&m[..16]), "a3b6167473100ee06e0c796c2955552b");
        // split input gives the same MAC
        let h = HmacSha256::new(b"Jefe");
        assert_eq!(
            h.mac(&[b"what do ya ", b"want for nothing?"]),
            h.mac(&[b"what do ya want for nothing?"])
        );
    }

    const KEY: &[u8] = b"0123456789abcdef";

    /// `b` verifies `a` (challenge and answer passed by hand); returns
    /// the challenge and the answer.
    fn verify(a: &mut Auth, b: &mut Auth, now: Instant) -> (Vec<u8>, Vec<u8>) {
        let hello = a.seal(b"m");
        assert_eq!(b.open(now, &hello), Err(AuthError::Unverified));
        let challenge = b.take_reply().expect("a challenge");
        assert_eq!(a.open(now, &challenge), Ok(Opened::Answered));
        let answer = a.take_reply().expect("an answer");
        assert_eq!(b.open(now, &answer), Ok(Opened::Verified(a.id())));
        (challenge, answer)
    }

    #[test]
    fn sealed_datagrams_open_once() {
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 1000);
        let mut b = Auth::new(KEY, 5);
        verify(&mut a, &mut b, t0);
        let d1 = a.seal(b"hello");
        let d2 = a.seal(b"world");
        assert_eq!(&d1[..8], [0xf1, 0, 0, 0, b'C', b'T', b'A', b'2']);
        assert_eq!(b.open(t0, &d2), Ok(Opened::Messages(b"world")));
        // reordered but fresh: accepted; replayed: refused
        assert_eq!(b.open(t0, &d1), Ok(Opened::Messages(b"hello")));
        assert_eq!(b.open(t0, &d1), Err(AuthError::Replay));
        assert_eq!(b.open(t0, &d2), Err(AuthError::Replay));
        // forged, altered, truncated, unauthenticated, wrong key
        let mut bad = a.seal(b"x");
        bad[AUTH_LEN] ^= 1;
        assert_eq!(b.open(t0, &bad), Err(AuthError::BadMac));
        let mut bad = a.seal(b"x");
        bad[9] ^= 1; // the sender id is signed
        assert_eq!(b.open(t0, &bad), Err(AuthError::BadMac));
        let ok = a.seal(b"abc");
        assert_eq!(b.open(t0, &ok[..ok.len() - 1]), Err(AuthError::BadMac));
        assert_eq!(b.open(t0, &ok[..20]), Err(AuthError::Missing));
        assert_eq!(
            b.open(t0, b"\x1a\x10\x00\x08\0\0\0\x01"),
            Err(AuthError::Missing)
        );
        let mut other = Auth::new(b"another key 16 bytes", 99999);
        assert_eq!(b.open(t0, &other.seal(b"abc")), Err(AuthError::BadMac));
        assert_eq!(b.open(t0, &ok), Ok(Opened::Messages(b"abc")));
        assert!(b.take_reply().is_none());
    }

    #[test]
    fn replay_window_slides() {
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 0);
        let mut b = Auth::new(KEY, 1);
        verify(&mut a, &mut b, t0);
        let sealed: Vec<Vec<u8>> = (0..200).map(|_| a.seal(b"m")).collect();
        assert!(b.open(t0, &sealed[100]).is_ok());
        assert!(b.open(t0, &sealed[40]).is_ok()); // 60 behind: inside
        assert_eq!(b.open(t0, &sealed[30]), Err(AuthError::Replay)); // 70 behind
        assert!(b.open(t0, &sealed[199]).is_ok()); // far ahead: window reset
        assert_eq!(b.open(t0, &sealed[100]), Err(AuthError::Replay));
        assert!(b.open(t0, &sealed[150]).is_ok());
    }

    #[test]
    fn a_datagram_sent_back_to_its_sender_is_refused_and_locks_nothing_out() {
        // b started after a: it has sent more than a (the old counters
        // came from the clock, so b's were far above a's). An attacker
        // sends b's own datagrams back at it: once accepted, b took a's
        // real datagrams for replays until it restarted.
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 7);
        let mut b = Auth::new(KEY, 8);
        verify(&mut a, &mut b, t0);
        for _ in 0..1000 {
            b.seal(b"b's own");
        }
        let own = b.seal(b"b's own");
        assert_eq!(b.open(t0, &own), Err(AuthError::Reflected));
        let mut challenge = Vec::new();
        while let Some(c) = b.take_reply() {
            challenge = c;
        }
        assert!(challenge.is_empty(), "no challenge to itself");
        assert_eq!(b.open(t0, &a.seal(b"a")), Ok(Opened::Messages(b"a")));
        // b's challenges and answers sent back are refused too
        let (challenge, answer) = verify(&mut b, &mut a, t0);
        assert_eq!(a.open(t0, &challenge), Err(AuthError::Reflected));
        assert_eq!(b.open(t0, &answer), Err(AuthError::Reflected));
        assert_eq!(b.open(t0, &a.seal(b"a2")), Ok(Opened::Messages(b"a2")));
    }

    #[test]
    fn a_restarted_sender_is_verified_again_whatever_its_clock() {
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 11);
        let mut b = Auth::new(KEY, 12);
        verify(&mut a, &mut b, t0);
        for _ in 0..10_000 {
            a.seal(b"traffic");
        }
        assert!(b.open(t0, &a.seal(b"x")).is_ok());
        // a restarts: a new instance, counting from 1 again (its clock
        // may be hours behind: it plays no part)
        let mut a2 = Auth::new(KEY, 13);
        assert_ne!(a2.id(), a.id());
        verify(&mut a2, &mut b, t0);
        assert_eq!(b.open(t0, &a2.seal(b"y")), Ok(Opened::Messages(b"y")));
    }

    #[test]
    fn a_fresh_receiver_accepts_no_recorded_datagram() {
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 21);
        let mut b = Auth::new(KEY, 22);
        let (_, old_answer) = verify(&mut a, &mut b, t0);
        let recorded: Vec<Vec<u8>> = (0..10).map(|i| a.seal(&[i])).collect();
        for d in &recorded {
            assert!(b.open(t0, d).is_ok());
        }
        // b restarts; the recording is played to it: all of it waits for
        // a verification, and the old answer does not verify anything
        let mut b2 = Auth::new(KEY, 23);
        for d in &recorded {
            assert_eq!(b2.open(t0, d), Err(AuthError::Unverified));
        }
        assert_eq!(b2.open(t0, &old_answer), Ok(Opened::Handled));
        // the live a answers b2's challenge: the recording is older than
        // that answer, so it stays refused
        let challenge = b2.take_reply().expect("challenged");
        a.open(t0, &challenge).unwrap();
        let answer = a.take_reply().unwrap();
        assert_eq!(b2.open(t0, &answer), Ok(Opened::Verified(a.id())));
        for d in &recorded {
            assert_eq!(b2.open(t0, d), Err(AuthError::Replay));
        }
        // the answer itself cannot be played again
        assert_eq!(b2.open(t0, &answer), Ok(Opened::Handled));
        // a recording of an instance that is gone is never accepted
        let mut gone = Auth::new(KEY, 24);
        let ghost = gone.seal(b"ghost");
        let later = t0 + CHALLENGE_INTERVAL;
        assert_eq!(b2.open(later, &ghost), Err(AuthError::Unverified));
        assert_eq!(b2.open(later, &ghost), Err(AuthError::Unverified));
    }

    #[test]
    fn challenges_and_answers_are_limited() {
        let t0 = Instant::now();
        let mut a = Auth::new(KEY, 31);
        let mut b = Auth::new(KEY, 32);
        // a stream from an unverified sender: one challenge per interval
        for _ in 0..50 {
            assert_eq!(b.open(t0, &a.seal(b"m")), Err(AuthError::Unverified));
        }
        let c1 = b.take_reply().expect("challenged");
        assert!(b.take_reply().is_none());
        let later = t0 + CHALLENGE_INTERVAL;
        assert_eq!(b.open(later, &a.seal(b"m")), Err(AuthError::Unverified));
        let c2 = b.take_reply().expect("challenged again");
        assert_ne!(c1[AUTH_LEN..], c2[AUTH_LEN..], "a new nonce");
        // each challenge is answered once, however often it is replayed
        for _ in 0..5 {
            a.open(later, &c2).unwrap();
        }
        let answer = a.take_reply().expect("answered");
        assert!(a.take_reply().is_none());
        // the first challenge's nonce was replaced: its answer is stale
        a.open(later, &c1).unwrap();
        let stale = a.take_reply().unwrap();
        assert_eq!(b.open(later, &stale), Ok(Opened::Handled));
        assert_eq!(b.open(later, &answer), Ok(Opened::Verified(a.id())));
        // at most MAX_ANSWERS_PER_SECOND answers a second
        let mut c = Auth::new(KEY, 33);
        let mut answered = 0;
        for i in 0..100 {
            let mut d = Auth::new(KEY, 100 + i);
            d.open(t0, &c.seal(b"m")).unwrap_err();
            let ch = d.take_reply().unwrap();
            c.open(t0, &ch).unwrap();
            answered += usize::from(c.take_reply().is_some());
        }
        assert_eq!(answered, MAX_ANSWERS_PER_SECOND);
    }
}
