//! Authenticated datagrams (ctrack extension, off by default): SHA-256
//! (FIPS 180-4), HMAC-SHA256 (RFC 2104), and the 32-byte auth block that
//! `Auth { KeyFile ... }` puts in front of every datagram, with a replay
//! guard.
//!
//! ```text
//!  0      1      2    4          8                16                 32
//! +------+------+----+----------+----------------+------------------+----------
//! | 0xF1 | 0x00 | 0  | "CTA1"   | counter (be64) | HMAC-SHA256/128  | messages
//! +------+------+----+----------+----------------+------------------+----------
//! ```
//!
//! The block looks like a message with length 0, which conntrackd treats
//! as "bad message size" and which makes it discard the rest of the
//! datagram: a peer without the key (conntrackd, or ctrack without
//! `Auth`) applies nothing from an authenticated sender. The MAC covers
//! bytes 0..16 and every message, truncated to 128 bits (RFC 4868). The
//! counter starts at the sender's clock in microseconds and grows by one
//! per datagram; the receiver accepts each counter once, within a window
//! of 64 behind the highest seen (UDP may reorder), so captured datagrams
//! cannot be replayed. A receiver's window starts empty when it starts.
//!
//! Hand-written because it is ~150 lines and a crypto crate would cost
//! more bytes than the whole sync module; checked against the FIPS 180-2
//! and RFC 4231 vectors below.

/// Length of the auth block.
pub const AUTH_LEN: usize = 32;
/// First byte of the auth block (version 15, type 1).
pub const AUTH_MAGIC: u8 = 0xf1;
const TAG: &[u8; 4] = b"CTA1";
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
}

/// Signs outgoing and checks incoming datagrams for one shared key.
#[derive(Clone, Debug)]
pub struct Auth {
    hmac: HmacSha256,
    send_counter: u64,
    highest: Option<u64>,
    seen: u64,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// A signer/verifier; `start_counter` should be the clock in
    /// microseconds, so a restarted sender continues above its old
    /// counters.
    pub fn new(key: &[u8], start_counter: u64) -> Auth {
        Auth {
            hmac: HmacSha256::new(key),
            send_counter: start_counter,
            highest: None,
            seen: 0,
        }
    }

    fn mac16(&self, head: &[u8], msgs: &[u8]) -> [u8; MAC_LEN] {
        let m = self.hmac.mac(&[head, msgs]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&m[..MAC_LEN]);
        out
    }

    /// Returns `messages` with the auth block in front.
    pub fn seal(&mut self, messages: &[u8]) -> Vec<u8> {
        self.send_counter = self.send_counter.wrapping_add(1);
        let mut out = Vec::with_capacity(AUTH_LEN + messages.len());
        out.extend_from_slice(&[AUTH_MAGIC, 0, 0, 0]);
        out.extend_from_slice(TAG);
        out.extend_from_slice(&self.send_counter.to_be_bytes());
        let mac = self.mac16(&out[..16], messages);
        out.extend_from_slice(&mac);
        out.extend_from_slice(messages);
        out
    }

    /// Checks a datagram; on success returns its messages and remembers
    /// the counter.
    pub fn open<'a>(&mut self, datagram: &'a [u8]) -> Result<&'a [u8], AuthError> {
        if datagram.len() < AUTH_LEN || datagram[0] != AUTH_MAGIC || &datagram[4..8] != TAG {
            return Err(AuthError::Missing);
        }
        let (head, rest) = datagram.split_at(AUTH_LEN);
        let msgs = rest;
        if !ct_eq(&self.mac16(&head[..16], msgs), &head[16..32]) {
            return Err(AuthError::BadMac);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&head[8..16]);
        self.accept_counter(u64::from_be_bytes(c))?;
        Ok(msgs)
    }

    fn accept_counter(&mut self, c: u64) -> Result<(), AuthError> {
        match self.highest {
            None => {
                self.highest = Some(c);
                self.seen = 1;
            }
            Some(h) if c > h => {
                let shift = c - h;
                self.seen = if shift >= WINDOW {
                    1
                } else {
                    (self.seen << shift) | 1
                };
                self.highest = Some(c);
            }
            Some(h) => {
                let back = h - c;
                if back >= WINDOW || self.seen & (1 << back) != 0 {
                    return Err(AuthError::Replay);
                }
                self.seen |= 1 << back;
            }
        }
        Ok(())
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

    #[test]
    fn sealed_datagrams_open_once() {
        let key = b"0123456789abcdef";
        let mut a = Auth::new(key, 1000);
        let mut b = Auth::new(key, 5);
        let d1 = a.seal(b"hello");
        let d2 = a.seal(b"world");
        assert_eq!(&d1[..4], [0xf1, 0, 0, 0]);
        assert_eq!(b.open(&d2).unwrap(), b"world");
        // reordered but fresh: accepted; replayed: refused
        assert_eq!(b.open(&d1).unwrap(), b"hello");
        assert_eq!(b.open(&d1), Err(AuthError::Replay));
        assert_eq!(b.open(&d2), Err(AuthError::Replay));
        // forged, altered, truncated, unauthenticated, wrong key
        let mut bad = a.seal(b"x");
        bad[AUTH_LEN] ^= 1;
        assert_eq!(b.open(&bad), Err(AuthError::BadMac));
        let ok = a.seal(b"abc");
        assert_eq!(b.open(&ok[..ok.len() - 1]), Err(AuthError::BadMac));
        assert_eq!(b.open(&ok[..20]), Err(AuthError::Missing));
        assert_eq!(
            b.open(b"\x1a\x10\x00\x08\0\0\0\x01"),
            Err(AuthError::Missing)
        );
        let mut other = Auth::new(b"another key 16 bytes", 99999);
        assert_eq!(b.open(&other.seal(b"abc")), Err(AuthError::BadMac));
        assert_eq!(b.open(&ok).unwrap(), b"abc");
    }

    #[test]
    fn replay_window_slides() {
        let mut a = Auth::new(b"0123456789abcdef", 0);
        let sealed: Vec<Vec<u8>> = (0..200).map(|_| a.seal(b"m")).collect();
        let mut b = Auth::new(b"0123456789abcdef", 0);
        assert!(b.open(&sealed[100]).is_ok());
        assert!(b.open(&sealed[40]).is_ok()); // 60 behind: inside
        assert_eq!(b.open(&sealed[30]), Err(AuthError::Replay)); // 70 behind
        assert!(b.open(&sealed[199]).is_ok()); // far ahead: window reset
        assert_eq!(b.open(&sealed[100]), Err(AuthError::Replay));
        assert!(b.open(&sealed[150]).is_ok());
    }
}
